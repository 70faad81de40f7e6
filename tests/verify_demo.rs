//! `obsctl demo` end to end, as the README's first command: the real binary starting the embedded
//! backend in-process (or using a running `obsctl serve`), running the bundled pipeline through
//! the shim, verifying it and printing its trace. No mocks.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::Serve;
use common::workflow::require_private_tmp;

fn demo(home: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_obsctl"))
        .arg("demo")
        .env("XDG_STATE_HOME", home)
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

fn assert_full_story(stdout: &str) {
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
    assert!(links.contains("/api/traces/"), "{links}");
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
    if !require_private_tmp(
        "demo_on_a_fresh_machine_starts_its_own_backend_and_leaves_nothing_behind",
    ) {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let (code, stdout, stderr) = demo(home.path());
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert_full_story(&stdout);
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
    if !require_private_tmp("demo_uses_a_running_stack_and_repeats_cleanly_on_it") {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let _serve = Serve::start_in_home(home.path());
    let endpoints = home.path().join("obsctl/endpoints.json");
    // Twice against the same backend: the second demo's counters must not be confused with the
    // first's.
    for round in 1..=2 {
        let (code, stdout, stderr) = demo(home.path());
        assert_eq!(code, 0, "round {round}:\n{stdout}\n{stderr}");
        assert!(
            stderr.contains("using the running Embedded stack"),
            "{stderr}"
        );
        assert_full_story(&stdout);
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
