//! Loki's `query_range` for log streams, asking for categorized labels so that structured
//! metadata (where OTLP logs keep `trace_id`, `span_id` and most attributes) comes back as the
//! third element of each value, apart from the stream's index labels.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{BackendError, Http, base_url, string_map};
use crate::otlp::{SpanId, TraceId};

const BACKEND: &str = "Loki";
const ENCODING_FLAGS: (&str, &str) = ("X-Loki-Response-Encoding-Flags", "categorize-labels");

#[derive(Debug, Clone)]
pub struct LokiClient {
    base: String,
    http: Http,
}

/// One log line with everything Loki knows about it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LogEntry {
    pub timestamp_ns: u64,
    pub line: String,
    /// The stream's index labels.
    pub labels: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub structured_metadata: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub parsed: BTreeMap<String, String>,
}

impl LogEntry {
    /// A field by name, wherever Loki put it: structured metadata, parsed, then stream labels.
    pub fn field(&self, key: &str) -> Option<&str> {
        self.structured_metadata
            .get(key)
            .or_else(|| self.parsed.get(key))
            .or_else(|| self.labels.get(key))
            .map(String::as_str)
    }

    /// `trace_id` as OTLP ingestion writes it; `traceId`/`traceID` as JSON log lines often do.
    pub fn trace_id(&self) -> Option<TraceId> {
        TraceId::from_trimmed_hex(&self.id_text(["trace_id", "traceId", "traceID"])?).ok()
    }

    pub fn span_id(&self) -> Option<SpanId> {
        SpanId::from_trimmed_hex(&self.id_text(["span_id", "spanId", "spanID"])?).ok()
    }

    /// The first of `keys` found in the fields, else in a JSON log line no pipeline has parsed.
    fn id_text(&self, keys: [&str; 3]) -> Option<String> {
        if let Some(text) = keys.iter().find_map(|k| self.field(k)) {
            return Some(text.to_string());
        }
        if !self.line.trim_start().starts_with('{') {
            return None;
        }
        let value: serde_json::Value = serde_json::from_str(&self.line).ok()?;
        keys.iter()
            .find_map(|k| value.get(k)?.as_str().map(str::to_string))
    }
}

/// Which end of the range Loki starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Forward,
    Backward,
}

impl LokiClient {
    pub fn new(base: &str, http: Http) -> Result<Self, BackendError> {
        Ok(Self {
            base: base_url(BACKEND, base)?,
            http,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Log lines matching a LogQL log query between `start_ns` and `end_ns`, in time order.
    pub async fn query_range(
        &self,
        query: &str,
        start_ns: u64,
        end_ns: u64,
        limit: usize,
        direction: Direction,
    ) -> Result<Vec<LogEntry>, BackendError> {
        let url = format!("{}/loki/api/v1/query_range", self.base);
        let params = [
            ("query", query.to_string()),
            ("start", start_ns.to_string()),
            ("end", end_ns.to_string()),
            ("limit", limit.to_string()),
            (
                "direction",
                match direction {
                    Direction::Forward => "forward",
                    Direction::Backward => "backward",
                }
                .to_string(),
            ),
        ];
        let fetched = self
            .http
            .get(BACKEND, &url, &params, &[ENCODING_FLAGS])
            .await?;
        if !fetched.is_success() {
            // Loki answers a bad query with HTTP 400 and a plain-text reason.
            if fetched.status == 400 {
                return Err(BackendError::Query {
                    backend: BACKEND,
                    query: query.to_string(),
                    message: String::from_utf8_lossy(&fetched.body).trim().to_string(),
                });
            }
            return Err(fetched.status_error(BACKEND));
        }
        let body: Body = fetched.decode(BACKEND)?;
        if body.status != "success" {
            return Err(BackendError::Query {
                backend: BACKEND,
                query: query.to_string(),
                message: format!("status {}", body.status),
            });
        }
        if body.data.result_type != "streams" {
            return Err(BackendError::Shape {
                backend: BACKEND,
                url: super::redact(&url),
                reason: format!(
                    "resultType {} (a log query returns streams)",
                    crate::ui::quoted(&body.data.result_type)
                ),
            });
        }
        let mut entries = Vec::new();
        for stream in body.data.result {
            for value in stream.values {
                let (ts, line, categorized) = match value {
                    RawValue::Categorized(ts, line, c) => (ts, line, c),
                    RawValue::Plain(ts, line) => (ts, line, Categorized::default()),
                };
                let timestamp_ns = ts.parse().map_err(|_| BackendError::Shape {
                    backend: BACKEND,
                    url: super::redact(&url),
                    reason: format!("timestamp {} is not nanoseconds", crate::ui::quoted(&ts)),
                })?;
                entries.push(LogEntry {
                    timestamp_ns,
                    line,
                    labels: stream.stream.clone(),
                    structured_metadata: categorized.structured_metadata,
                    parsed: categorized.parsed,
                });
            }
        }
        entries.sort_by_key(|e| e.timestamp_ns);
        if direction == Direction::Backward {
            entries.reverse();
        }
        Ok(entries)
    }
}

/// `"quoted"` for a LogQL label matcher or label filter: JSON string escaping is what LogQL's
/// double-quoted strings accept.
pub fn quote(value: &str) -> String {
    serde_json::to_string(value).expect("strings serialize")
}

#[derive(Deserialize)]
struct Body {
    status: String,
    data: Data,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Data {
    result_type: String,
    #[serde(default)]
    result: Vec<Stream>,
}

#[derive(Deserialize)]
struct Stream {
    #[serde(default, deserialize_with = "string_map")]
    stream: BTreeMap<String, String>,
    #[serde(default)]
    values: Vec<RawValue>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawValue {
    Categorized(String, String, Categorized),
    Plain(String, String),
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Categorized {
    #[serde(default, deserialize_with = "string_map")]
    structured_metadata: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "string_map")]
    parsed: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(line: &str, metadata: &[(&str, &str)]) -> LogEntry {
        LogEntry {
            timestamp_ns: 1,
            line: line.to_string(),
            labels: BTreeMap::new(),
            structured_metadata: metadata
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            parsed: BTreeMap::new(),
        }
    }

    #[test]
    fn ids_come_from_metadata_or_a_json_line() {
        let trace = TraceId::random();
        let span = SpanId::random();
        let from_metadata = entry(
            "step started",
            &[("trace_id", &trace.to_hex()), ("span_id", &span.to_hex())],
        );
        assert_eq!(from_metadata.trace_id(), Some(trace));
        assert_eq!(from_metadata.span_id(), Some(span));
        let from_line = entry(
            &format!(r#"{{"traceId":"{trace}","spanId":"{span}","msg":"x"}}"#),
            &[],
        );
        assert_eq!(from_line.trace_id(), Some(trace));
        assert_eq!(from_line.span_id(), Some(span));
        assert_eq!(entry("plain text", &[]).trace_id(), None);
    }

    #[test]
    fn quote_escapes_for_logql() {
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
    }
}
