//! `obsctl run --argo-server` against a stand-in Argo Server (`tests/common/argo.rs`): no Argo
//! Server or Kubernetes can run here, so a Python process serves the endpoints obsctl uses as
//! `../shared/argo/swagger.json` defines them, validating every request body and every workflow,
//! and runs each workflow with obsctl's own executor and shim. Telemetry goes to the real
//! `obsctl serve`, and `obsctl verify` judges the remote run from its record.

mod common;

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use common::argo::{ArgoStandIn, NAMESPACE, READ_ONLY_TOKEN, TOKEN};
use common::serve::ServeHome;
use common::workflow::{Sandbox, repo_root, require_private_tmp};
use common::{ChildGuard, poll, wait_with_deadline};

const PIPELINE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/workflows/verify-pipeline.yaml"
);

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn records(state: &Path) -> Vec<Value> {
    std::fs::read_dir(state)
        .map(|dir| {
            dir.map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "json"))
                .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// A remote run of `file` with `token`, its telemetry sent to `stack`, JSON on stdout.
fn remote_run(stack: &ServeHome, argo: &ArgoStandIn, file: &Path, token: Option<&str>) -> Output {
    let mut cmd = argo.run_command(stack.obsctl(&[]), file, &stack.state_dir(), NAMESPACE);
    cmd.args(["-o", "json", "--otlp-endpoint", &stack.serve.grpc]);
    if let Some(token) = token {
        cmd.env("ARGO_TOKEN", format!("Bearer {token}"));
    }
    cmd.output().unwrap()
}

fn pod_nodes(run: &Value) -> Vec<(String, String)> {
    let mut nodes: Vec<(String, String)> = run["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n["type"] == "Pod")
        .map(|n| {
            (
                n["id"].as_str().unwrap().to_string(),
                n["phase"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    nodes.sort();
    nodes
}

/// The run as the stand-in's executor recorded it, and as `obsctl run --argo-server` printed
/// and recorded it: the same node ids and phases; each step's span reached the backend, so
/// `obsctl verify` passes on the remote run's record.
fn assert_recorded_and_verified(stack: &ServeHome, out: &Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", text(out));
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(printed["status"]["phase"], "Succeeded");
    let recorded = records(&stack.state_dir());
    assert_eq!(recorded.len(), 1, "one record for one run: {recorded:?}");
    let record = &recorded[0];
    assert_eq!(record["name"], printed["metadata"]["name"]);
    assert_eq!(record["namespace"], NAMESPACE);
    let nodes = pod_nodes(&printed);
    assert_eq!(
        nodes.len(),
        5,
        "implement, clippy, two test attempts, deploy: {nodes:?}"
    );
    let record_nodes = pod_nodes(record);
    assert_eq!(record_nodes, nodes);
    let state = stack.state_dir();
    let verify = stack
        .obsctl(&["verify", "--run", record["name"].as_str().unwrap()])
        .args(["--state-dir", state.to_str().unwrap(), "--output", "json"])
        .args(["--timeout", "20s"])
        .output()
        .unwrap();
    assert_eq!(verify.status.code(), Some(0), "{}", text(&verify));
    let all = format!("{}{}", text(out), serde_json::to_string(record).unwrap());
    assert!(
        !all.contains(TOKEN),
        "the token is never printed or recorded"
    );
    printed
}

#[test]
fn a_workflow_submitted_to_argo_is_followed_recorded_and_verifies() {
    const TEST: &str = "a_workflow_submitted_to_argo_is_followed_recorded_and_verifies";
    if !require_private_tmp(TEST) {
        return;
    }
    let Some(argo) = ArgoStandIn::start(TEST, 0) else {
        return;
    };
    let stack = ServeHome::start();
    let out = remote_run(&stack, &argo, Path::new(PIPELINE), Some(TOKEN));
    let printed = assert_recorded_and_verified(&stack, &out);
    assert_eq!(argo.count("POST", "/api/v1/workflows/ci"), 1);
    assert!(
        argo.count("GET", "workflow-events") >= 1,
        "{:?}",
        argo.requests()
    );
    assert_eq!(argo.count("PUT", "/stop"), 0);
    let runs = stack
        .obsctl(&["runs", "--state-dir", stack.state_dir().to_str().unwrap()])
        .output()
        .unwrap();
    let name = printed["metadata"]["name"].as_str().unwrap();
    assert!(
        String::from_utf8_lossy(&runs.stdout).contains(name),
        "{}",
        text(&runs)
    );
    // The same workflow judged from the server alone: an empty state directory.
    let empty = tempfile::tempdir().unwrap();
    let from_argo = |workflow: &str| {
        stack
            .obsctl(&["verify", "--argo-server", &argo.url, "--workflow", workflow])
            .args([
                "--namespace",
                NAMESPACE,
                "--output",
                "json",
                "--timeout",
                "10s",
            ])
            .arg("--state-dir")
            .arg(empty.path())
            .env("ARGO_TOKEN", TOKEN)
            .output()
            .unwrap()
    };
    let verified = from_argo(name);
    assert_eq!(verified.status.code(), Some(0), "{}", text(&verified));
    let report: Value = serde_json::from_slice(&verified.stdout).unwrap();
    assert_eq!(report["passed"], true);
    let trace = stack
        .obsctl(&[
            "trace",
            "T-e2e",
            "--argo-server",
            &argo.url,
            "--workflow",
            name,
        ])
        .args(["--namespace", NAMESPACE, "--json", "--state-dir"])
        .arg(empty.path())
        .env("ARGO_TOKEN", TOKEN)
        .output()
        .unwrap();
    assert_eq!(trace.status.code(), Some(0), "{}", text(&trace));
    let record_trace = records(&stack.state_dir())[0]["traceId"].clone();
    assert!(
        String::from_utf8_lossy(&trace.stdout).contains(record_trace.as_str().unwrap()),
        "the task's trace is the remote run's: {}",
        text(&trace)
    );
    let missing = from_argo("no-such-workflow");
    assert_eq!(missing.status.code(), Some(1), "{}", text(&missing));
    assert!(text(&missing).contains("404"), "{}", text(&missing));
}

#[test]
fn the_server_going_away_mid_watch_is_reconnected_without_a_second_record() {
    const TEST: &str = "the_server_going_away_mid_watch_is_reconnected_without_a_second_record";
    if !require_private_tmp(TEST) {
        return;
    }
    // The outage comes after the watch's first line (the workflow as it is when the watch
    // starts); the stand-in holds the final phase back until it is up again.
    let Some(argo) = ArgoStandIn::start(TEST, 1) else {
        return;
    };
    let stack = ServeHome::start();
    let out = remote_run(&stack, &argo, Path::new(PIPELINE), Some(TOKEN));
    assert_recorded_and_verified(&stack, &out);
    let requests = argo.requests();
    let events: Vec<&str> = requests
        .iter()
        .filter_map(|r| r["event"].as_str())
        .collect();
    assert_eq!(events, ["outage", "back"], "the stand-in went away once");
    let back = requests.iter().position(|r| r["event"] == "back").unwrap();
    assert!(
        requests[back..].iter().any(|r| r["method"] == "GET"),
        "the workflow was read again once the server was back: {requests:?}"
    );
}

/// One refused submission: exit code 3 when the server refuses us, 2 when it refuses our input.
struct Refusal<'a> {
    file: &'a Path,
    token: Option<&'a str>,
    namespace: &'a str,
    code: i32,
    said: &'a [&'a str],
}

#[test]
fn refusals_name_their_cause_and_record_nothing() {
    const TEST: &str = "refusals_name_their_cause_and_record_nothing";
    let Some(argo) = ArgoStandIn::start(TEST, 0) else {
        return;
    };
    let sandbox = Sandbox::new();
    let lint_rejected = sandbox.write(
        "undefined-template.yaml",
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: bad-\n\
         spec:\n  entrypoint: main\n  templates:\n  - name: main\n    steps:\n    - - name: a\n\
         \x20       template: nowhere\n",
    );
    let pipeline = Path::new(PIPELINE);
    let case = |file, token, namespace, code, said| Refusal {
        file,
        token,
        namespace,
        code,
        said,
    };
    let cases = [
        case(
            pipeline,
            None,
            NAMESPACE,
            3,
            &["401 Unauthorized", "no token"],
        ),
        case(
            pipeline,
            Some("v2:wrong"),
            NAMESPACE,
            3,
            &["401 Unauthorized", "token not valid"],
        ),
        case(
            pipeline,
            Some(READ_ONLY_TOKEN),
            NAMESPACE,
            3,
            &["403 Forbidden", "cannot create"],
        ),
        case(
            pipeline,
            Some(TOKEN),
            "nope",
            2,
            &["404", "namespaces \"nope\" not found"],
        ),
        case(
            &lint_rejected,
            Some(TOKEN),
            NAMESPACE,
            2,
            &["400", "template name 'nowhere' undefined"],
        ),
    ];
    for Refusal {
        file,
        token,
        namespace,
        code,
        said: expected,
    } in cases
    {
        let state = sandbox.state_dir();
        let mut cmd = argo.run_command(sandbox.command(), file, &state, namespace);
        if let Some(token) = token {
            cmd.env("ARGO_TOKEN", token);
        }
        let out = cmd.output().unwrap();
        let said = text(&out);
        assert_eq!(out.status.code(), Some(code), "{file:?} {token:?}: {said}");
        for part in expected {
            assert!(
                said.contains(part),
                "{token:?} {namespace:?}: {part:?} in {said}"
            );
        }
        if let Some(token) = token {
            assert!(!said.contains(token), "the token is never printed: {said}");
        }
        assert!(records(&state).is_empty(), "nothing recorded: {said}");
    }
}

#[test]
fn ctrl_c_stops_the_workflow_on_the_server() {
    const TEST: &str = "ctrl_c_stops_the_workflow_on_the_server";
    let Some(argo) = ArgoStandIn::start(TEST, 0) else {
        return;
    };
    let sandbox = Sandbox::new();
    let state = sandbox.state_dir();
    let mut cmd = argo.run_command(
        sandbox.command(),
        &repo_root().join("workflows/long-step.yaml"),
        &state,
        NAMESPACE,
    );
    cmd.args(["-p", "seconds=120", "-o", "json"])
        .args(["--otlp-endpoint", &sandbox.dead_endpoint])
        .env("ARGO_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = ChildGuard::new(cmd.spawn().unwrap());
    poll(
        "the long step running on the server",
        Duration::from_secs(30),
        || {
            records(&state).first().and_then(|r| {
                r["status"]["nodes"]
                    .as_object()?
                    .values()
                    .any(|n| n["displayName"] == "long" && n["phase"] == "Running")
                    .then_some(())
            })
        },
    );
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    let status = wait_with_deadline(&mut child, Duration::from_secs(30));
    let out = child.into_inner().wait_with_output().unwrap();
    let said = text(&out);
    assert_eq!(status.code(), Some(1), "{said}");
    assert!(said.contains("stopping workflow"), "{said}");
    assert_eq!(argo.count("PUT", "/stop"), 1, "{:?}", argo.requests());
    let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let phase = printed["status"]["phase"].as_str().unwrap();
    assert!(matches!(phase, "Failed" | "Error"), "{phase}");
    let long = printed["status"]["nodes"]
        .as_object()
        .unwrap()
        .values()
        .find(|n| n["displayName"] == "long")
        .unwrap();
    assert_ne!(long["phase"], "Succeeded", "the long step was stopped");
    assert_eq!(records(&state).len(), 1);
}

/// The Argo Server over https with a certificate from a CA the system does not trust: refused
/// and named by default (nothing submitted), accepted only with ARGO_INSECURE_SKIP_VERIFY.
#[test]
fn https_is_verified_unless_skipping_is_asked_for() {
    const TEST: &str = "https_is_verified_unless_skipping_is_asked_for";
    let pki = common::tls::Pki::generate();
    let Some(argo) = ArgoStandIn::start_tls(TEST, &pki.path("server.pem"), &pki.path("server.key"))
    else {
        return;
    };
    let sandbox = Sandbox::new();
    let state = sandbox.state_dir();
    let run = |skip: bool| {
        let mut cmd = argo.run_command(
            sandbox.command(),
            &repo_root().join("workflows/long-step.yaml"),
            &state,
            NAMESPACE,
        );
        cmd.args(["-p", "seconds=1", "-o", "json"])
            .args(["--otlp-endpoint", &sandbox.dead_endpoint])
            .env("ARGO_TOKEN", TOKEN);
        if skip {
            cmd.env("ARGO_INSECURE_SKIP_VERIFY", "true");
        }
        cmd.output().unwrap()
    };
    let refused = run(false);
    let said = text(&refused);
    assert!(argo.url.starts_with("https://"));
    assert_eq!(refused.status.code(), Some(3), "{said}");
    assert!(said.contains("unknown CA"), "{said}");
    assert_eq!(
        argo.count("POST", "/api/v1/workflows"),
        0,
        "nothing submitted"
    );
    let skipped = run(true);
    let said = text(&skipped);
    assert_eq!(skipped.status.code(), Some(0), "{said}");
    assert!(said.contains("certificate is not checked"), "{said}");
    assert_eq!(argo.count("POST", "/api/v1/workflows"), 1);
}
