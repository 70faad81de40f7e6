//! Idempotent ingest over the wire: the same OTLP/HTTP export (spans, a log record, a delta
//! counter point) sent twice to the real `obsctl serve`, as a shim replays a request whose
//! answer was lost, is held once, read back through the Tempo-, Loki- and Prometheus-shaped
//! API, and `/api/status` counts what was absorbed.

mod common;

use common::embedded::delta_counter;
use common::{Http, Serve};
use obsctl::otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
use obsctl::otlp::proto::collector::metrics::v1::ExportMetricsServiceRequest;
use obsctl::otlp::proto::collector::trace::v1::ExportTraceServiceRequest;
use obsctl::otlp::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use obsctl::otlp::proto::metrics::v1::{NumberDataPoint, metric::Data, number_data_point};
use obsctl::otlp::proto::resource::v1::Resource;
use obsctl::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use obsctl::otlp::{SpanId, TraceId, attrs};
use prost::Message;

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");

fn resource() -> Option<Resource> {
    Some(Resource {
        attributes: vec![attrs::string("service.name", "agent-steps")],
        ..Default::default()
    })
}

/// One step's telemetry, as the shim exports it: its span and a child, a line, one delta.
fn requests(trace: TraceId, span: SpanId, start: u64) -> [(&'static str, Vec<u8>); 3] {
    let spans = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: resource(),
            scope_spans: vec![ScopeSpans {
                spans: [span, SpanId::random()]
                    .iter()
                    .map(|id| Span {
                        trace_id: trace.as_bytes().to_vec(),
                        span_id: id.as_bytes().to_vec(),
                        name: "step".into(),
                        start_time_unix_nano: start,
                        end_time_unix_nano: start + 1_000,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: resource(),
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: start + 500,
                    body: attrs::string("body", "step 1 line 1").value,
                    trace_id: trace.as_bytes().to_vec(),
                    span_id: span.as_bytes().to_vec(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let metrics = delta_counter(
        "replayed_steps",
        resource(),
        vec![NumberDataPoint {
            start_time_unix_nano: start,
            time_unix_nano: start + 1_000,
            value: Some(number_data_point::Value::AsInt(1)),
            ..Default::default()
        }],
    );
    [
        ("/v1/traces", spans.encode_to_vec()),
        ("/v1/logs", logs.encode_to_vec()),
        ("/v1/metrics", metrics.encode_to_vec()),
    ]
}

fn counter(http: &Http, backend: &Serve) -> String {
    let reply = http.get_query(
        &backend.url("/api/v1/query"),
        &[("query", "replayed_steps_total")],
        &[],
    );
    reply.json()["data"]["result"][0]["value"][1]
        .as_str()
        .unwrap_or("absent")
        .to_string()
}

#[test]
fn the_same_export_sent_twice_is_held_once_and_counted_as_absorbed() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let (trace, span, start) = (
        TraceId::random(),
        SpanId::random(),
        obsctl::encode::now_unix_nanos(),
    );
    // `start` is now: within the log query's default window (the last hour).
    let sent = requests(trace, span, start);
    for _ in 0..2 {
        for (path, body) in &sent {
            let reply = http.post(
                &format!("{}{path}", backend.http),
                &[PROTOBUF],
                body.clone(),
            );
            assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        }
    }
    // Each request is acknowledged only after its commit, so all of it is visible now.
    assert_eq!(backend.spans(&trace.to_hex()).len(), 2);
    let lines = backend.logs(&trace.to_hex());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(counter(&http, &backend), "1");
    let status = http.get(&backend.url("/api/status"), &[]).json();
    assert_eq!(
        status["duplicates_absorbed"],
        serde_json::json!({"spans": 2, "logs": 1, "metric_points": 1}),
        "{status}"
    );
    // The next step of the same stream (a new interval) is new: it is added.
    let next = requests(TraceId::random(), SpanId::random(), start);
    let mut metrics = ExportMetricsServiceRequest::decode(next[2].1.as_slice()).unwrap();
    let point = match &mut metrics.resource_metrics[0].scope_metrics[0].metrics[0].data {
        Some(Data::Sum(sum)) => &mut sum.data_points[0],
        other => panic!("{other:?}"),
    };
    point.start_time_unix_nano = start + 1_000;
    point.time_unix_nano = start + 2_000;
    let reply = http.post(
        &format!("{}/v1/metrics", backend.http),
        &[PROTOBUF],
        metrics.encode_to_vec(),
    );
    assert_eq!(reply.status, 200);
    assert_eq!(counter(&http, &backend), "2");
}
