//! kill -9 of `obsctl run` in the middle of a step, then `obsctl run --resume`: finished steps
//! are not run again, the interrupted one runs as a new attempt in the same trace, no step
//! process of the killed run survives, and the backend counts every step exactly once.

mod common;

use std::process::Stdio;
use std::time::Duration;

use common::workflow::{RunResult, Sandbox, repo_root};
use common::{ChildGuard, Serve, poll};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

/// Live processes of the process group `pgid`.
fn group_members(pgid: i64) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            // state, ppid, pgrp; zombies are already dead.
            fields.len() > 2 && fields[0] != "Z" && fields[2].parse::<i64>().ok() == Some(pgid)
        })
        .collect()
}

/// `agent_step_success_total` of this test's repo, by stepName, from the backend's exposition.
fn successes(serve: &Serve, repo: &str) -> Vec<(String, f64)> {
    let Some((200, text)) = serve.get("/metrics") else {
        return Vec::new();
    };
    let mut out: Vec<(String, f64)> = text
        .lines()
        .filter(|l| {
            l.starts_with("agent_step_success_total{") && l.contains(&format!("repo=\"{repo}\""))
        })
        .map(|l| {
            let step = l
                .split("stepName=\"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap();
            (
                step.to_string(),
                l.rsplit(' ').next().unwrap().parse().unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

#[test]
fn kill_dash_nine_then_resume_counts_each_step_once() {
    let sb = Sandbox::new();
    let serve = Serve::start(sb.dir.path());
    // Outside /tmp: every step has a private /tmp.
    let gate = common::dir_visible_to_steps();
    let repo = format!("test/resume-{}", std::process::id());
    let wf = sb.write(
        "resume.yaml",
        &format!(
            r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  name: resume-test
spec:
  entrypoint: main
  arguments:
    parameters:
    - {{name: repo, value: "{repo}"}}
    - {{name: pr, value: "7"}}
  templates:
  - name: main
    steps:
    - - {{name: prepare, template: prepare}}
    - - {{name: long, template: long}}
    - - {{name: finish, template: finish}}
  - name: prepare
    metadata: {{labels: {{agent: rex, step: prepare}}}}
    container: {{image: busybox, command: [echo, prepared]}}
  - name: long
    metadata: {{labels: {{agent: rex, step: long}}}}
    container:
      image: busybox
      command: [sh, -c, 'echo waiting; while [ ! -e {gate}/$SPAN_ID ]; do sleep 0.05; done; echo released']
  - name: finish
    metadata: {{labels: {{agent: rex, step: finish}}}}
    container: {{image: busybox, command: [echo, finished]}}
"#,
            gate = gate.path().display()
        ),
    );
    let run_cmd = |extra: &[&str]| {
        let mut cmd = sb.command();
        cmd.arg("run")
            .args(extra)
            .args(["-o", "json", "--state-dir"])
            .arg(sb.state_dir())
            .args(["--otlp-protocol", "grpc", "--otlp-endpoint"])
            .arg(&serve.grpc);
        cmd
    };
    let mut first = ChildGuard::new(
        run_cmd(&[wf.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let record_path = sb.state_dir().join("resume-test.json");
    let read_record =
        || -> Option<Value> { serde_json::from_slice(&std::fs::read(&record_path).ok()?).ok() };
    let node = |record: &Value, name: &str| -> Option<Value> {
        record["status"]["nodes"]
            .as_object()?
            .values()
            .find(|n| n["name"] == name)
            .cloned()
    };
    // The long step is running, its span started and the shim's child forked (the shim
    // prints its first line before it forks): kill -9 obsctl now.
    let before = poll("the long step running", WAIT, || {
        let record = read_record()?;
        let long = node(&record, "resume-test[1].long")?;
        let group = long["processGroup"].as_i64()?;
        (long["phase"] == "Running"
            && long["telemetry"].is_object()
            && group_members(group).len() >= 2)
            .then_some(record)
    });
    first.kill().unwrap();
    first.wait().unwrap();
    let prepare_before = node(&before, "resume-test[0].prepare").unwrap();
    assert_eq!(prepare_before["phase"], "Succeeded");
    let old_group = node(&before, "resume-test[1].long").unwrap()["processGroup"]
        .as_i64()
        .expect("the running step's process group is recorded");
    // obsctl's death took the shim (PDEATHSIG); the step it ran is orphaned but alive.
    assert!(
        !group_members(old_group).is_empty(),
        "the orphan should still run"
    );

    let resume = ChildGuard::new(
        run_cmd(&["--resume", "resume-test"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The new attempt runs with a new span; by then the orphan of the killed run is gone.
    let new_span = poll("the new attempt running", WAIT, || {
        let record = read_record()?;
        let long = node(&record, "resume-test[1].long")?;
        (long["telemetry"]["attempt"] == 1)
            .then(|| long["telemetry"]["spanId"].as_str().unwrap().to_string())
    });
    assert!(
        group_members(old_group).is_empty(),
        "the killed run's step still runs"
    );
    std::fs::write(gate.path().join(&new_span), b"").unwrap();
    let mut resume = resume;
    common::wait_with_deadline(&mut resume, WAIT);
    let resumed = RunResult::from(resume.into_inner().wait_with_output().unwrap());
    assert_eq!(resumed.code, 0, "{}", resumed.describe());
    assert_eq!(resumed.phase(), "Succeeded");
    let after = read_record().unwrap();
    assert_eq!(after["traceId"], before["traceId"]);
    assert_eq!(after["rootSpanId"], before["rootSpanId"]);
    // Finished before the kill: kept, not run again.
    assert_eq!(
        node(&after, "resume-test[0].prepare").unwrap(),
        prepare_before
    );
    let long = node(&after, "resume-test[1].long").unwrap();
    assert_eq!(long["phase"], "Succeeded");
    assert_eq!(long["telemetry"]["attempt"], 1, "{long:#}");
    assert_eq!(long["telemetry"]["traceId"], before["traceId"]);
    assert_eq!(resumed.result_of("@[1].long"), "waiting\nreleased");
    assert_eq!(
        node(&after, "resume-test[2].finish").unwrap()["phase"],
        "Succeeded"
    );

    // Every step succeeded exactly once, the interrupted one included (its interrupted attempt
    // counts as a failure, as a killed pod does).
    let expected = vec![
        ("finish".to_string(), 1.0),
        ("long".to_string(), 1.0),
        ("prepare".to_string(), 1.0),
    ];
    let counted = poll("three success counts", WAIT, || {
        let c = successes(&serve, &repo);
        (c.len() == 3).then_some(c)
    });
    assert_eq!(counted, expected);

    // Resuming a finished run runs nothing and reports it again.
    let again = RunResult::from(run_cmd(&["--resume", "resume-test"]).output().unwrap());
    assert_eq!(again.code, 0, "{}", again.describe());
    assert!(
        again.stderr.contains("already finished"),
        "{}",
        again.stderr
    );
    assert_eq!(read_record().unwrap(), after);

    // One trace: the root, and each step's span as its child, the interrupted attempt's too
    // (recorded from outside by the resumed run: its shim died with the killed one).
    let interrupted = long["interrupted"]
        .as_array()
        .expect("the interrupted attempt");
    assert_eq!(interrupted.len(), 1, "{long:#}");
    assert_eq!(interrupted[0]["attempt"], 0, "{long:#}");
    let interrupted_span =
        obsctl::otlp::SpanId::from_hex(interrupted[0]["spanId"].as_str().unwrap()).unwrap();
    let trace = before["traceId"].as_str().unwrap().to_string();
    let spans = poll("root and four step spans", WAIT, || {
        let spans = serve.spans(&trace);
        (spans.len() >= 5).then_some(spans)
    });
    assert!(
        spans
            .iter()
            .any(|s| s["spanId"].as_str() == Some(interrupted_span.to_base64().as_str())),
        "{spans:#?}"
    );
    let root = obsctl::otlp::SpanId::from_hex(after["rootSpanId"].as_str().unwrap()).unwrap();
    let children = spans
        .iter()
        .filter(|s| s["parentSpanId"].as_str() == Some(root.to_base64().as_str()))
        .count();
    assert_eq!(children, 4, "{spans:#?}");
}

#[test]
fn sigterm_stops_the_run_and_finishes_the_record() {
    let sb = Sandbox::new();
    let wf = repo_root().join("workflows/long-step.yaml");
    let mut cmd = sb.command();
    cmd.arg("run")
        .arg(&wf)
        .args([
            "--no-shim",
            "-o",
            "json",
            "-p",
            "seconds=120",
            "--state-dir",
        ])
        .arg(sb.state_dir())
        .args(["--otlp-endpoint", &sb.dead_endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let run = ChildGuard::new(cmd.spawn().unwrap());
    let long = poll("the long step running", WAIT, || {
        let entry = std::fs::read_dir(sb.state_dir())
            .ok()?
            .flatten()
            .find(|e| e.path().extension().is_some_and(|x| x == "json"))?;
        let record: Value = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
        record["status"]["nodes"]
            .as_object()?
            .values()
            .find(|n| {
                n["displayName"] == "long" && n["phase"] == "Running" && n["processGroup"].is_i64()
            })
            .cloned()
    });
    let pid = nix::unistd::Pid::from_raw(run.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = RunResult::from(run.into_inner().wait_with_output().unwrap());
    assert_eq!(out.code, 1, "{}", out.describe());
    assert_eq!(out.phase(), "Failed");
    let stopped = out.node("@[1].long");
    assert_eq!(stopped["phase"], "Failed");
    assert_eq!(stopped["message"], obsctl::workflow::engine::STOPPED);
    assert_eq!(stopped["outputs"]["exitCode"], "143");
    assert!(
        !out.nodes()
            .iter()
            .any(|(name, _, _)| name.contains("finish")),
        "nothing starts after a stop: {:?}",
        out.nodes()
    );
    assert!(group_members(long["processGroup"].as_i64().unwrap()).is_empty());
    let record: Value = serde_json::from_slice(
        &std::fs::read(sb.state_dir().join(format!("{}.json", out.name()))).unwrap(),
    )
    .unwrap();
    assert_eq!(record["status"]["phase"], "Failed");
    assert!(record["status"]["finishedAt"].is_string());
}
