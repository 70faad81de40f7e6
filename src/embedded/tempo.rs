//! Tempo-shaped trace answers: trace by id (v1 `batches` and v2 `trace` wrappers, ids in
//! base64 as Tempo writes them, enums by name) and search by `tags=` (logfmt) or a minimal
//! TraceQL (`{ span.k = "v" && resource.k = "v" && .k = "v" }`).

use std::collections::BTreeMap;

use base64::Engine;
use serde_json::{Value as Json, json};

use crate::otlp::attrs;
use crate::otlp::proto::trace::v1::{span::SpanKind, status::StatusCode};

use super::promql::{Cursor, QueryError};
use super::store::{SpanHit, StoredTrace, TagFilter, TagScope};

const ID_FIELDS: [&str; 3] = ["traceId", "spanId", "parentSpanId"];

/// Rewrites the OTLP/JSON of stored spans into Tempo's dialect.
fn tempo_dialect(value: &mut Json) {
    match value {
        Json::Object(map) => {
            for (key, v) in map.iter_mut() {
                match (key.as_str(), &mut *v) {
                    (k, Json::String(s)) if ID_FIELDS.contains(&k) => {
                        let bytes: Vec<u8> = (0..s.len() / 2)
                            .filter_map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok())
                            .collect();
                        *s = base64::engine::general_purpose::STANDARD.encode(bytes);
                    }
                    ("kind", Json::Number(n)) => {
                        let name = n
                            .as_i64()
                            .and_then(|i| SpanKind::try_from(i as i32).ok())
                            .map_or("SPAN_KIND_UNSPECIFIED", |k| k.as_str_name());
                        *v = Json::String(name.into());
                    }
                    ("status", Json::Object(status)) => {
                        if let Some(Json::Number(n)) = status.get("code") {
                            let name = n
                                .as_i64()
                                .and_then(|i| StatusCode::try_from(i as i32).ok())
                                .map_or("STATUS_CODE_UNSET", |c| c.as_str_name());
                            status.insert("code".into(), Json::String(name.into()));
                        }
                        tempo_dialect(v);
                    }
                    _ => tempo_dialect(v),
                }
            }
        }
        Json::Array(items) => items.iter_mut().for_each(tempo_dialect),
        _ => {}
    }
}

fn resource_spans_json(trace: &StoredTrace) -> Json {
    let mut value = serde_json::to_value(trace).expect("OTLP types serialize");
    tempo_dialect(&mut value);
    value
}

/// `GET /api/traces/{id}`.
pub fn trace_v1(trace: &StoredTrace) -> Json {
    json!({ "batches": resource_spans_json(trace) })
}

/// `GET /api/v2/traces/{id}`.
pub fn trace_v2(trace: &StoredTrace) -> Json {
    json!({ "trace": { "resourceSpans": resource_spans_json(trace) } })
}

/// Tempo's `tags=` parameter: logfmt `k=v k2="v 2"`, each an exact match on a span or resource
/// attribute.
pub fn parse_tags(text: &str) -> Result<Vec<TagFilter>, QueryError> {
    let mut cur = Cursor::new(text);
    let mut filters = Vec::new();
    while !cur.done() {
        let rest = cur.rest();
        let Some(eq) = rest.find('=') else {
            return Err(QueryError(format!(
                "tags: expected key=value, found {:?}",
                rest.trim()
            )));
        };
        let key = rest[..eq].trim().to_string();
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(QueryError(format!("tags: invalid key {key:?}")));
        }
        cur.pos += eq + 1;
        let value = if cur.rest().starts_with('"') {
            cur.string()?
        } else {
            let rest = cur.rest();
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            cur.pos += end;
            rest[..end].to_string()
        };
        filters.push(TagFilter {
            scope: TagScope::Any,
            key,
            value,
        });
    }
    Ok(filters)
}

/// The minimal TraceQL: one spanset `{ cond && cond ... }` where `cond` is
/// `span.key = "v"`, `resource.key = "v"` or `.key = "v"` (string, number or boolean literal).
pub fn parse_traceql(text: &str) -> Result<Vec<TagFilter>, QueryError> {
    let mut cur = Cursor::new(text);
    cur.expect("{")?;
    let mut filters = Vec::new();
    if cur.eat("}") {
        return if cur.done() {
            Ok(filters)
        } else {
            Err(unsupported(text))
        };
    }
    loop {
        cur.skip_ws();
        let rest = cur.rest();
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | '!' | '<' | '>' | '~'))
            .unwrap_or(rest.len());
        let path = &rest[..end];
        let (scope, key) = if let Some(k) = path.strip_prefix("span.") {
            (TagScope::Span, k)
        } else if let Some(k) = path.strip_prefix("resource.") {
            (TagScope::Resource, k)
        } else if let Some(k) = path.strip_prefix('.') {
            (TagScope::Any, k)
        } else {
            return Err(QueryError(format!(
                "unsupported TraceQL {path:?}: the embedded backend answers span.<key>, \
                 resource.<key> and .<key> attribute conditions"
            )));
        };
        if key.is_empty() {
            return Err(QueryError("TraceQL: empty attribute name".into()));
        }
        cur.pos += end;
        cur.skip_ws();
        if cur.rest().starts_with("!=") || cur.rest().starts_with("=~") || !cur.eat("=") {
            return Err(QueryError(format!(
                "unsupported TraceQL operator after {path:?}: only = is in the subset"
            )));
        }
        cur.skip_ws();
        let value = if cur.rest().starts_with('"') {
            cur.string()?
        } else {
            let rest = cur.rest();
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '}' || c == '&')
                .unwrap_or(rest.len());
            cur.pos += end;
            rest[..end].to_string()
        };
        filters.push(TagFilter {
            scope,
            key: key.to_string(),
            value,
        });
        if cur.eat("&&") {
            continue;
        }
        cur.expect("}")?;
        if !cur.done() {
            return Err(unsupported(text));
        }
        return Ok(filters);
    }
}

fn unsupported(text: &str) -> QueryError {
    QueryError(format!(
        "unsupported TraceQL {text:?}: the embedded backend answers one spanset {{ a = \"x\" && b = \"y\" }}"
    ))
}

/// One search result: the summary Tempo gives plus the matching spans.
pub fn search_result(
    hits: Vec<SpanHit>,
    load: impl Fn(&crate::otlp::TraceId) -> Option<StoredTrace>,
) -> Json {
    let mut order = Vec::new();
    let mut by_trace: BTreeMap<crate::otlp::TraceId, Vec<SpanHit>> = BTreeMap::new();
    for hit in hits {
        if !by_trace.contains_key(&hit.trace_id) {
            order.push(hit.trace_id);
        }
        by_trace.entry(hit.trace_id).or_default().push(hit);
    }
    let traces: Vec<Json> = order
        .iter()
        .map(|id| {
            let hits = &by_trace[id];
            let mut start = u64::MAX;
            let mut end = 0u64;
            let mut root: Option<(String, String)> = None;
            let mut earliest: Option<(u64, String, String)> = None;
            for rs in load(id).unwrap_or_default() {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| attrs::get(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        start = start.min(span.start_time_unix_nano);
                        end = end.max(span.end_time_unix_nano);
                        if span.parent_span_id.is_empty() {
                            root = Some((service.clone(), span.name.clone()));
                        }
                        if earliest
                            .as_ref()
                            .is_none_or(|(t, _, _)| span.start_time_unix_nano < *t)
                        {
                            earliest = Some((
                                span.start_time_unix_nano,
                                service.clone(),
                                span.name.clone(),
                            ));
                        }
                    }
                }
            }
            let (root_service, root_name) = root
                .or(earliest.map(|(_, s, n)| (s, n)))
                .unwrap_or_default();
            let spans: Vec<Json> = hits
                .iter()
                .map(|h| {
                    json!({
                        "spanID": crate::encode::hex(&h.span.span_id),
                        "name": h.span.name,
                        "startTimeUnixNano": h.span.start_time_unix_nano.to_string(),
                        "durationNanos": h.span.end_time_unix_nano.saturating_sub(h.span.start_time_unix_nano).to_string(),
                        "attributes": serde_json::to_value(&h.span.attributes).expect("serializes"),
                    })
                })
                .collect();
            let span_set = json!({ "spans": spans, "matched": hits.len() });
            let start = if start == u64::MAX { 0 } else { start };
            json!({
                "traceID": id.to_hex(),
                "rootServiceName": root_service,
                "rootTraceName": root_name,
                "startTimeUnixNano": start.to_string(),
                "durationMs": end.saturating_sub(start) / 1_000_000,
                "spanSet": span_set,
                "spanSets": [span_set],
            })
        })
        .collect();
    json!({ "traces": traces, "metrics": { "inspectedTraces": order.len() } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_logfmt() {
        let tags = parse_tags(r#"taskId=T-1 service.name="agent steps""#).unwrap();
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].key, "taskId");
        assert_eq!(tags[0].value, "T-1");
        assert_eq!(tags[1].value, "agent steps");
    }

    #[test]
    fn minimal_traceql() {
        let f = parse_traceql(r#"{ span.taskId = "x" && resource.service.name = "y" }"#).unwrap();
        assert_eq!(f[0].scope, TagScope::Span);
        assert_eq!(f[1].scope, TagScope::Resource);
        assert_eq!(f[1].key, "service.name");
        assert!(parse_traceql(r#"{ span.a != "x" }"#).is_err());
        assert!(parse_traceql(r#"{ .a = "x" } | count() > 1"#).is_err());
        assert!(parse_traceql(r#"{ duration > 1s }"#).is_err());
    }
}
