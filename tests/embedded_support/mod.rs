//! Shared helpers for the embedded-backend integration tests: a guard that runs the real
//! `obsctl serve` on free ports (killed on drop), an HTTP getter, polling with a deadline, and
//! the "needs this tool" rule (fail under CI=true, skip loudly otherwise).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const STARTUP: Duration = Duration::from_secs(20);

/// `obsctl serve` on ports the OS picked, reading the bound addresses from its banner.
pub struct Backend {
    child: Option<Child>,
    pub grpc: String,
    pub http: String,
    pub api: String,
    pub data_dir: PathBuf,
    pub endpoints_file: PathBuf,
}

impl Backend {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    pub fn start_with(dir: &Path, extra: &[&str]) -> Self {
        let data_dir = dir.join("data");
        let endpoints_file = dir.join("endpoints.json");
        let mut child = Command::new(env!("CARGO_BIN_EXE_obsctl"))
            .args([
                "serve",
                "--otlp-grpc",
                "127.0.0.1:0",
                "--otlp-http",
                "127.0.0.1:0",
            ])
            .args(["--api", "127.0.0.1:0", "--data-dir"])
            .arg(&data_dir)
            .arg("--endpoints-file")
            .arg(&endpoints_file)
            .args(extra)
            .env("XDG_STATE_HOME", dir.join("state"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn obsctl serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut backend = Self {
            child: Some(child),
            grpc: String::new(),
            http: String::new(),
            api: String::new(),
            data_dir,
            endpoints_file,
        };
        let deadline = Instant::now() + STARTUP;
        while backend.grpc.is_empty() || backend.http.is_empty() || backend.api.is_empty() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("obsctl serve printed its banner in time");
            let (name, addr) = line.split_once(' ').expect("banner line is `name addr`");
            let url = format!("http://{addr}");
            match name {
                "otlp-grpc" => backend.grpc = url,
                "otlp-http" => backend.http = url,
                "api" => backend.api = url,
                _ => {}
            }
        }
        backend
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, then wait for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
        wait_with_deadline(&mut child, STARTUP)
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn wait_with_deadline(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "process did not exit in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Any child process, killed on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub fn poll<T>(what: &str, limit: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A small blocking HTTP client on its own runtime, so tests stay synchronous.
pub struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        Self {
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("client"),
        }
    }

    pub fn get(&self, url: &str, headers: &[(&str, &str)]) -> Reply {
        self.rt.block_on(async {
            let mut req = self.client.get(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            Self::reply(req.send().await.expect("GET")).await
        })
    }

    /// `None` while nothing listens yet (or the request fails), for polling.
    pub fn try_get(&self, url: &str) -> Option<Reply> {
        self.rt
            .block_on(async { Some(Self::reply(self.client.get(url).send().await.ok()?).await) })
    }

    pub fn get_query(&self, url: &str, query: &[(&str, &str)], headers: &[(&str, &str)]) -> Reply {
        self.rt.block_on(async {
            let mut req = self.client.get(url).query(query);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            Self::reply(req.send().await.expect("GET")).await
        })
    }

    pub fn post(&self, url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
        self.rt.block_on(async {
            let mut req = self.client.post(url).body(body);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            Self::reply(req.send().await.expect("POST")).await
        })
    }

    async fn reply(resp: reqwest::Response) -> Reply {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp.bytes().await.expect("body").to_vec();
        Reply {
            status,
            content_type,
            body,
        }
    }
}

/// Whether a test may run: `true` when `tool` works. Under `CI=true` a missing tool fails the
/// test; locally it is skipped with a loud message.
pub fn require(tool: &str, probe: &mut Command) -> bool {
    let ok = probe
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        let msg = format!("{tool} is not available ({probe:?} failed)");
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{msg}; CI=true requires it (scripts/test.sh installs it)");
        }
        eprintln!("\n!!! SKIPPING: {msg}. Run scripts/test.sh to install it. !!!\n");
    }
    ok
}

/// The Python OTLP client can run (SDK and exporters importable).
pub fn require_python() -> bool {
    require(
        "python3 with opentelemetry-sdk and the OTLP exporters",
        Command::new("python3").args([
            "-c",
            "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http",
        ]),
    )
}

pub fn python_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/otlp_client.py")
}

/// Runs the Python client once (one separate process) and returns the ids it printed.
pub fn run_python(args: &[&str]) -> serde_json::Value {
    let mut child = Command::new("python3")
        .arg(python_script())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn python3");
    let status = wait_with_deadline(&mut child, Duration::from_secs(60));
    let out = child.wait_with_output().expect("python output");
    assert!(
        status.success(),
        "python client failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python client prints JSON")
}

/// The attribute `key` of an OTLP/JSON attribute list, as its JSON value object.
pub fn attr<'a>(list: &'a serde_json::Value, key: &str) -> Option<&'a serde_json::Value> {
    list.as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .map(|kv| &kv["value"])
}

/// Every span in a Tempo trace-by-id answer (`batches` shape).
pub fn spans_of(trace: &serde_json::Value) -> Vec<(serde_json::Value, serde_json::Value)> {
    let mut out = Vec::new();
    for batch in trace["batches"].as_array().into_iter().flatten() {
        for ss in batch["scopeSpans"].as_array().into_iter().flatten() {
            for span in ss["spans"].as_array().into_iter().flatten() {
                out.push((batch["resource"].clone(), span.clone()));
            }
        }
    }
    out
}

pub fn b64_to_hex(text: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("base64 id")
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
