//! OTLP over HTTP: `POST /v1/traces|metrics|logs`, protobuf or OTLP/JSON, optionally gzip.
//! Answers in the request's encoding; failures carry a `google.rpc.Status` body as the OTLP
//! specification asks.

// Helpers return the finished error `Response` so handlers can answer early.
#![allow(clippy::result_large_err)]

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use prost::Message;
use serde_json::json;

use crate::otlp::proto::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use crate::otlp::proto::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use crate::otlp::proto::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};

use super::ingest::{self, DecodeError, Encoding, MAX_BODY_BYTES};
use super::pipeline::Sink;
use super::pipeline::{self, IngestError, Outcome};

/// `google.rpc.Status`, the body of an OTLP/HTTP error response.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

fn error(status: StatusCode, grpc_code: i32, encoding: Encoding, message: String) -> Response {
    match encoding {
        Encoding::Protobuf => (
            status,
            [(header::CONTENT_TYPE, PROTOBUF)],
            RpcStatus {
                code: grpc_code,
                message,
            }
            .encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            status,
            [(header::CONTENT_TYPE, JSON)],
            json!({"code": grpc_code, "message": message}).to_string(),
        )
            .into_response(),
    }
}

fn decode_error(err: DecodeError, encoding: Encoding) -> Response {
    match err {
        DecodeError::TooLarge => error(StatusCode::PAYLOAD_TOO_LARGE, 8, encoding, err.to_string()),
        _ => error(StatusCode::BAD_REQUEST, 3, encoding, err.to_string()),
    }
}

fn ingest_error(err: IngestError, encoding: Encoding) -> Response {
    error(
        StatusCode::SERVICE_UNAVAILABLE,
        14,
        encoding,
        err.to_string(),
    )
}

/// The encoding named by `Content-Type`, or the 415 response.
fn encoding(headers: &HeaderMap) -> Result<Encoding, Response> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    match mime.to_ascii_lowercase().as_str() {
        PROTOBUF => Ok(Encoding::Protobuf),
        JSON => Ok(Encoding::Json),
        _ => Err(error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            3,
            Encoding::Json,
            format!("unsupported Content-Type {content_type:?}: expected {PROTOBUF} or {JSON}"),
        )),
    }
}

fn body_of(headers: &HeaderMap, body: Bytes) -> Result<Vec<u8>, DecodeError> {
    let content_encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match content_encoding.as_str() {
        "gzip" => ingest::gunzip(&body),
        "identity" | "" => Ok(body.to_vec()),
        other => Err(DecodeError::Gzip(format!(
            "unsupported Content-Encoding {other:?}: expected gzip or none"
        ))),
    }
}

fn respond<T: Message + serde::Serialize>(encoding: Encoding, message: &T) -> Response {
    match encoding {
        Encoding::Protobuf => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, PROTOBUF)],
            message.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => {
            // An absent partial success is left out rather than written as null.
            let mut body = serde_json::to_value(message).expect("response serializes");
            if let Some(map) = body.as_object_mut() {
                map.retain(|_, v| !v.is_null());
            }
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, JSON)],
                body.to_string(),
            )
                .into_response()
        }
    }
}

/// Shared front half of every handler: content type, decompression, decoding.
fn prepare<T>(headers: &HeaderMap, body: Bytes) -> Result<(Encoding, ingest::Decoded<T>), Response>
where
    T: Message + Default + serde::de::DeserializeOwned,
{
    let encoding = encoding(headers)?;
    let raw = body_of(headers, body).map_err(|e| decode_error(e, encoding))?;
    let decoded = ingest::decode::<T>(&raw, encoding).map_err(|e| decode_error(e, encoding))?;
    Ok((encoding, decoded))
}

fn partial<T>(outcome: Outcome, make: impl FnOnce(i64, String) -> T) -> Option<T> {
    (outcome.rejected > 0).then(|| make(outcome.rejected, outcome.message))
}

async fn traces(State(sink): State<Sink>, headers: HeaderMap, body: Bytes) -> Response {
    let (encoding, decoded) = match prepare::<ExportTraceServiceRequest>(&headers, body) {
        Ok(x) => x,
        Err(response) => return response,
    };
    match pipeline::traces(&sink, decoded.request, decoded.problems).await {
        Ok(outcome) => respond(
            encoding,
            &ExportTraceServiceResponse {
                partial_success: partial(outcome, |rejected_spans, error_message| {
                    ExportTracePartialSuccess {
                        rejected_spans,
                        error_message,
                    }
                }),
            },
        ),
        Err(e) => ingest_error(e, encoding),
    }
}

async fn logs(State(sink): State<Sink>, headers: HeaderMap, body: Bytes) -> Response {
    let (encoding, decoded) = match prepare::<ExportLogsServiceRequest>(&headers, body) {
        Ok(x) => x,
        Err(response) => return response,
    };
    match pipeline::logs(&sink, decoded.request, decoded.problems).await {
        Ok(outcome) => respond(
            encoding,
            &ExportLogsServiceResponse {
                partial_success: partial(outcome, |rejected_log_records, error_message| {
                    ExportLogsPartialSuccess {
                        rejected_log_records,
                        error_message,
                    }
                }),
            },
        ),
        Err(e) => ingest_error(e, encoding),
    }
}

async fn metrics(State(sink): State<Sink>, headers: HeaderMap, body: Bytes) -> Response {
    let (encoding, decoded) = match prepare::<ExportMetricsServiceRequest>(&headers, body) {
        Ok(x) => x,
        Err(response) => return response,
    };
    match pipeline::metrics(&sink, decoded.request, decoded.problems).await {
        Ok(outcome) => respond(
            encoding,
            &ExportMetricsServiceResponse {
                partial_success: partial(outcome, |rejected_data_points, error_message| {
                    ExportMetricsPartialSuccess {
                        rejected_data_points,
                        error_message,
                    }
                }),
            },
        ),
        Err(e) => ingest_error(e, encoding),
    }
}

pub fn router(sink: Sink, timeout: std::time::Duration) -> Router {
    Router::new()
        .route("/v1/traces", post(traces))
        .route("/v1/metrics", post(metrics))
        .route("/v1/logs", post(logs))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            super::time_limit,
        ))
        .with_state(sink)
}
