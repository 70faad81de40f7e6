//! Benchmark of the embedded backend (`cargo bench --bench embedded`): ingest throughput over
//! gRPC in 512-span batches sent from a separate process (this binary re-executed as a
//! sender), trace-by-id and search-by-taskId latency at 100k and 1M stored spans, and the
//! server's peak resident memory. The server is the release `obsctl serve` in its own process.
//! Baseline measured in the same run: `GET /ready`, the HTTP round trip every query pays.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use obsctl::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use obsctl::otlp::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use obsctl::otlp::proto::resource::v1::Resource;
use obsctl::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use obsctl::otlp::{TraceId, attrs};

#[path = "../tests/common/mod.rs"]
mod common;

use common::Serve;

const BATCH: usize = 512;
const SPANS_PER_TRACE: usize = 8;
const TRACES_PER_BATCH: usize = BATCH / SPANS_PER_TRACE;
const SENDER_CONCURRENCY: usize = 4;
const QUERIES: usize = 300;

fn trace_id(index: u64) -> TraceId {
    let mixed = (u128::from(index) + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
    TraceId::from_bytes(mixed.to_be_bytes())
}

fn task_id(index: u64) -> String {
    format!("T-{index}")
}

/// One batch: 64 traces of 8 spans, each span with the attributes a step span carries.
fn batch(number: u64, start_ns: u64) -> ExportTraceServiceRequest {
    let first = number * TRACES_PER_BATCH as u64;
    let mut spans = Vec::with_capacity(BATCH);
    for t in 0..TRACES_PER_BATCH as u64 {
        let index = first + t;
        let tid = trace_id(index);
        for s in 0..SPANS_PER_TRACE as u64 {
            let span_id = ((index << 3) | s) + 1;
            spans.push(Span {
                trace_id: tid.as_bytes().to_vec(),
                span_id: span_id.to_be_bytes().to_vec(),
                parent_span_id: if s == 0 {
                    Vec::new()
                } else {
                    (index << 3).wrapping_add(1).to_be_bytes().to_vec()
                },
                name: format!("step-{s}"),
                kind: 1,
                start_time_unix_nano: start_ns + s * 1000,
                end_time_unix_nano: start_ns + s * 1000 + 500_000,
                attributes: vec![
                    attrs::string("taskId", task_id(index)),
                    attrs::string("repo", "org/repo"),
                    attrs::int("prNumber", (index % 500) as i64),
                    attrs::string("agent", "coder"),
                    attrs::string("workflowName", format!("wf-{}", index / 16)),
                    attrs::string("nodeId", format!("wf-{}-{s}", index / 16)),
                    attrs::string("stepName", format!("step-{s}")),
                ],
                ..Default::default()
            });
        }
    }
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    attrs::string("service.name", "agent-steps"),
                    attrs::string("service.instance.id", format!("bench-{number}")),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The sender process: sends batches `[first, first + count)` and prints the elapsed seconds.
fn sender(url: String, first: u64, count: u64) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let elapsed = rt.block_on(async move {
        let client = TraceServiceClient::connect(url)
            .await
            .expect("connect")
            .max_decoding_message_size(64 << 20);
        let now = obsctl::encode::now_unix_nanos();
        // Batches are built before the clock starts: the figure is the backend's, not ours.
        let batches: Vec<_> = (first..first + count).map(|n| batch(n, now)).collect();
        let queue = std::sync::Arc::new(std::sync::Mutex::new(batches));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..SENDER_CONCURRENCY {
            let (queue, mut client) = (queue.clone(), client.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(next) = queue.lock().unwrap().pop() else {
                        return;
                    };
                    let reply = client.export(next).await.expect("export acknowledged");
                    assert!(reply.into_inner().partial_success.is_none());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        started.elapsed()
    });
    println!("{}", elapsed.as_secs_f64());
}

/// Spans per second for `count` batches sent by a separate process.
fn ingest(server: &Serve, first: u64, count: u64) -> f64 {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--sender",
            &server.grpc,
            &first.to_string(),
            &count.to_string(),
        ])
        .stderr(Stdio::inherit())
        .output()
        .expect("run the sender process");
    assert!(out.status.success(), "sender failed");
    let secs: f64 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    (count as usize * BATCH) as f64 / secs
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

/// p50 and p99 in milliseconds of `QUERIES` GETs built by `url(i)`, each checked by `ok`.
fn latency(
    rt: &tokio::runtime::Runtime,
    client: &reqwest::Client,
    url: impl Fn(u64) -> String,
    ok: impl Fn(&str) -> bool,
) -> (f64, f64) {
    let mut times = Vec::with_capacity(QUERIES);
    for i in 0..QUERIES as u64 {
        let url = url(i);
        let started = Instant::now();
        let body = rt.block_on(async {
            let resp = client.get(&url).send().await.expect("GET");
            assert!(resp.status().is_success(), "{url}: {}", resp.status());
            resp.text().await.unwrap()
        });
        times.push(started.elapsed());
        assert!(ok(&body), "{url}: unexpected answer {body}");
    }
    times.sort();
    (percentile(&times, 0.5), percentile(&times, 0.99))
}

/// CPU seconds (user + system) the process has used so far, from /proc/PID/stat.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let hz: f64 = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);
    ticks / hz
}

fn vm_hwm_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb / 1024.0
}

struct Row {
    what: String,
    measured: f64,
    unit: &'static str,
    target: Option<(f64, bool)>,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--sender") {
        sender(
            args[2].clone(),
            args[3].parse().unwrap(),
            args[4].parse().unwrap(),
        );
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` does not, and then a small
    // smoke run only checks that the benchmark works.
    let smoke = !args.iter().any(|a| a == "--bench");
    let total_spans: u64 = std::env::var("OBSCTL_BENCH_SPANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if smoke {
            10 * BATCH as u64 * 2
        } else {
            1_000_000
        });
    if smoke {
        println!("smoke run ({total_spans} spans): use `cargo bench --bench embedded` for figures");
    }
    let small_spans = (total_spans / 10).max(BATCH as u64);
    let dir = tempfile::tempdir().unwrap();
    let server = Serve::start(dir.path());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    obsctl::tls::install_default_provider();
    let client = reqwest::Client::new();
    let small_batches = small_spans / BATCH as u64;
    let total_batches = total_spans / BATCH as u64;
    let mut rows = Vec::new();

    let (ready_p50, ready_p99) =
        latency(&rt, &client, |_| format!("{}/ready", server.api), |_| true);

    let measure = |label: &str, batches: u64, rows: &mut Vec<Row>| {
        let traces = batches * TRACES_PER_BATCH as u64;
        let pick = |i: u64| (i * 7919) % traces;
        let (p50, p99) = latency(
            &rt,
            &client,
            |i| format!("{}/api/traces/{}", server.api, trace_id(pick(i)).to_hex()),
            |body| body.contains("\"batches\""),
        );
        rows.push(Row {
            what: format!("trace by id p50 @{label}"),
            measured: p50,
            unit: "ms",
            target: None,
        });
        rows.push(Row {
            what: format!("trace by id p99 @{label}"),
            measured: p99,
            unit: "ms",
            target: (label == "1M").then_some((10.0, p99 <= 10.0)),
        });
        let (p50, p99) = latency(
            &rt,
            &client,
            |i| {
                format!(
                    "{}/api/search?tags=taskId%3D{}",
                    server.api,
                    task_id(pick(i))
                )
            },
            |body| body.matches("\"traceID\"").count() == 1,
        );
        rows.push(Row {
            what: format!("search taskId p50 @{label}"),
            measured: p50,
            unit: "ms",
            target: None,
        });
        rows.push(Row {
            what: format!("search taskId p99 @{label}"),
            measured: p99,
            unit: "ms",
            target: (label == "1M").then_some((50.0, p99 <= 50.0)),
        });
    };

    let pid = server.pid();
    let cpu0 = cpu_seconds(pid);
    let rate_small = ingest(&server, 0, small_batches);
    let cpu1 = cpu_seconds(pid);
    let small_label = if small_spans == 100_000 {
        "100k".to_string()
    } else {
        small_spans.to_string()
    };
    measure(&small_label, small_batches, &mut rows);
    let cpu2 = cpu_seconds(pid);
    let rate_big = ingest(&server, small_batches, total_batches - small_batches);
    let cpu3 = cpu_seconds(pid);
    let per_cpu_small = small_spans as f64 / (cpu1 - cpu0).max(0.001);
    let per_cpu_big = (total_spans - small_spans) as f64 / (cpu3 - cpu2).max(0.001);
    let big_label = if total_spans == 1_000_000 {
        "1M".to_string()
    } else {
        total_spans.to_string()
    };
    measure(&big_label, total_batches, &mut rows);
    let hwm = vm_hwm_mib(server.pid());

    rows.insert(
        0,
        Row {
            what: format!("ingest spans/s, 0 → {small_label}"),
            measured: rate_small,
            unit: "spans/s",
            target: Some((50_000.0, rate_small >= 50_000.0)),
        },
    );
    rows.insert(
        1,
        Row {
            what: format!("ingest spans/s, {small_label} → {big_label}"),
            measured: rate_big,
            unit: "spans/s",
            target: Some((50_000.0, rate_big >= 50_000.0)),
        },
    );
    rows.insert(
        2,
        Row {
            what: format!("ingest spans/server-CPU-s, 0 → {small_label}"),
            measured: per_cpu_small,
            unit: "spans/s",
            target: None,
        },
    );
    rows.insert(
        3,
        Row {
            what: format!("ingest spans/server-CPU-s, → {big_label}"),
            measured: per_cpu_big,
            unit: "spans/s",
            target: None,
        },
    );
    rows.push(Row {
        what: format!("server peak RSS (VmHWM) @{big_label}"),
        measured: hwm,
        unit: "MiB",
        target: Some((200.0, hwm <= 200.0)),
    });
    let db_file = dir
        .path()
        .join("data")
        .join(obsctl::embedded::store::DB_FILE);
    let db: f64 = [db_file.clone(), db_file.with_extension("sqlite-wal")]
        .iter()
        .filter_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.len() as f64 / (1 << 20) as f64)
        .sum();

    println!();
    println!(
        "embedded backend, {BATCH}-span batches from a separate process ({SENDER_CONCURRENCY} in flight), {QUERIES} queries per figure"
    );
    println!(
        "{:<42} {:>14} {:<8} {:>10} {:>6} {:>12}",
        "figure", "measured", "unit", "target", "ok", "x /ready p50"
    );
    for r in &rows {
        let (target, ok) = match r.target {
            Some((t, ok)) => (format!("{t}"), if ok { "yes" } else { "NO" }),
            None => ("-".into(), ""),
        };
        let ratio = if r.unit == "ms" {
            format!("{:.1}", r.measured / ready_p50)
        } else {
            "-".into()
        };
        println!(
            "{:<42} {:>14.2} {:<8} {:>10} {:>6} {:>12}",
            r.what, r.measured, r.unit, target, ok, ratio
        );
    }
    println!(
        "{:<42} {:>14.2} {:<8} {:>10} {:>6} {:>12}",
        "baseline GET /ready p50", ready_p50, "ms", "-", "", "1.0"
    );
    println!(
        "{:<42} {:>14.2} {:<8} {:>10} {:>6} {:>12}",
        "baseline GET /ready p99",
        ready_p99,
        "ms",
        "-",
        "",
        format!("{:.1}", ready_p99 / ready_p50)
    );
    println!("{:<42} {:>14.2} {:<8}", "database + WAL size", db, "MiB");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, load average {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}
