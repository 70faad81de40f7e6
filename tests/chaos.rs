//! `obsctl chaos` on the embedded runtime, end to end with the real binary: every scenario
//! passes with an exact loss account, and each deliberate defect fails the scenario that guards
//! it with the right numbers (a real spool bound for the dropping spool, `OBSCTL_DEFECT` for
//! the rest; see `src/defect.rs`). Ctrl-C in the middle of an outage leaves nothing paused.
//! The scenarios run one at a time: they measure step delays, which parallel load would skew.

mod common;

use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use common::chaos::{row, scenario};
use common::{ChildGuard, poll, wait_with_deadline};
use serde_json::Value;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn obsctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
    cmd.env_remove("OBSCTL_DEFECT").env("NO_COLOR", "1");
    cmd
}

/// One scenario run at a time, with a shorter accounting wait than the default.
fn chaos(args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut args = args.to_vec();
    args.extend(["--timeout", "15s"]);
    common::chaos::run(&args, env)
}

#[test]
fn every_scenario_passes_with_nothing_lost_or_duplicated() {
    let (code, report) = chaos(&["all", "--outage", "3s", "--steps", "50"], &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(common::chaos::names(&report), common::chaos::ALL);
    for s in report["scenarios"].as_array().unwrap() {
        // The embedded backend absorbs a request replayed after its answer was lost: nothing
        // is stored twice, and what it absorbed is within the at-least-once window.
        for r in s["rows"].as_array().unwrap() {
            assert_eq!(r["passed"], true, "{}: {r:#}", s["scenario"]);
            assert_eq!(r["lost"], 0, "{}: {r:#}", s["scenario"]);
            assert_eq!(r["duplicated"], 0, "{}: {r:#}", s["scenario"]);
        }
        let absorbed = row(s, "duplicates-absorbed");
        assert!(absorbed["found"].as_u64() <= absorbed["expected"].as_u64());
        assert!(
            row(s, "log-lines")["expected"].as_u64().unwrap() > 0,
            "{s:#}"
        );
    }
    let pod_kill = scenario(&report, "pod-kill");
    assert_eq!(row(pod_kill, "killed-pod-recorded-outside")["passed"], true);
    assert_eq!(row(pod_kill, "deleted-pod-span")["passed"], true);
    // 4 steps, 2 of them killed and retried: 6 attempts with a span each.
    assert_eq!(row(pod_kill, "span-coverage")["found"], 6);
    let outage = scenario(&report, "collector-outage/pause");
    let fault = outage["timeline"]["fault"].as_array().unwrap();
    let window = fault[1].as_u64().unwrap() - fault[0].as_u64().unwrap();
    assert!(window >= 3000, "the outage lasted {window} ms");
    let restart = scenario(&report, "controller-restart");
    assert!(
        row(restart, "interrupted-attempts-recorded")["found"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(row(restart, "one-root")["found"], 1);
}

#[test]
fn a_spool_that_drops_what_it_was_given_loses_the_outage() {
    let (code, report) = chaos(
        &["collector-outage", "--mode", "stop", "--outage", "2s"],
        &[("OBSCTL_SPOOL_MAX_BYTES", "1")],
    );
    assert_eq!(code, 2, "{report:#}");
    let s = scenario(&report, "collector-outage/stop");
    assert!(
        row(s, "span-coverage")["lost"].as_u64().unwrap() > 0,
        "{s:#}"
    );
    assert!(row(s, "log-lines")["lost"].as_u64().unwrap() > 0, "{s:#}");
    assert_eq!(row(s, "log-lines")["duplicated"], 0, "{s:#}");
}

#[test]
fn a_replay_that_sends_twice_duplicates_the_outage() {
    let (code, report) = chaos(
        &["collector-outage", "--mode", "kill", "--outage", "2s"],
        &[("OBSCTL_DEFECT", "replay-twice")],
    );
    assert_eq!(code, 2, "{report:#}");
    let s = scenario(&report, "collector-outage/kill");
    // The backend absorbs every second copy, so none is stored; but far more repeats arrived
    // than the at-least-once window explains, and that fails the scenario.
    let lines = row(s, "log-lines");
    assert_eq!(
        (&lines["lost"], &lines["duplicated"]),
        (&0.into(), &0.into()),
        "{s:#}"
    );
    let absorbed = row(s, "duplicates-absorbed");
    assert_eq!(absorbed["passed"], false, "{s:#}");
    assert!(
        absorbed["found"].as_u64().unwrap() > absorbed["expected"].as_u64().unwrap(),
        "{s:#}"
    );
}

#[test]
fn a_runner_that_does_not_record_killed_steps_loses_the_killed_span() {
    let (code, report) = chaos(&["pod-kill"], &[("OBSCTL_DEFECT", "no-outside-record")]);
    assert_eq!(code, 2, "{report:#}");
    let s = scenario(&report, "pod-kill");
    assert_eq!(row(s, "killed-pod-recorded-outside")["passed"], false);
    assert_eq!(row(s, "span-coverage")["lost"], 1, "{s:#}");
    assert_eq!(row(s, "deleted-pod-span")["passed"], true, "{s:#}");
}

#[test]
fn a_resume_that_reruns_finished_steps_counts_them_twice() {
    let (code, report) = chaos(
        &["controller-restart"],
        &[("OBSCTL_DEFECT", "resume-reruns")],
    );
    assert_eq!(code, 2, "{report:#}");
    let parity = row(scenario(&report, "controller-restart"), "counter-parity");
    assert_eq!(parity["passed"], false, "{parity:#}");
    assert!(parity["duplicated"].as_u64().unwrap() > 0, "{parity:#}");
}

/// The process state letter from /proc (`T` is stopped), `None` once the process is gone.
fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    (state != 'Z').then_some(state)
}

#[test]
fn ctrl_c_during_an_outage_leaves_nothing_paused() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let stderr_path = work.path().join("stderr");
    let child = obsctl()
        .args([
            "chaos",
            "collector-outage",
            "--mode",
            "pause",
            "--outage",
            "60s",
            "--work-dir",
        ])
        .arg(work.path())
        .env("XDG_STATE_HOME", work.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);
    poll("the outage to begin", Duration::from_secs(60), || {
        let text = std::fs::read_to_string(&stderr_path).unwrap_or_default();
        text.contains("outage (pause)").then_some(())
    });
    let pid_file = work.path().join("collector-outage-pause").join("serve.pid");
    let serve: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    poll("the backend to be paused", Duration::from_secs(10), || {
        (process_state(serve) == Some('T')).then_some(())
    });
    let chaos: &mut std::process::Child = &mut guard;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(chaos.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_with_deadline(chaos, Duration::from_secs(30));
    assert_eq!(status.code(), Some(130));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert!(stderr.contains("every fault was undone"), "{stderr}");
    poll(
        "the paused backend to be gone",
        Duration::from_secs(10),
        || process_state(serve).is_none().then_some(()),
    );
}
