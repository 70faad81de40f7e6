//! Durability: spans and metric deltas stream into `obsctl serve` over gRPC; the server is
//! killed with SIGKILL mid-stream, restarted on the same data directory, and everything it had
//! acknowledged must be there.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::embedded::delta_counter;
use common::{Http, Serve, poll};
use obsctl::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use obsctl::otlp::proto::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use obsctl::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use obsctl::otlp::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use obsctl::otlp::proto::metrics::v1::{NumberDataPoint, number_data_point};
use obsctl::otlp::proto::resource::v1::Resource;
use obsctl::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use obsctl::otlp::{SpanId, TraceId, attrs};

const SPANS_PER_BATCH: usize = 50;

fn spans(trace_id: TraceId) -> ExportTraceServiceRequest {
    let now = 1_700_000_000_000_000_000u64;
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![attrs::string("service.name", "durable")],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..SPANS_PER_BATCH)
                    .map(|i| Span {
                        trace_id: trace_id.as_bytes().to_vec(),
                        span_id: SpanId::random().as_bytes().to_vec(),
                        name: format!("s{i}"),
                        start_time_unix_nano: now,
                        end_time_unix_nano: now + 1,
                        attributes: vec![attrs::string("taskId", trace_id.to_hex())],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The `n`th delta of one stream: its own interval, so it is a new point, not a repeat (the
/// backend absorbs a delta point it already holds).
fn one_delta(n: u64) -> ExportMetricsServiceRequest {
    delta_counter(
        "durable_steps",
        None,
        vec![NumberDataPoint {
            start_time_unix_nano: 10 * n,
            time_unix_nano: 10 * n + 1,
            value: Some(number_data_point::Value::AsInt(1)),
            ..Default::default()
        }],
    )
}

#[derive(Default)]
struct Acked {
    traces: Vec<TraceId>,
    deltas: u64,
}

#[test]
fn every_acknowledged_item_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = Serve::start(dir.path());
    let acked = Arc::new(Mutex::new(Acked::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (acked, stop, url) = (acked.clone(), stop.clone(), backend.grpc.clone());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().unwrap();
            rt.block_on(async move {
                let mut traces = TraceServiceClient::connect(url.clone()).await.unwrap();
                let mut metrics = MetricsServiceClient::connect(url).await.unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let id = TraceId::random();
                    if traces.export(spans(id)).await.is_err() {
                        break;
                    }
                    acked.lock().unwrap().traces.push(id);
                    let n = acked.lock().unwrap().deltas;
                    if metrics.export(one_delta(n)).await.is_err() {
                        break;
                    }
                    acked.lock().unwrap().deltas += 1;
                }
            })
        })
    };
    poll(
        "some batches are acknowledged",
        Duration::from_secs(60),
        || (acked.lock().unwrap().traces.len() >= 30).then_some(()),
    );
    backend.kill9();
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.traces.len() >= 30);

    let backend = Serve::start(dir.path());
    let http = Http::new();
    for id in &acked.traces {
        let reply = http.get(&format!("{}/api/traces/{id}", backend.api), &[]);
        assert_eq!(
            reply.status, 200,
            "acknowledged trace {id} lost after kill -9"
        );
        let spans: usize = reply.json()["batches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["scopeSpans"][0]["spans"].as_array().unwrap().len())
            .sum();
        assert_eq!(spans, SPANS_PER_BATCH, "trace {id} is incomplete");
    }
    let reply = http.get_query(
        &format!("{}/api/v1/query", backend.api),
        &[("query", "durable_steps_total")],
        &[],
    );
    let total: u64 = reply.json()["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    // The request in flight at the kill may have committed without its answer arriving.
    assert!(
        total == acked.deltas || total == acked.deltas + 1,
        "{total} deltas stored, {} acknowledged",
        acked.deltas
    );
}
