//! The stack's alert rules can fire: `promtool test rules` unit tests (failure rate at 10 % and
//! silent at 0, duration over budget, cardinality on a label leak) against the rules obsctl
//! embeds, and end to end: a real Prometheus evaluating those rules scrapes `obsctl serve` (the
//! aggregator) while real failing shim steps run, until `ALERTS{alertname="AgentStepFailureRate"}`
//! is pending. Under CI=true a missing promtool or prometheus fails the test.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::shim::obsctl;
use common::*;
use obsctl::checks::metrics::DEFAULT_SERIES_BUDGET;
use obsctl::stack::files;

const RULES: &str = "prometheus/rules/agent-steps.yml";
const WAIT: Duration = Duration::from_secs(60);

/// Runs `promtool test rules FILE` in `dir`; panics with promtool's report on failure.
fn promtool_test(promtool: &Path, dir: &Path, file: &str) -> String {
    let out = Command::new(promtool)
        .current_dir(dir)
        .args(["test", "rules", file])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool test rules {file}:\n{text}");
    text
}

/// The embedded stack files written out, as the tests' rule_files paths expect them.
fn stack_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    files::write_all(dir.path()).unwrap();
    dir
}

#[test]
fn promtool_unit_tests_pass_for_failure_rate_and_duration() {
    let Some(promtool) = require_tool(
        "promtool",
        "promtool_unit_tests_pass_for_failure_rate_and_duration",
    ) else {
        return;
    };
    let dir = stack_dir();
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/prometheus/agent-steps.test.yml"
        ),
        dir.path().join("agent-steps.test.yml"),
    )
    .unwrap();
    let report = promtool_test(&promtool, dir.path(), "agent-steps.test.yml");
    assert!(report.contains("SUCCESS"), "{report}");
}

/// A `promtool test rules` file with `series` distinct `taskId` values leaked onto the fail
/// counter, expecting the cardinality alert to fire (`fires`) or not after its `for: 10m`.
fn cardinality_test(series: u64, fires: bool) -> String {
    let mut out = format!(
        "rule_files:\n  - {RULES}\nevaluation_interval: 1m\ntests:\n  - interval: 1m\n    input_series:\n"
    );
    for i in 0..series {
        out += &format!(
            "      - series: 'agent_step_fail_total{{agent=\"a\",repo=\"o/r\",prNumber=\"1\",stepName=\"s\",taskId=\"leak-{i}\"}}'\n        values: '1x15'\n"
        );
    }
    out += "    alert_rule_test:\n      - eval_time: 12m\n        alertname: AgentStepMetricsHighCardinality\n";
    if fires {
        out += &format!(
            "        exp_alerts:\n          - exp_labels:\n              severity: warning\n              component: observability\n            exp_annotations:\n              summary: \"Too many series for agent_step_fail_total\"\n              description: \"agent_step_fail_total has {series} series (budget {DEFAULT_SERIES_BUDGET}): a label took unbounded values (a per-run id, a raw command line); find it with `count by (LABEL) (...)` and drop it from the metric attributes.\"\n"
        );
    } else {
        out += "        exp_alerts: []\n";
    }
    out
}

#[test]
fn the_cardinality_alert_fires_on_a_label_leak_and_not_at_its_budget() {
    let Some(promtool) = require_tool(
        "promtool",
        "the_cardinality_alert_fires_on_a_label_leak_and_not_at_its_budget",
    ) else {
        return;
    };
    let dir = stack_dir();
    for (name, series, fires) in [
        ("at-budget.test.yml", DEFAULT_SERIES_BUDGET, false),
        ("leak.test.yml", DEFAULT_SERIES_BUDGET + 1, true),
    ] {
        std::fs::write(dir.path().join(name), cardinality_test(series, fires)).unwrap();
        promtool_test(&promtool, dir.path(), name);
    }
}

#[test]
fn the_alert_budget_is_verifys_series_budget() {
    let rules: serde_json::Value = serde_norway::from_str(files::get(RULES).unwrap()).unwrap();
    let rule = rules["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["alert"] == "AgentStepMetricsHighCardinality")
        .unwrap();
    let expr = rule["expr"].as_str().unwrap().trim();
    let threshold = expr.rsplit("> ").next().unwrap().trim();
    assert_eq!(
        threshold,
        DEFAULT_SERIES_BUDGET.to_string(),
        "the alert's budget and `obsctl verify --series-budget` agree ({expr})"
    );
}

/// Runs `n` real shim steps of agent `agent` that exit with `code`, exporting to `serve`.
fn steps(serve: &Serve, spool: &Path, agent: &str, n: usize, code: i32) {
    for _ in 0..n {
        let mut env = serve.env("grpc");
        env.extend([
            ("AGENT", agent.to_string()),
            ("STEP", "verify".to_string()),
            ("REPO", "org/alerts".to_string()),
            ("PR_NUMBER", "10".to_string()),
            ("TASK_ID", "task-alert".to_string()),
        ]);
        let out = obsctl("shim", spool, &env)
            .args(["--", "sh", "-c", &format!("exit {code}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code));
    }
}

#[test]
fn failing_shim_steps_make_the_failure_rate_alert_pending_on_a_real_prometheus() {
    let test = "failing_shim_steps_make_the_failure_rate_alert_pending_on_a_real_prometheus";
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    let Some(prometheus) = Prometheus::start_with_stack_rules(test, serve.api_addr()) else {
        return;
    };
    poll("prometheus scrapes the aggregator", WAIT, || {
        (prometheus.value("up{job=\"obsctl\"}") == Some(1.0)).then_some(())
    });
    let spool = tempfile::tempdir().unwrap();
    // Two batches, each seen by a scrape: rate() needs the counter to grow between samples.
    steps(&serve, spool.path(), "breaker", 3, 1);
    steps(&serve, spool.path(), "steady", 3, 0);
    poll("the first batch is scraped", WAIT, || {
        (prometheus.value("sum(agent_step_fail_total)") == Some(3.0)).then_some(())
    });
    steps(&serve, spool.path(), "breaker", 4, 1);
    steps(&serve, spool.path(), "steady", 4, 0);
    poll("the second batch is scraped", WAIT, || {
        (prometheus.value("sum(agent_step_fail_total)") == Some(7.0)).then_some(())
    });
    // Exact counts and one series per label set, whatever the number of processes.
    assert_eq!(prometheus.value("sum(agent_step_success_total)"), Some(7.0));
    assert_eq!(
        prometheus.value("sum(agent_step_duration_ms_count)"),
        Some(14.0)
    );
    assert_eq!(prometheus.value("count(agent_step_fail_total)"), Some(2.0));
    assert_eq!(
        prometheus.value("count(agent_step_duration_ms_count)"),
        Some(2.0),
        "one histogram series per (agent, outcome)"
    );

    let state = poll("ALERTS{alertname=\"AgentStepFailureRate\"}", WAIT, || {
        let (_, v) = get_json(
            &format!("{}/api/v1/query", prometheus.url),
            &[("query", "ALERTS{alertname=\"AgentStepFailureRate\"}")],
        );
        let result = v["data"]["result"].as_array()?.clone();
        (!result.is_empty()).then_some(result)
    });
    assert_eq!(state.len(), 1, "only the failing agent: {state:?}");
    assert_eq!(state[0]["metric"]["agent"], "breaker");
    let alertstate = state[0]["metric"]["alertstate"].as_str().unwrap();
    assert!(["pending", "firing"].contains(&alertstate), "{alertstate}");
}
