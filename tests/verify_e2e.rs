//! End to end with every real part obsctl has: `obsctl serve` (the embedded backend), `obsctl run`
//! executing a workflow whose steps are wrapped by `obsctl shim` (real OTLP), then `obsctl
//! verify` and `obsctl trace` reading it all back through the Tempo-, Prometheus- and Loki-shaped
//! APIs. No mocks.

mod common;

use std::path::Path;

use common::serve::ServeHome as Stack;
use common::workflow::require_private_tmp;

const WORKFLOW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/workflows/verify-pipeline.yaml"
);

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn check<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == name)
        .unwrap()
}

fn state_arg(dir: &Path) -> String {
    dir.display().to_string()
}

#[test]
fn a_real_run_through_serve_and_the_shim_verifies_clean() {
    if !require_private_tmp("a_real_run_through_serve_and_the_shim_verifies_clean") {
        return;
    }
    let serve = Stack::start();
    serve.run_workflow(WORKFLOW, &[]);
    let state = state_arg(&serve.state_dir());
    let out = serve
        .obsctl(&[
            "verify",
            "--state-dir",
            &state,
            "--output",
            "json",
            "--timeout",
            "20s",
        ])
        .output()
        .unwrap();
    let report = json(&out);
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["passed"], true);
    // implement, clippy, tests twice (fail then pass), deploy.
    let coverage = check(&report, "span-coverage");
    assert_eq!(
        (coverage["expected"].as_u64(), coverage["found"].as_u64()),
        (Some(5), Some(5))
    );
    let parity = check(&report, "counter-parity");
    // 4 successes + 1 failure in the counters, 5 in the histogram's _count.
    assert_eq!(parity["expected"], 10, "{parity:#}");
    assert_eq!(parity["found"], 10);
    let logs = check(&report, "log-correlation");
    assert_eq!(logs["found"], 5);
    assert!(check(&report, "exemplars")["found"].as_u64().unwrap() >= 1);

    let out = serve
        .obsctl(&["trace", "T-e2e", "--logs", "--state-dir", &state])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let span_lines: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("  ") && l.contains(" ms  "))
        .collect();
    assert_eq!(span_lines.len(), 5, "{text}");
    let failed: Vec<_> = span_lines
        .iter()
        .filter(|l| l.contains(" ERROR "))
        .collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(failed[0].trim_start().starts_with("tests/unit"), "{text}");
    assert!(failed[0].contains("exit=1"), "{text}");
    assert!(
        text.contains("tests: 1 failed"),
        "the failing attempt's stderr line: {text}"
    );
    assert!(text.contains("tests: 12 passed"), "{text}");
    assert!(text.contains("  prHtmlUrl "), "{text}");
    assert!(
        text.contains("https://github.com/acme/widgets/pull/42"),
        "{text}"
    );
}

#[test]
fn a_run_without_the_shim_fails_span_coverage_for_every_step() {
    if !require_private_tmp("a_run_without_the_shim_fails_span_coverage_for_every_step") {
        return;
    }
    let serve = Stack::start();
    serve.run_workflow(WORKFLOW, &["--no-shim"]);
    let state = state_arg(&serve.state_dir());
    let out = serve
        .obsctl(&[
            "verify",
            "--state-dir",
            &state,
            "--output",
            "json",
            "--timeout",
            "1s",
        ])
        .output()
        .unwrap();
    let report = json(&out);
    assert_eq!(out.status.code(), Some(2), "{report:#}");
    let coverage = check(&report, "span-coverage");
    assert_eq!(coverage["passed"], false, "{coverage:#}");
    assert_eq!(
        (coverage["expected"].as_u64(), coverage["found"].as_u64()),
        (Some(5), Some(0))
    );
    let missing = coverage["missing"].as_array().unwrap();
    assert!(
        missing
            .iter()
            .all(|m| m.as_str().unwrap().contains("ran without telemetry")),
        "{missing:?}"
    );
}

/// Issue 16: a backend with history. The bundled pipeline runs twice against one `obsctl serve`,
/// the second time from a fresh state directory (another CI job) and for the same task (a
/// re-run): the counters then hold both runs, and each verify must compare only what its own
/// run added.
#[test]
fn the_same_pipeline_twice_against_one_backend_verifies_both_times() {
    if !require_private_tmp("the_same_pipeline_twice_against_one_backend_verifies_both_times") {
        return;
    }
    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/agent-pipeline.yaml");
    let serve = Stack::start();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let mut task_id = String::new();
    for (round, state) in [serve.state_dir(), serve.home.path().join("runs-2")]
        .iter()
        .enumerate()
    {
        let state = state_arg(state);
        let mut args = vec!["run", pipeline, "-o", "json", "--state-dir", &state];
        let given = format!("taskId={task_id}");
        if round > 0 {
            args.extend(["-p", &given]);
        }
        let out = serve.obsctl(&args).output().unwrap();
        assert!(
            out.status.success(),
            "round {round}: obsctl run failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let run = json(&out);
        let name = run["metadata"]["name"].as_str().unwrap().to_string();
        let record: serde_json::Value = serde_json::from_slice(
            &std::fs::read(Path::new(&state).join(format!("{name}.json"))).unwrap(),
        )
        .unwrap();
        let this_task = record["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "taskId")
            .and_then(|p| p["value"].as_str())
            .unwrap()
            .to_string();
        if round == 0 {
            // The backend answers a query at a past time with the values then: nothing before
            // the first run, its counts now.
            let series = |time: Option<f64>| {
                let at = time.map_or(String::new(), |t| format!("&time={t:.3}"));
                let (status, body) = serve
                    .serve
                    .get(&format!("/api/v1/query?query=agent_step_success_total{at}"))
                    .unwrap();
                assert_eq!(status, 200, "{body}");
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                body["data"]["result"].as_array().unwrap().len()
            };
            assert_eq!(series(Some(before)), 0);
            assert_eq!(series(None), 4, "implement, clippy, tests, deploy");
            // The sample declares taskId empty: the run got a fresh one.
            assert!(this_task.starts_with("task-"), "{this_task}");
            task_id = this_task;
        } else {
            assert_eq!(this_task, task_id);
        }

        let out = serve
            .obsctl(&[
                "verify",
                "--state-dir",
                &state,
                "--output",
                "json",
                "--timeout",
                "20s",
            ])
            .output()
            .unwrap();
        let report = json(&out);
        assert_eq!(out.status.code(), Some(0), "round {round}: {report:#}");
        // implement, clippy, tests, deploy: 4 successes in the counters, 4 in the histogram.
        let parity = check(&report, "counter-parity");
        assert_eq!(
            (parity["expected"].as_u64(), parity["found"].as_u64()),
            (Some(8), Some(8)),
            "round {round}: {parity:#}"
        );
        assert_eq!(report["comparedRuns"], serde_json::json!([name]));
        assert_eq!(check(&report, "workflow-outputs")["status"], "passed");
    }
}

/// Seed 000 subtask 3's baseline variables exactly as the seed lists them, in the environment
/// `obsctl run` and its steps inherit, `OTEL_LOGS_EXPORTER=none` included: the step logs still
/// arrive (obsctl's own `OBSCTL_STEP_LOGS` governs them) and `verify` passes log correlation.
#[test]
fn the_seeds_baseline_environment_keeps_log_correlation() {
    if !require_private_tmp("the_seeds_baseline_environment_keeps_log_correlation") {
        return;
    }
    let serve = Stack::start();
    let state = serve.state_dir();
    let out = serve
        .obsctl(&["run", WORKFLOW, "--state-dir", state.to_str().unwrap()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &serve.serve.grpc)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
        .env("OTEL_SERVICE_NAME", "agent-steps")
        .env(
            "OTEL_RESOURCE_ATTRIBUTES",
            "service.name=agent-steps,deployment.environment=dev,k8s.namespace=default",
        )
        .env("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
        .env("OTEL_TRACES_SAMPLER_ARG", "0.5")
        .env("OTEL_METRICS_EXPORTER", "otlp")
        .env("OTEL_LOGS_EXPORTER", "none")
        .env("OTEL_EXPORTER_OTLP_TIMEOUT", "10000")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = serve
        .obsctl(&[
            "verify",
            "--state-dir",
            &state_arg(&state),
            "--output",
            "json",
            "--timeout",
            "20s",
        ])
        .output()
        .unwrap();
    let report = json(&out);
    let logs = check(&report, "log-correlation");
    assert_eq!(logs["passed"], true, "{logs:#}");
    assert_eq!(logs["found"], 5, "{logs:#}");
    assert_eq!(
        check(&report, "counter-parity")["passed"],
        true,
        "{report:#}"
    );
}

/// `--sampler-ratio 0`: the run is not sampled as a whole (no step span, no root span), its
/// counters and logs are complete, and `verify` says the run was not sampled instead of failing
/// its coverage on missing spans.
#[test]
fn an_unsampled_run_has_no_spans_and_exact_counters() {
    if !require_private_tmp("an_unsampled_run_has_no_spans_and_exact_counters") {
        return;
    }
    let serve = Stack::start();
    serve.run_workflow(WORKFLOW, &["--sampler-ratio", "0"]);
    let out = serve
        .obsctl(&[
            "verify",
            "--state-dir",
            &state_arg(&serve.state_dir()),
            "--output",
            "json",
            "--timeout",
            "20s",
        ])
        .output()
        .unwrap();
    let report = json(&out);
    let coverage = check(&report, "span-coverage");
    assert!(
        coverage["summary"]
            .as_str()
            .unwrap()
            .contains("1 run(s) not sampled (5 step attempts without spans by design)"),
        "{coverage:#}"
    );
    assert_eq!(coverage["expected"], 0, "{coverage:#}");
    assert_eq!(
        check(&report, "counter-parity")["passed"],
        true,
        "{report:#}"
    );
    assert_eq!(check(&report, "log-correlation")["found"], 5, "{report:#}");
    // Nothing of the run reached the trace backend.
    let (status, search) = serve.serve.get("/api/search?tags=taskId%3DT-e2e").unwrap();
    assert_eq!(status, 200);
    let search: serde_json::Value = serde_json::from_str(&search).unwrap();
    assert_eq!(
        search["traces"].as_array().map(Vec::len),
        Some(0),
        "{search}"
    );
}
