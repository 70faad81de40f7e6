//! Tempo's query API: trace by id (`/api/traces/<id>`, v1 `batches` or v2 `trace.resourceSpans`,
//! ids in base64 or hex) and tag search (`/api/search`, zero-trimmed hex ids).
//! Everything is flattened into [`Span`]s with typed ids and string attributes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BackendError, Http, base_url};
use crate::otlp::{IdError, SpanId, TraceId};

const BACKEND: &str = "Tempo";

#[derive(Debug, Clone)]
pub struct TempoClient {
    base: String,
    http: Http,
}

/// OTLP status codes, whichever way the JSON spells them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StatusCode {
    #[default]
    Unset,
    Ok,
    Error,
}

impl std::fmt::Display for StatusCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StatusCode::Unset => "UNSET",
            StatusCode::Ok => "OK",
            StatusCode::Error => "ERROR",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SpanStatus {
    pub code: StatusCode,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
}

/// One span as Tempo returned it, with its resource's attributes alongside.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent_span_id: Option<SpanId>,
    pub name: String,
    pub start_unix_nano: u64,
    pub end_unix_nano: u64,
    pub status: SpanStatus,
    pub attributes: BTreeMap<String, String>,
    pub resource: BTreeMap<String, String>,
}

impl Span {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }

    pub fn duration_nanos(&self) -> u64 {
        self.end_unix_nano.saturating_sub(self.start_unix_nano)
    }
}

/// A trace as returned by trace-by-id; `partial` when Tempo says it cut the trace short.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Trace {
    pub spans: Vec<Span>,
    pub partial: bool,
}

/// One hit of a tag search.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchHit {
    pub trace_id: TraceId,
    pub root_service_name: Option<String>,
    pub root_trace_name: Option<String>,
    pub start_unix_nano: Option<u64>,
    pub duration_ms: Option<u64>,
}

impl TempoClient {
    pub fn new(base: &str, http: Http) -> Result<Self, BackendError> {
        Ok(Self {
            base: base_url(BACKEND, base)?,
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The trace's URL on this API, for a person to open (without credentials).
    pub fn trace_url(&self, id: TraceId) -> String {
        super::redact(&format!("{}/api/traces/{}", self.base, id))
    }

    /// The trace, or `None` when Tempo does not know it (yet).
    pub async fn trace(&self, id: TraceId) -> Result<Option<Trace>, BackendError> {
        let url = format!("{}/api/traces/{}", self.base, id);
        let fetched = self.http.get(BACKEND, &url, &[], &[]).await?;
        if fetched.status == 404 {
            return Ok(None);
        }
        if !fetched.is_success() {
            return Err(fetched.status_error(BACKEND));
        }
        let body: TraceBody = fetched.decode(BACKEND)?;
        let partial = body.status.as_deref() == Some("PARTIAL");
        let batches = match body.trace {
            Some(v2) => v2.resource_spans,
            None => body.batches,
        };
        let spans = flatten(batches).map_err(|reason| BackendError::Shape {
            backend: BACKEND,
            url: url.clone(),
            reason,
        })?;
        if spans.is_empty() && !partial {
            return Ok(None);
        }
        Ok(Some(Trace { spans, partial }))
    }

    /// Traces whose spans carry all `tags` (exact values), started within `[start, end]` unix
    /// seconds; Tempo only searches recent data without a range.
    pub async fn search(
        &self,
        tags: &[(&str, &str)],
        start: u64,
        end: u64,
        limit: usize,
    ) -> Result<Vec<SearchHit>, BackendError> {
        let url = format!("{}/api/search", self.base);
        let query = [
            ("tags", logfmt(tags)),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("limit", limit.to_string()),
        ];
        let fetched = self.http.get(BACKEND, &url, &query, &[]).await?;
        if !fetched.is_success() {
            return Err(fetched.status_error(BACKEND));
        }
        let body: SearchBody = fetched.decode(BACKEND)?;
        body.traces
            .into_iter()
            .map(|t| {
                Ok(SearchHit {
                    trace_id: TraceId::from_trimmed_hex(&t.trace_id).map_err(|e| {
                        BackendError::Shape {
                            backend: BACKEND,
                            url: super::redact(&url),
                            reason: format!("traceID: {e}"),
                        }
                    })?,
                    root_service_name: t.root_service_name,
                    root_trace_name: t.root_trace_name,
                    start_unix_nano: t.start_time_unix_nano.map(|n| n.0),
                    duration_ms: t.duration_ms,
                })
            })
            .collect()
    }
}

/// `key="value"` pairs separated by spaces, as Tempo's `tags` parameter expects.
fn logfmt(tags: &[(&str, &str)]) -> String {
    tags.iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                serde_json::to_string(v).expect("strings serialize")
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Ids in Tempo's JSON: base64 per the protobuf JSON mapping, but hex is tolerated, since
/// OTLP/JSON and some Tempo versions use it. The lengths differ, so they cannot be confused.
fn parse_trace_id(text: &str) -> Result<TraceId, IdError> {
    if text.len() == TraceId::LEN * 2 {
        TraceId::from_hex(text)
    } else {
        TraceId::from_base64(text)
    }
}

fn parse_span_id(text: &str) -> Result<SpanId, IdError> {
    if text.len() == SpanId::LEN * 2 {
        SpanId::from_hex(text)
    } else {
        SpanId::from_base64(text)
    }
}

fn flatten(batches: Vec<ResourceSpans>) -> Result<Vec<Span>, String> {
    let mut spans = Vec::new();
    for batch in batches {
        let resource = attributes_map(batch.resource.map(|r| r.attributes).unwrap_or_default());
        for scope in batch.scope_spans {
            for raw in scope.spans {
                let parent_span_id = match raw.parent_span_id.as_deref() {
                    None | Some("") => None,
                    Some(text) => {
                        Some(parse_span_id(text).map_err(|e| format!("parentSpanId: {e}"))?)
                    }
                };
                spans.push(Span {
                    trace_id: parse_trace_id(&raw.trace_id).map_err(|e| format!("traceId: {e}"))?,
                    span_id: parse_span_id(&raw.span_id).map_err(|e| format!("spanId: {e}"))?,
                    parent_span_id,
                    name: raw.name,
                    start_unix_nano: raw.start_time_unix_nano.0,
                    end_unix_nano: raw.end_time_unix_nano.0,
                    status: raw.status.into_status(),
                    attributes: attributes_map(raw.attributes),
                    resource: resource.clone(),
                });
            }
        }
    }
    Ok(spans)
}

fn attributes_map(list: Vec<JsonKeyValue>) -> BTreeMap<String, String> {
    list.into_iter()
        .filter_map(|kv| Some((kv.key, kv.value?.into_text()?)))
        .collect()
}

#[derive(Deserialize)]
struct TraceBody {
    #[serde(default)]
    batches: Vec<ResourceSpans>,
    #[serde(default)]
    trace: Option<TraceV2>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TraceV2 {
    #[serde(default)]
    resource_spans: Vec<ResourceSpans>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans {
    #[serde(default)]
    resource: Option<JsonResource>,
    #[serde(default, alias = "instrumentationLibrarySpans")]
    scope_spans: Vec<ScopeSpans>,
}

#[derive(Deserialize)]
struct JsonResource {
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
}

#[derive(Deserialize)]
struct ScopeSpans {
    #[serde(default)]
    spans: Vec<RawSpan>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpan {
    trace_id: String,
    span_id: String,
    #[serde(default)]
    parent_span_id: Option<String>,
    #[serde(default)]
    name: String,
    start_time_unix_nano: Nanos,
    end_time_unix_nano: Nanos,
    #[serde(default)]
    attributes: Vec<JsonKeyValue>,
    #[serde(default)]
    status: RawStatus,
}

#[derive(Deserialize, Default)]
struct RawStatus {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: String,
}

impl RawStatus {
    fn into_status(self) -> SpanStatus {
        let code = match self.code {
            Some(serde_json::Value::String(s)) => match s.as_str() {
                "STATUS_CODE_ERROR" | "Error" | "ERROR" | "error" => StatusCode::Error,
                "STATUS_CODE_OK" | "Ok" | "OK" | "ok" => StatusCode::Ok,
                _ => StatusCode::Unset,
            },
            Some(serde_json::Value::Number(n)) => match n.as_u64() {
                Some(1) => StatusCode::Ok,
                Some(2) => StatusCode::Error,
                _ => StatusCode::Unset,
            },
            _ => StatusCode::Unset,
        };
        SpanStatus {
            code,
            message: self.message,
        }
    }
}

/// Unix nanoseconds: a decimal string in protobuf JSON, a number in some encoders.
#[derive(Clone, Copy)]
struct Nanos(u64);

impl<'de> Deserialize<'de> for Nanos {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::String(s) => s.parse().map(Nanos).map_err(serde::de::Error::custom),
            serde_json::Value::Number(n) => n
                .as_u64()
                .map(Nanos)
                .ok_or_else(|| serde::de::Error::custom("nanoseconds must be a whole number")),
            other => Err(serde::de::Error::custom(format!(
                "expected nanoseconds, got {other}"
            ))),
        }
    }
}

#[derive(Deserialize)]
struct JsonKeyValue {
    key: String,
    #[serde(default)]
    value: Option<JsonAnyValue>,
}

/// OTLP `AnyValue` in protobuf JSON: `intValue` is a string, `bytesValue` base64.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct JsonAnyValue {
    string_value: Option<String>,
    int_value: Option<serde_json::Value>,
    bool_value: Option<bool>,
    double_value: Option<serde_json::Value>,
    bytes_value: Option<String>,
    array_value: Option<JsonArray>,
    kvlist_value: Option<JsonKvList>,
}

#[derive(Deserialize)]
struct JsonArray {
    #[serde(default)]
    values: Vec<JsonAnyValue>,
}

#[derive(Deserialize)]
struct JsonKvList {
    #[serde(default)]
    values: Vec<JsonKeyValue>,
}

impl JsonAnyValue {
    fn into_text(self) -> Option<String> {
        let scalar = |v: serde_json::Value| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        if let Some(s) = self.string_value {
            return Some(s);
        }
        if let Some(i) = self.int_value {
            return Some(scalar(i));
        }
        if let Some(b) = self.bool_value {
            return Some(b.to_string());
        }
        if let Some(d) = self.double_value {
            return Some(scalar(d));
        }
        if let Some(b) = self.bytes_value {
            return Some(b);
        }
        if let Some(a) = self.array_value {
            let items: Vec<String> = a.values.into_iter().filter_map(Self::into_text).collect();
            return Some(format!("[{}]", items.join(",")));
        }
        if let Some(kv) = self.kvlist_value {
            let items: Vec<String> = kv
                .values
                .into_iter()
                .filter_map(|e| Some(format!("{}={}", e.key, e.value?.into_text()?)))
                .collect();
            return Some(format!("{{{}}}", items.join(",")));
        }
        None
    }
}

#[derive(Deserialize)]
struct SearchBody {
    #[serde(default)]
    traces: Vec<SearchTrace>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SearchTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(default)]
    root_service_name: Option<String>,
    #[serde(default)]
    root_trace_name: Option<String>,
    #[serde(default)]
    start_time_unix_nano: Option<Nanos>,
    #[serde(default)]
    duration_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_in_base64_and_hex_decode_alike() {
        let id = TraceId::random();
        assert_eq!(parse_trace_id(&id.to_base64()).unwrap(), id);
        assert_eq!(parse_trace_id(&id.to_hex()).unwrap(), id);
        let span = SpanId::random();
        assert_eq!(parse_span_id(&span.to_base64()).unwrap(), span);
        assert_eq!(parse_span_id(&span.to_hex()).unwrap(), span);
        assert!(parse_span_id("not an id").is_err());
    }

    #[test]
    fn logfmt_quotes_values() {
        assert_eq!(
            logfmt(&[("taskId", "T-1"), ("repo", "a b")]),
            r#"taskId="T-1" repo="a b""#
        );
    }
}
