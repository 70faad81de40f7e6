//! The real `obsctl serve` (the embedded backend) as a test fixture: ports from the OS or given,
//! addresses read from its banner, ready before the test goes on, killed on drop.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, mpsc};
use std::time::Duration;

use super::{http_get, poll, wait_with_deadline};

pub const STARTUP: Duration = Duration::from_secs(30);

/// `obsctl serve` with its data, endpoints file and state under one directory. The addresses
/// are URLs (`http://127.0.0.1:PORT`).
pub struct Serve {
    child: Option<Child>,
    pub grpc: String,
    pub http: String,
    pub api: String,
    pub data_dir: PathBuf,
    pub endpoints_file: PathBuf,
    /// Its stderr lines, when started with [`Serve::start_verbose`] (otherwise inherited). In a
    /// mutex so that a `Serve` can be shared with the threads of a test.
    pub stderr: Option<Mutex<mpsc::Receiver<String>>>,
}

impl Serve {
    /// On ports the OS picks, with explicit data and endpoints paths under `dir`.
    pub fn start(dir: &Path) -> Self {
        Self::spawn(dir, ["127.0.0.1:0"; 3].map(String::from), true)
    }

    /// As [`Serve::start`], with `-v` and its stderr lines in [`Serve::stderr`].
    pub fn start_verbose(dir: &Path) -> Self {
        Self::spawn_with(dir, ["127.0.0.1:0"; 3].map(String::from), true, true)
    }

    /// On fixed ports (to come back where shims expect it).
    pub fn start_on(dir: &Path, grpc: u16, http: u16, api: u16) -> Self {
        Self::spawn(
            dir,
            [grpc, http, api].map(|p| format!("127.0.0.1:{p}")),
            true,
        )
    }

    /// As a user's running stack: `XDG_STATE_HOME` is `home` and serve picks its default data
    /// dir and endpoints file there, where other obsctl commands with that home find it.
    pub fn start_in_home(home: &Path) -> Self {
        Self::spawn(home, ["127.0.0.1:0"; 3].map(String::from), false)
    }

    fn spawn(dir: &Path, addrs: [String; 3], explicit_paths: bool) -> Self {
        Self::spawn_with(dir, addrs, explicit_paths, false)
    }

    fn spawn_with(
        dir: &Path,
        [grpc, http, api]: [String; 3],
        explicit_paths: bool,
        verbose: bool,
    ) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
        if verbose {
            cmd.arg("-v");
        }
        cmd.args(["serve", "--otlp-grpc", &grpc, "--otlp-http", &http])
            .args(["--api", &api]);
        let (data_dir, endpoints_file) = if explicit_paths {
            let paths = (dir.join("data"), dir.join("endpoints.json"));
            cmd.arg("--data-dir")
                .arg(&paths.0)
                .arg("--endpoints-file")
                .arg(&paths.1)
                .env("XDG_STATE_HOME", dir.join("state"));
            paths
        } else {
            cmd.env("XDG_STATE_HOME", dir);
            (dir.join("obsctl/data"), dir.join("obsctl/endpoints.json"))
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(if verbose {
                Stdio::piped()
            } else {
                Stdio::inherit()
            })
            .spawn()
            .expect("spawn obsctl serve");
        let stderr = child.stderr.take().map(|err| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
            Mutex::new(rx)
        });
        // The reader keeps draining stdout for the whole life of the process.
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut serve = Self {
            child: Some(child),
            grpc: String::new(),
            http: String::new(),
            api: String::new(),
            data_dir,
            endpoints_file,
            stderr,
        };
        // serve prints `name addr` for each listener once it listens on all of them.
        let deadline = std::time::Instant::now() + STARTUP;
        while serve.grpc.is_empty() || serve.http.is_empty() || serve.api.is_empty() {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = rx
                .recv_timeout(left)
                .expect("obsctl serve printed its banner in time");
            let (name, addr) = line.split_once(' ').expect("banner line is `name addr`");
            let url = format!("http://{addr}");
            match name {
                "otlp-grpc" => serve.grpc = url,
                "otlp-http" => serve.http = url,
                "api" => serve.api = url,
                _ => {}
            }
        }
        poll("obsctl serve /ready", STARTUP, || {
            serve.get("/ready").filter(|(s, _)| *s == 200)
        });
        // Other obsctl commands find the backend through this file.
        poll(
            &format!("obsctl serve to write {}", serve.endpoints_file.display()),
            STARTUP,
            || obsctl::stack::endpoints::Endpoints::load(&serve.endpoints_file),
        );
        serve
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The query API as `host:port` (a scrape target).
    pub fn api_addr(&self) -> &str {
        self.api.trim_start_matches("http://")
    }

    /// SIGKILL: no chance to flush or clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill -9");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, then wait for the exit (so a restart can take the same ports).
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");
        wait_with_deadline(&mut child, STARTUP)
    }

    /// Environment for a shim that exports here with `protocol`.
    pub fn env(&self, protocol: &str) -> Vec<(&'static str, String)> {
        let endpoint = if protocol == "grpc" {
            &self.grpc
        } else {
            &self.http
        };
        vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.clone()),
        ]
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.api)
    }

    /// GET on the query API: status and body, `None` when it cannot connect.
    pub fn get(&self, path_and_query: &str) -> Option<(u16, String)> {
        http_get(&self.url(path_and_query))
    }

    /// The Tempo-shaped trace, when the backend has it.
    pub fn trace(&self, trace_id: &str) -> Option<serde_json::Value> {
        let (status, body) = self.get(&format!("/api/traces/{trace_id}"))?;
        (status == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    /// Spans of the Tempo-shaped trace, flattened; empty while it is not stored.
    pub fn spans(&self, trace_id: &str) -> Vec<serde_json::Value> {
        self.trace(trace_id)
            .map(|t| tempo_spans(&t).into_iter().map(|(_, span)| span).collect())
            .unwrap_or_default()
    }

    /// Loki-shaped log lines of one trace: (stream labels, line).
    pub fn logs(&self, trace_id: &str) -> Vec<(serde_json::Value, String)> {
        let query = format!("{{service_name=\"agent-steps\"}} | trace_id=\"{trace_id}\"");
        let Some((200, body)) = self.get(&format!(
            "/loki/api/v1/query_range?query={}&limit=1000",
            urlencode(&query)
        )) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|stream| {
                let labels = stream["stream"].clone();
                stream["values"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(move |v| (labels.clone(), v[1].as_str().unwrap().to_string()))
            })
            .collect()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every span in a Tempo trace-by-id answer (`batches` shape), with its batch's resource.
pub fn tempo_spans(trace: &serde_json::Value) -> Vec<(serde_json::Value, serde_json::Value)> {
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

/// Percent-encodes a query parameter value.
pub fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `obsctl serve` as the user's running stack in a scratch home (its endpoints file where other
/// obsctl commands with that home find it), killed when the test ends however it ends.
pub struct ServeHome {
    pub serve: Serve,
    pub home: tempfile::TempDir,
}

impl ServeHome {
    pub fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        Self {
            serve: Serve::start_in_home(home.path()),
            home,
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.home.path().join("runs")
    }

    /// `obsctl` with this home, without colour, and outside CI whatever the test runs under.
    pub fn obsctl(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
        cmd.args(args)
            .env("XDG_STATE_HOME", self.home.path())
            .env("NO_COLOR", "1")
            .env_remove("CI");
        cmd
    }

    /// `obsctl run workflow` recorded in [`Self::state_dir`]; the test fails if the run does.
    pub fn run_workflow(&self, workflow: &str, extra: &[&str]) -> std::process::Output {
        let state = self.state_dir();
        let mut args = vec!["run", workflow, "--state-dir", state.to_str().unwrap()];
        args.extend_from_slice(extra);
        let out = self.obsctl(&args).output().unwrap();
        assert!(
            out.status.success(),
            "obsctl run failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }
}
