//! Round trips through the real `obsctl serve` with OTLP clients nobody here wrote: the Rust
//! `opentelemetry-otlp` exporters (gRPC, HTTP/protobuf, HTTP/JSON) and the Python SDK with its
//! OTLP exporters. Everything is read back through the Tempo-, Loki- and Prometheus-shaped API.

mod common;

use std::time::Duration;

use common::embedded::{attr, b64_to_hex, require_python, run_python};
use common::serve::tempo_spans;
use common::{Http, Serve, poll};
use opentelemetry::KeyValue;
use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::logs::SdkLoggerProvider;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

struct Sent {
    trace_id: String,
    root_span_id: String,
    child_span_id: String,
}

#[derive(Clone, Copy)]
enum Transport {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

/// Sends one trace (root + child with an event and an error status), one correlated log record
/// and a counter and a histogram with the Rust SDK, then flushes and shuts everything down.
fn send_with_rust_sdk(backend: &Serve, transport: Transport, task_id: &str) -> Sent {
    let resource = Resource::builder()
        .with_service_name("rust-agent")
        .with_attribute(KeyValue::new("service.instance.id", task_id.to_string()))
        .build();
    let (spans, logs, metrics) = match transport {
        Transport::Grpc => (
            opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&backend.grpc)
                .build()
                .expect("span exporter"),
            opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(&backend.grpc)
                .build()
                .expect("log exporter"),
            opentelemetry_otlp::MetricExporter::builder()
                .with_tonic()
                .with_endpoint(&backend.grpc)
                .build()
                .expect("metric exporter"),
        ),
        Transport::HttpProtobuf | Transport::HttpJson => {
            let protocol = match transport {
                Transport::HttpJson => Protocol::HttpJson,
                _ => Protocol::HttpBinary,
            };
            (
                opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .with_endpoint(format!("{}/v1/traces", backend.http))
                    .build()
                    .expect("span exporter"),
                opentelemetry_otlp::LogExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .with_endpoint(format!("{}/v1/logs", backend.http))
                    .build()
                    .expect("log exporter"),
                opentelemetry_otlp::MetricExporter::builder()
                    .with_http()
                    .with_protocol(protocol)
                    .with_endpoint(format!("{}/v1/metrics", backend.http))
                    .build()
                    .expect("metric exporter"),
            )
        }
    };
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(spans)
        .build();
    let logger_provider = SdkLoggerProvider::builder()
        .with_resource(resource.clone())
        .with_batch_exporter(logs)
        .build();
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_periodic_exporter(metrics)
        .build();

    let tracer = tracer_provider.tracer("obsctl-test-rust");
    let root = tracer
        .span_builder("rust-root")
        .with_kind(SpanKind::Server)
        .with_attributes(vec![
            KeyValue::new("taskId", task_id.to_string()),
            KeyValue::new("prNumber", 7_i64),
            KeyValue::new("ratio", 0.5),
            KeyValue::new("dry", false),
        ])
        .start(&tracer);
    let root_ctx = root.span_context().clone();
    let cx = opentelemetry::Context::current_with_span(root);
    let mut child = tracer
        .span_builder("rust-child")
        .with_attributes(vec![KeyValue::new("taskId", task_id.to_string())])
        .start_with_context(&tracer, &cx);
    child.add_event("tool-call", vec![KeyValue::new("tool", "grep")]);
    child.set_status(Status::error("tool failed"));
    let child_ctx = child.span_context().clone();

    let logger = logger_provider.logger("obsctl-test-rust");
    let mut record = logger.create_log_record();
    record.set_body(AnyValue::from(format!("step build finished for {task_id}")));
    record.set_severity_number(Severity::Info);
    record.set_severity_text("INFO");
    record.add_attribute("taskId", task_id.to_string());
    record.set_trace_context(child_ctx.trace_id(), child_ctx.span_id(), None);
    logger.emit(record);

    let meter = meter_provider.meter("obsctl-test-rust");
    let labels = [
        KeyValue::new("agent", "rust"),
        KeyValue::new("step.name", task_id.to_string()),
    ];
    meter.u64_counter("rust_steps").build().add(3, &labels);
    meter
        .f64_histogram("rust_duration_ms")
        .with_boundaries(vec![10.0, 100.0])
        .build()
        .record(42.0, &labels);

    child.end();
    cx.span().end();
    tracer_provider.force_flush().expect("flush spans");
    logger_provider.force_flush().expect("flush logs");
    meter_provider.force_flush().expect("flush metrics");
    tracer_provider.shutdown().expect("shutdown tracer");
    logger_provider.shutdown().expect("shutdown logger");
    meter_provider.shutdown().expect("shutdown meter");
    Sent {
        trace_id: root_ctx.trace_id().to_string(),
        root_span_id: root_ctx.span_id().to_string(),
        child_span_id: child_ctx.span_id().to_string(),
    }
}

fn trace_by_id(http: &Http, backend: &Serve, trace_id: &str) -> Value {
    poll("the trace is stored", WAIT, || {
        let reply = http.get(&format!("{}/api/traces/{trace_id}", backend.api), &[]);
        (reply.status == 200).then(|| reply.json())
    })
}

/// The spans of the trace, checked field by field against what the client sent.
fn assert_trace(trace: &Value, sent: &Sent, root_name: &str, child_name: &str, service: &str) {
    let spans = tempo_spans(trace);
    assert_eq!(spans.len(), 2, "{trace}");
    let (resource, root) = spans
        .iter()
        .find(|(_, s)| s["name"] == root_name)
        .expect("root span");
    let (_, child) = spans
        .iter()
        .find(|(_, s)| s["name"] == child_name)
        .expect("child span");
    assert_eq!(
        attr(&resource["attributes"], "service.name").unwrap()["stringValue"],
        service
    );
    // Tempo writes ids in base64 in this JSON.
    assert_eq!(b64_to_hex(root["traceId"].as_str().unwrap()), sent.trace_id);
    assert_eq!(
        b64_to_hex(root["spanId"].as_str().unwrap()),
        sent.root_span_id
    );
    assert_eq!(
        b64_to_hex(child["spanId"].as_str().unwrap()),
        sent.child_span_id
    );
    assert_eq!(
        b64_to_hex(child["parentSpanId"].as_str().unwrap()),
        sent.root_span_id
    );
    assert_eq!(root["kind"], "SPAN_KIND_SERVER");
    assert_eq!(
        attr(&root["attributes"], "prNumber").unwrap()["intValue"],
        "7"
    );
    assert_eq!(
        attr(&root["attributes"], "ratio").unwrap()["doubleValue"],
        0.5
    );
    assert_eq!(
        attr(&root["attributes"], "dry").unwrap()["boolValue"],
        false
    );
    let start: u64 = root["startTimeUnixNano"].as_str().unwrap().parse().unwrap();
    let end: u64 = root["endTimeUnixNano"].as_str().unwrap().parse().unwrap();
    assert!(start > 1_600_000_000_000_000_000 && end >= start, "{root}");
    assert_eq!(child["events"][0]["name"], "tool-call");
    assert_eq!(
        attr(&child["events"][0]["attributes"], "tool").unwrap()["stringValue"],
        "grep"
    );
    assert_eq!(child["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(child["status"]["message"], "tool failed");
}

fn assert_searchable(http: &Http, backend: &Serve, task_id: &str, trace_id: &str) {
    let found = http.get_query(
        &format!("{}/api/search", backend.api),
        &[("tags", &format!("taskId={task_id}")), ("limit", "5")],
        &[],
    );
    assert_eq!(found.status, 200);
    let traces = found.json()["traces"].clone();
    assert_eq!(traces.as_array().unwrap().len(), 1, "{traces}");
    assert_eq!(traces[0]["traceID"], trace_id);
    assert_eq!(traces[0]["spanSets"][0]["matched"], 2);
    let traceql = http.get_query(
        &format!("{}/api/search", backend.api),
        &[("q", &format!("{{ span.taskId = \"{task_id}\" }}"))],
        &[],
    );
    assert_eq!(traceql.json()["traces"][0]["traceID"], trace_id);
}

/// The log record, read back with Loki's categorize-labels encoding.
fn assert_log(http: &Http, backend: &Serve, service: &str, task_id: &str, sent: &Sent) {
    let query = format!("{{service_name=\"{service}\"}} | taskId=\"{task_id}\"");
    let reply = poll("the log record is stored", WAIT, || {
        let reply = http.get_query(
            &format!("{}/loki/api/v1/query_range", backend.api),
            &[("query", &query)],
            &[("X-Loki-Response-Encoding-Flags", "categorize-labels")],
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        let json = reply.json();
        (!json["data"]["result"].as_array().unwrap().is_empty()).then_some(json)
    });
    let result = &reply["data"]["result"];
    assert_eq!(result.as_array().unwrap().len(), 1, "{reply}");
    assert_eq!(result[0]["stream"]["service_name"], service);
    let value = &result[0]["values"][0];
    assert_eq!(value[1], format!("step build finished for {task_id}"));
    let meta = &value[2]["structuredMetadata"];
    assert_eq!(meta["trace_id"], sent.trace_id.as_str());
    assert_eq!(meta["span_id"], sent.child_span_id.as_str());
    assert_eq!(meta["severity_text"], "INFO");
    assert_eq!(meta["taskId"], task_id);
    let ns: u64 = value[0].as_str().unwrap().parse().unwrap();
    assert!(ns > 1_600_000_000_000_000_000);
}

fn prom_value(http: &Http, backend: &Serve, query: &str) -> Option<f64> {
    let reply = http.get_query(
        &format!("{}/api/v1/query", backend.api),
        &[("query", query)],
        &[],
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    let json = reply.json();
    assert_eq!(json["status"], "success");
    assert_eq!(json["data"]["resultType"], "vector");
    let value = &json["data"]["result"][0]["value"];
    assert!(value[0].is_f64());
    value[1].as_str().map(|v| v.parse().unwrap())
}

#[test]
fn rust_exporters_round_trip_over_grpc_and_http() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    // The tonic exporter needs a runtime while it is built and while it exports.
    let grpc = {
        let _guard = rt.enter();
        send_with_rust_sdk(&backend, Transport::Grpc, "R-grpc")
    };
    // The blocking HTTP client must live outside any runtime.
    let http_proto = std::thread::scope(|s| {
        s.spawn(|| send_with_rust_sdk(&backend, Transport::HttpProtobuf, "R-http"))
            .join()
            .unwrap()
    });
    let http_json = std::thread::scope(|s| {
        s.spawn(|| send_with_rust_sdk(&backend, Transport::HttpJson, "R-json"))
            .join()
            .unwrap()
    });
    for (sent, task) in [
        (&grpc, "R-grpc"),
        (&http_proto, "R-http"),
        (&http_json, "R-json"),
    ] {
        let trace = trace_by_id(&http, &backend, &sent.trace_id);
        assert_trace(&trace, sent, "rust-root", "rust-child", "rust-agent");
        let v2 = http.get(
            &format!("{}/api/v2/traces/{}", backend.api, sent.trace_id),
            &[],
        );
        assert_eq!(
            v2.json()["trace"]["resourceSpans"],
            trace["batches"],
            "v2 wraps the same resource spans"
        );
        assert_searchable(&http, &backend, task, &sent.trace_id);
        assert_log(&http, &backend, "rust-agent", task, sent);
        // Label names are sanitised as the collector's Prometheus exporter does (`.` → `_`).
        let steps = format!("rust_steps_total{{agent=\"rust\",step_name=\"{task}\"}}");
        assert_eq!(prom_value(&http, &backend, &steps), Some(3.0));
        let count = format!("rust_duration_ms_count{{step_name=\"{task}\"}}");
        assert_eq!(prom_value(&http, &backend, &count), Some(1.0));
        let bucket = format!("rust_duration_ms_bucket{{step_name=\"{task}\",le=\"10\"}}");
        assert_eq!(prom_value(&http, &backend, &bucket), Some(0.0));
        let bucket = format!("rust_duration_ms_bucket{{step_name=\"{task}\",le=\"100\"}}");
        assert_eq!(prom_value(&http, &backend, &bucket), Some(1.0));
    }
    assert_eq!(
        prom_value(&http, &backend, "sum(rust_steps_total)"),
        Some(9.0)
    );
}

#[test]
fn python_sdk_round_trips_over_grpc_and_http() {
    if !require_python("python_sdk_round_trips_over_grpc_and_http") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let grpc = run_python(&[
        "--endpoint",
        &backend.grpc,
        "--protocol",
        "grpc",
        "--task-id",
        "P-grpc",
        "--temporality",
        "delta",
    ]);
    let over_http = run_python(&[
        "--endpoint",
        &backend.http,
        "--protocol",
        "http",
        "--task-id",
        "P-http",
    ]);
    for (ids, task) in [(&grpc, "P-grpc"), (&over_http, "P-http")] {
        let sent = Sent {
            trace_id: ids["trace_id"].as_str().unwrap().to_string(),
            root_span_id: ids["root_span_id"].as_str().unwrap().to_string(),
            child_span_id: ids["child_span_id"].as_str().unwrap().to_string(),
        };
        let trace = trace_by_id(&http, &backend, &sent.trace_id);
        assert_trace(&trace, &sent, "py-root", "py-child", "py-agent");
        assert_searchable(&http, &backend, task, &sent.trace_id);
        assert_log(&http, &backend, "py-agent", task, &sent);
    }
    // One delta and one cumulative process, one increment each.
    assert_eq!(
        prom_value(&http, &backend, "sum(agent_step_success_total)"),
        Some(2.0)
    );
    let exemplars = http.get_query(
        &format!("{}/api/v1/query_exemplars", backend.api),
        &[("query", "agent_step_success_total"), ("start", "0")],
        &[],
    );
    assert_eq!(exemplars.status, 200);
    let data = exemplars.json()["data"].clone();
    let exemplar = &data[0]["exemplars"][0];
    // The latest exemplar wins: the second process's.
    assert_eq!(exemplar["labels"]["trace_id"], over_http["trace_id"]);
    assert_eq!(exemplar["labels"]["span_id"], over_http["child_span_id"]);
    assert_eq!(exemplar["value"], "1");
    let text = http.get(&format!("{}/metrics", backend.api), &[]);
    assert_eq!(
        text.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let body = text.text();
    assert!(body.ends_with("# EOF\n"), "{body}");
    assert!(!body.contains("# UNIT"), "{body}");
    assert!(
        body.contains(
            "agent_step_duration_ms_count{agent=\"py\",repo=\"org/repo\",stepName=\"build\"} 2\n"
        ),
        "{body}"
    );
}
