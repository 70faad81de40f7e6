//! The wrapped command: spawned (not exec'd, the shim outlives it) with its stdout and stderr
//! piped through line by line and captured for export, and termination signals forwarded.

use std::cell::RefCell;
use std::ffi::OsString;
use std::io::Write;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::signal::unix::{SignalKind, signal};

/// At most this many output lines of one step become log records.
pub const MAX_LOG_RECORDS: usize = 1000;
/// A longer line is exported truncated (it still passes through whole).
pub const MAX_BODY_BYTES: usize = 8 * 1024;
/// At most this many body bytes per step are exported, which bounds the logs request.
pub const MAX_TOTAL_LOG_BYTES: usize = 1024 * 1024;
/// A line longer than this passes through in pieces instead of being held whole in memory.
const MAX_PENDING: usize = 64 * 1024;
/// How long output may keep arriving after the child exited (a background grandchild can hold
/// the pipes open forever).
const DRAIN_AFTER_EXIT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }

    fn write(self, bytes: &[u8]) {
        // A closed stdout or stderr must not stop the step: keep draining the child.
        let _ = match self {
            Stream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(bytes).and_then(|()| out.flush())
            }
            Stream::Stderr => std::io::stderr().lock().write_all(bytes),
        };
    }
}

/// One captured output line, without its line terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub stream: Stream,
    pub time: SystemTime,
    /// At most `MAX_BODY_BYTES`, possibly not UTF-8.
    pub bytes: Vec<u8>,
    /// Bytes of the line beyond `bytes`.
    pub truncated: usize,
}

/// The lines to export, within the caps, and how many were left out.
#[derive(Debug, Default)]
pub struct LogBuffer {
    pub lines: Vec<Line>,
    pub dropped: u64,
    /// Body bytes kept so far, against `MAX_TOTAL_LOG_BYTES`.
    pub total_bytes: usize,
}

impl LogBuffer {
    pub(crate) fn push(&mut self, line: Line) {
        if line.bytes.iter().all(u8::is_ascii_whitespace) && line.truncated == 0 {
            return;
        }
        if self.lines.len() >= MAX_LOG_RECORDS
            || self.total_bytes + line.bytes.len() > MAX_TOTAL_LOG_BYTES
        {
            self.dropped += 1;
            return;
        }
        self.total_bytes += line.bytes.len();
        self.lines.push(line);
    }
}

/// How the step ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signaled(Signal),
    /// The command could not be found (exit 127).
    NotFound(String),
    /// The command exists but could not be executed (exit 126).
    NotExecutable(String),
}

impl Exit {
    /// The shim's own exit code: the child's, 128+N for signal N, 127 or 126 as shells do.
    pub fn code(&self) -> u8 {
        match self {
            Exit::Code(c) => *c as u8,
            Exit::Signaled(s) => 128u8.saturating_add(*s as u8),
            Exit::NotFound(_) => 127,
            Exit::NotExecutable(_) => 126,
        }
    }

    pub fn success(&self) -> bool {
        matches!(self, Exit::Code(0))
    }

    /// What went wrong, for the span status; `None` on success.
    pub fn describe(&self) -> Option<String> {
        match self {
            Exit::Code(0) => None,
            Exit::Code(c) => Some(format!("exited with code {c}")),
            Exit::Signaled(s) => Some(format!("killed by {}", s.as_str())),
            Exit::NotFound(m) | Exit::NotExecutable(m) => Some(m.clone()),
        }
    }

    fn from_status(status: ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Signal::try_from(s).map_or(Exit::Code(128 + s), Exit::Signaled),
            (None, None) => Exit::Code(1),
        }
    }
}

/// The outcome of running the child.
#[derive(Debug)]
pub struct ChildRun {
    pub exit: Exit,
    /// The last termination signal the shim received and passed on, if any.
    pub forwarded: Option<Signal>,
    pub logs: LogBuffer,
}

/// Signals the shim passes on to the child rather than dying of them.
pub const FORWARDED: [Signal; 4] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Runs `command` with `env` added to the inherited environment. Must run inside a Tokio
/// runtime with IO, time and signal drivers.
pub async fn run(command: &[OsString], env: &[(&str, String)]) -> ChildRun {
    let program = command[0].to_string_lossy().into_owned();
    // Handlers go in before the spawn so that no signal can slip between the two.
    let mut handlers = Vec::new();
    for sig in FORWARDED {
        if let Ok(stream) = signal(SignalKind::from_raw(sig as i32)) {
            handlers.push((sig, stream));
        }
    }
    let spawned = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => {
            let exit = spawn_failure(&program, &e);
            return ChildRun {
                exit,
                forwarded: None,
                logs: LogBuffer::default(),
            };
        }
    };
    let pid = child.id().map(|id| Pid::from_raw(id as i32));
    let logs = RefCell::new(LogBuffer::default());
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (status, forwarded) = {
        let mut pumps = std::pin::pin!(async {
            tokio::join!(
                pump(stdout, Stream::Stdout, &logs),
                pump(stderr, Stream::Stderr, &logs)
            )
        });
        let mut forwarded = None;
        let mut pumps_done = false;
        let status = loop {
            let received = async {
                let waits = handlers.iter_mut().map(|(sig, stream)| {
                    let sig = *sig;
                    Box::pin(async move {
                        stream.recv().await;
                        sig
                    })
                });
                first_of(waits).await
            };
            tokio::select! {
                status = child.wait() => break status,
                _ = &mut pumps, if !pumps_done => pumps_done = true,
                sig = received => {
                    if let Some(pid) = pid {
                        let _ = kill(pid, sig);
                    }
                    forwarded = Some(sig);
                }
            }
        };
        if !pumps_done {
            let _ = tokio::time::timeout(DRAIN_AFTER_EXIT, &mut pumps).await;
        }
        (status, forwarded)
    };
    let exit = match status {
        Ok(status) => Exit::from_status(status),
        Err(_) => Exit::Code(1),
    };
    ChildRun {
        exit,
        forwarded,
        logs: logs.into_inner(),
    }
}

fn spawn_failure(program: &str, err: &std::io::Error) -> Exit {
    match err.kind() {
        std::io::ErrorKind::NotFound => Exit::NotFound(format!("command not found: {program}")),
        std::io::ErrorKind::PermissionDenied => {
            Exit::NotExecutable(format!("permission denied: {program} is not executable"))
        }
        _ => Exit::NotExecutable(format!("cannot execute {program}: {err}")),
    }
}

/// Resolves with the first future to finish; pending forever when there are none.
async fn first_of<F: std::future::Future + Unpin>(futures: impl Iterator<Item = F>) -> F::Output {
    let mut futures: Vec<F> = futures.collect();
    std::future::poll_fn(|cx| {
        for f in futures.iter_mut() {
            if let std::task::Poll::Ready(v) = std::pin::Pin::new(f).poll(cx) {
                return std::task::Poll::Ready(v);
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// Copies one pipe to the shim's own stream a line at a time and captures each line.
async fn pump<R: AsyncRead + Unpin>(reader: Option<R>, stream: Stream, logs: &RefCell<LogBuffer>) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut captured: Vec<u8> = Vec::new();
    let mut truncated = 0usize;
    let capture = |bytes: &[u8], captured: &mut Vec<u8>, truncated: &mut usize| {
        let room = MAX_BODY_BYTES.saturating_sub(captured.len());
        let take = room.min(bytes.len());
        captured.extend_from_slice(&bytes[..take]);
        *truncated += bytes.len() - take;
    };
    let finish = |captured: &mut Vec<u8>, truncated: &mut usize| {
        if captured.last() == Some(&b'\r') && *truncated == 0 {
            captured.pop();
        }
        logs.borrow_mut().push(Line {
            stream,
            time: SystemTime::now(),
            bytes: std::mem::take(captured),
            truncated: std::mem::take(truncated),
        });
    };
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let mut chunk = &buf[..n];
        while let Some(pos) = chunk.iter().position(|b| *b == b'\n') {
            let (line, rest) = chunk.split_at(pos + 1);
            pending.extend_from_slice(line);
            stream.write(&pending);
            pending.clear();
            capture(&line[..pos], &mut captured, &mut truncated);
            finish(&mut captured, &mut truncated);
            chunk = rest;
        }
        pending.extend_from_slice(chunk);
        capture(chunk, &mut captured, &mut truncated);
        if pending.len() >= MAX_PENDING {
            stream.write(&pending);
            pending.clear();
        }
    }
    if !pending.is_empty() {
        stream.write(&pending);
    }
    if !captured.is_empty() || truncated > 0 {
        finish(&mut captured, &mut truncated);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    fn sh(script: &str) -> Vec<OsString> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    #[test]
    fn lines_are_captured_per_stream_with_long_and_binary_lines_bounded() {
        let run = rt().block_on(run(
            &sh(
                "echo one; echo two >&2; printf 'caf\\377\\n'; head -c 100000 /dev/zero | tr '\\0' x; echo; printf 'no newline'",
            ),
            &[],
        ));
        assert_eq!(run.exit, Exit::Code(0));
        let lines = &run.logs.lines;
        let text: Vec<(Stream, Vec<u8>)> =
            lines.iter().map(|l| (l.stream, l.bytes.clone())).collect();
        assert!(text.contains(&(Stream::Stdout, b"one".to_vec())));
        assert!(text.contains(&(Stream::Stderr, b"two".to_vec())));
        assert!(text.contains(&(Stream::Stdout, b"caf\xff".to_vec())));
        assert!(text.contains(&(Stream::Stdout, b"no newline".to_vec())));
        let long = lines
            .iter()
            .find(|l| l.bytes.len() == MAX_BODY_BYTES)
            .unwrap();
        assert_eq!(long.truncated, 100_000 - MAX_BODY_BYTES);
    }

    #[test]
    fn exit_codes_signals_and_spawn_failures() {
        let rt = rt();
        assert_eq!(rt.block_on(run(&sh("exit 3"), &[])).exit.code(), 3);
        let killed = rt.block_on(run(&sh("kill -TERM $$"), &[])).exit;
        assert_eq!(killed, Exit::Signaled(Signal::SIGTERM));
        assert_eq!(killed.code(), 143);
        let missing = rt.block_on(run(&["/nonexistent/cmd".into()], &[])).exit;
        assert_eq!(missing.code(), 127);
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain.sh");
        std::fs::write(&plain, "echo hi\n").unwrap();
        assert_eq!(
            rt.block_on(run(&[plain.into_os_string()], &[])).exit.code(),
            126
        );
    }

    #[test]
    fn the_record_count_is_capped_and_drops_are_counted() {
        let n = MAX_LOG_RECORDS + 25;
        let run = rt().block_on(run(&sh(&format!("seq 1 {n}")), &[]));
        assert_eq!(run.logs.lines.len(), MAX_LOG_RECORDS);
        assert_eq!(run.logs.dropped, 25);
    }

    #[test]
    fn the_child_sees_the_added_environment() {
        let run = rt().block_on(run(
            &sh("echo \"$TRACE_ID\""),
            &[("TRACE_ID", "abc".into())],
        ));
        assert_eq!(run.logs.lines[0].bytes, b"abc");
    }
}
