//! Static checks of the `stack/` files obsctl mounts: Prometheus config and rules through the
//! real `promtool`, every dashboard query run against a real Prometheus holding data from real shim
//! steps (through `obsctl serve`, the aggregator),
//! datasource uids, and the collector's pipelines parsed into typed structs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::*;
use obsctl::stack::definition::{Component, Port};
use obsctl::stack::files;
use serde::Deserialize;
use serde_json::Value;

fn file(path: &str) -> &'static str {
    files::get(path).unwrap_or_else(|| panic!("{path} is embedded"))
}

fn yaml<T: serde::de::DeserializeOwned>(path: &str) -> T {
    serde_norway::from_str(file(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn promtool_accepts_the_prometheus_config_and_rules() {
    let Some(promtool) = require_tool(
        "promtool",
        "promtool_accepts_the_prometheus_config_and_rules",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    files::write_all(dir.path()).unwrap();
    let config = dir.path().join("prometheus/prometheus.yml");
    let out = std::process::Command::new(&promtool)
        .arg("check")
        .arg("config")
        .arg(&config)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check config: {text}");
    assert!(
        text.contains("1 rule files found"),
        "the rules are referenced: {text}"
    );
    let out = std::process::Command::new(&promtool)
        .arg("check")
        .arg("rules")
        .arg(dir.path().join("prometheus/rules/agent-steps.yml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool check rules: {text}");
    assert!(text.contains("3 rules found"), "{text}");
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectorConfig {
    extensions: BTreeMap<String, Value>,
    receivers: BTreeMap<String, Value>,
    processors: BTreeMap<String, Value>,
    exporters: BTreeMap<String, Value>,
    #[serde(default)]
    connectors: BTreeMap<String, Value>,
    service: CollectorService,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CollectorService {
    extensions: Vec<String>,
    pipelines: BTreeMap<String, Pipeline>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pipeline {
    receivers: Vec<String>,
    #[serde(default)]
    processors: Vec<String>,
    exporters: Vec<String>,
}

#[test]
fn collector_pipelines_reference_only_defined_components() {
    let cfg: CollectorConfig = yaml("collector/config.yaml");
    let mut used = BTreeSet::new();
    for ext in &cfg.service.extensions {
        assert!(
            cfg.extensions.contains_key(ext),
            "extension {ext} is not defined"
        );
        used.insert(ext.clone());
    }
    for (name, p) in &cfg.service.pipelines {
        let kind = name.split('/').next().unwrap();
        assert!(
            ["traces", "metrics", "logs"].contains(&kind),
            "pipeline {name}"
        );
        for r in &p.receivers {
            assert!(
                cfg.receivers.contains_key(r) || cfg.connectors.contains_key(r),
                "pipeline {name}: receiver {r} is not defined"
            );
        }
        for pr in &p.processors {
            assert!(
                cfg.processors.contains_key(pr),
                "pipeline {name}: processor {pr} is not defined"
            );
        }
        for e in &p.exporters {
            assert!(
                cfg.exporters.contains_key(e) || cfg.connectors.contains_key(e),
                "pipeline {name}: exporter {e} is not defined"
            );
        }
        assert_eq!(
            p.processors.first().map(String::as_str),
            Some("memory_limiter"),
            "{name}: memory_limiter comes first"
        );
        assert_eq!(
            p.processors.last().map(String::as_str),
            Some("batch"),
            "{name}: batch comes last"
        );
        used.extend(
            p.receivers
                .iter()
                .chain(&p.processors)
                .chain(&p.exporters)
                .cloned(),
        );
    }
    for defined in cfg
        .extensions
        .keys()
        .chain(cfg.receivers.keys())
        .chain(cfg.processors.keys())
        .chain(cfg.exporters.keys())
    {
        assert!(
            used.contains(defined),
            "{defined} is defined but used by no pipeline"
        );
    }

    // Short-lived processes send delta metrics: the collector forwards them unchanged to the
    // aggregator, the single writer of every series (docs/metrics-path.md); nothing in the
    // collector keeps metric state.
    let metrics = &cfg.service.pipelines["metrics"];
    assert_eq!(metrics.processors, ["memory_limiter", "batch"]);
    assert_eq!(metrics.exporters, ["otlp_grpc/aggregator"]);
    let aggregator = &cfg.exporters["otlp_grpc/aggregator"];
    assert_eq!(
        aggregator["endpoint"],
        format!(
            "{}:{}",
            Component::Aggregator.service(),
            Port::OtlpGrpc.container_port()
        )
    );
    let aggregator_svc = obsctl::stack::definition::service(Component::Aggregator);
    assert!(
        aggregator_svc
            .command
            .contains(&format!("--otlp-grpc=0.0.0.0:{}", Port::OtlpGrpc.container_port()).as_str()),
        "{:?}",
        aggregator_svc.command
    );
    assert_eq!(
        cfg.service.pipelines["traces"].exporters,
        ["otlp_grpc/tempo"]
    );
    assert_eq!(cfg.service.pipelines["logs"].exporters, ["otlp_http/loki"]);
    assert_eq!(
        cfg.exporters["otlp_http/loki"]["endpoint"],
        "http://loki:3100/otlp"
    );
    for exporter in ["otlp_grpc/tempo", "otlp_http/loki", "otlp_grpc/aggregator"] {
        assert_eq!(
            cfg.exporters[exporter]["sending_queue"]["storage"], "file_storage",
            "{exporter}: the queue must survive a restart"
        );
    }
    // The ports the collector listens on are the ones obsctl publishes.
    let health = cfg.extensions["health_check"]["endpoint"].as_str().unwrap();
    assert!(health.ends_with(&format!(":{}", Port::CollectorHealth.container_port())));
    let grpc = cfg.receivers["otlp"]["protocols"]["grpc"]["endpoint"]
        .as_str()
        .unwrap();
    assert!(grpc.ends_with(&format!(":{}", Port::OtlpGrpc.container_port())));
    let http = cfg.receivers["otlp"]["protocols"]["http"]["endpoint"]
        .as_str()
        .unwrap();
    assert!(http.ends_with(&format!(":{}", Port::OtlpHttp.container_port())));
    // Prometheus scrapes the aggregator's query API, where it serves /metrics.
    let prom_cfg: Value = yaml("prometheus/prometheus.yml");
    let target = prom_cfg["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    assert_eq!(
        target,
        format!(
            "{}:{}",
            Component::Aggregator.service(),
            Port::Aggregator.container_port()
        )
    );
    assert!(
        aggregator_svc
            .command
            .contains(&format!("--api=0.0.0.0:{}", Port::Aggregator.container_port()).as_str()),
        "{:?}",
        aggregator_svc.command
    );
}

#[test]
fn backends_listen_where_obsctl_publishes() {
    let tempo: Value = yaml("tempo/tempo.yaml");
    assert_eq!(
        tempo["server"]["http_listen_port"],
        Port::Tempo.container_port()
    );
    let loki: Value = yaml("loki/loki.yaml");
    assert_eq!(
        loki["server"]["http_listen_port"],
        Port::Loki.container_port()
    );
    assert_eq!(
        loki["limits_config"]["allow_structured_metadata"],
        Value::Bool(true)
    );
    // Index labels: exactly obsctl's bounded list, Loki's defaults (which include the
    // per-process service.instance.id and k8s.pod.name) ignored.
    let resource = &loki["limits_config"]["otlp_config"]["resource_attributes"];
    assert_eq!(resource["ignore_defaults"], Value::Bool(true));
    let configs = resource["attributes_config"].as_array().unwrap();
    assert_eq!(configs.len(), 1, "{configs:?}");
    assert_eq!(configs[0]["action"], "index_label");
    let indexed: Vec<&str> = configs[0]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(indexed, obsctl::conventions::resource::LOG_INDEX_LABELS);
    for per_step in [
        obsctl::conventions::resource::SERVICE_INSTANCE_ID,
        obsctl::conventions::resource::K8S_POD_NAME,
    ] {
        assert!(!indexed.contains(&per_step), "{per_step} is per step");
    }
}

#[derive(Deserialize)]
struct Datasources {
    datasources: Vec<Datasource>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Datasource {
    uid: String,
    #[serde(rename = "type")]
    kind: String,
    url: String,
    #[serde(default)]
    json_data: Value,
}

fn dashboard() -> Value {
    serde_json::from_str(file("grafana/dashboards/agent-steps.json")).unwrap()
}

/// Every `datasource` object anywhere in the dashboard.
fn datasource_refs(v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            if let Some(Value::Object(ds)) = map.get("datasource") {
                let kind = ds.get("type").and_then(Value::as_str).unwrap_or_default();
                let uid = ds.get("uid").and_then(Value::as_str).unwrap_or_default();
                out.push((kind.to_string(), uid.to_string()));
            }
            map.values().for_each(|x| datasource_refs(x, out));
        }
        Value::Array(items) => items.iter().for_each(|x| datasource_refs(x, out)),
        _ => {}
    }
}

#[test]
fn dashboard_datasources_and_cross_links_are_all_provisioned() {
    let ds: Datasources = yaml("grafana/provisioning/datasources/datasources.yaml");
    let uids: BTreeMap<_, _> = ds.datasources.iter().map(|d| (d.uid.as_str(), d)).collect();
    assert_eq!(
        uids.keys().copied().collect::<Vec<_>>(),
        ["loki", "prometheus", "tempo"]
    );
    for (uid, port) in [
        ("prometheus", Port::Prometheus),
        ("tempo", Port::Tempo),
        ("loki", Port::Loki),
    ] {
        assert_eq!(uids[uid].kind, uid);
        let svc = obsctl::stack::definition::owner(port).service();
        assert_eq!(
            uids[uid].url,
            format!("http://{svc}:{}", port.container_port())
        );
    }
    let mut refs = Vec::new();
    datasource_refs(&dashboard(), &mut refs);
    assert!(refs.len() > 10, "panels and targets name their datasource");
    for (kind, uid) in refs {
        if kind == "grafana" {
            continue;
        }
        let d = uids
            .get(uid.as_str())
            .unwrap_or_else(|| panic!("dashboard uses unprovisioned uid {uid:?}"));
        assert_eq!(d.kind, kind, "uid {uid}");
    }
    // Cross-links: exemplars → Tempo, traces → Loki and Prometheus, logs → Tempo.
    let prom = &uids["prometheus"].json_data;
    assert_eq!(
        prom["exemplarTraceIdDestinations"][0]["datasourceUid"],
        "tempo"
    );
    assert_eq!(prom["exemplarTraceIdDestinations"][0]["name"], "trace_id");
    let tempo = &uids["tempo"].json_data;
    assert_eq!(tempo["tracesToLogsV2"]["datasourceUid"], "loki");
    assert!(
        tempo["tracesToLogsV2"]["query"]
            .as_str()
            .unwrap()
            .contains("trace_id=\"$${__trace.traceId}\"")
    );
    assert_eq!(tempo["tracesToMetrics"]["datasourceUid"], "prometheus");
    assert_eq!(tempo["serviceMap"]["datasourceUid"], "prometheus");
    let loki = &uids["loki"].json_data;
    assert_eq!(loki["derivedFields"][0]["datasourceUid"], "tempo");
    assert_eq!(loki["derivedFields"][0]["matcherRegex"], "trace_id");

    let providers: Value = yaml("grafana/provisioning/dashboards/dashboards.yaml");
    let path = providers["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    let grafana = obsctl::stack::definition::service(Component::Grafana);
    assert!(
        grafana
            .mounts
            .iter()
            .any(|m| m.source == "grafana/dashboards" && m.target == path),
        "the dashboards provider reads {path}, where obsctl mounts stack/grafana/dashboards"
    );
}

#[test]
fn dashboard_has_the_seed_panels_and_variables() {
    let d = dashboard();
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for v in [
        "repo",
        "prNumber",
        "agent",
        "workflowName",
        "taskId",
        "environment",
    ] {
        assert!(vars.contains(&v), "variable {v} is missing");
    }
    let panels = d["panels"].as_array().unwrap();
    let duration = panels
        .iter()
        .find(|p| {
            p["title"]
                .as_str()
                .unwrap()
                .starts_with("Step duration p50")
        })
        .unwrap();
    assert!(
        duration["targets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["exemplar"] == true)
    );
    assert!(
        panels
            .iter()
            .any(|p| p["type"] == "logs" && p["datasource"]["uid"] == "loki")
    );
    assert!(panels.iter().any(|p| p["type"] == "heatmap"));
}

/// One real step: agent, step name, repo, PR, task and exit code.
type Step = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    i32,
);

/// Label sets the dashboard test runs: an agent that always succeeds, one with a failing and a
/// succeeding step, two repos with one PR and one task each.
const STEPS: [Step; 4] = [
    ("clippy", "verify", "org/a", "7", "task-1", 0),
    ("tests", "test", "org/a", "7", "task-1", 1),
    ("deployer", "deploy", "org/b", "9", "task-2", 0),
    ("tests", "test", "org/b", "9", "task-2", 0),
];

/// Runs every step of [`STEPS`] once through the real shim, exporting to `serve`; answers the
/// steps' trace ids.
fn run_steps(serve: &Serve, spool: &std::path::Path) -> Vec<String> {
    STEPS
        .iter()
        .map(|(agent, step, repo, pr, task, code)| {
            let mut env = serve.env("grpc");
            env.extend([
                ("AGENT", agent.to_string()),
                ("STEP", step.to_string()),
                ("REPO", repo.to_string()),
                ("PR_NUMBER", pr.to_string()),
                ("TASK_ID", task.to_string()),
                ("WORKFLOW_NAME", "agent-pipeline".to_string()),
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "deployment.environment=dev".to_string(),
                ),
            ]);
            let out = common::shim::obsctl("shim", spool, &env)
                .args(["--", "sh", "-c", &format!("exit {code}")])
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(*code));
            let first = String::from_utf8_lossy(&out.stdout);
            let line: Value = serde_json::from_str(first.lines().next().unwrap()).unwrap();
            line["trace_id"].as_str().unwrap().to_string()
        })
        .collect()
}

/// A panel's result keyed by one label.
fn by_label(result: &[Value], label: &str) -> BTreeMap<String, f64> {
    result
        .iter()
        .map(|s| {
            (
                s["metric"][label].as_str().unwrap_or_default().to_string(),
                s["value"][1].as_str().unwrap().parse().unwrap(),
            )
        })
        .collect()
}

/// What each counting panel says about [`STEPS`] (run twice, so every series grew within the
/// windows): who failed, who always succeeded, how many PRs and tasks each repo had.
fn assert_panel_claim(title: &str, expr: &str, result: &[Value]) {
    let what = format!("{title}: {expr}");
    match title {
        "Failures by agent" => {
            let m = by_label(result, "agent");
            assert!(m["tests"] > 0.0, "{what}: {m:?}");
            assert_eq!((m["clippy"], m["deployer"]), (0.0, 0.0), "{what}: {m:?}");
        }
        "Success rate by agent" => {
            let m = by_label(result, "agent");
            assert_eq!((m["clippy"], m["deployer"]), (1.0, 1.0), "{what}: {m:?}");
            assert!(m["tests"] > 0.0 && m["tests"] < 1.0, "{what}: {m:?}");
        }
        "Active PRs per repo" | "Tasks in flight per repo" => {
            let m = by_label(result, "repo");
            let want = BTreeMap::from([("org/a".to_string(), 1.0), ("org/b".to_string(), 1.0)]);
            assert_eq!(m, want, "{what}");
        }
        "Errors by stepName" if expr.starts_with("sum") => {
            let m = by_label(result, "stepName");
            assert!(m["test"] > 0.0, "{what}: {m:?}");
            assert_eq!((m["verify"], m["deploy"]), (0.0, 0.0), "{what}: {m:?}");
        }
        "Errors by stepName" => {
            let m = by_label(result, "stepName");
            assert_eq!(m.keys().collect::<Vec<_>>(), ["test"], "{what}");
        }
        "Top slow PRs (mean step duration)" => {
            let m = by_label(result, "prNumber");
            assert_eq!(m.len(), 2, "{what}: {m:?}");
        }
        _ => {}
    }
}

/// Grafana's variables replaced the way "All" does (allValue `.*`) and its interval macros by
/// fixed windows.
fn expand(expr: &str) -> String {
    let mut s = expr
        .replace("$__rate_interval", "1m")
        .replace("$__interval", "15s")
        .replace("$__range", "5m");
    for v in [
        "environment",
        "repo",
        "prNumber",
        "agent",
        "workflowName",
        "taskId",
        "traceId",
    ] {
        s = s.replace(&format!("${v}"), ".*");
    }
    assert!(!s.contains('$'), "unexpanded variable in {s}");
    s
}

#[test]
fn every_dashboard_query_runs_on_a_real_prometheus_with_data_from_real_steps() {
    let test = "every_dashboard_query_runs_on_a_real_prometheus_with_data_from_real_steps";
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    let Some(prometheus) = Prometheus::start(test, serve.api_addr()) else {
        return;
    };
    let base = &prometheus.url;
    let query = |q: &str| get_json(&format!("{base}/api/v1/query"), &[("query", q)]);
    let spool = tempfile::tempdir().unwrap();
    // Two rounds, each scraped before the next: every series then grows between samples, which
    // is what rate() and increase() measure (a series' first sample is only its baseline).
    let mut trace_ids = run_steps(&serve, spool.path());
    let per_round = STEPS.len() as f64;
    poll("the first round scraped", Duration::from_secs(30), || {
        (prometheus.value("sum(agent_step_duration_ms_count)") == Some(per_round)).then_some(())
    });
    trace_ids.extend(run_steps(&serve, spool.path()));
    poll("the second round scraped", Duration::from_secs(30), || {
        (prometheus.value("sum(agent_step_duration_ms_count)") == Some(2.0 * per_round))
            .then_some(())
    });

    let d = dashboard();
    let mut ran = 0;
    for panel in d["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().unwrap() {
            if t["datasource"]["uid"] != "prometheus" {
                continue;
            }
            let title = panel["title"].as_str().unwrap();
            let expr = expand(t["expr"].as_str().unwrap());
            let (status, v) = query(&expr);
            assert_eq!(status, 200, "{title}: {expr}: {v}");
            assert_eq!(v["status"], "success", "{title}: {expr}: {v}");
            let result = v["data"]["result"].as_array().unwrap();
            assert!(
                !result.is_empty(),
                "{title}: {expr} returned no data from the steps"
            );
            for sample in result {
                let value: f64 = sample["value"][1].as_str().unwrap().parse().unwrap();
                assert!(
                    value.is_finite() && value >= 0.0,
                    "{title}: {expr} gave {value} for {}",
                    sample["metric"]
                );
            }
            assert_panel_claim(title, &expr, result);
            if t["exemplar"] == true && !expr.contains("outcome=\"failure\"") {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs();
                let (start, end) = ((now - 300).to_string(), (now + 60).to_string());
                let (_, ex) = get_json(
                    &format!("{base}/api/v1/query_exemplars"),
                    &[("query", expr.as_str()), ("start", &start), ("end", &end)],
                );
                let found: BTreeSet<String> = ex["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|s| s["exemplars"].as_array().unwrap().clone())
                    .map(|e| e["labels"]["trace_id"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(
                    found,
                    trace_ids.iter().cloned().collect(),
                    "{title}: exemplars"
                );
            }
            ran += 1;
        }
    }
    assert!(ran >= 10, "ran {ran} panel queries");

    // The deployment annotation marks the deploy steps of the last minute.
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = a["expr"].as_str() {
            let (status, v) = query(&expand(expr));
            assert_eq!(
                (status, v["status"].as_str()),
                (200, Some("success")),
                "{expr}: {v}"
            );
            assert_eq!(
                v["data"]["result"][0]["metric"]["repo"], "org/b",
                "{expr}: {v}"
            );
        }
    }
    // Variables: label_values(selector, label) answered by the series API.
    for v in d["templating"]["list"].as_array().unwrap() {
        let Some(q) = v["query"]["query"].as_str() else {
            continue;
        };
        let inner = q
            .strip_prefix("label_values(")
            .and_then(|s| s.strip_suffix(')'))
            .unwrap();
        let (selector, label) = inner.rsplit_once(", ").unwrap();
        let (status, res) = get_json(
            &format!("{base}/api/v1/label/{label}/values"),
            &[("match[]", expand(selector).as_str())],
        );
        assert_eq!(status, 200, "{q}: {res}");
        assert!(
            !res["data"].as_array().unwrap().is_empty(),
            "variable {q} has no values"
        );
    }
}
