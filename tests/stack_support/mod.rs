//! Shared helpers for the stack tests: tool discovery that fails under CI instead of skipping,
//! free ports, and process guards that kill what a test started even when it panics.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Whether the test runs under CI, where a missing tool is a failure, not a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// `Some(path)` when `tool` is on PATH. Under `CI=true` a missing tool panics; locally the
/// test is skipped with a loud message.
pub fn require_tool(tool: &str, test: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(tool))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if in_ci() {
            panic!("{test}: `{tool}` is required with CI=true (scripts/test.sh installs it)");
        }
        eprintln!("!!! SKIPPING {test}: `{tool}` is not installed (CI=true makes this a failure)");
    }
    found
}

/// A port that was free a moment ago on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills and reaps the child on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `check` until it returns `Some` or the deadline passes.
pub fn poll<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A blocking HTTP GET returning status and body, `None` when nothing answers.
pub fn http_get(url: &str) -> Option<(u16, String)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .ok()?;
        let resp = client.get(url).send().await.ok()?;
        let status = resp.status().as_u16();
        Some((status, resp.text().await.ok()?))
    })
}

/// Starts Debian's Prometheus on a free port with exemplar storage, scraping `target` every
/// second; `None` (after the tool check's message) when prometheus is not installed.
pub fn start_prometheus(
    test: &str,
    target: &str,
    dir: &std::path::Path,
) -> Option<(ChildGuard, String)> {
    let bin = require_tool("prometheus", test)?;
    let port = free_port();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: sample\n    honor_labels: true\n    static_configs:\n      - targets: [\"{target}\"]\n"
        ),
    )
    .unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--enable-feature=exemplar-storage")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("prometheus starts");
    let guard = ChildGuard(child);
    let base = format!("http://127.0.0.1:{port}");
    poll("prometheus /-/ready", Duration::from_secs(30), || {
        http_get(&format!("{base}/-/ready")).filter(|(s, _)| *s == 200)
    });
    Some((guard, base))
}

/// A blocking HTTP GET with query parameters, returning status and parsed JSON.
pub fn get_json(url: &str, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let resp = client.get(url).query(params).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body));
        (status, json)
    })
}

/// Serves `body` as OpenMetrics text to every request, from a background thread, until the
/// process ends; returns `host:port`.
pub fn serve_openmetrics(body: String) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(body.as_bytes());
        }
    });
    addr
}
