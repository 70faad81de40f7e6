//! The embedded backend's durable storage: one SQLite database in WAL mode. Every ingest request
//! is one transaction, acknowledged only after it commits, so a `kill -9` loses nothing that was
//! acknowledged. Spans and logs are kept as protobuf blobs next to the few indexed columns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use prost::Message;
use rusqlite::{Connection, OptionalExtension, params};

use crate::otlp::proto::common::v1::KeyValue;
use crate::otlp::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use crate::otlp::proto::trace::v1::{ResourceSpans, ScopeSpans, Span};
use crate::otlp::{TraceId, attrs};

use super::identity::{self, Absorbed, Signal};
use super::metrics::{Applied, MetricPoint, Series, SeriesStore};

/// The database file inside the data directory.
pub const DB_FILE: &str = "obsctl.sqlite";
/// Attribute values longer than this are stored but not indexed for search.
const MAX_INDEXED_VALUE: usize = 256;
/// A search never inspects more candidate spans than this, so one query stays bounded.
pub const MAX_SEARCH_SCAN: usize = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored record is corrupt: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stored metric state is corrupt: {0}")]
    Json(#[from] serde_json::Error),
}

/// Spans inserted per multi-row statement.
const SPAN_CHUNK: usize = 64;
static SPAN_CHUNK_SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    let rows = vec!["(?, ?, ?, ?)"; SPAN_CHUNK].join(", ");
    format!("INSERT INTO spans (trace_id, batch_id, start_ns, body) VALUES {rows}")
});

/// `batches.kind`: what the batch's items are.
const KIND_SPANS: i64 = 0;
const KIND_LOGS: i64 = 1;

/// One writer connection (SQLite allows one writer) and a few readers, so queries never wait
/// for an ingest transaction.
pub struct Store {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
}

const READERS: usize = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY,
    received_ns INTEGER NOT NULL,
    kind INTEGER NOT NULL,
    first_item INTEGER NOT NULL DEFAULT 0,
    last_item INTEGER NOT NULL DEFAULT 0,
    envelope BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS batch_tags (
    h INTEGER NOT NULL,
    batch_id INTEGER NOT NULL,
    PRIMARY KEY (h, batch_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spans (
    id INTEGER PRIMARY KEY,
    trace_id BLOB NOT NULL,
    batch_id INTEGER NOT NULL,
    start_ns INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS spans_trace ON spans (trace_id);
CREATE TABLE IF NOT EXISTS span_tags (
    h INTEGER NOT NULL,
    span_id INTEGER NOT NULL,
    PRIMARY KEY (h, span_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS logs (
    id INTEGER PRIMARY KEY,
    batch_id INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_time ON logs (time_ns);
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    updated_ns INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS series_history (
    key TEXT NOT NULL,
    time_ns INTEGER NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (key, time_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS streams (
    key BLOB PRIMARY KEY,
    updated_ns INTEGER NOT NULL,
    snapshot TEXT NOT NULL
) WITHOUT ROWID;
";

/// A stable 64-bit hash of one `key=value` pair (FNV-1a), the search index key. Collisions only
/// cost a little time: every candidate is checked against its decoded attributes.
pub fn tag_hash(key: &str, value: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes().chain([0u8]).chain(value.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

fn indexable(kv: &KeyValue) -> Option<i64> {
    use crate::otlp::proto::common::v1::any_value::Value;
    let value = kv.value.as_ref()?;
    // Strings, the common case, are hashed in place; other values through their text form.
    if let Some(Value::StringValue(s)) = &value.value {
        return (s.len() <= MAX_INDEXED_VALUE).then(|| tag_hash(&kv.key, s));
    }
    let text = attrs::value_to_string(value)?;
    (text.len() <= MAX_INDEXED_VALUE).then(|| tag_hash(&kv.key, &text))
}

/// Now in unix nanoseconds, as SQLite stores it (a signed integer).
pub fn now_ns() -> i64 {
    crate::encode::now_unix_nanos() as i64
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // Larger pages suit rows of a few hundred bytes; only effective on a new database.
    conn.pragma_update(None, "page_size", 8192)?;
    // WAL with synchronous=NORMAL: a committed transaction survives the death of the process
    // (kill -9); only a power loss may drop the last commits before a checkpoint.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "cache_size", -16_000)?;
    // Fewer, larger checkpoints: each one syncs the database file.
    conn.pragma_update(None, "wal_autocheckpoint", 4000)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    Ok(())
}

/// A stored trace: its spans grouped back under their resource and scope.
pub type StoredTrace = Vec<ResourceSpans>;

/// One span found by search, with what the search result needs.
pub struct SpanHit {
    pub trace_id: TraceId,
    pub span: Span,
    pub resource: Vec<KeyValue>,
}

/// One attribute condition of a search.
#[derive(Debug, Clone, PartialEq)]
pub struct TagFilter {
    pub scope: TagScope,
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagScope {
    /// Span or resource attribute (Tempo `tags=` and TraceQL `.key`).
    Any,
    Span,
    Resource,
}

pub struct SpanSearch {
    pub filters: Vec<TagFilter>,
    pub start_ns: Option<i64>,
    pub end_ns: Option<i64>,
    pub limit: usize,
}

/// One log record with its resource, as a query reads it.
pub struct LogHit {
    pub record: LogRecord,
    pub resource: Vec<KeyValue>,
    pub scope_name: String,
}

pub struct LogScan {
    pub start_ns: i64,
    pub end_ns: i64,
    pub forward: bool,
}

/// What one retention pass removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Pruned {
    pub spans: usize,
    pub logs: usize,
    pub streams: usize,
    pub series: usize,
}

/// Retention: records older than `max_age` go first, then the oldest until the database holds
/// at most `max_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_age: std::time::Duration,
    pub max_bytes: u64,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(DB_FILE);
        let open = |path: &Path| -> Result<Connection, StoreError> {
            let conn = Connection::open(path).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
            configure(&conn).map_err(|source| StoreError::Open {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(conn)
        };
        let writer = open(&path)?;
        writer
            .execute_batch(SCHEMA)
            .and_then(|()| writer.execute_batch(identity::SCHEMA))
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let readers = (0..READERS)
            .map(|_| open(&path).map(Mutex::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            path,
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn reader(&self) -> std::sync::MutexGuard<'_, Connection> {
        for reader in &self.readers {
            if let Ok(guard) = reader.try_lock() {
                return guard;
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores every span of the (already validated) request in one transaction, except those
    /// the store already holds (`identity`): they are counted as absorbed. The search index
    /// gets one row per attribute value per trace and request (pointing at the first such
    /// span), not one per span: spans of one task repeat the same attributes.
    pub fn insert_spans(&self, resource_spans: &[ResourceSpans]) -> Result<usize, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let received = now_ns();
        let mut stored = 0;
        let mut repeats = 0;
        {
            let mut batch_stmt = tx.prepare_cached(
                "INSERT INTO batches (received_ns, kind, envelope) VALUES (?1, ?2, ?3)",
            )?;
            let mut batch_range = tx.prepare_cached(
                "UPDATE batches SET first_item = ?2, last_item = ?3 WHERE id = ?1",
            )?;
            let mut batch_tag = tx
                .prepare_cached("INSERT OR IGNORE INTO batch_tags (h, batch_id) VALUES (?1, ?2)")?;
            let mut span_stmt = tx.prepare_cached(
                "INSERT INTO spans (trace_id, batch_id, start_ns, body) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut span_chunk = tx.prepare_cached(&SPAN_CHUNK_SQL)?;
            let mut span_tag =
                tx.prepare_cached("INSERT OR IGNORE INTO span_tags (h, span_id) VALUES (?1, ?2)")?;
            let mut tags: Vec<(i64, &[u8], i64)> = Vec::new();
            for rs in resource_spans {
                for ss in &rs.scope_spans {
                    if ss.spans.is_empty() {
                        continue;
                    }
                    let envelope = ResourceSpans {
                        resource: rs.resource.clone(),
                        scope_spans: vec![ScopeSpans {
                            scope: ss.scope.clone(),
                            spans: Vec::new(),
                            schema_url: ss.schema_url.clone(),
                        }],
                        schema_url: rs.schema_url.clone(),
                    };
                    batch_stmt.execute(params![received, KIND_SPANS, envelope.encode_to_vec()])?;
                    let batch_id = tx.last_insert_rowid();
                    let mut fresh: Vec<&Span> = Vec::with_capacity(ss.spans.len());
                    for span in &ss.spans {
                        if identity::claim_span(&tx, &span.trace_id, &span.span_id, batch_id)? {
                            fresh.push(span);
                        }
                    }
                    repeats += (ss.spans.len() - fresh.len()) as u64;
                    if fresh.is_empty() {
                        tx.execute("DELETE FROM batches WHERE id = ?1", [batch_id])?;
                        continue;
                    }
                    if let Some(resource) = &rs.resource {
                        for h in resource.attributes.iter().filter_map(indexable) {
                            batch_tag.execute(params![h, batch_id])?;
                        }
                    }
                    // Many rows per statement: most of an insert's cost is per statement.
                    let mut first = None;
                    let mut last = 0;
                    for chunk in fresh.chunks(SPAN_CHUNK) {
                        let bodies: Vec<Vec<u8>> =
                            chunk.iter().map(|s| s.encode_to_vec()).collect();
                        if chunk.len() == SPAN_CHUNK {
                            let starts: Vec<i64> = chunk
                                .iter()
                                .map(|s| s.start_time_unix_nano as i64)
                                .collect();
                            let mut values: Vec<&dyn rusqlite::ToSql> =
                                Vec::with_capacity(4 * SPAN_CHUNK);
                            for ((span, body), start) in chunk.iter().zip(&bodies).zip(&starts) {
                                values.extend([
                                    &span.trace_id as &dyn rusqlite::ToSql,
                                    &batch_id,
                                    start,
                                    body,
                                ]);
                            }
                            span_chunk.execute(values.as_slice())?;
                        } else {
                            for (span, body) in chunk.iter().zip(&bodies) {
                                span_stmt.execute(params![
                                    span.trace_id,
                                    batch_id,
                                    span.start_time_unix_nano as i64,
                                    body
                                ])?;
                            }
                        }
                        // Rowids of one statement are consecutive: the table is only appended to
                        // by this one writer.
                        let end = tx.last_insert_rowid();
                        let begin = end - chunk.len() as i64 + 1;
                        first.get_or_insert(begin);
                        last = end;
                        for (span, id) in chunk.iter().zip(begin..) {
                            tags.extend(
                                span.attributes
                                    .iter()
                                    .filter_map(indexable)
                                    .map(|h| (h, span.trace_id.as_slice(), id)),
                            );
                        }
                        stored += chunk.len();
                    }
                    batch_range.execute(params![batch_id, first.unwrap_or(0), last])?;
                }
            }
            // One row per (value, trace): the first span. Sorted inserts also touch each index
            // page once instead of at random.
            tags.sort_unstable();
            tags.dedup_by(|later, first| later.0 == first.0 && later.1 == first.1);
            for (h, _, id) in tags {
                span_tag.execute(params![h, id])?;
            }
        }
        identity::count(&tx, Signal::Spans, repeats)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Stores every log record of the (already validated) request in one transaction, except
    /// those the store already holds (`identity`): they are counted as absorbed.
    pub fn insert_logs(&self, resource_logs: &[ResourceLogs]) -> Result<usize, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let received = now_ns();
        let mut stored = 0;
        let mut repeats = 0;
        {
            let mut batch_stmt = tx.prepare_cached(
                "INSERT INTO batches (received_ns, kind, envelope) VALUES (?1, ?2, ?3)",
            )?;
            let mut batch_range = tx.prepare_cached(
                "UPDATE batches SET first_item = ?2, last_item = ?3 WHERE id = ?1",
            )?;
            let mut log_stmt = tx
                .prepare_cached("INSERT INTO logs (batch_id, time_ns, body) VALUES (?1, ?2, ?3)")?;
            for rl in resource_logs {
                for sl in &rl.scope_logs {
                    if sl.log_records.is_empty() {
                        continue;
                    }
                    let envelope = ResourceLogs {
                        resource: rl.resource.clone(),
                        scope_logs: vec![ScopeLogs {
                            scope: sl.scope.clone(),
                            log_records: Vec::new(),
                            schema_url: sl.schema_url.clone(),
                        }],
                        schema_url: rl.schema_url.clone(),
                    };
                    let envelope = envelope.encode_to_vec();
                    batch_stmt.execute(params![received, KIND_LOGS, envelope])?;
                    let batch_id = tx.last_insert_rowid();
                    let mut first = None;
                    let mut last = 0;
                    for record in &sl.log_records {
                        let body = record.encode_to_vec();
                        let id = super::ingest::stream_hash(&[&envelope, &body]);
                        if !identity::claim_log(&tx, &id, batch_id)? {
                            repeats += 1;
                            continue;
                        }
                        let time = if record.time_unix_nano != 0 {
                            record.time_unix_nano
                        } else if record.observed_time_unix_nano != 0 {
                            record.observed_time_unix_nano
                        } else {
                            received as u64
                        };
                        log_stmt.execute(params![batch_id, time as i64, body])?;
                        let id = tx.last_insert_rowid();
                        first.get_or_insert(id);
                        last = id;
                        stored += 1;
                    }
                    if first.is_none() {
                        tx.execute("DELETE FROM batches WHERE id = ?1", [batch_id])?;
                        continue;
                    }
                    batch_range.execute(params![batch_id, first.unwrap_or(0), last])?;
                }
            }
        }
        identity::count(&tx, Signal::Logs, repeats)?;
        tx.commit()?;
        Ok(stored)
    }

    /// Adds metric points into the persisted series in one transaction. Returns, per point
    /// that could not be applied (for example histogram bounds that changed), the reason.
    pub fn apply_metrics(&self, points: &[MetricPoint]) -> Result<Vec<String>, StoreError> {
        let mut conn = self.writer();
        let tx = conn.transaction()?;
        let rejected = {
            let mut store = SeriesStore::new(&tx);
            let mut rejected = Vec::new();
            let mut repeats = 0;
            for point in points {
                match store.apply(point)? {
                    Ok(Applied::New) => {}
                    Ok(Applied::Repeat) => repeats += 1,
                    Err(reason) => rejected.push(reason),
                }
            }
            identity::count(&tx, Signal::MetricPoints, repeats)?;
            rejected
        };
        tx.commit()?;
        Ok(rejected)
    }

    pub fn series(&self) -> Result<Vec<Series>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached("SELECT state FROM series ORDER BY key")?;
        let rows = stmt.query_map([], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    /// Every series as it stood at `time_ns` (its latest state stored at or before then), like a
    /// Prometheus instant query at that time; series that did not exist yet are absent.
    pub fn series_at(&self, time_ns: i64) -> Result<Vec<Series>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT h.state FROM series_history h \
             WHERE h.time_ns = (SELECT max(time_ns) FROM series_history \
                                WHERE key = h.key AND time_ns <= ?1) \
             ORDER BY h.key",
        )?;
        let rows = stmt.query_map([time_ns], |row| row.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(serde_json::from_str(&row?)?);
        }
        Ok(out)
    }

    fn envelope_spans(conn: &Connection, batch_id: i64) -> Result<ResourceSpans, StoreError> {
        let blob: Vec<u8> = conn
            .prepare_cached("SELECT envelope FROM batches WHERE id = ?1")?
            .query_row([batch_id], |row| row.get(0))?;
        Ok(ResourceSpans::decode(blob.as_slice())?)
    }

    /// All stored spans of one trace, grouped by resource and scope; `None` when unknown.
    pub fn trace(&self, id: &TraceId) -> Result<Option<StoredTrace>, StoreError> {
        let conn = self.reader();
        let mut stmt = conn.prepare_cached(
            "SELECT batch_id, body FROM spans WHERE trace_id = ?1 ORDER BY batch_id, id",
        )?;
        let rows = stmt.query_map([id.as_bytes().as_slice()], |row| {
            Ok((row.get::<_, i64>(0)?, row.get::<_, Vec<u8>>(1)?))
        })?;
        let mut out: Vec<ResourceSpans> = Vec::new();
        let mut current: Option<i64> = None;
        for row in rows {
            let (batch_id, body) = row?;
            if current != Some(batch_id) {
                out.push(Self::envelope_spans(&conn, batch_id)?);
                current = Some(batch_id);
            }
            let span = Span::decode(body.as_slice())?;
            out.last_mut().expect("pushed above").scope_spans[0]
                .spans
                .push(span);
        }
        Ok((!out.is_empty()).then_some(out))
    }

    /// Spans matching every filter, newest trace first, from at most `limit` distinct traces.
    pub fn search_spans(&self, search: &SpanSearch) -> Result<Vec<SpanHit>, StoreError> {
        let conn = self.reader();
        let mut envelopes: HashMap<i64, Vec<KeyValue>> = HashMap::new();
        let mut seen: std::collections::HashSet<Vec<u8>> = std::collections::HashSet::new();
        let mut traces = 0usize;
        let mut hits = Vec::new();
        let in_window = |start: i64| {
            search.start_ns.is_none_or(|s| start >= s) && search.end_ns.is_none_or(|e| start <= e)
        };
        // The first filter drives the index lookup; every filter is checked on the decoded spans.
        let mut candidates: Vec<i64> = Vec::new();
        match search.filters.first() {
            Some(first) => {
                let h = tag_hash(&first.key, &first.value);
                if first.scope != TagScope::Resource {
                    let mut stmt = conn.prepare_cached(
                        "SELECT span_id FROM span_tags WHERE h = ?1 ORDER BY span_id DESC LIMIT ?2",
                    )?;
                    for id in stmt.query_map(params![h, MAX_SEARCH_SCAN as i64], |r| r.get(0))? {
                        candidates.push(id?);
                    }
                }
                if first.scope != TagScope::Span {
                    // A resource attribute matches whole batches: their spans are consecutive.
                    let mut stmt = conn.prepare_cached(
                        "SELECT b.first_item, b.last_item FROM batch_tags t \
                         JOIN batches b ON b.id = t.batch_id WHERE t.h = ?1 ORDER BY t.batch_id DESC",
                    )?;
                    let mut rows = stmt.query([h])?;
                    while let Some(row) = rows.next()? {
                        let (lo, hi): (i64, i64) = (row.get(0)?, row.get(1)?);
                        candidates.extend((lo..=hi).rev());
                        if candidates.len() >= MAX_SEARCH_SCAN {
                            break;
                        }
                    }
                }
                candidates.sort_unstable_by(|a, b| b.cmp(a));
                candidates.dedup();
            }
            None => {
                let mut stmt =
                    conn.prepare_cached("SELECT id FROM spans ORDER BY id DESC LIMIT ?1")?;
                for id in stmt.query_map([MAX_SEARCH_SCAN as i64], |r| r.get(0))? {
                    candidates.push(id?);
                }
            }
        }
        candidates.truncate(MAX_SEARCH_SCAN);
        let mut trace_of = conn.prepare_cached("SELECT trace_id FROM spans WHERE id = ?1")?;
        let mut spans_of =
            conn.prepare_cached("SELECT batch_id, start_ns, body FROM spans WHERE trace_id = ?1")?;
        for id in candidates {
            let Some(trace_bytes) = trace_of
                .query_row([id], |r| r.get::<_, Vec<u8>>(0))
                .optional()?
            else {
                continue;
            };
            if !seen.insert(trace_bytes.clone()) {
                continue;
            }
            let Ok(trace_id) = TraceId::from_slice(&trace_bytes) else {
                continue;
            };
            let mut found = false;
            let mut rows = spans_of.query([trace_bytes.as_slice()])?;
            while let Some(row) = rows.next()? {
                let (batch_id, start): (i64, i64) = (row.get(0)?, row.get(1)?);
                if !in_window(start) {
                    continue;
                }
                let span = Span::decode(row.get_ref(2)?.as_blob().map_err(rusqlite::Error::from)?)?;
                if let std::collections::hash_map::Entry::Vacant(slot) = envelopes.entry(batch_id) {
                    let env = Self::envelope_spans(&conn, batch_id)?;
                    slot.insert(env.resource.map(|r| r.attributes).unwrap_or_default());
                }
                let resource = &envelopes[&batch_id];
                let matches = search.filters.iter().all(|f| {
                    let on_span = f.scope != TagScope::Resource
                        && attrs::get(&span.attributes, &f.key).as_deref()
                            == Some(f.value.as_str());
                    let on_resource = f.scope != TagScope::Span
                        && attrs::get(resource, &f.key).as_deref() == Some(f.value.as_str());
                    on_span || on_resource
                });
                if matches {
                    found = true;
                    hits.push(SpanHit {
                        trace_id,
                        span,
                        resource: resource.clone(),
                    });
                }
            }
            if found {
                traces += 1;
                if traces >= search.limit {
                    break;
                }
            }
        }
        Ok(hits)
    }

    /// Log records whose time lies in the window, in the requested order, handed one by one to
    /// `keep` until it returns `false`.
    pub fn scan_logs(
        &self,
        scan: &LogScan,
        mut keep: impl FnMut(LogHit) -> bool,
    ) -> Result<(), StoreError> {
        let conn = self.reader();
        let sql = if scan.forward {
            "SELECT batch_id, body FROM logs WHERE time_ns >= ?1 AND time_ns <= ?2 ORDER BY time_ns ASC, id ASC"
        } else {
            "SELECT batch_id, body FROM logs WHERE time_ns >= ?1 AND time_ns <= ?2 ORDER BY time_ns DESC, id DESC"
        };
        let mut stmt = conn.prepare_cached(sql)?;
        let mut rows = stmt.query(params![scan.start_ns, scan.end_ns])?;
        let mut envelopes: HashMap<i64, (Vec<KeyValue>, String)> = HashMap::new();
        while let Some(row) = rows.next()? {
            let batch_id: i64 = row.get(0)?;
            let body: Vec<u8> = row.get(1)?;
            if let std::collections::hash_map::Entry::Vacant(slot) = envelopes.entry(batch_id) {
                let blob: Vec<u8> = conn
                    .prepare_cached("SELECT envelope FROM batches WHERE id = ?1")?
                    .query_row([batch_id], |r| r.get(0))?;
                let env = ResourceLogs::decode(blob.as_slice())?;
                let scope_name = env
                    .scope_logs
                    .first()
                    .and_then(|s| s.scope.as_ref())
                    .map(|s| s.name.clone())
                    .unwrap_or_default();
                slot.insert((
                    env.resource.map(|r| r.attributes).unwrap_or_default(),
                    scope_name,
                ));
            }
            let (resource, scope_name) = &envelopes[&batch_id];
            let hit = LogHit {
                record: LogRecord::decode(body.as_slice())?,
                resource: resource.clone(),
                scope_name: scope_name.clone(),
            };
            if !keep(hit) {
                break;
            }
        }
        Ok(())
    }

    /// Repeats the store absorbed, per signal.
    pub fn absorbed(&self) -> Result<Absorbed, StoreError> {
        Ok(identity::absorbed(&self.reader())?)
    }

    /// Counts of stored items, for status output and tests.
    pub fn counts(&self) -> Result<(i64, i64, i64), StoreError> {
        let conn = self.reader();
        let count = |table: &str| -> rusqlite::Result<i64> {
            conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
        };
        Ok((count("spans")?, count("logs")?, count("series")?))
    }

    /// Bytes the database uses (pages in use, not free-listed ones).
    fn used_bytes(conn: &Connection) -> rusqlite::Result<u64> {
        let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
        let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
        let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
        Ok(((pages - free).max(0) * size) as u64)
    }

    /// One retention pass: by age, then by size, oldest first.
    pub fn prune(&self, retention: Retention) -> Result<Pruned, StoreError> {
        let mut conn = self.writer();
        let cutoff = now_ns() - retention.max_age.as_nanos().min(i64::MAX as u128) as i64;
        let mut pruned = Pruned::default();
        let tx = conn.transaction()?;
        let old_batch: Option<i64> = tx.query_row(
            "SELECT max(id) FROM batches WHERE received_ns < ?1",
            [cutoff],
            |r| r.get(0),
        )?;
        if let Some(batch) = old_batch {
            let (s, l) = delete_through_batch(&tx, batch)?;
            pruned.spans += s;
            pruned.logs += l;
        }
        pruned.streams = tx.execute("DELETE FROM streams WHERE updated_ns < ?1", [cutoff])?;
        identity::forget_points_before(&tx, cutoff)?;
        pruned.series = tx.execute("DELETE FROM series WHERE updated_ns < ?1", [cutoff])?;
        // History older than the cutoff goes, except each live series' last state before it:
        // that state is still the series' value at every time up to its next update.
        tx.execute(
            "DELETE FROM series_history WHERE key NOT IN (SELECT key FROM series) \
             OR time_ns < (SELECT max(time_ns) FROM series_history h \
                           WHERE h.key = series_history.key AND h.time_ns < ?1)",
            [cutoff],
        )?;
        tx.commit()?;
        // Size: drop the oldest tenth of the batches until the database fits.
        for _ in 0..10 {
            if Self::used_bytes(&conn)? <= retention.max_bytes {
                break;
            }
            let tx = conn.transaction()?;
            let bounds: (Option<i64>, Option<i64>) =
                tx.query_row("SELECT min(id), max(id) FROM batches", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?;
            let (Some(lo), Some(hi)) = bounds else {
                break;
            };
            let (s, l) = delete_through_batch(&tx, lo + (hi - lo) / 10)?;
            pruned.spans += s;
            pruned.logs += l;
            tx.commit()?;
        }
        Ok(pruned)
    }

    /// Moves the WAL into the database file; called on graceful shutdown.
    pub fn checkpoint(&self) -> Result<(), StoreError> {
        self.writer()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
        Ok(())
    }
}

/// Deletes every batch with id ≤ `batch`, and its spans, logs and index rows. Items are
/// numbered in arrival order, so each batch's items are one id range.
fn delete_through_batch(
    tx: &rusqlite::Transaction<'_>,
    batch: i64,
) -> rusqlite::Result<(usize, usize)> {
    let last_of = |kind: i64| -> rusqlite::Result<Option<i64>> {
        tx.query_row(
            "SELECT max(last_item) FROM batches WHERE id <= ?1 AND kind = ?2",
            params![batch, kind],
            |r| r.get(0),
        )
    };
    let mut spans = 0;
    let mut logs = 0;
    if let Some(last) = last_of(KIND_SPANS)? {
        tx.execute("DELETE FROM span_tags WHERE span_id <= ?1", [last])?;
        spans = tx.execute("DELETE FROM spans WHERE id <= ?1", [last])?;
    }
    if let Some(last) = last_of(KIND_LOGS)? {
        logs = tx.execute("DELETE FROM logs WHERE id <= ?1", [last])?;
    }
    identity::forget_through_batch(tx, batch)?;
    tx.execute("DELETE FROM batch_tags WHERE batch_id <= ?1", [batch])?;
    tx.execute("DELETE FROM batches WHERE id <= ?1", [batch])?;
    Ok((spans, logs))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::embedded::metrics::{Kind, MetricPoint, Temporality, Value};
    use crate::otlp::SpanId;

    fn counter(stream: u8, temporality: Temporality, start: u64, time: u64, v: f64) -> MetricPoint {
        MetricPoint {
            name: "steps".into(),
            kind: Kind::Counter,
            help: String::new(),
            labels: BTreeMap::from([("agent".into(), "a".into())]),
            temporality,
            stream: [stream; 16],
            start_ns: start,
            time_ns: time,
            value: Value::Number(v),
            exemplars: Vec::new(),
            monotonic: true,
        }
    }

    fn total(store: &Store) -> f64 {
        match &store.series().unwrap()[0].value {
            Value::Number(v) => *v,
            other => panic!("{other:?}"),
        }
    }

    /// A time strictly after every write so far: the clock has moved past `now_ns()`.
    fn after_now() -> i64 {
        let t = now_ns();
        while now_ns() <= t {
            std::hint::spin_loop();
        }
        t
    }

    #[test]
    fn series_at_a_past_time_hold_their_value_then() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let value_at = |t: i64| -> Option<f64> {
            store.series_at(t).unwrap().first().map(|s| match s.value {
                Value::Number(v) => v,
                _ => panic!("a counter"),
            })
        };
        let before = after_now();
        store
            .apply_metrics(&[counter(1, Temporality::Delta, 0, 10, 2.0)])
            .unwrap();
        let between = after_now();
        store
            .apply_metrics(&[counter(2, Temporality::Delta, 0, 10, 3.0)])
            .unwrap();
        let after = after_now();
        assert_eq!(value_at(before), None, "the series did not exist yet");
        assert_eq!(value_at(between), Some(2.0));
        assert_eq!(value_at(after), Some(5.0));
        assert_eq!(total(&store), 5.0);
        // A retention pass within the age limit keeps the history.
        store
            .prune(Retention {
                max_age: std::time::Duration::from_secs(3600),
                max_bytes: u64::MAX,
            })
            .unwrap();
        assert_eq!(value_at(between), Some(2.0));
    }

    #[test]
    fn deltas_add_and_cumulative_streams_count_increases_across_resets() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        use Temporality::*;
        let apply = |p: MetricPoint| assert!(store.apply_metrics(&[p]).unwrap().is_empty());
        apply(counter(1, Delta, 0, 10, 2.0));
        apply(counter(2, Delta, 0, 10, 3.0));
        assert_eq!(total(&store), 5.0);
        apply(counter(3, Cumulative, 100, 110, 4.0));
        apply(counter(3, Cumulative, 100, 120, 6.0));
        // A repeat of the same point adds nothing.
        apply(counter(3, Cumulative, 100, 120, 6.0));
        assert_eq!(total(&store), 11.0);
        // Restart (new start time): everything it reports is new.
        apply(counter(3, Cumulative, 200, 210, 1.0));
        assert_eq!(total(&store), 12.0);
        // A decrease with the same start time is a reset too.
        apply(counter(3, Cumulative, 200, 220, 0.5));
        assert_eq!(total(&store), 12.5);
        // A second stream of the same series adds its own values.
        apply(counter(4, Cumulative, 100, 110, 10.0));
        assert_eq!(total(&store), 22.5);
        // Survives reopening.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(total(&store), 22.5);
    }

    #[test]
    fn a_repeated_delta_point_is_absorbed_not_added() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let point = counter(1, Temporality::Delta, 100, 110, 2.0);
        assert!(
            store
                .apply_metrics(std::slice::from_ref(&point))
                .unwrap()
                .is_empty()
        );
        assert!(
            store
                .apply_metrics(&[point.clone(), point])
                .unwrap()
                .is_empty()
        );
        assert_eq!(total(&store), 2.0);
        // The next interval of the same stream is a new point.
        store
            .apply_metrics(&[counter(1, Temporality::Delta, 110, 120, 3.0)])
            .unwrap();
        assert_eq!(total(&store), 5.0);
        // A cumulative point at its stream's latest time is a repeat too.
        store
            .apply_metrics(&[counter(2, Temporality::Cumulative, 0, 10, 1.0)])
            .unwrap();
        store
            .apply_metrics(&[counter(2, Temporality::Cumulative, 0, 10, 1.0)])
            .unwrap();
        assert_eq!(total(&store), 6.0);
        assert_eq!(
            store.absorbed().unwrap(),
            Absorbed {
                metric_points: 3,
                ..Default::default()
            }
        );
    }

    #[test]
    fn a_repeated_span_is_absorbed_by_trace_and_span_id() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let request = one_span("again");
        let trace = TraceId::from_bytes(
            request.scope_spans[0].spans[0]
                .trace_id
                .clone()
                .try_into()
                .unwrap(),
        );
        assert_eq!(
            store.insert_spans(std::slice::from_ref(&request)).unwrap(),
            1
        );
        // The same span again, alone and twice within one request: nothing stored.
        let mut twice = request.clone();
        let span = twice.scope_spans[0].spans[0].clone();
        twice.scope_spans[0].spans.push(span);
        assert_eq!(
            store.insert_spans(std::slice::from_ref(&request)).unwrap(),
            0
        );
        assert_eq!(store.insert_spans(&[twice]).unwrap(), 0);
        assert_eq!(store.counts().unwrap().0, 1);
        assert_eq!(store.trace(&trace).unwrap().unwrap().len(), 1);
        assert_eq!(search(&store, "again"), 1);
        // Another span of the same trace is new.
        let mut sibling = request.clone();
        sibling.scope_spans[0].spans[0].span_id = SpanId::random().as_bytes().to_vec();
        assert_eq!(store.insert_spans(&[sibling]).unwrap(), 1);
        assert_eq!(store.absorbed().unwrap().spans, 3);
        // Retention forgets an identity with its span: the span may then be stored again.
        store
            .prune(Retention {
                max_age: std::time::Duration::ZERO,
                max_bytes: u64::MAX,
            })
            .unwrap();
        assert_eq!(store.insert_spans(&[request]).unwrap(), 1);
    }

    fn one_log(line: &str, time: u64) -> ResourceLogs {
        ResourceLogs {
            scope_logs: vec![ScopeLogs {
                log_records: vec![LogRecord {
                    time_unix_nano: time,
                    body: attrs::string("body", line).value,
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn a_repeated_log_record_is_absorbed_but_the_same_line_later_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.insert_logs(&[one_log("line 1", 10)]).unwrap(), 1);
        assert_eq!(store.insert_logs(&[one_log("line 1", 10)]).unwrap(), 0);
        // Printed again later: another record.
        assert_eq!(store.insert_logs(&[one_log("line 1", 11)]).unwrap(), 1);
        // The same record from another resource is another record.
        let mut other = one_log("line 1", 10);
        other.resource = Some(crate::otlp::proto::resource::v1::Resource {
            attributes: vec![attrs::string("service.name", "other")],
            ..Default::default()
        });
        assert_eq!(store.insert_logs(&[other]).unwrap(), 1);
        assert_eq!(store.counts().unwrap().1, 3);
        assert_eq!(store.absorbed().unwrap().logs, 1);
        // Counts survive a reopening, like the data.
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.absorbed().unwrap().logs, 1);
    }

    #[test]
    fn histogram_bounds_must_not_change() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // Each point its own interval: a repeat would be absorbed before its bounds are looked at.
        let h = |bounds: Vec<f64>, time: u64| MetricPoint {
            kind: Kind::Histogram,
            value: Value::Histogram {
                count: 1,
                sum: 1.0,
                buckets: vec![0; bounds.len()].into_iter().chain([1]).collect(),
                bounds,
            },
            ..counter(1, Temporality::Delta, 0, time, 0.0)
        };
        assert!(store.apply_metrics(&[h(vec![1.0], 1)]).unwrap().is_empty());
        let refused = store.apply_metrics(&[h(vec![2.0], 2)]).unwrap();
        assert_eq!(refused.len(), 1);
        assert!(refused[0].contains("bounds"), "{refused:?}");
    }

    fn one_span(task: &str) -> ResourceSpans {
        ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: TraceId::random().as_bytes().to_vec(),
                    span_id: SpanId::random().as_bytes().to_vec(),
                    attributes: vec![attrs::string("taskId", task)],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn search(store: &Store, task: &str) -> usize {
        store
            .search_spans(&SpanSearch {
                filters: vec![TagFilter {
                    scope: TagScope::Any,
                    key: "taskId".into(),
                    value: task.into(),
                }],
                start_ns: None,
                end_ns: None,
                limit: 10,
            })
            .unwrap()
            .len()
    }

    #[test]
    fn large_requests_keep_every_span_and_its_index_entry() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let trace = TraceId::random();
        let spans: Vec<Span> = (0..2 * SPAN_CHUNK + 3)
            .map(|i| Span {
                trace_id: trace.as_bytes().to_vec(),
                span_id: SpanId::random().as_bytes().to_vec(),
                name: format!("s{i}"),
                attributes: vec![attrs::string("stepName", format!("step-{i}"))],
                ..Default::default()
            })
            .collect();
        let request = ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: spans.clone(),
                ..Default::default()
            }],
            ..Default::default()
        };
        store.insert_spans(&[one_span("before")]).unwrap();
        assert_eq!(store.insert_spans(&[request]).unwrap(), spans.len());
        let stored = store.trace(&trace).unwrap().unwrap();
        let names: Vec<&str> = stored[0].scope_spans[0]
            .spans
            .iter()
            .map(|s| s.name.as_str())
            .collect();
        let expected: Vec<String> = (0..spans.len()).map(|i| format!("s{i}")).collect();
        assert_eq!(names, expected);
        for i in [0, SPAN_CHUNK - 1, SPAN_CHUNK, 2 * SPAN_CHUNK + 2] {
            let hits = store
                .search_spans(&SpanSearch {
                    filters: vec![TagFilter {
                        scope: TagScope::Span,
                        key: "stepName".into(),
                        value: format!("step-{i}"),
                    }],
                    start_ns: None,
                    end_ns: None,
                    limit: 5,
                })
                .unwrap();
            assert_eq!(hits.len(), 1, "step-{i}");
            assert_eq!(hits[0].span.name, format!("s{i}"));
        }
    }

    #[test]
    fn retention_drops_the_oldest_by_age_and_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 0..200 {
            store.insert_spans(&[one_span(&format!("t{i}"))]).unwrap();
        }
        let keep_all = Retention {
            max_age: std::time::Duration::from_secs(3600),
            max_bytes: u64::MAX,
        };
        assert_eq!(store.prune(keep_all).unwrap(), Pruned::default());
        // Size: a cap below the current size removes the oldest first.
        let used = Store::used_bytes(&store.writer()).unwrap();
        let pruned = store
            .prune(Retention {
                max_bytes: used / 2,
                ..keep_all
            })
            .unwrap();
        assert!(pruned.spans > 0);
        assert_eq!(search(&store, "t0"), 0);
        assert_eq!(search(&store, "t199"), 1);
        // Age: everything older than now goes.
        let pruned = store
            .prune(Retention {
                max_age: std::time::Duration::ZERO,
                max_bytes: u64::MAX,
            })
            .unwrap();
        assert!(pruned.spans > 0);
        assert_eq!(store.counts().unwrap().0, 0);
        assert_eq!(search(&store, "t199"), 0);
    }
}
