//! Static checks of the `stack/` files obsctl mounts: Prometheus config and rules through the
//! real `promtool`, every dashboard query run against a real Prometheus holding sample data,
//! datasource uids, and the collector's pipelines parsed into typed structs.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::stack::*;
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

    // Short-lived processes send delta metrics: they must become cumulative before the exporter.
    let metrics = &cfg.service.pipelines["metrics"];
    assert_eq!(
        metrics.processors,
        [
            "memory_limiter",
            "transform/prometheus_names",
            "deltatocumulative",
            "batch"
        ]
    );
    // The exporter would append the unit (agent_step_duration_ms_milliseconds) unless cleared.
    let statements = format!(
        "{:?}",
        cfg.processors["transform/prometheus_names"]["metric_statements"]
    );
    assert!(
        statements.contains(r#"set(unit, \"\") where name == \"agent_step_duration_ms\""#),
        "{statements}"
    );
    assert_eq!(metrics.exporters, ["prometheus"]);
    let prom = &cfg.exporters["prometheus"];
    assert_eq!(
        prom["enable_open_metrics"],
        Value::Bool(true),
        "exemplars need OpenMetrics"
    );
    assert_eq!(
        prom["resource_to_telemetry_conversion"]["enabled"],
        Value::Bool(false)
    );
    assert_eq!(cfg.service.pipelines["traces"].exporters, ["otlp/tempo"]);
    assert_eq!(cfg.service.pipelines["logs"].exporters, ["otlphttp/loki"]);
    assert_eq!(
        cfg.exporters["otlphttp/loki"]["endpoint"],
        "http://loki:3100/otlp"
    );
    for exporter in ["otlp/tempo", "otlphttp/loki"] {
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
    // The prometheus scrape target is the exporter's port on the collector's service name.
    let prom_cfg: Value = yaml("prometheus/prometheus.yml");
    let target = prom_cfg["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    let exporter_port = prom["endpoint"]
        .as_str()
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap();
    assert_eq!(
        target,
        format!("{}:{exporter_port}", Component::Collector.service())
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

/// Sample data shaped as the collector's Prometheus exporter exposes it (OpenMetrics, one series
/// per step process, target_info carrying resource attributes, exemplars on duration buckets).
fn sample_openmetrics() -> (String, Vec<String>) {
    let steps = [
        (
            "i-1", "clippy", "verify", "success", "org/a", "7", "task-1", 420.0,
        ),
        (
            "i-2", "tests", "test", "failure", "org/a", "7", "task-1", 5300.0,
        ),
        (
            "i-3", "deployer", "deploy", "success", "org/b", "9", "task-2", 61000.0,
        ),
    ];
    let bounds = [100.0, 1000.0, 10000.0, 100000.0];
    let mut trace_ids = Vec::new();
    let mut hist = String::from("# TYPE agent_step_duration_ms histogram\n");
    let mut succ = String::from("# TYPE agent_step_success counter\n");
    let mut fail = String::from("# TYPE agent_step_fail counter\n");
    let mut info = String::from("# TYPE target info\n");
    for (n, (inst, agent, step, outcome, repo, pr, task, ms)) in steps.iter().enumerate() {
        let trace = format!("{:032x}", 0xabc0 + n);
        trace_ids.push(trace.clone());
        let base = format!(
            "job=\"agent-steps\",instance=\"{inst}\",repo=\"{repo}\",prNumber=\"{pr}\",taskId=\"{task}\",agent=\"{agent}\",workflowName=\"agent-pipeline\",stepName=\"{step}\",outcome=\"{outcome}\""
        );
        let mut exemplar_done = false;
        for b in bounds {
            let count = if *ms <= b { 1 } else { 0 };
            let ex = if count == 1 && !exemplar_done {
                exemplar_done = true;
                format!(
                    " # {{trace_id=\"{trace}\",span_id=\"{:016x}\"}} {ms}",
                    0x10 + n
                )
            } else {
                String::new()
            };
            hist += &format!("agent_step_duration_ms_bucket{{{base},le=\"{b}\"}} {count}{ex}\n");
        }
        hist += &format!("agent_step_duration_ms_bucket{{{base},le=\"+Inf\"}} 1\n");
        hist += &format!("agent_step_duration_ms_sum{{{base}}} {ms}\n");
        hist += &format!("agent_step_duration_ms_count{{{base}}} 1\n");
        let clabels = format!(
            "job=\"agent-steps\",instance=\"{inst}\",agent=\"{agent}\",repo=\"{repo}\",prNumber=\"{pr}\",stepName=\"{step}\""
        );
        if *outcome == "success" {
            succ += &format!("agent_step_success_total{{{clabels}}} 1\n");
        } else {
            fail += &format!("agent_step_fail_total{{{clabels}}} 1\n");
        }
        info += &format!(
            "target_info{{job=\"agent-steps\",instance=\"{inst}\",deployment_environment=\"dev\"}} 1\n"
        );
    }
    (format!("{hist}{succ}{fail}{info}# EOF\n"), trace_ids)
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
fn every_dashboard_query_runs_on_a_real_prometheus_with_sample_data() {
    let (body, trace_ids) = sample_openmetrics();
    let target = serve_openmetrics(body);
    let Some(prometheus) = Prometheus::start_honoring_labels(
        "every_dashboard_query_runs_on_a_real_prometheus_with_sample_data",
        &target,
    ) else {
        return;
    };
    let base = &prometheus.url;
    let query = |q: &str| get_json(&format!("{base}/api/v1/query"), &[("query", q)]);
    poll("sample data scraped twice", Duration::from_secs(30), || {
        let (_, v) = query("count_over_time(agent_step_duration_ms_count[1m])");
        let n = v["data"]["result"][0]["value"][1]
            .as_str()?
            .parse::<f64>()
            .ok()?;
        (n >= 2.0).then_some(())
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
                "{title}: {expr} returned no data from the sample"
            );
            for sample in result {
                let value = sample["value"][1].as_str().unwrap();
                assert!(
                    value != "NaN",
                    "{title}: {expr} gave NaN for {}",
                    sample["metric"]
                );
            }
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

    // Annotation queries must parse and run (the sample has no deploy in the last minute).
    for a in d["annotations"]["list"].as_array().unwrap() {
        if let Some(expr) = a["expr"].as_str() {
            let (status, v) = query(&expand(expr));
            assert_eq!(
                (status, v["status"].as_str()),
                (200, Some("success")),
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
