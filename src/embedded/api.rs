//! The query API on one HTTP address: Tempo (`/api/traces`, `/api/v2/traces`, `/api/search`,
//! `/api/echo`), Loki (`/loki/api/v1/query_range`, `/loki/api/v1/labels`, and OTLP ingestion at
//! `/otlp/v1/logs`, where a collector's `otlphttp` exporter sends Loki logs), Prometheus
//! (`/metrics`, `/api/v1/query`, `/api/v1/query_exemplars`), and `/ready`.

// Helpers return the finished error `Response` so handlers can answer early; boxing it would
// only add noise to every handler.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value as Json, json};

use crate::otlp::TraceId;

use super::logql::{self, Entry};
use super::metrics::{self, Sample};
use super::promql;
use super::store::{LogScan, SpanSearch, Store, StoreError, now_ns};
use super::tempo;

type Shared = State<Arc<Store>>;

/// Tempo's default search limit.
const DEFAULT_SEARCH_LIMIT: usize = 20;
/// Loki's default and maximum entry limits.
const DEFAULT_LOG_LIMIT: usize = 100;
const MAX_LOG_LIMIT: usize = 5000;
/// Without `start`, Loki searches the last hour.
const DEFAULT_LOG_WINDOW_NS: i64 = 3600 * 1_000_000_000;
/// The labels endpoint looks at no more records than this.
const MAX_LABEL_SCAN: usize = 100_000;

fn json_response(status: StatusCode, body: Json) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn text(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body,
    )
        .into_response()
}

fn store_failure(e: StoreError) -> Response {
    text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

async fn blocking<T: Send + 'static>(
    store: &Arc<Store>,
    f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || f(&store)).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(store_failure(e)),
        Err(e) => Err(text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

async fn ready() -> &'static str {
    "ready"
}

async fn echo() -> &'static str {
    "echo"
}

/// The backend's own state: the repeats idempotent ingest absorbed (`identity`), per signal.
async fn status(State(store): Shared) -> Response {
    match blocking(&store, |s| s.absorbed()).await {
        Ok(absorbed) => json_response(StatusCode::OK, json!({"duplicates_absorbed": absorbed})),
        Err(r) => r,
    }
}

fn parse_trace_id(raw: &str) -> Result<TraceId, Response> {
    TraceId::from_trimmed_hex(raw).map_err(|e| {
        text(
            StatusCode::BAD_REQUEST,
            format!("invalid trace id {raw:?}: {e}"),
        )
    })
}

async fn trace_by_id(
    store: &Arc<Store>,
    raw: String,
    shape: fn(&super::store::StoredTrace) -> Json,
) -> Response {
    let id = match parse_trace_id(&raw) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match blocking(store, move |s| s.trace(&id)).await {
        Ok(Some(trace)) => json_response(StatusCode::OK, shape(&trace)),
        Ok(None) => text(StatusCode::NOT_FOUND, format!("trace not found: {raw}")),
        Err(r) => r,
    }
}

async fn trace_v1(State(store): Shared, Path(id): Path<String>) -> Response {
    trace_by_id(&store, id, tempo::trace_v1).await
}

async fn trace_v2(State(store): Shared, Path(id): Path<String>) -> Response {
    trace_by_id(&store, id, tempo::trace_v2).await
}

#[derive(Debug, Deserialize)]
struct SearchParams {
    tags: Option<String>,
    q: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
    #[serde(rename = "minDuration")]
    min_duration: Option<String>,
    #[serde(rename = "maxDuration")]
    max_duration: Option<String>,
}

fn bad(message: impl Into<String>) -> Response {
    text(StatusCode::BAD_REQUEST, message.into())
}

fn unix_seconds(name: &str, raw: &Option<String>) -> Result<Option<i64>, Response> {
    raw.as_deref()
        .map(|s| {
            s.parse::<i64>()
                .map(|secs| secs.saturating_mul(1_000_000_000))
                .map_err(|_| bad(format!("{name}: expected unix seconds, got {s:?}")))
        })
        .transpose()
}

async fn search(State(store): Shared, Query(p): Query<SearchParams>) -> Response {
    if p.min_duration.is_some() || p.max_duration.is_some() {
        return bad("minDuration/maxDuration are not supported by the embedded backend");
    }
    let filters = match (&p.tags, &p.q) {
        (Some(_), Some(_)) => return bad("give either tags= or q=, not both"),
        (Some(tags), None) => tempo::parse_tags(tags),
        (None, Some(q)) => tempo::parse_traceql(q),
        (None, None) => Ok(Vec::new()),
    };
    let filters = match filters {
        Ok(f) => f,
        Err(e) => return bad(e.0),
    };
    let (start_ns, end_ns) = match (unix_seconds("start", &p.start), unix_seconds("end", &p.end)) {
        (Ok(s), Ok(e)) => (s, e.map(|e| e + 999_999_999)),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let limit = match p.limit.as_deref().map(str::parse::<usize>).transpose() {
        Ok(l) => l.unwrap_or(DEFAULT_SEARCH_LIMIT).clamp(1, 10_000),
        Err(_) => return bad("limit: expected a positive integer"),
    };
    let search = SpanSearch {
        filters,
        start_ns,
        end_ns,
        limit,
    };
    let result = blocking(&store, move |s| {
        let hits = s.search_spans(&search)?;
        let mut traces = BTreeMap::new();
        for hit in &hits {
            if let std::collections::btree_map::Entry::Vacant(slot) = traces.entry(hit.trace_id) {
                slot.insert(s.trace(&hit.trace_id)?);
            }
        }
        Ok(tempo::search_result(hits, |id| {
            traces.get(id).cloned().flatten()
        }))
    })
    .await;
    match result {
        Ok(body) => json_response(StatusCode::OK, body),
        Err(r) => r,
    }
}

#[derive(Debug, Deserialize)]
struct LokiParams {
    query: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
    direction: Option<String>,
    since: Option<String>,
}

/// Loki's timestamp rules: a number with a dot is unix seconds; an integer of up to 10 digits
/// is seconds, a longer one nanoseconds.
fn loki_time(name: &str, raw: Option<&str>) -> Result<Option<i64>, String> {
    let Some(raw) = raw.filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    if raw.contains('.') {
        return raw
            .parse::<f64>()
            .map(|s| Some((s * 1e9) as i64))
            .map_err(|_| format!("{name}: cannot parse {raw:?} as unix seconds"));
    }
    let n: i64 = raw.parse().map_err(|_| {
        format!("{name}: cannot parse {raw:?}: use unix seconds or nanoseconds (RFC3339 is not supported by the embedded backend)")
    })?;
    Ok(Some(if raw.len() <= 10 {
        n.saturating_mul(1_000_000_000)
    } else {
        n
    }))
}

fn loki_window(p: &LokiParams) -> Result<(i64, i64), String> {
    let end = loki_time("end", p.end.as_deref())?.unwrap_or_else(now_ns);
    if p.since.is_some() {
        return Err("since= is not supported by the embedded backend; use start".into());
    }
    let start = loki_time("start", p.start.as_deref())?.unwrap_or(end - DEFAULT_LOG_WINDOW_NS);
    Ok((start, end))
}

async fn query_range(
    State(store): Shared,
    headers: HeaderMap,
    Query(p): Query<LokiParams>,
) -> Response {
    let Some(query) = p.query.clone() else {
        return bad("query= is required");
    };
    let query = match logql::parse(&query) {
        Ok(q) => q,
        Err(e) => return bad(format!("parse error: {}", e.0)),
    };
    let (start, end) = match loki_window(&p) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let limit = match p.limit.as_deref().map(str::parse::<usize>).transpose() {
        Ok(l) => l.unwrap_or(DEFAULT_LOG_LIMIT).clamp(1, MAX_LOG_LIMIT),
        Err(_) => return bad("limit: expected a positive integer"),
    };
    let forward = match p.direction.as_deref() {
        None | Some("backward") | Some("BACKWARD") => false,
        Some("forward") | Some("FORWARD") => true,
        Some(other) => {
            return bad(format!(
                "direction: expected forward or backward, got {other:?}"
            ));
        }
    };
    let categorize = headers
        .get("X-Loki-Response-Encoding-Flags")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|f| f.trim() == "categorize-labels"));
    let scan = LogScan {
        start_ns: start,
        end_ns: end,
        forward,
    };
    let entries = blocking(&store, move |s| {
        let mut entries = Vec::new();
        s.scan_logs(&scan, |hit| {
            let entry = Entry::from_hit(&hit);
            if query.matches(&entry) {
                entries.push(entry);
            }
            entries.len() < limit
        })?;
        Ok(entries)
    })
    .await;
    let entries = match entries {
        Ok(e) => e,
        Err(r) => return r,
    };
    let mut streams: Vec<(BTreeMap<String, String>, Vec<Json>)> = Vec::new();
    for e in entries {
        let (labels, value) = if categorize {
            (
                e.stream,
                json!([e.time_ns.to_string(), e.line, {"structuredMetadata": e.metadata}]),
            )
        } else {
            let mut all = e.stream;
            all.extend(e.metadata);
            (all, json!([e.time_ns.to_string(), e.line]))
        };
        match streams.iter_mut().find(|(l, _)| *l == labels) {
            Some((_, values)) => values.push(value),
            None => streams.push((labels, vec![value])),
        }
    }
    let result: Vec<Json> = streams
        .into_iter()
        .map(|(stream, values)| json!({"stream": stream, "values": values}))
        .collect();
    let mut data = json!({"resultType": "streams", "result": result, "stats": {}});
    if categorize {
        data["encodingFlags"] = json!(["categorize-labels"]);
    }
    json_response(StatusCode::OK, json!({"status": "success", "data": data}))
}

async fn labels(State(store): Shared, Query(p): Query<LokiParams>) -> Response {
    let (start, end) = match loki_window(&p) {
        Ok(w) => w,
        Err(e) => return bad(e),
    };
    let scan = LogScan {
        start_ns: start,
        end_ns: end,
        forward: false,
    };
    let names = blocking(&store, move |s| {
        let mut names = BTreeSet::new();
        let mut seen = 0usize;
        s.scan_logs(&scan, |hit| {
            names.extend(Entry::from_hit(&hit).stream.into_keys());
            seen += 1;
            seen < MAX_LABEL_SCAN
        })?;
        Ok(names)
    })
    .await;
    match names {
        Ok(names) => json_response(StatusCode::OK, json!({"status": "success", "data": names})),
        Err(r) => r,
    }
}

async fn metrics_text(State(store): Shared) -> Response {
    match blocking(&store, |s| s.series()).await {
        Ok(series) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            metrics::render_openmetrics(&series),
        )
            .into_response(),
        Err(r) => r,
    }
}

fn prom_error(message: String) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({"status": "error", "errorType": "bad_data", "error": message}),
    )
}

async fn samples(store: &Arc<Store>) -> Result<Vec<Sample>, Response> {
    let series = blocking(store, |s| s.series()).await?;
    Ok(series.iter().flat_map(|s| s.samples()).collect())
}

/// The samples as they stood at `time_ns`, for an instant query at a past time.
async fn samples_at(store: &Arc<Store>, time_ns: i64) -> Result<Vec<Sample>, Response> {
    let series = blocking(store, move |s| s.series_at(time_ns)).await?;
    Ok(series.iter().flat_map(|s| s.samples()).collect())
}

#[derive(Debug, Deserialize)]
struct PromParams {
    query: Option<String>,
    time: Option<String>,
    start: Option<String>,
    end: Option<String>,
}

fn prom_time(name: &str, raw: Option<&str>) -> Result<Option<f64>, Response> {
    raw.map(|s| {
        s.parse::<f64>().map_err(|_| {
            prom_error(format!(
                "invalid parameter \"{name}\": cannot parse {s:?} to a valid timestamp (the embedded backend takes unix seconds)"
            ))
        })
    })
    .transpose()
}

async fn prom_query(State(store): Shared, Query(p): Query<PromParams>) -> Response {
    let Some(text) = p.query else {
        return prom_error("invalid parameter \"query\": missing".into());
    };
    let query = match promql::parse(&text) {
        Ok(q) => q,
        Err(e) => return prom_error(e.0),
    };
    let time = match prom_time("time", p.time.as_deref()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let samples = match time {
        None => samples(&store).await,
        Some(t) => samples_at(&store, (t * 1e9) as i64).await,
    };
    let samples = match samples {
        Ok(s) => s,
        Err(r) => return r,
    };
    let at = time.unwrap_or_else(|| now_ns() as f64 / 1e9);
    let result: Vec<Json> = query
        .evaluate(&samples)
        .into_iter()
        .map(|(labels, value)| json!({"metric": labels, "value": [at, metrics::fmt_float(value)]}))
        .collect();
    json_response(
        StatusCode::OK,
        json!({"status": "success", "data": {"resultType": "vector", "result": result}}),
    )
}

async fn prom_exemplars(State(store): Shared, Query(p): Query<PromParams>) -> Response {
    let Some(text) = p.query else {
        return prom_error("invalid parameter \"query\": missing".into());
    };
    let query = match promql::parse(&text) {
        Ok(q) => q,
        Err(e) => return prom_error(e.0),
    };
    let (start, end) = match (
        prom_time("start", p.start.as_deref()),
        prom_time("end", p.end.as_deref()),
    ) {
        (Ok(s), Ok(e)) => (s.unwrap_or(f64::MIN), e.unwrap_or(f64::MAX)),
        (Err(r), _) | (_, Err(r)) => return r,
    };
    let samples = match samples(&store).await {
        Ok(s) => s,
        Err(r) => return r,
    };
    let data: Vec<Json> = samples
        .iter()
        .filter(|s| query.selects(s))
        .filter_map(|s| {
            let e = s.exemplar.as_ref()?;
            let ts = e.time_ns as f64 / 1e9;
            if ts < start || ts > end {
                return None;
            }
            let mut series_labels = s.labels.clone();
            series_labels.insert("__name__".into(), s.name.clone());
            let mut labels = BTreeMap::new();
            if let Some(t) = &e.trace_id {
                labels.insert("trace_id", t.to_hex());
            }
            if let Some(sp) = &e.span_id {
                labels.insert("span_id", sp.to_hex());
            }
            Some(json!({
                "seriesLabels": series_labels,
                "exemplars": [{"labels": labels, "value": metrics::fmt_float(e.value), "timestamp": ts}],
            }))
        })
        .collect();
    json_response(StatusCode::OK, json!({"status": "success", "data": data}))
}

/// Every path the API answers, for the refusal of any other.
const SUPPORTED: &str = "/ready, /api/echo, /api/status, /api/traces/{id}, /api/v2/traces/{id}, /api/search, \
    /loki/api/v1/query_range, /loki/api/v1/labels, /metrics, /api/v1/query, \
    /api/v1/query_exemplars";

/// A path of Tempo's, Loki's or Prometheus's API that the embedded backend does not answer: a
/// 400 that says so, rather than a bare 404 a client could take for "no data".
async fn unsupported(uri: axum::http::Uri) -> Response {
    json_response(
        StatusCode::BAD_REQUEST,
        json!({
            "status": "error",
            "errorType": "bad_data",
            "error": format!(
                "{} is not part of the embedded backend's API; it answers {SUPPORTED}",
                uri.path()
            ),
        }),
    )
}

pub fn router(store: Arc<Store>, timeout: std::time::Duration) -> Router {
    // Loki's own OTLP path: the same ingest as the OTLP/HTTP listener (it has its own limits).
    let loki_otlp = super::otlp_http::router(super::pipeline::Sink::Store(store.clone()), timeout);
    Router::new()
        .nest_service("/otlp", loki_otlp)
        .route("/ready", get(ready))
        .route("/-/ready", get(ready))
        .route("/api/echo", get(echo))
        .route("/api/status", get(status))
        .route("/api/traces/{id}", get(trace_v1))
        .route("/api/v2/traces/{id}", get(trace_v2))
        .route("/api/search", get(search))
        .route("/loki/api/v1/query_range", get(query_range))
        .route("/loki/api/v1/labels", get(labels))
        .route("/metrics", get(metrics_text))
        .route("/api/v1/query", get(prom_query))
        .route("/api/v1/query_exemplars", get(prom_exemplars))
        .fallback(unsupported)
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            super::time_limit,
        ))
        .with_state(store)
}
