//! Tables fit where they are printed: plain ASCII with one line per row off a terminal, box
//! drawing wrapped to the width of a terminal that has one, and the natural width on a
//! pseudo-terminal with no size (which used to give one character per column). The terminals are
//! real pseudo-terminals, made by util-linux's `script`.

mod common;

use std::process::Command;

use common::workflow::{Sandbox, repo_root};

/// A sandbox with one recorded run, so that `obsctl runs` prints a table.
fn one_run() -> Sandbox {
    let sb = Sandbox::new();
    let run = sb.run(
        &repo_root().join("workflows/burst.yaml"),
        &["-p", "count=2"],
    );
    assert_eq!(run.phase(), "Succeeded", "{}", run.describe());
    sb
}

/// `obsctl runs` on a pseudo-terminal of `cols` columns (0: a terminal with no size).
fn runs_on_a_terminal(sb: &Sandbox, script: &std::path::Path, cols: u16) -> String {
    let obsctl = env!("CARGO_BIN_EXE_obsctl");
    let state = sb.state_dir();
    let line = format!(
        "stty cols {cols} rows 50 && {obsctl} runs --state-dir {}",
        state.display()
    );
    let out = Command::new(script)
        .args(["-qec", &line, "/dev/null"])
        .env("XDG_STATE_HOME", sb.dir.path().join("xdg"))
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    assert!(out.status.success(), "{text}");
    text
}

fn widest(text: &str) -> usize {
    text.lines().map(|l| l.chars().count()).max().unwrap_or(0)
}

#[test]
fn off_a_terminal_a_table_is_plain_ascii_with_one_line_per_row() {
    let sb = one_run();
    let out = sb
        .command()
        .args(["-v", "runs", "--state-dir"])
        .arg(sb.state_dir())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let said = format!("obsctl: runs: 1 record(s) in {}", sb.state_dir().display());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&said),
        "-v says what it read"
    );
    assert!(text.is_ascii(), "{text}");
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with('|')).collect();
    assert_eq!(
        rows.len(),
        2,
        "a header and one run, one line each:\n{text}"
    );
    assert!(
        rows[0].contains("NAME") && rows[1].contains("burst-"),
        "{text}"
    );
}

#[test]
fn on_a_terminal_a_table_fits_its_width_and_one_without_a_size_keeps_its_own() {
    let test = "on_a_terminal_a_table_fits_its_width_and_one_without_a_size_keeps_its_own";
    let Some(script) = common::require_tool("script", test) else {
        return;
    };
    let sb = one_run();

    let sizeless = runs_on_a_terminal(&sb, &script, 0);
    assert!(
        sizeless.contains('│'),
        "box drawing on a terminal:\n{sizeless}"
    );
    let header = sizeless.lines().find(|l| l.contains("NAME")).unwrap_or("");
    assert!(
        header.contains("PHASE") && header.contains("STARTED"),
        "whole words in the header, not one character per column:\n{sizeless}"
    );
    let natural = widest(&sizeless);

    let narrow = (natural as u16) / 2;
    let wrapped = runs_on_a_terminal(&sb, &script, narrow);
    assert!(
        widest(&wrapped) <= narrow as usize,
        "wrapped to {narrow} columns:\n{wrapped}"
    );
}
