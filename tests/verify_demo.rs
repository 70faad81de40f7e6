//! `obsctl demo` end to end, as the README's first command: the real binary starting the embedded
//! backend in-process (or using a running `obsctl serve`), running the bundled pipeline through
//! the shim, verifying it and printing its trace. No mocks.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Serve;
use common::require_tool;

fn demo(home: &Path) -> (i32, String, String) {
    demo_as(Command::new(env!("CARGO_BIN_EXE_obsctl")), home)
}

/// `command demo` (`command` is obsctl, or a wrapper that runs it) with `home` as state home.
fn demo_as(mut command: Command, home: &Path) -> (i32, String, String) {
    let out = command
        .arg("demo")
        .env("XDG_STATE_HOME", home)
        .env("HOME", home)
        .env("NO_COLOR", "1")
        .env_remove("CI")
        .current_dir(home)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// `own_backend`: the demo started (and stopped) its own backend, so no link may lead into it.
fn assert_full_story(stdout: &str, own_backend: bool) {
    assert!(
        stdout.starts_with("running workflows/agent-pipeline.yaml as agent-pipeline-"),
        "{stdout}"
    );
    assert!(stdout.contains("verify: all 7 checks passed"), "{stdout}");
    let task = stdout
        .lines()
        .find_map(|l| l.strip_prefix("task demo-"))
        .expect("the trace of the demo task is printed");
    assert!(task.chars().all(|c| c.is_ascii_digit()), "{task}");
    for step in [
        "rex/implement",
        "clippy/verify",
        "tests/verify",
        "deploy/preview",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.trim_start().starts_with(step) && l.contains(" ms  OK "))
            .unwrap_or_else(|| panic!("no waterfall line for {step}:\n{stdout}"));
        assert!(line.contains('#'), "{line}");
    }
    assert!(
        stdout.contains("INFO deploy: preview is up"),
        "logs under their span: {stdout}"
    );
    let links = stdout.split("\nlinks:\n").nth(1).expect("links at the end");
    assert_eq!(links.contains("/api/traces/"), !own_backend, "{links}");
    assert_eq!(
        links.contains("the demo's own backend stopped with it"),
        own_backend,
        "{links}"
    );
    assert!(
        links.contains(&format!("https://github.com/5dlabs/demo/pull/{task}")),
        "{links}"
    );
    assert!(links.contains("actionsRunUrl"), "{links}");
    assert!(
        links.contains(&format!("https://pr-{task}.preview.example.com")),
        "{links}"
    );
}

#[test]
fn demo_on_a_fresh_machine_starts_its_own_backend_and_leaves_nothing_behind() {
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, stdout, stderr) = demo(home.path());
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_full_story(&stdout, true);
    let api = stderr
        .split("embedded backend on http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("{stderr}"));
    // Stopped what it started: nothing listens on its API any more, no endpoints file, no
    // scratch data left in the state home.
    assert!(
        std::net::TcpStream::connect_timeout(&api.parse().unwrap(), Duration::from_millis(500))
            .is_err(),
        "{api} still accepts connections"
    );
    let state_home = home.path().join("obsctl");
    assert!(!state_home.join("endpoints.json").exists());
    // An empty spool directory may stay: steps bind it when the state home is under /tmp (as
    // here), so it exists before any step could spool; it holds nothing.
    let leftovers: Vec<_> = std::fs::read_dir(&state_home)
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    e.file_name() != "spool"
                        || std::fs::read_dir(e.path()).is_ok_and(|mut s| s.next().is_some())
                })
                .map(|e| e.file_name())
                .collect()
        })
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    eprintln!("obsctl demo took {:?}", started.elapsed());
}

#[test]
fn demo_uses_a_running_stack_and_repeats_cleanly_on_it() {
    let home = tempfile::tempdir().unwrap();
    let _serve = Serve::start_in_home(home.path());
    let endpoints = home.path().join("obsctl/endpoints.json");
    // Twice against the same backend: the second demo's counters must not be confused with the
    // first's.
    for round in 1..=2 {
        let (code, stdout, stderr) = demo(home.path());
        assert_eq!(code, 0, "round {round}:\n{stdout}\n{stderr}");
        assert!(
            stderr.contains("using the running embedded stack"),
            "{stderr}"
        );
        assert_full_story(&stdout, false);
    }
    // With a running stack the runs are recorded where `obsctl runs` and `verify` look.
    let runs = obsctl::workflow::record::RecordStore::new(home.path().join("obsctl/runs"))
        .list()
        .unwrap();
    assert_eq!(runs.len(), 2);
    assert!(
        endpoints.exists(),
        "the running stack's endpoints file is left alone"
    );
}

/// The note `obsctl run` and `obsctl demo` print when steps get no private /tmp.
const REWRITE_NOTE: &str = "obsctl: steps get no private /tmp";

#[test]
fn demo_and_run_as_an_unprivileged_user_rewrite_tmp_paths_say_so_once_and_pass() {
    let test = "demo_and_run_as_an_unprivileged_user_rewrite_tmp_paths_say_so_once_and_pass";
    let Some(setpriv) = require_tool("setpriv", test) else {
        return;
    };
    use std::os::unix::fs::PermissionsExt;
    // nobody must reach the binary and own its state home; a fresh tempdir is root's, 0700.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("obsctl");
    std::fs::copy(env!("CARGO_BIN_EXE_obsctl"), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let home = dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    use std::os::unix::fs::MetadataExt;
    // The directory just made belongs to whoever runs the test.
    let root = std::fs::metadata(&home).unwrap().uid() == 0;
    if root {
        std::os::unix::fs::chown(&home, Some(65534), Some(65534)).unwrap();
    }
    let unprivileged = || {
        let mut c = if root {
            let mut c = Command::new(&setpriv);
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&exe);
            c
        } else {
            // Already unprivileged: run it as is.
            Command::new(&exe)
        };
        c.env_remove("TMPDIR");
        c
    };
    let notes = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.starts_with(REWRITE_NOTE))
            .map(str::to_string)
            .collect()
    };
    let (code, stdout, stderr) = demo_as(unprivileged(), &home);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_full_story(&stdout, true);
    let demo_notes = notes(&stderr);
    assert_eq!(demo_notes.len(), 1, "the fallback is named once: {stderr}");
    assert!(demo_notes[0].contains("rewritten"), "{stderr}");

    // `obsctl run` of the same pipeline takes the same fallback and says the same line (its
    // telemetry goes nowhere: port 1 refuses, the spool keeps it).
    let pipeline = home.join("agent-pipeline.yaml");
    std::fs::copy(
        concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/agent-pipeline.yaml"),
        &pipeline,
    )
    .unwrap();
    let out = unprivileged()
        .arg("run")
        .arg(&pipeline)
        .args(["--otlp-endpoint", "http://127.0.0.1:1"])
        .env("XDG_STATE_HOME", &home)
        .env("HOME", &home)
        .env_remove("CI")
        .current_dir(&home)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(notes(&stderr), demo_notes, "{stderr}");
}
