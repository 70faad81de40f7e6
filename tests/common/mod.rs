//! The one set of helpers every integration test binary shares: free ports, a guard that kills
//! its process on drop, polling with a deadline, and the "needs this tool" rule (fail under CI,
//! skip loudly otherwise). Submodules hold the real processes and the per-area fixtures.

// Each tests/*.rs is its own crate that includes this module but calls only part of it; without
// this every binary would warn about the helpers (and re-exports below) it does not use.
#![allow(dead_code, unused_imports)]

pub mod argo;
pub mod browser;
pub mod chaos;
pub mod embedded;
pub mod http;
pub mod prometheus;
pub mod serve;
pub mod shim;
pub mod stack;
pub mod tls;
pub mod upstream;
pub mod verify;
pub mod workflow;

use std::net::TcpListener;
use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub use http::{Http, Reply, get_json, http_get, post_json};
pub use prometheus::Prometheus;
pub use serve::Serve;

/// How often `poll` checks again: short enough not to slow tests, long enough not to spin.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `n` distinct ports that were free a moment ago: every one is held until all are picked, so
/// the OS cannot hand out the same port twice.
pub fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    held.iter()
        .map(|l| l.local_addr().unwrap().port())
        .collect()
}

/// Any child process, killed and reaped on drop so a failing test leaves nothing running.
/// Derefs to the `Child`; `into_inner` hands it over (to wait for its output).
pub struct ChildGuard(Option<Child>);

impl ChildGuard {
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    pub fn into_inner(mut self) -> Child {
        self.0.take().expect("child still guarded")
    }
}

impl Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        self.0.as_ref().expect("child still guarded")
    }
}

impl DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("child still guarded")
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `check` until it returns `Some`; past `limit` the test fails, naming `what` it waited
/// for and how long.
pub fn poll<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        let waited = start.elapsed();
        assert!(
            waited < limit,
            "timed out after {waited:.1?} (limit {limit:?}) waiting for: {what}"
        );
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// A scratch directory that workflow steps can see. Each step gets a private /tmp, which hides
/// everything under the host's /tmp, including CARGO_TARGET_TMPDIR when the checkout itself
/// lives under /tmp (as CI clones may); /var/tmp is never covered.
pub fn dir_visible_to_steps() -> tempfile::TempDir {
    let target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    let base = if target.starts_with("/tmp") {
        std::path::Path::new("/var/tmp")
    } else {
        target
    };
    tempfile::tempdir_in(base).unwrap()
}

/// Waits for `child` to exit, failing the test past `limit`.
pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> ExitStatus {
    poll("the process to exit", limit, || {
        child.try_wait().expect("try_wait")
    })
}

/// Whether the test runs under CI, where a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The rule for a missing dependency: under CI the test fails; locally it is skipped with a loud
/// message on stderr. Callers return early after this.
pub fn missing(test: &str, what: &str) {
    if in_ci() {
        panic!("{test}: {what}; CI=true requires it (scripts/test.sh installs it)");
    }
    eprintln!("\n!!! SKIPPING {test}: {what} (CI=true makes this a failure) !!!\n");
}

/// `Some(path)` when `tool` is on PATH; otherwise see [`missing`].
pub fn require_tool(tool: &str, test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        missing(test, &format!("`{tool}` is not installed"));
    }
    found
}

/// Whether `probe` runs and succeeds (a tool that must work, not only exist); otherwise see
/// [`missing`].
pub fn require_probe(what: &str, test: &str, probe: &mut Command) -> bool {
    let ok = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        missing(test, &format!("{what} is not available ({probe:?} failed)"));
    }
    ok
}

/// Whether the Docker daemon answers; otherwise see [`missing`].
pub fn require_docker(test: &str) -> bool {
    require_probe(
        "a Docker daemon",
        test,
        Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]),
    )
}
