//! The docs are tests: every ```console block in README.md and docs/*.md runs here as written,
//! and its output must match what the block shows (`[..]` matches within a line, a `...` line
//! matches any lines; the matching is snapbox's, the same as trycmd's). New pages are picked up
//! without editing this file.
//!
//! Why not trycmd itself: it runs each `$ ` line as one program without a shell, so the lines a
//! user really types (`cd stack/compose && ...`, `eval "$(scripts/build-images.sh ...)"`,
//! variables set by one line and used by the next) cannot be written, and it has no per-block
//! setup (a scratch home, free ports, a Docker project torn down afterwards).
//!
//! How a block runs: as one `sh` session (state carries from line to line, stderr merged into
//! stdout, stdin empty) in the repository root, with `obsctl` on PATH being the binary under
//! test, a scratch `XDG_STATE_HOME`/`XDG_CONFIG_HOME`, free host ports for every
//! `OBSCTL_PORT_*`, and its own `OBSCTL_PROJECT`/`COMPOSE_PROJECT_NAME`, so that blocks neither
//! see each other nor a user's stack; `obsctl down --volumes` runs after it. `? N` under a
//! command is its expected exit code (default 0). A block that mentions docker or
//! build-images.sh runs with the Docker tests (under CI=true a missing Docker fails it). Two
//! commands are not run as typed, each said on stderr: `cargo run -- ARGS` runs as `obsctl ARGS`
//! (see [`as_run`]), and the test suite itself, `./scripts/test.sh`, is not run inside itself:
//! the test checks that `.ci/run` runs exactly it instead.
//!
//! Every fenced block must name its language: ```console (run here), ```text (diagrams,
//! synopses) or the format of a file shown (yaml, json, promql, ...). ```sh and friends are
//! refused, so that no command example escapes this test. A block that cannot run here (it needs
//! a hosted stack) is marked ```console,not-run: it is named on stderr as not run, and every
//! `obsctl` subcommand and `--flag` it shows is still checked against the binary's `--help`.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::stack::StackEnv;

const REPO: &str = env!("CARGO_MANIFEST_DIR");
/// A block without Docker: the demo, a run or two and a chaos burst, seconds each.
const LIMIT: Duration = Duration::from_secs(120);
/// A block with Docker: building the local images and a whole stack up and down.
const DOCKER_LIMIT: Duration = Duration::from_secs(300);

/// One `$ ` command of a console block.
#[derive(Debug)]
struct Step {
    line: usize,
    text: String,
    code: i32,
    expected: String,
}

#[derive(Debug)]
struct Block {
    file: String,
    line: usize,
    steps: Vec<Step>,
    /// Marked ```console,not-run: needs what cannot run here (a hosted stack, a cluster).
    not_run: bool,
}

impl Block {
    fn needs_docker(&self) -> bool {
        self.steps
            .iter()
            .any(|s| s.text.contains("docker") || s.text.contains("build-images"))
    }
}

/// The info string of a command block that cannot run here: its obsctl flags are still checked.
const NOT_RUN: &str = "console,not-run";

const SHELL_LANGS: [&str; 6] = ["sh", "bash", "shell", "zsh", "shell-session", "sh-session"];

/// The console blocks of one page, or what is wrong with its fences.
fn parse_page(file: &str, text: &str) -> Result<Vec<Block>, Vec<String>> {
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    while let Some((line, l)) = lines.next() {
        let ticks = l.chars().take_while(|c| *c == '`').count();
        if ticks < 3 {
            continue;
        }
        let fence = &l[..ticks];
        let info = l[ticks..].trim();
        let lang = info.split([',', ' ']).next().unwrap_or("");
        let body: Vec<(usize, &str)> = lines
            .by_ref()
            .take_while(|(_, b)| !(b.starts_with(fence) && b[ticks..].trim().is_empty()))
            .collect();
        match lang {
            "" => problems.push(format!(
                "{file}:{line}: fenced block without a language: write ```console for commands \
                 (run by tests/docs.rs), ```text for diagrams and synopses, or the format of the \
                 file shown"
            )),
            l if SHELL_LANGS.contains(&l) => problems.push(format!(
                "{file}:{line}: ```{l} block: write commands as ```console with `$ ` lines, so \
                 that tests/docs.rs runs them"
            )),
            "console" => match parse_console(&body) {
                Ok(steps) => blocks.push(Block {
                    file: file.to_string(),
                    line,
                    steps,
                    not_run: info == NOT_RUN,
                }),
                Err((at, why)) => problems.push(format!("{file}:{at}: {why}")),
            },
            _ => {}
        }
    }
    if problems.is_empty() {
        Ok(blocks)
    } else {
        Err(problems)
    }
}

/// `$ command` (continued by a trailing `\`), an optional `? CODE`, then its expected output.
fn parse_console(body: &[(usize, &str)]) -> Result<Vec<Step>, (usize, String)> {
    let mut steps: Vec<Step> = Vec::new();
    let mut rest = body.iter().copied().peekable();
    while let Some((line, l)) = rest.next() {
        let Some(command) = l.strip_prefix("$ ") else {
            let Some(step) = steps.last_mut() else {
                return Err((
                    line,
                    "console block with output before any `$ ` command".into(),
                ));
            };
            step.expected.push_str(l);
            step.expected.push('\n');
            continue;
        };
        let mut text = command.to_string();
        while text.ends_with('\\') {
            let Some((_, next)) = rest.next() else { break };
            text.push('\n');
            text.push_str(next);
        }
        let mut code = 0;
        if let Some((at, status)) = rest
            .peek()
            .and_then(|(at, l)| Some((*at, l.strip_prefix("? ")?)))
        {
            code = status
                .trim()
                .parse()
                .map_err(|_| (at, format!("`? {status}`: expected an exit code number")))?;
            rest.next();
        }
        steps.push(Step {
            line,
            text,
            code,
            expected: String::new(),
        });
    }
    for step in &mut steps {
        if step.expected.ends_with('\n') {
            step.expected.pop();
        }
    }
    Ok(steps)
}

/// README.md and every page under docs/, in a stable order.
fn pages() -> Vec<(String, String)> {
    let mut files = vec![PathBuf::from(REPO).join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(Path::new(REPO).join("docs"))
        .expect("docs/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    files.extend(docs);
    files
        .into_iter()
        .map(|p| {
            let name = p.strip_prefix(REPO).unwrap().display().to_string();
            (name, std::fs::read_to_string(&p).unwrap())
        })
        .collect()
}

fn all_blocks() -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut problems = Vec::new();
    for (name, text) in pages() {
        match parse_page(&name, &text) {
            Ok(b) => blocks.extend(b),
            Err(p) => problems.extend(p),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    blocks
}

/// The command `.ci/run` hands over to: the test suite, which this test cannot run inside itself.
fn ci_command() -> String {
    let ci = std::fs::read_to_string(Path::new(REPO).join(".ci/run")).expect(".ci/run exists");
    ci.lines()
        .rev()
        .find_map(|l| l.strip_prefix("exec "))
        .expect(".ci/run ends by exec-ing the suite")
        .trim()
        .to_string()
}

/// `cargo run -- ARGS` is `obsctl ARGS` with the binary cargo builds from this checkout: the one
/// under test, already built by `cargo test`. Running cargo itself would build obsctl a second
/// time (without the dev-dependencies' features), minutes of the suite for a compile the suite
/// has just done. Said on stderr, so that the substitution is never silent.
fn as_run(text: &str) -> String {
    match text.strip_prefix("cargo run -- ") {
        Some(args) => {
            eprintln!("docs: `{text}` runs as `obsctl {args}` (the binary cargo run builds)");
            format!("obsctl {args}")
        }
        None => text.to_string(),
    }
}

/// The block's environment: the isolation described in the module doc.
fn session() -> StackEnv {
    let mut env = StackEnv::new("docs");
    env.free_ports();
    let project = env.project.clone();
    env.set("COMPOSE_PROJECT_NAME", &project);
    env.set("NO_COLOR", "1");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_obsctl")).parent().unwrap();
    let path = std::env::var("PATH").unwrap_or_default();
    env.set("PATH", &format!("{}:{path}", bin_dir.display()));
    env
}

/// Runs one block; returns one message per step whose exit code or output differs.
fn run_block(block: &Block, limit: Duration) -> Vec<String> {
    let env = session();
    let ci = ci_command();
    let marker = format!("@@docs-step-{}@@", std::process::id());
    let mut script = String::from("exec 2>&1 </dev/null\n");
    let mut problems = Vec::new();
    let mut run = Vec::new();
    for step in &block.steps {
        if step.text == ci {
            eprintln!("docs: `{ci}` is not run here: .ci/run runs exactly it");
            continue;
        }
        script.push_str(&as_run(&step.text));
        script.push_str(&format!("\nprintf '\\n{marker} %s\\n' \"$?\"\n"));
        run.push(step);
    }
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(&script)
        .current_dir(REPO)
        .env_remove("CI")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in &env.env {
        cmd.env(k, v);
    }
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("sh runs");
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut out = Vec::new();
        let _ = stdout.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    });
    let deadline = Instant::now() + limit;
    let timed_out = loop {
        if child.try_wait().unwrap().is_some() {
            break false;
        }
        if Instant::now() > deadline {
            break true;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if timed_out {
        let pgid = nix::unistd::Pid::from_raw(-(child.id() as i32));
        let _ = nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait();
    }
    let output = reader.join().unwrap();
    let separator = format!("\n{marker} ");
    let mut pieces = output.split(&separator);
    let mut before = pieces.next().unwrap_or("").to_string();
    for step in run {
        let at = format!("{}:{}", block.file, step.line);
        let Some(piece) = pieces.next() else {
            problems.push(format!(
                "{at}: `{}` did not finish{}; output so far:\n{before}",
                step.text,
                if timed_out {
                    format!(" within {limit:?} (the block's limit)")
                } else {
                    String::new()
                }
            ));
            break;
        };
        let (code, after) = piece.split_once('\n').unwrap_or((piece, ""));
        let code: i32 = code.trim().parse().unwrap_or(-1);
        let actual = before.strip_suffix('\n').unwrap_or(&before).to_string();
        if code != step.code {
            problems.push(format!(
                "{at}: `{}` exited {code}, the doc says {}; output:\n{actual}",
                step.text, step.code
            ));
        }
        if let Err(diff) = snapbox::Assert::new().try_eq(
            Some(&at),
            snapbox::Data::text(actual),
            snapbox::Data::text(step.expected.clone()),
        ) {
            problems.push(format!(
                "{at}: `{}` printed other output:\n{diff}",
                step.text
            ));
        }
        before = after.to_string();
    }
    drop(env);
    problems
}

/// What a block that is not run can still be held to: every `obsctl SUBCOMMAND` it shows exists
/// and every `--flag` it gives is one that subcommand's `--help` lists.
fn check_not_run(block: &Block) -> Vec<String> {
    let mut problems = Vec::new();
    for step in &block.steps {
        let Some((_, rest)) = step.text.split_once("obsctl ") else {
            continue;
        };
        let words: Vec<&str> = rest.split_whitespace().collect();
        let Some(sub) = words.first() else { continue };
        let help = Command::new(env!("CARGO_BIN_EXE_obsctl"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&help.stdout);
        let at = format!("{}:{}", block.file, step.line);
        if !help.status.success() {
            problems.push(format!("{at}: `obsctl {sub}` is not a command"));
            continue;
        }
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap_or(flag);
            if !text.contains(&format!("{flag} ")) && !text.contains(&format!("{flag}\n")) {
                problems.push(format!("{at}: `obsctl {sub}` has no flag {flag}"));
            }
        }
    }
    problems
}

fn run_all(docker: bool, limit: Duration) {
    let started = Instant::now();
    let (not_run, blocks): (Vec<Block>, Vec<Block>) = all_blocks()
        .into_iter()
        .filter(|b| b.needs_docker() == docker)
        .partition(|b| b.not_run);
    assert!(!blocks.is_empty(), "no console block found");
    let mut problems = Vec::new();
    for block in &not_run {
        eprintln!(
            "docs: {}:{} not run (```{NOT_RUN}); its obsctl flags checked against --help",
            block.file, block.line
        );
        problems.extend(check_not_run(block));
    }
    for block in &blocks {
        let t = Instant::now();
        problems.extend(run_block(block, limit));
        eprintln!(
            "docs: {}:{} ran in {:.1} s",
            block.file,
            block.line,
            t.elapsed().as_secs_f64()
        );
    }
    eprintln!(
        "docs: {} block(s) in {:.1} s",
        blocks.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

#[test]
fn every_console_block_without_docker_runs_as_written() {
    run_all(false, LIMIT);
}

#[test]
fn every_console_block_with_docker_runs_as_written() {
    if !common::require_docker("every_console_block_with_docker_runs_as_written") {
        return;
    }
    run_all(true, DOCKER_LIMIT);
}

#[test]
fn the_suite_command_in_the_docs_is_what_ci_runs() {
    let ci = ci_command();
    let shown = all_blocks()
        .iter()
        .flat_map(|b| &b.steps)
        .any(|s| s.text == ci);
    assert!(shown, "no doc shows `{ci}`, the command .ci/run runs");
}

/// A page that drifted from the binary: a flag that does not exist and output the binary does
/// not print. Both fail, each at its own line.
#[test]
fn a_doc_that_drifts_from_the_binary_fails() {
    let page = "# drift\n\n```console\n$ obsctl runs --no-such-flag\n\n$ obsctl --version\nobsctl 0.0.0-not-this\n```\n";
    let blocks = parse_page("docs/drift.md", page).expect("the page parses");
    let problems = run_block(&blocks[0], LIMIT);
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(
        problems[0]
            .starts_with("docs/drift.md:4: `obsctl runs --no-such-flag` exited 2, the doc says 0"),
        "{}",
        problems[0]
    );
    assert!(problems[1].starts_with("docs/drift.md:4:") && problems[1].contains("--no-such-flag"));
    assert!(
        problems[2].starts_with("docs/drift.md:6: `obsctl --version` printed other output")
            && problems[2].contains(env!("CARGO_PKG_VERSION")),
        "{}",
        problems[2]
    );
}

#[test]
fn a_block_that_is_not_a_test_is_refused() {
    let page = "```sh\nobsctl up\n```\n\n```\nplain\n```\n\n```console\nstray output\n$ obsctl runs\n```\n";
    let problems = parse_page("docs/bad.md", page).expect_err("refused");
    assert_eq!(problems.len(), 3, "{problems:#?}");
    assert!(problems[0].starts_with("docs/bad.md:1: ```sh block"));
    assert!(problems[1].starts_with("docs/bad.md:5: fenced block without a language"));
    assert!(problems[2].starts_with("docs/bad.md:10: console block with output before"));
}

/// A block marked not-run is parsed, said on stderr and held to the flags the binary has.
#[test]
fn a_block_not_run_here_is_still_checked_against_the_binary() {
    let page = "```console,not-run\n$ obsctl verify --task-id T \\\n  --tempo-url https://t\n\n$ obsctl verify --no-such-flag\n\n$ obsctl nonesuch --x\n```\n";
    let blocks = parse_page("docs/hosted.md", page).unwrap();
    assert!(blocks[0].not_run);
    assert_eq!(
        check_not_run(&blocks[0]),
        [
            "docs/hosted.md:5: `obsctl verify` has no flag --no-such-flag",
            "docs/hosted.md:7: `obsctl nonesuch` is not a command",
        ]
    );
}

#[test]
fn exit_codes_and_continued_lines_parse() {
    let page = "```console\n$ obsctl verify \\\n  --timeout 1s\n? 2\nerror[..]\n...\n```\n";
    let blocks = parse_page("x.md", page).unwrap();
    let step = &blocks[0].steps[0];
    assert_eq!(step.text, "obsctl verify \\\n  --timeout 1s");
    assert_eq!((step.line, step.code), (2, 2));
    assert_eq!(step.expected, "error[..]\n...");
}
