//! The Tempo, Loki and Prometheus clients against response bodies shaped exactly like the real
//! APIs' (tests/fixtures, reference §2). Tempo and Loki cannot run here, so a scripted server
//! stands in for them; the Prometheus client also runs against the real Debian Prometheus in
//! `verify_prometheus_real.rs`.

mod common;

use std::time::Duration;

use common::verify::{Canned, FakeBackend, fixture};
use obsctl::backends::loki::Direction;
use obsctl::backends::tempo::StatusCode;
use obsctl::backends::{BackendError, Http, LokiClient, PrometheusClient, TempoClient};
use obsctl::otlp::{SpanId, TraceId};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const ROOT: &str = "00f067aa0ba902b7";
const S1: &str = "1111111111111111";
const S2: &str = "2222222222222222";

fn trace_id() -> TraceId {
    TraceId::from_hex(TRACE).unwrap()
}

#[tokio::test]
async fn tempo_trace_by_id_decodes_base64_ids_string_ints_and_status_names() {
    let fake = FakeBackend::start();
    fake.script(
        &format!("/api/traces/{TRACE}"),
        vec![Canned::ok(fixture("tempo/trace_by_id_v1.json"))],
    );
    let tempo = TempoClient::new(&fake.url(), Http::default()).unwrap();
    let trace = tempo.trace(trace_id()).await.unwrap().expect("trace found");
    assert!(!trace.partial);
    assert_eq!(trace.spans.len(), 3);
    let root = &trace.spans[0];
    assert_eq!(root.span_id, SpanId::from_hex(ROOT).unwrap());
    assert_eq!(root.parent_span_id, None);
    let clippy = &trace.spans[1];
    assert_eq!(clippy.trace_id, trace_id());
    assert_eq!(clippy.span_id, SpanId::from_hex(S1).unwrap());
    assert_eq!(clippy.parent_span_id, Some(SpanId::from_hex(ROOT).unwrap()));
    assert_eq!(clippy.name, "clippy/verify");
    assert_eq!(clippy.attribute("prNumber"), Some("42"));
    assert_eq!(clippy.attribute("process.exit.code"), Some("0"));
    assert_eq!(clippy.status.code, StatusCode::Ok);
    assert_eq!(clippy.duration_nanos(), 1_000_000_000);
    assert_eq!(
        clippy.resource.get("service.name").map(String::as_str),
        Some("agent-steps")
    );
    let deploy = &trace.spans[2];
    assert_eq!(deploy.status.code, StatusCode::Error);
    assert_eq!(deploy.status.message, "exit code 1");
}

#[tokio::test]
async fn tempo_v2_shape_with_hex_ids_numeric_status_and_partial_flag() {
    let fake = FakeBackend::start();
    fake.script(
        &format!("/api/traces/{TRACE}"),
        vec![Canned::ok(fixture("tempo/trace_by_id_v2_partial.json"))],
    );
    let tempo = TempoClient::new(&fake.url(), Http::default()).unwrap();
    let trace = tempo.trace(trace_id()).await.unwrap().unwrap();
    assert!(trace.partial);
    assert_eq!(trace.spans.len(), 3);
    assert_eq!(trace.spans[2].span_id, SpanId::from_hex(S2).unwrap());
    assert_eq!(trace.spans[2].status.code, StatusCode::Error);
}

#[tokio::test]
async fn tempo_unknown_trace_is_none_and_server_errors_are_errors() {
    let fake = FakeBackend::start();
    fake.script(
        &format!("/api/traces/{TRACE}"),
        vec![
            Canned::status(404, "trace not found"),
            Canned::status(500, "ingester unavailable"),
        ],
    );
    let tempo = TempoClient::new(&fake.url(), Http::default()).unwrap();
    assert!(tempo.trace(trace_id()).await.unwrap().is_none());
    let err = tempo.trace(trace_id()).await.unwrap_err();
    assert!(
        matches!(err, BackendError::Status { status: 500, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("ingester unavailable"), "{err}");
}

#[tokio::test]
async fn tempo_search_sends_logfmt_tags_and_range_and_pads_trimmed_ids() {
    let fake = FakeBackend::start();
    fake.script(
        "/api/search",
        vec![Canned::ok(fixture("tempo/search.json"))],
    );
    let tempo = TempoClient::new(&fake.url(), Http::default()).unwrap();
    let hits = tempo
        .search(&[("taskId", "T-1")], 1_763_899_000, 1_763_901_000, 20)
        .await
        .unwrap();
    assert_eq!(hits.len(), 2);
    assert_eq!(
        hits[0].trace_id,
        TraceId::from_hex("00a1b2c3d4e5f60718293a4b5c6d7e8f").unwrap()
    );
    assert_eq!(hits[0].duration_ms, Some(3000));
    assert_eq!(
        hits[1].trace_id.to_hex(),
        "00ab12cd34ef567890abcdef12345678"
    );
    let request = &fake.requests()[0];
    assert_eq!(request.query["tags"], r#"taskId="T-1""#);
    assert_eq!(request.query["start"], "1763899000");
    assert_eq!(request.query["end"], "1763901000");
    assert_eq!(request.query["limit"], "20");
}

#[tokio::test]
async fn loki_reads_structured_metadata_plain_values_and_asks_for_categorized_labels() {
    let fake = FakeBackend::start();
    fake.script(
        "/loki/api/v1/query_range",
        vec![Canned::ok(fixture("loki/query_range_categorized.json"))],
    );
    let loki = LokiClient::new(&fake.url(), Http::default()).unwrap();
    let query = r#"{service_name="agent-steps"} | taskId="T-1""#;
    let entries = loki
        .query_range(query, 1, 2, 100, Direction::Forward)
        .await
        .unwrap();
    assert_eq!(entries.len(), 3);
    // Sorted by time across streams.
    assert!(
        entries
            .windows(2)
            .all(|w| w[0].timestamp_ns <= w[1].timestamp_ns)
    );
    assert!(entries[0].line.contains("step started"));
    assert_eq!(entries[0].trace_id(), Some(trace_id()));
    assert_eq!(entries[0].span_id(), Some(SpanId::from_hex(S1).unwrap()));
    assert_eq!(
        entries[0].parsed.get("msg").map(String::as_str),
        Some("step started")
    );
    assert_eq!(entries[1].field("repo"), Some("acme/widgets"));
    assert_eq!(entries[1].field("service_name"), Some("agent-steps"));
    assert_eq!(entries[2].line, "deploy failed: exit code 1");
    assert_eq!(entries[2].trace_id(), None);
    let request = &fake.requests()[0];
    assert_eq!(request.query["query"], query);
    assert_eq!(request.query["direction"], "forward");
    assert_eq!(
        request.headers["x-loki-response-encoding-flags"],
        "categorize-labels"
    );
}

#[tokio::test]
async fn loki_bad_query_is_reported_with_its_reason() {
    let fake = FakeBackend::start();
    fake.script(
        "/loki/api/v1/query_range",
        vec![Canned::status(
            400,
            "parse error at line 1, col 4: syntax error: unexpected IDENTIFIER",
        )],
    );
    let loki = LokiClient::new(&fake.url(), Http::default()).unwrap();
    let err = loki
        .query_range("{a", 1, 2, 10, Direction::Forward)
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Query { .. }), "{err}");
    assert!(err.to_string().contains("syntax error"), "{err}");
}

#[tokio::test]
async fn prometheus_vector_scalar_error_and_exemplars() {
    let fake = FakeBackend::start();
    // An instant query at a past time is scripted apart (see `FakeBackend`).
    fake.script(
        "/api/v1/query?agent_step_success_total@1763900010.000",
        vec![Canned::ok(fixture("prometheus/query_vector.json"))],
    );
    fake.script(
        "/api/v1/query?count(agent_step_success_total)",
        vec![Canned::ok(fixture("prometheus/query_scalar.json"))],
    );
    fake.script(
        "/api/v1/query?sum by",
        vec![Canned::status(400, fixture("prometheus/query_error.json"))],
    );
    fake.script(
        "/api/v1/query_exemplars",
        vec![Canned::ok(fixture("prometheus/query_exemplars.json"))],
    );
    let prom = PrometheusClient::new(&fake.url(), Http::default()).unwrap();

    let samples = prom
        .query("agent_step_success_total", Some(1_763_900_010.0))
        .await
        .unwrap();
    assert_eq!(samples.len(), 2);
    assert_eq!(samples[0].label("agent"), Some("clippy"));
    assert_eq!(samples[0].value, 3.0);
    assert_eq!(samples[1].value, 0.0);
    assert_eq!(fake.requests()[0].query["time"], "1763900010.000");

    let scalar = prom
        .query("count(agent_step_success_total)", None)
        .await
        .unwrap();
    assert_eq!(scalar.len(), 1);
    assert_eq!(scalar[0].value, 7.0);

    let err = prom.query("sum by", None).await.unwrap_err();
    assert!(matches!(err, BackendError::Query { .. }), "{err}");
    assert!(err.to_string().contains("bad_data"), "{err}");

    let exemplars = prom
        .query_exemplars("agent_step_duration_ms_bucket", 1.0, 2.0)
        .await
        .unwrap();
    assert_eq!(exemplars.len(), 2);
    assert_eq!(exemplars[0].trace_id(), Some(trace_id()));
    assert_eq!(exemplars[0].span_id(), Some(SpanId::from_hex(S1).unwrap()));
    // Tempo's metrics generator spells it traceID; the id still resolves.
    assert_eq!(exemplars[1].trace_id(), Some(trace_id()));
    assert_eq!(exemplars[1].value, 1700.0);
    assert_eq!(
        exemplars[1]
            .series_labels
            .get("stepName")
            .map(String::as_str),
        Some("preview")
    );
}

#[tokio::test]
async fn responses_over_the_size_cap_are_refused() {
    let fake = FakeBackend::start();
    fake.script(
        "/api/search",
        vec![Canned::ok(fixture("tempo/search.json"))],
    );
    let tempo = TempoClient::new(&fake.url(), Http::new(Duration::from_secs(5), 64)).unwrap();
    let err = tempo.search(&[], 0, 1, 1).await.unwrap_err();
    assert!(
        matches!(err, BackendError::TooLarge { limit: 64, .. }),
        "{err}"
    );
}

#[tokio::test]
async fn an_unreachable_backend_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let prom = PrometheusClient::new(&format!("http://127.0.0.1:{port}"), Http::default()).unwrap();
    let err = prom.query("up", None).await.unwrap_err();
    assert!(matches!(err, BackendError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("Prometheus"), "{err}");
}
