//! Bad input against the real `obsctl serve`: each case gets its exact status (HTTP and gRPC),
//! a reason, and nothing from a refused request is stored; invalid ids are rejected per item
//! (OTLP partial success) while the valid items of the same request are kept.

mod common;

use std::io::Write;
use std::process::Command;

use common::embedded::delta_counter;
use common::{Http, Serve};
use obsctl::otlp::proto::collector::logs::v1::{
    ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use obsctl::otlp::proto::collector::metrics::v1::ExportMetricsServiceResponse;
use obsctl::otlp::proto::collector::trace::v1::trace_service_client::TraceServiceClient;
use obsctl::otlp::proto::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use obsctl::otlp::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use obsctl::otlp::proto::metrics::v1::{Exemplar, NumberDataPoint, number_data_point};
use obsctl::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use obsctl::otlp::{SpanId, TraceId, attrs};
use prost::Message;
use prost::bytes::{Buf, BufMut};
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

const PROTOBUF: (&str, &str) = ("content-type", "application/x-protobuf");
const JSON: (&str, &str) = ("content-type", "application/json");

fn span(trace_id: Vec<u8>, span_id: Vec<u8>, task: &str) -> Span {
    Span {
        trace_id,
        span_id,
        name: task.into(),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_000_001,
        attributes: vec![attrs::string("taskId", task)],
        ..Default::default()
    }
}

fn traces(spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// Trace ids found by a search for `taskId=<task>`.
fn search(http: &Http, backend: &Serve, task: &str) -> Vec<String> {
    let reply = http.get_query(
        &format!("{}/api/search", backend.api),
        &[("tags", &format!("taskId={task}"))],
        &[],
    );
    assert_eq!(reply.status, 200);
    reply.json()["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traceID"].as_str().unwrap().to_string())
        .collect()
}

fn nothing_stored(http: &Http, backend: &Serve) {
    let reply = http.get(&format!("{}/api/search", backend.api), &[]);
    assert_eq!(
        reply.json()["traces"],
        serde_json::json!([]),
        "no span stored"
    );
    let metrics = http.get(&format!("{}/metrics", backend.api), &[]);
    assert_eq!(metrics.text(), "# EOF\n", "no series stored");
    let logs = http.get_query(
        &format!("{}/loki/api/v1/query_range", backend.api),
        &[("query", "{service_name=~\".*\"}"), ("start", "0")],
        &[],
    );
    assert_eq!(
        logs.json()["data"]["result"],
        serde_json::json!([]),
        "no log stored"
    );
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(body).unwrap();
    enc.finish().unwrap()
}

#[test]
fn malformed_oversized_and_mistyped_requests_are_refused_and_store_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let url = |path: &str| format!("{}{path}", backend.http);

    // Malformed protobuf: 400 with a google.rpc.Status body saying why.
    let reply = http.post(
        &url("/v1/traces"),
        &[PROTOBUF],
        vec![0x0a, 0xff, 0xff, 0xff],
    );
    assert_eq!(reply.status, 400);
    assert_eq!(reply.content_type, "application/x-protobuf");
    assert!(
        reply.text().contains("invalid protobuf"),
        "{}",
        reply.text()
    );

    // Malformed JSON, and JSON of the wrong shape.
    for body in [
        &b"{\"resourceSpans\": ["[..],
        b"{\"resourceSpans\": 5}",
        b"[]",
    ] {
        let reply = http.post(&url("/v1/traces"), &[JSON], body.to_vec());
        assert_eq!(reply.status, 400, "{}", reply.text());
        assert_eq!(reply.json()["code"], 3);
        assert!(
            reply.json()["message"]
                .as_str()
                .unwrap()
                .contains("invalid OTLP/JSON"),
            "{}",
            reply.text()
        );
    }
    for path in ["/v1/metrics", "/v1/logs"] {
        let reply = http.post(&url(path), &[PROTOBUF], b"not protobuf at all".to_vec());
        assert_eq!(reply.status, 400, "{path}");
    }

    // Over the 16 MiB limit, plain and as a gzip bomb; a corrupt gzip body.
    let big = vec![b' '; 16 * 1024 * 1024 + 1];
    let reply = http.post(&url("/v1/traces"), &[JSON], big.clone());
    assert_eq!(reply.status, 413);
    let reply = http.post(
        &url("/v1/traces"),
        &[JSON, ("content-encoding", "gzip")],
        gzip(&big),
    );
    assert_eq!(reply.status, 413, "{}", reply.text());
    let reply = http.post(
        &url("/v1/traces"),
        &[PROTOBUF, ("content-encoding", "gzip")],
        b"\x1f\x8b not really".to_vec(),
    );
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("gzip"));

    // Unknown content type.
    let reply = http.post(
        &url("/v1/traces"),
        &[("content-type", "text/plain")],
        b"x".to_vec(),
    );
    assert_eq!(reply.status, 415);
    assert!(reply.text().contains("application/x-protobuf"));

    nothing_stored(&http, &backend);
}

/// Sends raw bytes as a gRPC message, to reach the server with a malformed protobuf.
#[derive(Clone, Copy)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = RawCodec;
    type Decoder = RawCodec;
    fn encoder(&mut self) -> RawCodec {
        RawCodec
    }
    fn decoder(&mut self) -> RawCodec {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = tonic::Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, tonic::Status> {
        let out = src.chunk().to_vec();
        src.advance(out.len());
        Ok(Some(out))
    }
}

#[test]
fn grpc_malformed_is_invalid_argument_and_oversized_is_resource_exhausted() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let channel = tonic::transport::Channel::from_shared(backend.grpc.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        grpc.ready().await.unwrap();
        let status = grpc
            .unary(
                tonic::Request::new(vec![0x0a, 0xff, 0xff, 0xff]),
                tonic::codegen::http::uri::PathAndQuery::from_static(
                    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
                ),
                RawCodec,
            )
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains("invalid protobuf"));

        let huge = traces(vec![Span {
            name: "x".repeat(17 * 1024 * 1024),
            ..span(
                TraceId::random().as_bytes().to_vec(),
                SpanId::random().as_bytes().to_vec(),
                "huge",
            )
        }]);
        let status = TraceServiceClient::new(channel)
            .max_encoding_message_size(usize::MAX)
            .export(huge)
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
    });
    nothing_stored(&http, &backend);
}

#[test]
fn invalid_ids_are_rejected_per_item_and_the_rest_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let good = TraceId::random();
    let request = traces(vec![
        span(
            good.as_bytes().to_vec(),
            SpanId::random().as_bytes().to_vec(),
            "good",
        ),
        span(
            vec![1, 2, 3],
            SpanId::random().as_bytes().to_vec(),
            "short-trace",
        ),
        span(
            vec![0; 16],
            SpanId::random().as_bytes().to_vec(),
            "zero-trace",
        ),
        span(
            TraceId::random().as_bytes().to_vec(),
            vec![9; 4],
            "short-span",
        ),
    ]);
    let reply = http.post(
        &format!("{}/v1/traces", backend.http),
        &[PROTOBUF],
        request.encode_to_vec(),
    );
    assert_eq!(reply.status, 200);
    let response = ExportTraceServiceResponse::decode(reply.body.as_slice()).unwrap();
    let partial = response.partial_success.expect("partial success");
    assert_eq!(partial.rejected_spans, 3);
    assert!(
        partial.error_message.contains("short-trace"),
        "{}",
        partial.error_message
    );
    assert!(partial.error_message.contains("is not 8 non-zero bytes"));
    assert_eq!(search(&http, &backend, "good"), vec![good.to_hex()]);
    for task in ["short-trace", "zero-trace", "short-span"] {
        assert!(
            search(&http, &backend, task).is_empty(),
            "{task} was stored"
        );
    }

    // OTLP/JSON: an id that is not hex is rejected per item too.
    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[
            {{"traceId":"{}","spanId":"{}","name":"json-good","attributes":[{{"key":"taskId","value":{{"stringValue":"json-good"}}}}]}},
            {{"traceId":"not-hex-at-all!!","spanId":"{}","name":"json-bad","attributes":[{{"key":"taskId","value":{{"stringValue":"json-bad"}}}}]}}
        ]}}]}}]}}"#,
        TraceId::random().to_hex().to_uppercase(),
        SpanId::random().to_hex(),
        SpanId::random().to_hex()
    );
    let reply = http.post(
        &format!("{}/v1/traces", backend.http),
        &[JSON],
        json.into_bytes(),
    );
    assert_eq!(reply.status, 200);
    let body = reply.json();
    assert_eq!(body["partialSuccess"]["rejectedSpans"], 1, "{body}");
    assert!(
        body["partialSuccess"]["errorMessage"]
            .as_str()
            .unwrap()
            .contains("not hex")
    );
    assert_eq!(search(&http, &backend, "json-good").len(), 1);
    assert!(search(&http, &backend, "json-bad").is_empty());

    // Logs: present-but-invalid ids are rejected.
    let logs = ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![
                    LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000,
                        trace_id: vec![7; 5],
                        ..Default::default()
                    },
                    LogRecord {
                        time_unix_nano: 1_700_000_000_000_000_000,
                        span_id: vec![7; 3],
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let reply = http.post(
        &format!("{}/v1/logs", backend.http),
        &[PROTOBUF],
        logs.encode_to_vec(),
    );
    assert_eq!(reply.status, 200);
    let response = ExportLogsServiceResponse::decode(reply.body.as_slice()).unwrap();
    assert_eq!(response.partial_success.unwrap().rejected_log_records, 2);

    // Metrics: a data point whose exemplar carries a bad trace id is rejected, with its series.
    let point = |exemplar_trace: Vec<u8>| NumberDataPoint {
        time_unix_nano: 1,
        value: Some(number_data_point::Value::AsInt(1)),
        exemplars: vec![Exemplar {
            trace_id: exemplar_trace,
            time_unix_nano: 1,
            ..Default::default()
        }],
        attributes: vec![attrs::string("case", "x")],
        ..Default::default()
    };
    let metrics = delta_counter("bad_exemplar", None, vec![point(vec![1; 3])]);
    let reply = http.post(
        &format!("{}/v1/metrics", backend.http),
        &[PROTOBUF],
        metrics.encode_to_vec(),
    );
    assert_eq!(reply.status, 200);
    let response = ExportMetricsServiceResponse::decode(reply.body.as_slice()).unwrap();
    let partial = response.partial_success.unwrap();
    assert_eq!(partial.rejected_data_points, 1);
    assert!(partial.error_message.contains("exemplar trace id"));
    let text = http.get(&format!("{}/metrics", backend.api), &[]).text();
    assert!(!text.contains("bad_exemplar"), "{text}");
}

#[test]
fn queries_outside_the_subset_get_400_naming_what_is_unsupported() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let api = |p: &str| format!("{}{p}", backend.api);

    let reply = http.get_query(
        &api("/api/v1/query"),
        &[("query", "rate(x_total[5m])")],
        &[],
    );
    assert_eq!(reply.status, 400);
    let body = reply.json();
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "bad_data");
    assert!(
        body["error"].as_str().unwrap().contains("\"rate\""),
        "{body}"
    );
    let reply = http.get_query(&api("/api/v1/query_exemplars"), &[("query", "x + y")], &[]);
    assert_eq!(reply.status, 400);
    assert_eq!(reply.json()["errorType"], "bad_data");

    let reply = http.get_query(
        &api("/loki/api/v1/query_range"),
        &[("query", "{service_name=\"a\"} | json")],
        &[],
    );
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("\"json\""), "{}", reply.text());
    let reply = http.get_query(
        &api("/loki/api/v1/query_range"),
        &[("query", "sum(count_over_time({a=\"b\"}[1m]))")],
        &[],
    );
    assert_eq!(reply.status, 400);

    let reply = http.get_query(&api("/api/search"), &[("q", "{ span.a != \"x\" }")], &[]);
    assert_eq!(reply.status, 400);
    assert!(reply.text().contains("only = is in the subset"));

    let unknown = TraceId::random().to_hex();
    assert_eq!(
        http.get(&api(&format!("/api/traces/{unknown}")), &[])
            .status,
        404
    );
    assert_eq!(
        http.get(&api(&format!("/api/v2/traces/{unknown}")), &[])
            .status,
        404
    );
    assert_eq!(http.get(&api("/api/traces/not-an-id"), &[]).status, 400);
    // A path the backends have but the embedded one does not answer: refused with a reason.
    let reply = http.get(&api("/api/v1/query_range"), &[]);
    assert_eq!(reply.status, 400);
    assert!(
        reply
            .text()
            .contains("not part of the embedded backend's API"),
        "{}",
        reply.text()
    );
    assert_eq!(http.get(&api("/ready"), &[]).status, 200);
    assert_eq!(http.get(&api("/api/echo"), &[]).text(), "echo");
}

#[test]
fn non_loopback_bind_needs_allow_remote() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_obsctl"))
        .args([
            "serve",
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
        ])
        .args(["--api", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--endpoints-file")
        .arg(dir.path().join("endpoints.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--allow-remote"), "{stderr}");
    assert!(stderr.contains("0.0.0.0"), "{stderr}");
    assert!(!dir.path().join("endpoints.json").exists());
}

#[test]
fn graceful_shutdown_removes_the_endpoints_file_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut backend = Serve::start(dir.path());
    let endpoints: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&backend.endpoints_file).unwrap()).unwrap();
    assert_eq!(endpoints["runtime"], "embedded");
    assert_eq!(endpoints["tempo"], backend.api);
    assert_eq!(endpoints["otlpGrpc"], backend.grpc);
    assert_eq!(endpoints["pid"], backend.pid());
    let http = Http::new();
    let id = TraceId::random();
    let reply = http.post(
        &format!("{}/v1/traces", backend.http),
        &[PROTOBUF],
        traces(vec![span(
            id.as_bytes().to_vec(),
            SpanId::random().as_bytes().to_vec(),
            "kept",
        )])
        .encode_to_vec(),
    );
    assert_eq!(reply.status, 200);
    let status = backend.terminate();
    assert!(status.success(), "{status:?}");
    assert!(!backend.endpoints_file.exists());
    let backend = Serve::start(dir.path());
    assert_eq!(search(&http, &backend, "kept"), vec![id.to_hex()]);
}

#[test]
fn a_closed_stdout_does_not_stop_the_backend() {
    let dir = tempfile::tempdir().unwrap();
    let endpoints_file = dir.path().join("endpoints.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_obsctl"))
        .args([
            "serve",
            "--otlp-grpc",
            "127.0.0.1:0",
            "--otlp-http",
            "127.0.0.1:0",
        ])
        .args(["--api", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--endpoints-file")
        .arg(&endpoints_file)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let guard = common::ChildGuard::new(child);
    let http = Http::new();
    let api = common::poll(
        "the endpoints file is written",
        std::time::Duration::from_secs(20),
        || {
            let body = std::fs::read(&endpoints_file).ok()?;
            let json: serde_json::Value = serde_json::from_slice(&body).ok()?;
            json["tempo"].as_str().map(str::to_string)
        },
    );
    common::poll(
        "the backend answers",
        std::time::Duration::from_secs(20),
        || {
            http.try_get(&format!("{api}/ready"))
                .filter(|r| r.status == 200)
        },
    );
    drop(guard);
}

#[test]
fn gzip_bodies_are_accepted_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let id = TraceId::random();
    let body = traces(vec![span(
        id.as_bytes().to_vec(),
        SpanId::random().as_bytes().to_vec(),
        "zipped",
    )]);
    let reply = http.post(
        &format!("{}/v1/traces", backend.http),
        &[PROTOBUF, ("content-encoding", "gzip")],
        gzip(&body.encode_to_vec()),
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        ExportTraceServiceResponse::decode(reply.body.as_slice())
            .unwrap()
            .partial_success
            .is_none()
    );
    assert_eq!(search(&http, &backend, "zipped"), vec![id.to_hex()]);
}

#[test]
fn gzip_requests_are_accepted_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let id = TraceId::random();
    let request = traces(vec![span(
        id.as_bytes().to_vec(),
        SpanId::random().as_bytes().to_vec(),
        "grpc-zipped",
    )]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let response = rt.block_on(async {
        TraceServiceClient::connect(backend.grpc.clone())
            .await
            .unwrap()
            .send_compressed(tonic::codec::CompressionEncoding::Gzip)
            .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
            .export(request)
            .await
            .unwrap()
    });
    assert!(response.into_inner().partial_success.is_none());
    assert_eq!(search(&http, &backend, "grpc-zipped"), vec![id.to_hex()]);
}
