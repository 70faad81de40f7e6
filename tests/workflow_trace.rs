//! A real run through the shim into the embedded backend (`obsctl serve`): the agent pipeline
//! arrives as one trace, the root span emitted by obsctl and every step span its child, with
//! the ids the run record holds.

mod common;

use std::time::Duration;

use common::workflow::{RunResult, Sandbox, repo_root};
use common::{Serve, poll};
use obsctl::otlp::SpanId;
use serde_json::Value;

fn attr(span: &Value, key: &str) -> Option<String> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .and_then(|a| a["value"]["stringValue"].as_str().map(str::to_string))
}

fn span_id(v: &Value) -> Option<String> {
    let text = v.as_str().filter(|s| !s.is_empty())?;
    Some(SpanId::from_base64(text).unwrap().to_hex())
}

#[test]
fn agent_pipeline_is_one_trace_under_the_root_span() {
    let sb = Sandbox::new();
    let serve = Serve::start(sb.dir.path());
    let out = sb
        .command()
        .arg("run")
        .arg(repo_root().join("workflows/agent-pipeline.yaml"))
        .args(["-o", "json", "-p", "repo=test/trace", "--state-dir"])
        .arg(sb.state_dir())
        .args(["--otlp-protocol", "grpc", "--otlp-endpoint"])
        .arg(&serve.grpc)
        .output()
        .unwrap();
    let run = RunResult::from(out);
    assert_eq!(run.code, 0, "{}", run.describe());
    assert!(
        !run.stderr.contains("root span not delivered"),
        "{}",
        run.stderr
    );
    let record: Value = serde_json::from_slice(
        &std::fs::read(sb.state_dir().join(format!("{}.json", run.name()))).unwrap(),
    )
    .unwrap();
    let trace_id = record["traceId"].as_str().unwrap().to_string();
    let root = record["rootSpanId"].as_str().unwrap().to_string();
    // The sample declares taskId empty: `obsctl run` gave this run a fresh one.
    let task_id = record["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "taskId")
        .and_then(|p| p["value"].as_str())
        .unwrap()
        .to_string();
    assert!(task_id.starts_with("task-"), "{task_id}");

    let spans = poll("root and 4 step spans", Duration::from_secs(30), || {
        let spans = serve.spans(&trace_id);
        (spans.len() >= 5).then_some(spans)
    });
    assert_eq!(spans.len(), 5, "{spans:#?}");
    let root_span = spans
        .iter()
        .find(|s| span_id(&s["spanId"]).as_deref() == Some(root.as_str()))
        .expect("the root span obsctl emitted");
    assert_eq!(span_id(&root_span["parentSpanId"]), None);
    assert_eq!(attr(root_span, "workflowName").as_deref(), Some(run.name()));

    let mut names = Vec::new();
    for node in record["status"]["nodes"].as_object().unwrap().values() {
        if node["type"] != "Pod" {
            continue;
        }
        let tel = &node["telemetry"];
        assert_eq!(tel["traceId"], trace_id.as_str(), "{node:#}");
        let span = spans
            .iter()
            .find(|s| span_id(&s["spanId"]).as_deref() == tel["spanId"].as_str())
            .unwrap_or_else(|| panic!("no span for {node:#}"));
        assert_eq!(
            span_id(&span["parentSpanId"]).as_deref(),
            Some(root.as_str())
        );
        assert_eq!(attr(span, "nodeId").as_deref(), node["id"].as_str());
        assert_eq!(attr(span, "workflowName").as_deref(), Some(run.name()));
        assert_eq!(attr(span, "repo").as_deref(), Some("test/trace"));
        assert_eq!(attr(span, "prNumber").as_deref(), Some("42"));
        assert_eq!(attr(span, "taskId").as_deref(), Some(task_id.as_str()));
        names.push(span["name"].as_str().unwrap().to_string());
    }
    names.sort();
    assert_eq!(
        names,
        [
            "clippy/verify",
            "deploy/preview",
            "rex/implement",
            "tests/verify"
        ]
    );
    // The shim's first line is not part of the step's output.
    assert_eq!(
        run.result_of("@.implement"),
        format!(
            "rex: implementing task {task_id} on test/trace\nrex: committed 3f2c1e0d9b8a7f6e5d4c3b2a190807f6e5d4c3b2\nrex: opened pull request #42"
        )
    );
}
