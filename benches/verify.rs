//! How the verify checks and the waterfall scale with the size of a run. For each size: the time
//! of every check (`run_all`) and of building and rendering the waterfall, against a baseline
//! measured in the same run: one linear pass that touches every span, log line, sample and
//! exemplar once (hashing their ids). A ratio that grows with the size means a check is worse
//! than linear. Then the HTML report against the JSON one (time to write, size) for 50 and 5000
//! steps. Run with `cargo bench --bench verify`.

use std::collections::{BTreeMap, HashSet};
use std::hint::black_box;
use std::time::{Duration, Instant};

use obsctl::backends::loki::LogEntry;
use obsctl::backends::prometheus::{Exemplar, Sample};
use obsctl::backends::tempo::{Span, SpanStatus, StatusCode, Trace};
use obsctl::checks::collect::WaitReport;
use obsctl::checks::collect::{LogSelection, Observed, SeriesCount};
use obsctl::checks::expect::Expectation;
use obsctl::checks::{Thresholds, run_all};
use obsctl::otlp::{SpanId, TraceId};
use obsctl::report::html::verify::{self as html, Evidence};
use obsctl::report::verify::{BackendsUsed, VerifyReport, json};
use obsctl::report::waterfall::{TraceTree, render};
use obsctl::workflow::record::{
    NodeStatus, NodeType, Outputs, Parameter, Phase, RunRecord, StepTelemetry, WorkflowStatus,
};

const AGENTS: usize = 10;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// One run of `n` step attempts spread over 10 agents and n/10 steps each, and everything a
/// correct pipeline leaves in the backends for it.
fn synthetic(n: usize) -> (Expectation, Observed) {
    let trace_id = TraceId::random();
    let root = SpanId::random();
    let name = "bench-run";
    let param = |k: &str, v: &str| Parameter {
        name: k.into(),
        value: v.into(),
    };
    let mut nodes = BTreeMap::new();
    let mut spans = vec![Span {
        trace_id,
        span_id: root,
        parent_span_id: None,
        name: name.into(),
        start_unix_nano: 0,
        end_unix_nano: n as u64 * 1000,
        status: SpanStatus::default(),
        attributes: BTreeMap::new(),
        resource: BTreeMap::new(),
    }];
    let mut logs = Vec::new();
    let mut exemplars = Vec::new();
    let mut success: BTreeMap<(String, String), f64> = BTreeMap::new();
    for i in 0..n {
        let agent = format!("agent{}", i % AGENTS);
        let step = format!("step{}", i / AGENTS);
        let span_id = SpanId::random();
        let node_id = format!("{name}-{i}");
        nodes.insert(
            node_id.clone(),
            NodeStatus {
                id: node_id.clone(),
                name: format!("{name}.{agent}-{step}"),
                display_name: step.clone(),
                node_type: NodeType::Pod,
                template_name: None,
                phase: Phase::Succeeded,
                boundary_id: None,
                children: vec![],
                message: None,
                started_at: None,
                finished_at: None,
                outputs: None,
                process_group: None,
                interrupted: Vec::new(),
                telemetry: Some(StepTelemetry {
                    agent: agent.clone(),
                    step: step.clone(),
                    trace_id,
                    span_id,
                    attempt: 0,
                }),
            },
        );
        spans.push(Span {
            trace_id,
            span_id,
            parent_span_id: Some(root),
            name: format!("{agent}/{step}"),
            start_unix_nano: i as u64 * 1000,
            end_unix_nano: i as u64 * 1000 + 900,
            status: SpanStatus {
                code: StatusCode::Ok,
                message: String::new(),
            },
            attributes: labels(&[
                ("repo", "acme/widgets"),
                ("prNumber", "42"),
                ("ref", "refs/pull/42/head"),
                ("taskId", "T-1"),
                ("agent", &agent),
                ("workflowName", name),
                ("nodeId", &node_id),
                ("stepName", &step),
            ]),
            resource: BTreeMap::new(),
        });
        for k in 0..2 {
            logs.push(LogEntry {
                timestamp_ns: i as u64 * 1000 + k,
                line: format!("{agent}/{step}: line {k}"),
                labels: labels(&[("service_name", "agent-steps")]),
                structured_metadata: labels(&[
                    ("trace_id", &trace_id.to_hex()),
                    ("span_id", &span_id.to_hex()),
                ]),
                parsed: BTreeMap::new(),
            });
        }
        exemplars.push(Exemplar {
            series_labels: labels(&[("agent", &agent), ("stepName", &step)]),
            labels: labels(&[
                ("trace_id", &trace_id.to_hex()),
                ("span_id", &span_id.to_hex()),
            ]),
            value: 900.0,
            timestamp: 0.0,
        });
        *success.entry((agent, step)).or_insert(0.0) += 1.0;
    }
    let sample = |metric: &str, agent: &str, step: &str, extra: &[(&str, &str)], v: f64| {
        let mut l = labels(&[
            ("__name__", metric),
            ("agent", agent),
            ("stepName", step),
            ("repo", "acme/widgets"),
            ("prNumber", "42"),
        ]);
        l.extend(labels(extra));
        Sample {
            labels: l,
            value: v,
            timestamp: 0.0,
        }
    };
    let success_counters: Vec<Sample> = success
        .iter()
        .map(|((a, s), v)| sample("agent_step_success_total", a, s, &[], *v))
        .collect();
    let histogram_counts: Vec<Sample> = success
        .iter()
        .map(|((a, s), v)| {
            sample(
                "agent_step_duration_ms_count",
                a,
                s,
                &[("outcome", "success"), ("taskId", "T-1")],
                *v,
            )
        })
        .collect();
    let record = RunRecord {
        name: name.into(),
        namespace: "default".into(),
        workflow_file: "bench.yaml".into(),
        parameters: vec![
            param("repo", "acme/widgets"),
            param("prNumber", "42"),
            param("taskId", "T-1"),
        ],
        trace_id,
        root_span_id: root,
        sampled: None,
        status: WorkflowStatus {
            phase: Phase::Succeeded,
            started_at: Some("2026-11-23T17:40:00.000Z".into()),
            finished_at: Some("2026-11-23T17:41:00.000Z".into()),
            message: None,
            nodes,
            outputs: Some(Outputs {
                parameters: vec![
                    param("prHtmlUrl", "https://github.com/acme/widgets/pull/42"),
                    param(
                        "actionsRunUrl",
                        "https://github.com/acme/widgets/actions/runs/1",
                    ),
                    param("previewUrl", "https://pr-42.example.com/"),
                ],
                exit_code: None,
                result: None,
            }),
        },
    };
    let expectation = Expectation::new(vec![record.clone()], &[record]);
    let mut traces = BTreeMap::new();
    traces.insert(
        trace_id,
        Some(Trace {
            spans,
            partial: false,
        }),
    );
    let series = success_counters.len();
    let observed = Observed {
        traces,
        success_counters,
        fail_counters: vec![],
        histogram_counts,
        exemplars,
        log_selections: ["repo", "prNumber"]
            .iter()
            .zip(["acme/widgets", "42"])
            .map(|(l, v)| LogSelection {
                label: l.to_string(),
                value: v.to_string(),
                entries: logs.clone(),
            })
            .collect(),
        logs,
        series: vec![SeriesCount {
            metric: "agent_step_success_total".into(),
            series,
        }],
        baseline: vec![],
    };
    (expectation, observed)
}

/// Every item read once, ids hashed: the least any check over this data can cost.
fn baseline(observed: &Observed) -> usize {
    let mut ids = HashSet::new();
    for trace in observed.traces.values().flatten() {
        for span in &trace.spans {
            ids.insert(span.span_id);
        }
    }
    let mut hits = 0;
    for entry in observed.logs.iter().chain(
        observed
            .log_selections
            .iter()
            .flat_map(|s| s.entries.iter()),
    ) {
        hits += usize::from(entry.span_id().is_some_and(|id| ids.contains(&id)));
    }
    for e in &observed.exemplars {
        hits += usize::from(e.span_id().is_some_and(|id| ids.contains(&id)));
    }
    hits + observed.success_counters.len() + observed.histogram_counts.len()
}

/// Median of `rounds` timings, each of as many calls as fit in ~20 ms.
fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> Duration {
    let start = Instant::now();
    black_box(f());
    let once = start.elapsed().max(Duration::from_micros(1));
    let calls = (Duration::from_millis(20).as_nanos() / once.as_nanos()).clamp(1, 1000) as u32;
    let mut samples: Vec<Duration> = (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..calls {
                black_box(f());
            }
            start.elapsed() / calls
        })
        .collect();
    samples.sort();
    samples[rounds / 2]
}

/// The HTML report against the JSON one, from the same checked run: time to render and size.
fn report_formats() {
    println!(
        "\n{:>7} | {:>12} | {:>12} | {:>7} | {:>10} | {:>10}",
        "steps", "json", "html", "ratio", "json size", "html size"
    );
    println!("{}", "-".repeat(72));
    for n in [50, 5000] {
        let (expectation, observed) = synthetic(n);
        let thresholds = Thresholds {
            series_budget: u64::MAX,
            ..Thresholds::default()
        };
        let results = run_all(&expectation, &observed, &thresholds);
        let backends = BackendsUsed {
            tempo: "http://127.0.0.1:3200".into(),
            prometheus: "http://127.0.0.1:9090".into(),
            loki: "http://127.0.0.1:3100".into(),
        };
        let wait = WaitReport {
            polls: 1,
            elapsed_ms: 10,
            complete: true,
            outstanding: Vec::new(),
        };
        let report = VerifyReport::new(&expectation, backends, &thresholds, wait, results);
        let json_size = json(&report).len();
        let html_size =
            html::render(&report, &Evidence::of(&expectation, &observed, Vec::new())).len();
        let json_time = time(5, || json(&report));
        // The HTML time includes building the trees from what verify observed, as the command does.
        let html_time = time(5, || {
            html::render(&report, &Evidence::of(&expectation, &observed, Vec::new()))
        });
        println!(
            "{n:>7} | {:>10.3}ms | {:>10.3}ms | {:>6.1}x | {:>8.1}KB | {:>8.1}KB",
            json_time.as_secs_f64() * 1e3,
            html_time.as_secs_f64() * 1e3,
            html_time.as_secs_f64() / json_time.as_secs_f64(),
            json_size as f64 / 1024.0,
            html_size as f64 / 1024.0,
        );
    }
}

fn main() {
    println!(
        "{:>7} | {:>12} | {:>12} | {:>7} | {:>10} | {:>14} | {:>7}",
        "steps", "baseline", "run_all", "ratio", "per step", "waterfall", "ratio"
    );
    println!("{}", "-".repeat(88));
    for n in [100, 1000, 5000, 20000] {
        let (expectation, observed) = synthetic(n);
        let thresholds = Thresholds {
            series_budget: u64::MAX,
            ..Thresholds::default()
        };
        let results = run_all(&expectation, &observed, &thresholds);
        assert!(results.iter().all(|r| r.passed), "{results:#?}");
        let base = time(7, || baseline(&observed));
        let checks = time(7, || run_all(&expectation, &observed, &thresholds));
        let (trace_id, trace) = observed.traces.iter().next().unwrap();
        let trace = trace.as_ref().unwrap();
        let tree = time(7, || {
            render(
                &TraceTree::build(*trace_id, &trace.spans, false, &observed.logs),
                false,
            )
        });
        println!(
            "{n:>7} | {:>10.3}ms | {:>10.3}ms | {:>6.1}x | {:>8.2}µs | {:>12.3}ms | {:>6.1}x",
            base.as_secs_f64() * 1e3,
            checks.as_secs_f64() * 1e3,
            checks.as_secs_f64() / base.as_secs_f64(),
            checks.as_secs_f64() * 1e6 / n as f64,
            tree.as_secs_f64() * 1e3,
            tree.as_secs_f64() / base.as_secs_f64(),
        );
    }
    report_formats();
}
