//! The on-disk spool: export requests the collector did not acknowledge, one protobuf file
//! each, written atomically, bounded in size (oldest dropped first, drops counted), and
//! replayed oldest first. `deliver` is the one call a short-lived process needs.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{Flock, FlockArg};
use tokio::time::Instant;

use super::export::{ExportError, ExportRequest, Exporter, Signal};
use crate::conventions::env;

/// Spool size bound when `OBSCTL_SPOOL_MAX_BYTES` is unset.
pub const DEFAULT_MAX_BYTES: u64 = 64 * 1024 * 1024;
const SUFFIX: &str = ".pb";
const CLAIM: &str = ".claimed-";
const TMP: &str = ".tmp-";
const DROPPED_FILE: &str = "dropped.json";

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("OBSCTL_SPOOL_MAX_BYTES is {value:?}; expected a number of bytes (using 64 MiB)")]
    MaxBytes { value: String },
    #[error("spool {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How many export requests (and the spans, points or records inside them) were dropped
/// because the spool was full, since the spool directory was created.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DropCount {
    pub requests: u64,
    pub items: u64,
}

/// One spooled request. Its file name sorts by age and says what is inside, so that listing
/// the spool needs no `stat` per file: `<unix ns, 20 digits>-<pid>-<seq>.<signal>.<items>.<bytes>.pb`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolEntry {
    pub path: PathBuf,
    pub signal: Signal,
    pub items: u64,
    pub bytes: u64,
}

impl SpoolEntry {
    fn parse(path: PathBuf) -> Option<Self> {
        let name = path.file_name()?.to_str()?;
        let stem = name.strip_suffix(SUFFIX)?;
        let mut parts = stem.rsplitn(4, '.');
        let bytes = parts.next()?.parse().ok()?;
        let items = parts.next()?.parse().ok()?;
        let signal = parts.next()?.parse().ok()?;
        parts.next()?;
        Some(Self {
            path,
            signal,
            items,
            bytes,
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoreReport {
    /// Requests dropped from the spool to make room for this one.
    pub dropped: DropCount,
}

/// What a replay did, in requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    pub delivered: u64,
    pub delivered_items: u64,
    /// Refused for good by the collector (not retryable): removed, not retried.
    pub rejected: u64,
    /// Unreadable files, moved aside with a `.corrupt` suffix.
    pub corrupt: u64,
    /// Still in the spool after this replay.
    pub remaining: u64,
    /// Why the replay stopped before emptying the spool, when it did.
    pub stopped_by: Option<ExportError>,
}

/// A spool directory. Nothing is created until something is stored.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
}

impl Spool {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
        }
    }

    /// `OBSCTL_SPOOL_DIR` (default `paths::default_spool_dir()`) and `OBSCTL_SPOOL_MAX_BYTES`
    /// (default 64 MiB, also when unreadable; `from_env_checked` reports that).
    pub fn from_env() -> Self {
        Self::from_env_checked().unwrap_or_else(|(spool, _)| spool)
    }

    /// As `from_env`, but an unreadable size is an error carrying the spool with the default
    /// size, so that a caller that must not fail (the shim) can warn and go on.
    pub fn from_env_checked() -> Result<Self, (Self, SpoolError)> {
        let dir = Self::env_dir();
        match std::env::var(env::OBSCTL_SPOOL_MAX_BYTES) {
            Err(_) => Ok(Self::new(dir, DEFAULT_MAX_BYTES)),
            Ok(v) => match v.trim().parse() {
                Ok(max) => Ok(Self::new(dir, max)),
                Err(_) => Err((
                    Self::new(dir, DEFAULT_MAX_BYTES),
                    SpoolError::MaxBytes { value: v },
                )),
            },
        }
    }

    /// `OBSCTL_SPOOL_DIR`, else `paths::default_spool_dir()`.
    pub fn env_dir() -> PathBuf {
        std::env::var_os(env::OBSCTL_SPOOL_DIR)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(crate::paths::default_spool_dir)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the request atomically (temporary file, then rename), then drops the oldest
    /// requests while the spool is over its bound.
    pub fn store(&self, request: &ExportRequest) -> Result<StoreReport, SpoolError> {
        static SEQ: AtomicU32 = AtomicU32::new(0);
        fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let now = crate::encode::now_unix_nanos();
        let body = request.encode_protobuf();
        let name = format!(
            "{now:020}-{:010}-{:04}.{}.{}.{}{SUFFIX}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed),
            request.signal(),
            request.item_count(),
            body.len()
        );
        let tmp = self.dir.join(format!("{TMP}{name}"));
        let path = self.dir.join(&name);
        // No fsync: the rename alone makes a request appear whole or not at all when a process
        // dies; only a power cut could lose the newest requests, and an fsync would cost every
        // step many milliseconds while the collector is down.
        let write = || -> std::io::Result<()> {
            let mut file = File::create(&tmp)?;
            file.write_all(&body)?;
            fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&path)(e));
        }
        self.enforce_bound(&path)
    }

    /// Bytes of spooled requests, from the file names alone: the common case (under the
    /// bound) costs one directory read, however long the backlog.
    fn total_bytes(&self) -> Result<u64, SpoolError> {
        let mut total = 0;
        for item in fs::read_dir(&self.dir).map_err(io_err(&self.dir))? {
            let item = item.map_err(io_err(&self.dir))?;
            let name = item.file_name();
            let bytes = name
                .to_str()
                .and_then(|n| n.strip_suffix(SUFFIX))
                .and_then(|stem| stem.rsplit('.').next())
                .and_then(|b| b.parse::<u64>().ok());
            total += bytes.unwrap_or(0);
        }
        Ok(total)
    }

    fn enforce_bound(&self, keep: &Path) -> Result<StoreReport, SpoolError> {
        if self.total_bytes()? <= self.max_bytes {
            return Ok(StoreReport::default());
        }
        let entries = self.entries()?;
        let mut total: u64 = entries.iter().map(|e| e.bytes).sum();
        let mut dropped = DropCount::default();
        for entry in &entries {
            if total <= self.max_bytes {
                break;
            }
            // The newest request stays even when it alone exceeds the bound.
            if entry.path == keep {
                continue;
            }
            if fs::remove_file(&entry.path).is_ok() {
                total -= entry.bytes;
                dropped.requests += 1;
                dropped.items += entry.items;
            }
        }
        if dropped.requests > 0 {
            self.add_dropped(dropped)?;
        }
        Ok(StoreReport { dropped })
    }

    /// Spooled requests, oldest first. Claims left by dead processes are released first.
    pub fn entries(&self) -> Result<Vec<SpoolEntry>, SpoolError> {
        let read = match fs::read_dir(&self.dir) {
            Ok(read) => read,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&self.dir)(e)),
        };
        let mut entries = Vec::new();
        for item in read {
            let item = item.map_err(io_err(&self.dir))?;
            let path = item.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if let Some(rest) = name.strip_prefix(TMP) {
                remove_if_writer_dead(&path, rest);
                continue;
            }
            let path = match name.split_once(CLAIM) {
                Some((original, pid)) => match release_if_dead(&path, original, pid) {
                    Some(released) => released,
                    None => continue,
                },
                None => path,
            };
            if let Some(entry) = SpoolEntry::parse(path) {
                entries.push(entry);
            }
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }

    pub fn dropped(&self) -> DropCount {
        fs::read(self.dir.join(DROPPED_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Adds to the persisted drop count under an exclusive lock: many shims may drop at once.
    fn add_dropped(&self, more: DropCount) -> Result<(), SpoolError> {
        let path = self.dir.join(DROPPED_FILE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err(&path))?;
        let mut file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| io_err(&path)(errno.into()))?;
        let mut text = Vec::new();
        file.read_to_end(&mut text).map_err(io_err(&path))?;
        let mut count: DropCount = serde_json::from_slice(&text).unwrap_or_default();
        count.requests += more.requests;
        count.items += more.items;
        let json = serde_json::to_vec(&count).expect("counts serialise");
        file.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
        file.set_len(0).map_err(io_err(&path))?;
        file.write_all(&json).map_err(io_err(&path))
    }

    /// Sends spooled requests oldest first until the spool is empty, `max_requests` were
    /// sent, the deadline passes or the collector fails again. Each request is claimed (renamed)
    /// first so that concurrent replays never send it twice, and deleted only once acknowledged.
    pub async fn replay(
        &self,
        exporter: &Exporter,
        deadline: Instant,
        max_requests: Option<usize>,
    ) -> Result<ReplayReport, SpoolError> {
        let mut report = ReplayReport::default();
        let entries = self.entries()?;
        let mut attempted = 0usize;
        for entry in &entries {
            if max_requests.is_some_and(|max| attempted >= max) || Instant::now() >= deadline {
                break;
            }
            let claimed = claimed_path(&entry.path);
            if fs::rename(&entry.path, &claimed).is_err() {
                continue; // another process took it
            }
            attempted += 1;
            let request = fs::read(&claimed)
                .ok()
                .and_then(|b| ExportRequest::decode_protobuf(entry.signal, &b).ok());
            let Some(request) = request else {
                let mut aside = entry.path.clone().into_os_string();
                aside.push(".corrupt");
                let _ = fs::rename(&claimed, aside);
                report.corrupt += 1;
                continue;
            };
            match exporter.send(&request, deadline).await {
                Ok(()) => {
                    if crate::defect::Defect::ReplayTwice.active() {
                        let _ = exporter.send(&request, deadline).await;
                    }
                    fs::remove_file(&claimed).map_err(io_err(&claimed))?;
                    report.delivered += 1;
                    report.delivered_items += entry.items;
                }
                Err(e) if e.is_retryable() => {
                    fs::rename(&claimed, &entry.path).map_err(io_err(&entry.path))?;
                    report.stopped_by = Some(e);
                    break;
                }
                Err(_) => {
                    fs::remove_file(&claimed).map_err(io_err(&claimed))?;
                    report.rejected += 1;
                }
            }
        }
        report.remaining = self.entries()?.len() as u64;
        Ok(report)
    }
}

fn claimed_path(path: &Path) -> PathBuf {
    let mut claimed = path.as_os_str().to_owned();
    claimed.push(format!("{CLAIM}{}", std::process::id()));
    PathBuf::from(claimed)
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// A temporary file (`<ns>-<pid>-…`) whose writer died before the rename is never complete.
fn remove_if_writer_dead(path: &Path, rest: &str) {
    if let Some(pid) = rest.split('-').nth(1).and_then(|p| p.parse().ok())
        && !pid_alive(pid)
    {
        let _ = fs::remove_file(path);
    }
}

/// A claim whose process is gone is renamed back so the request is not stranded.
fn release_if_dead(path: &Path, original: &str, pid: &str) -> Option<PathBuf> {
    if pid_alive(pid.parse().ok()?) {
        return None;
    }
    let released = path.with_file_name(original);
    fs::rename(path, &released).ok()?;
    Some(released)
}

/// What `deliver` did with a batch of fresh requests.
#[derive(Debug, Default)]
pub struct DeliveryReport {
    /// Per fresh request, in order: `Ok` when acknowledged.
    pub results: Vec<Result<(), ExportError>>,
    /// Fresh requests written to the spool.
    pub spooled: u64,
    /// Requests dropped from a full spool to make room.
    pub dropped: DropCount,
    /// Fresh requests refused for good (not spooled) or not spoolable (disk errors).
    pub lost: u64,
    pub spool_errors: Vec<SpoolError>,
    /// Replay of older spooled requests, attempted only when every fresh request went through.
    pub replay: Option<ReplayReport>,
}

/// Sends `requests` concurrently; spools each one that failed in a retryable way; when all
/// went through, replays up to `max_replay` spooled requests oldest first, all before `deadline`.
pub async fn deliver(
    exporter: &Exporter,
    spool: &Spool,
    requests: &[ExportRequest],
    deadline: Instant,
    max_replay: usize,
) -> DeliveryReport {
    let mut report = DeliveryReport {
        results: exporter.send_all(requests, deadline).await,
        ..Default::default()
    };
    for (request, result) in requests.iter().zip(&report.results) {
        match result {
            Ok(()) => {}
            Err(e) if e.is_retryable() => match spool.store(request) {
                Ok(stored) => {
                    report.spooled += 1;
                    report.dropped.requests += stored.dropped.requests;
                    report.dropped.items += stored.dropped.items;
                }
                Err(e) => {
                    report.lost += 1;
                    report.spool_errors.push(e);
                }
            },
            Err(_) => report.lost += 1,
        }
    }
    if report.results.iter().all(Result::is_ok) && max_replay > 0 {
        match spool.replay(exporter, deadline, Some(max_replay)).await {
            Ok(replay) => report.replay = Some(replay),
            Err(e) => report.spool_errors.push(e),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::proto::collector::logs::v1::ExportLogsServiceRequest;
    use crate::otlp::proto::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use std::time::Duration;

    fn logs(n: usize, body_len: usize) -> ExportRequest {
        ExportRequest::Logs(ExportLogsServiceRequest {
            resource_logs: vec![ResourceLogs {
                scope_logs: vec![ScopeLogs {
                    log_records: (0..n)
                        .map(|_| LogRecord {
                            body: Some(crate::otlp::proto::common::v1::AnyValue {
                                value: Some(
                                    crate::otlp::proto::common::v1::any_value::Value::StringValue(
                                        "x".repeat(body_len),
                                    ),
                                ),
                            }),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
    }

    #[test]
    fn stored_requests_come_back_oldest_first_with_signal_and_count() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), DEFAULT_MAX_BYTES);
        assert!(spool.entries().unwrap().is_empty());
        spool.store(&logs(3, 1)).unwrap();
        spool
            .store(&ExportRequest::Traces(Default::default()))
            .unwrap();
        let entries = spool.entries().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].signal, Signal::Logs);
        assert_eq!(entries[0].items, 3);
        assert_eq!(entries[1].signal, Signal::Traces);
        let bytes = fs::read(&entries[0].path).unwrap();
        assert_eq!(
            ExportRequest::decode_protobuf(Signal::Logs, &bytes).unwrap(),
            logs(3, 1)
        );
        assert!(
            fs::read_dir(dir.path()).unwrap().all(|e| !e
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with(".tmp"))
        );
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_counts_them() {
        let dir = tempfile::tempdir().unwrap();
        let one = logs(2, 1000).encode_protobuf().len() as u64;
        let spool = Spool::new(dir.path(), one * 3);
        for _ in 0..3 {
            assert_eq!(spool.store(&logs(2, 1000)).unwrap().dropped.requests, 0);
        }
        let oldest = spool.entries().unwrap()[0].path.clone();
        let report = spool.store(&logs(2, 1000)).unwrap();
        assert_eq!(
            report.dropped,
            DropCount {
                requests: 1,
                items: 2
            }
        );
        assert!(!oldest.exists());
        assert_eq!(spool.entries().unwrap().len(), 3);
        spool.store(&logs(2, 1000)).unwrap();
        assert_eq!(
            spool.dropped(),
            DropCount {
                requests: 2,
                items: 4
            }
        );
    }

    #[test]
    fn a_claim_of_a_dead_process_is_released() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), DEFAULT_MAX_BYTES);
        spool.store(&logs(1, 1)).unwrap();
        let entry = spool.entries().unwrap().remove(0);
        // pid 0x7fffffff does not exist on Linux (pid_max is at most 2^22).
        let mut claimed = entry.path.clone().into_os_string();
        claimed.push(format!("{CLAIM}{}", i32::MAX));
        fs::rename(&entry.path, &claimed).unwrap();
        assert_eq!(spool.entries().unwrap(), vec![entry]);
        // A live claim (ours) is left alone.
        let ours = claimed_path(&spool.entries().unwrap()[0].path);
        fs::rename(&spool.entries().unwrap()[0].path, &ours).unwrap();
        assert!(spool.entries().unwrap().is_empty());
    }

    #[test]
    fn half_written_files_of_dead_writers_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), DEFAULT_MAX_BYTES);
        let dead = dir
            .path()
            .join(format!("{TMP}0001-{:010}-0000.logs.1.7.pb", i32::MAX));
        let live = dir.path().join(format!(
            "{TMP}0002-{:010}-0000.logs.1.7.pb",
            std::process::id()
        ));
        fs::write(&dead, b"partial").unwrap();
        fs::write(&live, b"partial").unwrap();
        assert!(spool.entries().unwrap().is_empty());
        assert!(!dead.exists());
        assert!(live.exists());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn replay_against_a_refusing_collector_keeps_everything() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::new(dir.path(), DEFAULT_MAX_BYTES);
        spool.store(&logs(1, 1)).unwrap();
        spool.store(&logs(1, 1)).unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let endpoint = format!("http://127.0.0.1:{port}");
        let config = super::super::export::ExportConfig::from_lookup(|name| {
            (name == env::OTEL_EXPORTER_OTLP_ENDPOINT).then(|| endpoint.clone())
        })
        .unwrap();
        let exporter = Exporter::new(config);
        let report = spool
            .replay(&exporter, Instant::now() + Duration::from_secs(2), None)
            .await
            .unwrap();
        assert_eq!(report.delivered, 0);
        assert_eq!(report.remaining, 2);
        assert!(report.stopped_by.is_some());
    }
}
