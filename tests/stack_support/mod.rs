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

/// Whether the Docker daemon answers. Under `CI=true` a missing daemon panics; locally the test
/// is skipped with a loud message.
pub fn require_docker(test: &str) -> bool {
    let ok = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        if in_ci() {
            panic!("{test}: a Docker daemon is required with CI=true");
        }
        eprintln!("!!! SKIPPING {test}: no Docker daemon answers (CI=true makes this a failure)");
    }
    ok
}

/// Builds the local images with scripts/build-images.sh; returns NAME → image reference.
pub fn build_images() -> std::collections::BTreeMap<String, String> {
    static BUILT: std::sync::OnceLock<std::collections::BTreeMap<String, String>> =
        std::sync::OnceLock::new();
    BUILT.get_or_init(build_images_now).clone()
}

fn build_images_now() -> std::collections::BTreeMap<String, String> {
    let out = Command::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/scripts/build-images.sh"
    ))
    .args(["--obsctl", env!("CARGO_BIN_EXE_obsctl")])
    .output()
    .expect("scripts/build-images.sh runs");
    assert!(
        out.status.success(),
        "build-images.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `docker ARGS`, stdout trimmed; panics on failure.
pub fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Lines of `docker <kind> ls` names carrying the project label.
pub fn labelled(kind: &str, project: &str) -> Vec<String> {
    let filter = format!("label=io.obsctl.project={project}");
    let args: Vec<&str> = match kind {
        "container" => vec!["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"],
        "network" => vec![
            "network",
            "ls",
            "--filter",
            &filter,
            "--format",
            "{{.Name}}",
        ],
        _ => vec!["volume", "ls", "--filter", &filter, "--format", "{{.Name}}"],
    };
    let mut names: Vec<String> = docker(&args).lines().map(str::to_string).collect();
    names.sort();
    names
}

/// An isolated obsctl environment (state and config directories, ports, images) for one stack
/// project; `down --volumes` runs on drop, so a failing test leaves no container behind.
pub struct StackEnv {
    pub project: String,
    pub dir: tempfile::TempDir,
    pub env: Vec<(String, String)>,
}

impl StackEnv {
    pub fn new(project_prefix: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let project = format!(
            "{project_prefix}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                % 100_000
        );
        let env = vec![
            (
                "XDG_STATE_HOME".to_string(),
                dir.path().join("state").display().to_string(),
            ),
            (
                "XDG_CONFIG_HOME".to_string(),
                dir.path().join("config").display().to_string(),
            ),
        ];
        Self { project, dir, env }
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// Free host ports for every published port.
    pub fn free_ports(&mut self) {
        for p in obsctl::stack::definition::Port::ALL {
            let port = free_port().to_string();
            self.set(&p.env(), &port);
        }
    }

    pub fn state_home(&self) -> std::path::PathBuf {
        self.dir.path().join("state/obsctl")
    }

    pub fn obsctl(&self, args: &[&str]) -> std::process::Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
        cmd.args(args);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

impl Drop for StackEnv {
    fn drop(&mut self) {
        let _ = self.obsctl(&["down", "--volumes", "--project", &self.project]);
    }
}

pub fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A blocking HTTP POST of a JSON body; returns the status.
pub fn post_json(url: &str, body: &serde_json::Value) -> u16 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .post(url)
            .json(body)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .unwrap_or(0)
    })
}
