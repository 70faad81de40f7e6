//! Idempotent ingest. OTLP is delivered at least once: a request whose answer was lost (the
//! backend killed, frozen or cut off between its commit and its reply) is spooled by the shim and
//! sent again. The store therefore recognises an item it already holds and absorbs the repeat
//! instead of keeping a second copy. Identities: a span by (trace id, span id), as Tempo merges
//! spans by id; a log record by a hash of its resource, scope and whole encoded record
//! (timestamps included), as Loki drops an identical line at the same time; a delta metric point
//! by (stream, start time, time), since one process reports one step once. What was absorbed is
//! counted per signal, persisted with the data, so chaos can report it.

use rusqlite::{OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

/// The identity tables. Each row names the batch (or, for metric points, the time) it came
/// with, so retention removes an identity together with its item.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS span_ids (
    trace_id BLOB NOT NULL,
    span_id BLOB NOT NULL,
    batch_id INTEGER NOT NULL,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS log_ids (
    id BLOB PRIMARY KEY,
    batch_id INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS delta_points (
    stream BLOB NOT NULL,
    start_ns INTEGER NOT NULL,
    time_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL,
    PRIMARY KEY (stream, start_ns, time_ns)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS absorbed (
    signal TEXT PRIMARY KEY,
    count INTEGER NOT NULL
) WITHOUT ROWID;
";

/// What a repeat is counted under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    Spans,
    Logs,
    MetricPoints,
}

impl Signal {
    fn as_str(self) -> &'static str {
        match self {
            Self::Spans => "spans",
            Self::Logs => "logs",
            Self::MetricPoints => "metric_points",
        }
    }
}

/// Repeats absorbed since the data directory was created, per signal (`/api/status`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Absorbed {
    pub spans: u64,
    pub logs: u64,
    pub metric_points: u64,
}

impl Absorbed {
    pub fn total(&self) -> u64 {
        self.spans + self.logs + self.metric_points
    }

    /// What was absorbed since `before` (counts only grow).
    pub fn since(&self, before: &Absorbed) -> Absorbed {
        Absorbed {
            spans: self.spans.saturating_sub(before.spans),
            logs: self.logs.saturating_sub(before.logs),
            metric_points: self.metric_points.saturating_sub(before.metric_points),
        }
    }
}

/// Claims a span's identity for `batch`; false when the store already holds that span.
pub fn claim_span(
    tx: &Transaction<'_>,
    trace_id: &[u8],
    span_id: &[u8],
    batch: i64,
) -> rusqlite::Result<bool> {
    let added = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO span_ids (trace_id, span_id, batch_id) VALUES (?1, ?2, ?3)",
        )?
        .execute(params![trace_id, span_id, batch])?;
    Ok(added == 1)
}

/// Claims a log record's identity (its hash) for `batch`; false when the store holds it.
pub fn claim_log(tx: &Transaction<'_>, id: &[u8; 16], batch: i64) -> rusqlite::Result<bool> {
    let added = tx
        .prepare_cached("INSERT OR IGNORE INTO log_ids (id, batch_id) VALUES (?1, ?2)")?
        .execute(params![id.as_slice(), batch])?;
    Ok(added == 1)
}

/// Claims a delta point's identity; false when the same point was already added.
pub fn claim_delta(
    tx: &Transaction<'_>,
    stream: &[u8; 16],
    start_ns: u64,
    time_ns: u64,
    now_ns: i64,
) -> rusqlite::Result<bool> {
    let added = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO delta_points (stream, start_ns, time_ns, updated_ns) \
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![
            stream.as_slice(),
            start_ns as i64,
            time_ns as i64,
            now_ns
        ])?;
    Ok(added == 1)
}

/// Adds `count` absorbed repeats of `signal`, in the ingest's own transaction.
pub fn count(tx: &Transaction<'_>, signal: Signal, count: u64) -> rusqlite::Result<()> {
    if count == 0 {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO absorbed (signal, count) VALUES (?1, ?2) \
         ON CONFLICT (signal) DO UPDATE SET count = count + ?2",
    )?
    .execute(params![signal.as_str(), count as i64])?;
    Ok(())
}

pub fn absorbed(conn: &rusqlite::Connection) -> rusqlite::Result<Absorbed> {
    let of = |signal: Signal| -> rusqlite::Result<u64> {
        let n: Option<i64> = conn
            .prepare_cached("SELECT count FROM absorbed WHERE signal = ?1")?
            .query_row([signal.as_str()], |r| r.get(0))
            .optional()?;
        Ok(n.unwrap_or(0).max(0) as u64)
    };
    Ok(Absorbed {
        spans: of(Signal::Spans)?,
        logs: of(Signal::Logs)?,
        metric_points: of(Signal::MetricPoints)?,
    })
}

/// Forgets the identities of the items retention removes: spans and logs of batches up to
/// `batch`. (A full scan of the identity tables, once per retention pass.)
pub fn forget_through_batch(tx: &Transaction<'_>, batch: i64) -> rusqlite::Result<()> {
    tx.execute("DELETE FROM span_ids WHERE batch_id <= ?1", [batch])?;
    tx.execute("DELETE FROM log_ids WHERE batch_id <= ?1", [batch])?;
    Ok(())
}

/// Forgets delta points not seen since `cutoff_ns`, with their streams.
pub fn forget_points_before(tx: &Transaction<'_>, cutoff_ns: i64) -> rusqlite::Result<()> {
    tx.execute(
        "DELETE FROM delta_points WHERE updated_ns < ?1",
        [cutoff_ns],
    )?;
    Ok(())
}
