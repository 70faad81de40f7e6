//! `cargo bench --bench metrics`: the metrics path of docs/metrics-path.md. Real shim steps are
//! recorded once (their OTLP metric requests, 1 in 10 failing); they are replayed as 50, 500 and
//! 5,000 step processes (a fresh `service.instance.id` each, as every step process has) into the
//! aggregator (`obsctl serve`, release build), and, as the baseline in the same run, into a
//! second one that keys series per process, the shape the collector's `prometheus` exporter gave
//! (its `instance` label, here the process id copied onto every point). Printed: series and scrape
//! size after each count, the aggregator's RSS after 5,000 steps, and the time from a real step's
//! end until its increment is on `/metrics` and in a real Prometheus scraping every second.

use std::time::{Duration, Instant};

use obsctl::otlp::export::{ExportRequest, Signal};
use obsctl::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use obsctl::otlp::proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use obsctl::otlp::proto::metrics::v1::metric::Data;
use obsctl::otlp::{TraceId, attrs};

#[path = "../tests/common/mod.rs"]
mod common;

use common::shim::{Receiver, obsctl};
use common::{Prometheus, Serve, http_get, poll};

const STEPS: [usize; 3] = [50, 500, 5_000];
const RECORDED: usize = 50;
const LATENCY_SAMPLES: usize = 10;

/// The shim's metric requests of `RECORDED` real steps, 1 in 10 failing.
fn record_steps(spool: &std::path::Path) -> Vec<ExportMetricsServiceRequest> {
    let receiver = Receiver::start();
    for i in 0..RECORDED {
        let mut env = receiver.env("grpc");
        env.extend(step_env());
        let code = if i % 10 == 0 { "1" } else { "0" };
        let out = obsctl("shim", spool, &env)
            .args(["--", "sh", "-c", &format!("exit {code}")])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code.parse().unwrap()));
    }
    poll("every step's metrics", Duration::from_secs(30), || {
        (receiver.received.count(Signal::Metrics) == RECORDED).then_some(())
    });
    receiver
        .received
        .all()
        .into_iter()
        .filter_map(|r| match r {
            ExportRequest::Metrics(m) => Some(m),
            _ => None,
        })
        .collect()
}

fn step_env() -> Vec<(&'static str, String)> {
    vec![
        ("AGENT", "bench".into()),
        ("STEP", "verify".into()),
        ("REPO", "org/bench".into()),
        ("PR_NUMBER", "7".into()),
        ("TASK_ID", "task-bench".into()),
        ("WORKFLOW_NAME", "bench-pipeline".into()),
    ]
}

/// Step `n`'s request: a recorded one with the process identity of step `n` and, for the
/// baseline, that identity copied onto every point (one series per process).
fn as_step(
    recorded: &[ExportMetricsServiceRequest],
    n: usize,
    per_process: bool,
) -> ExportMetricsServiceRequest {
    let mut request = recorded[n % recorded.len()].clone();
    let instance = format!("bench-{n}");
    for rm in &mut request.resource_metrics {
        if let Some(resource) = &mut rm.resource {
            resource
                .attributes
                .retain(|kv| kv.key != "service.instance.id");
            resource
                .attributes
                .push(attrs::string("service.instance.id", instance.clone()));
        }
        for sm in &mut rm.scope_metrics {
            for metric in &mut sm.metrics {
                let trace = TraceId::random().as_bytes().to_vec();
                match &mut metric.data {
                    Some(Data::Sum(sum)) => {
                        for p in &mut sum.data_points {
                            if per_process {
                                p.attributes
                                    .push(attrs::string("instance", instance.clone()));
                            }
                        }
                    }
                    Some(Data::Histogram(h)) => {
                        for p in &mut h.data_points {
                            if per_process {
                                p.attributes
                                    .push(attrs::string("instance", instance.clone()));
                            }
                            for e in &mut p.exemplars {
                                e.trace_id = trace.clone();
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    request
}

/// Sends steps `from..to` to `serve` over gRPC, one request per step as the shim sends it.
fn replay(
    rt: &tokio::runtime::Runtime,
    serve: &Serve,
    recorded: &[ExportMetricsServiceRequest],
    range: std::ops::Range<usize>,
    per_process: bool,
) {
    rt.block_on(async {
        let mut client = MetricsServiceClient::connect(serve.grpc.clone())
            .await
            .expect("connect");
        for n in range {
            let reply = client
                .export(as_step(recorded, n, per_process))
                .await
                .expect("export acknowledged");
            assert!(reply.into_inner().partial_success.is_none());
        }
    });
}

/// Series of the step metrics on `/metrics` (one per sample line) and the scrape's size.
fn scrape(serve: &Serve) -> (usize, usize) {
    let (status, body) = http_get(&serve.url("/metrics")).expect("scrape");
    assert_eq!(status, 200);
    let series = body
        .lines()
        .filter(|l| l.starts_with("agent_step_"))
        .count();
    (series, body.len())
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kb / 1024.0
}

/// The first value of `sum(agent_step_success_total) + sum(agent_step_fail_total)` on the
/// aggregator's own `/metrics`.
fn steps_on_metrics(serve: &Serve) -> f64 {
    let (_, body) = http_get(&serve.url("/metrics")).expect("scrape");
    body.lines()
        .filter(|l| {
            l.starts_with("agent_step_success_total") || l.starts_with("agent_step_fail_total")
        })
        .filter_map(|l| l.split(' ').nth(1)?.parse::<f64>().ok())
        .sum()
}

fn median_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn p90_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    v[(v.len() * 9 / 10).min(v.len() - 1)].as_secs_f64() * 1e3
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    eprintln!("recording {RECORDED} real shim steps");
    let recorded = record_steps(&spool);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let aggregator = Serve::start(&dir.path().join("aggregator"));
    let baseline = Serve::start(&dir.path().join("per-process"));

    let mut rows: Vec<(usize, (usize, usize), (usize, usize))> = Vec::new();
    let mut done = 0;
    for n in STEPS {
        eprintln!("replaying up to {n} step processes");
        replay(&rt, &aggregator, &recorded, done..n, false);
        replay(&rt, &baseline, &recorded, done..n, true);
        done = n;
        rows.push((n, scrape(&aggregator), scrape(&baseline)));
    }
    let rss = (rss_mib(aggregator.pid()), rss_mib(baseline.pid()));
    // Exactness, whatever the number of processes: every step counted once.
    assert_eq!(steps_on_metrics(&aggregator), done as f64);

    // Latency: a real step against the aggregator, a real Prometheus scraping it every second.
    let Some(prometheus) = Prometheus::start("metrics bench", aggregator.api_addr()) else {
        panic!("the metrics bench needs prometheus (apt-get install prometheus)");
    };
    poll("prometheus scrapes", Duration::from_secs(60), || {
        (prometheus.value("up") == Some(1.0)).then_some(())
    });
    let mut to_metrics = Vec::new();
    let mut to_prometheus = Vec::new();
    let mut expected = done as f64;
    for _ in 0..LATENCY_SAMPLES {
        let mut env = aggregator.env("grpc");
        env.extend(step_env());
        let out = obsctl("shim", &spool, &env)
            .args(["--", "true"])
            .output()
            .unwrap();
        let ended = Instant::now();
        assert!(out.status.success());
        expected += 1.0;
        poll("the increment on /metrics", Duration::from_secs(30), || {
            (steps_on_metrics(&aggregator) == expected).then_some(())
        });
        to_metrics.push(ended.elapsed());
        let query = "sum(agent_step_success_total) + sum(agent_step_fail_total)";
        poll(
            "the increment in Prometheus",
            Duration::from_secs(30),
            || (prometheus.value(query) == Some(expected)).then_some(()),
        );
        to_prometheus.push(ended.elapsed());
    }

    let mut table = comfy_table::Table::new();
    table.set_header([
        "step processes",
        "series: aggregator",
        "series: per process (baseline)",
        "ratio",
        "scrape bytes: aggregator",
        "scrape bytes: baseline",
        "ratio",
    ]);
    for (n, (a_series, a_bytes), (b_series, b_bytes)) in &rows {
        table.add_row([
            n.to_string(),
            a_series.to_string(),
            b_series.to_string(),
            format!("{:.4}", *a_series as f64 / *b_series as f64),
            a_bytes.to_string(),
            b_bytes.to_string(),
            format!("{:.4}", *a_bytes as f64 / *b_bytes as f64),
        ]);
    }
    println!(
        "metrics path: {RECORDED} recorded real shim steps (1 in 10 failing, one label set) replayed as N processes"
    );
    println!("{table}");
    let mut table = comfy_table::Table::new();
    table.set_header(["after 5,000 steps", "aggregator", "baseline", "ratio"]);
    table.add_row([
        "RSS (MiB)".to_string(),
        format!("{:.1}", rss.0),
        format!("{:.1}", rss.1),
        format!("{:.2}", rss.0 / rss.1),
    ]);
    println!("{table}");
    let scrape_interval_ms = 1000.0;
    let mut table = comfy_table::Table::new();
    table.set_header([
        "step end → increment visible",
        "median ms",
        "p90 ms",
        "median / scrape interval (1 s)",
    ]);
    let m = median_ms(&mut to_metrics);
    table.add_row([
        "on the aggregator's /metrics".to_string(),
        format!("{m:.1}"),
        format!("{:.1}", p90_ms(&mut to_metrics)),
        format!("{:.3}", m / scrape_interval_ms),
    ]);
    let m = median_ms(&mut to_prometheus);
    table.add_row([
        "in Prometheus (instant query)".to_string(),
        format!("{m:.1}"),
        format!("{:.1}", p90_ms(&mut to_prometheus)),
        format!("{:.3}", m / scrape_interval_ms),
    ]);
    println!("{table}");
    println!(
        "exact: the aggregator's counters sum to {} steps, each counted once",
        done + LATENCY_SAMPLES
    );
}
