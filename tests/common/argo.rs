//! A stand-in Argo Server (`tests/python/argo_server.py`): no Argo Server or Kubernetes can run
//! on these machines. The Python process serves the four endpoints `obsctl run --argo-server`
//! uses exactly as `../shared/argo/swagger.json` defines them, validates every request body
//! against the specification's schemas and every workflow against `schema.json`, and runs each
//! submitted workflow with obsctl's own executor, so node ids, phases, outputs and telemetry
//! are real. Every request it receives is logged for the tests to read.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::workflow::{repo_root, shared_argo};
use super::{ChildGuard, free_port, require_probe, wait_with_deadline};

/// The token that may submit, watch and stop.
pub const TOKEN: &str = "v2:stand-in-ci-token";
/// A token that may only read: submitting or stopping with it is refused (403).
pub const READ_ONLY_TOKEN: &str = "v2:stand-in-read-only";
/// The one namespace the stand-in knows; any other is `namespaces "…" not found` (404).
pub const NAMESPACE: &str = "ci";

pub struct ArgoStandIn {
    child: ChildGuard,
    pub url: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl ArgoStandIn {
    /// Started and listening; `None` when python3 with jsonschema is missing (see
    /// [`super::missing`]). With `outage_after_lines`, the server goes away (connections
    /// refused) for a second once it has sent that many event lines in all, then comes back on
    /// the same port.
    pub fn start(test: &str, outage_after_lines: u32) -> Option<Self> {
        Self::spawn(test, outage_after_lines, None)
    }

    /// Serving https with `cert` and `key` (PEM), e.g. from `super::tls::Pki`.
    pub fn start_tls(test: &str, cert: &Path, key: &Path) -> Option<Self> {
        Self::spawn(test, 0, Some((cert, key)))
    }

    fn spawn(test: &str, outage_after_lines: u32, tls: Option<(&Path, &Path)>) -> Option<Self> {
        if !require_probe(
            "python3 with jsonschema (tests/python/requirements.txt)",
            test,
            Command::new("python3").args(["-c", "import jsonschema"]),
        ) {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let log = dir.path().join("requests.jsonl");
        let argo = shared_argo();
        let mut cmd = Command::new("python3");
        cmd.arg(repo_root().join("tests/python/argo_server.py"))
            .args(["--obsctl", env!("CARGO_BIN_EXE_obsctl")])
            .arg("--state")
            .arg(&state)
            .arg("--log")
            .arg(&log)
            .arg("--swagger")
            .arg(argo.join("swagger.json"))
            .arg("--schema")
            .arg(argo.join("schema.json"))
            .args(["--token", TOKEN, "--read-only-token", READ_ONLY_TOKEN])
            .args(["--namespace", NAMESPACE])
            .arg("--dead-endpoint")
            .arg(format!("http://127.0.0.1:{}", free_port()))
            .arg("--outage-after-lines")
            .arg(outage_after_lines.to_string())
            .env_remove("CI")
            .stdout(Stdio::piped());
        if let Some((cert, key)) = tls {
            cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
        }
        let mut child = ChildGuard::new(cmd.spawn().expect("python3 runs"));
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let addr = first
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("the stand-in Argo Server did not start: {first:?}"))
            .to_string();
        Some(Self {
            child,
            url: format!("{}://{addr}", if tls.is_some() { "https" } else { "http" }),
            log,
            _dir: dir,
        })
    }

    /// Every request received so far (`method`, `path`, `query`, `authorized`) and the
    /// `outage`/`back` events, in order.
    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// How many requests had this method and a path ending in `suffix` (`/stop`) or naming
    /// the events stream (`workflow-events`).
    pub fn count(&self, method: &str, path_part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r["method"] == method && r["path"].as_str().unwrap().contains(path_part))
            .count()
    }

    /// `obsctl run FILE --argo-server URL --namespace NS`, recording in `state`, with no
    /// `ARGO_*` variable from the test's own environment.
    pub fn run_command(&self, obsctl: Command, file: &Path, state: &Path, ns: &str) -> Command {
        let mut cmd = obsctl;
        cmd.arg("run")
            .arg(file)
            .args(["--argo-server", &self.url, "--namespace", ns])
            .arg("--state-dir")
            .arg(state);
        for var in [
            "ARGO_SERVER",
            "ARGO_TOKEN",
            "ARGO_NAMESPACE",
            "ARGO_SECURE",
            "ARGO_BASE_HREF",
            "ARGO_INSECURE_SKIP_VERIFY",
            "ARGO_HTTP1",
        ] {
            cmd.env_remove(var);
        }
        cmd
    }
}

impl Drop for ArgoStandIn {
    /// SIGTERM first, so the stand-in ends the executors it started.
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
            wait_with_deadline(&mut self.child, Duration::from_secs(10));
        }
    }
}
