//! Fixtures for the `obsctl run` tests: run the real binary in an isolated state directory and
//! read its Argo-shaped JSON.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

use super::free_port;
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `../shared/argo` beside the repository (CI) or `/work/shared/argo` (here). Missing is a
/// failure: the conformance material is part of the specification.
pub fn shared_argo() -> PathBuf {
    let beside = repo_root().join("../shared/argo");
    if beside.join("schema.json").exists() {
        return beside;
    }
    let here = PathBuf::from("/work/shared/argo");
    assert!(
        here.join("schema.json").exists(),
        "the Argo conformance folder is missing: expected {} or {}",
        beside.display(),
        here.display()
    );
    here
}

/// A scratch home for one test: state (records, endpoints file) never leaks between tests or
/// into the user's.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// A port nothing listens on, so the root span export fails fast instead of reaching a
    /// collector someone else runs.
    pub dead_endpoint: String,
}

impl Sandbox {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
            dead_endpoint: format!("http://127.0.0.1:{}", free_port()),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("runs")
    }

    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
        cmd.env("XDG_STATE_HOME", self.dir.path().join("xdg"))
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_PROTOCOL");
        cmd
    }

    /// `obsctl run --no-shim -o json FILE ARGS...` (the shim is another component; these tests
    /// are about the executor's semantics).
    pub fn run(&self, file: &Path, args: &[&str]) -> RunResult {
        RunResult::from(self.run_command(file, args).output().unwrap())
    }

    /// [`Sandbox::run`] with obsctl started in `cwd`, as a shell starts it (`$PWD` set).
    pub fn run_from(&self, cwd: &Path, file: &Path, args: &[&str]) -> RunResult {
        let mut cmd = self.run_command(file, args);
        cmd.current_dir(cwd).env("PWD", cwd);
        RunResult::from(cmd.output().unwrap())
    }

    fn run_command(&self, file: &Path, args: &[&str]) -> Command {
        let mut cmd = self.command();
        cmd.arg("run")
            .arg(file)
            .args(["--no-shim", "-o", "json", "--state-dir"])
            .arg(self.state_dir())
            .args(["--otlp-endpoint", &self.dead_endpoint])
            .args(args);
        cmd
    }

    pub fn write(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path
    }
}

pub struct RunResult {
    pub code: i32,
    pub json: Value,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for RunResult {
    fn from(out: Output) -> Self {
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        Self {
            code: out.status.code().unwrap_or(-1),
            json: serde_json::from_str(&stdout).unwrap_or(Value::Null),
            stdout,
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }
}

impl RunResult {
    pub fn name(&self) -> &str {
        self.json["metadata"]["name"].as_str().unwrap_or_default()
    }

    pub fn phase(&self) -> &str {
        self.json["status"]["phase"].as_str().unwrap_or_default()
    }

    /// Nodes as `(name with the workflow name replaced by @, type, phase)`, sorted.
    pub fn nodes(&self) -> Vec<(String, String, String)> {
        let wf = self.name().to_string();
        let mut out: Vec<_> = self.json["status"]["nodes"]
            .as_object()
            .map(|m| m.values().collect::<Vec<_>>())
            .unwrap_or_default()
            .into_iter()
            .map(|n| {
                (
                    n["name"].as_str().unwrap().replacen(&wf, "@", 1),
                    n["type"].as_str().unwrap().to_string(),
                    n["phase"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// The node whose name is `@suffix`.
    pub fn node(&self, short: &str) -> &Value {
        let full = short.replacen('@', self.name(), 1);
        self.json["status"]["nodes"]
            .as_object()
            .unwrap()
            .values()
            .find(|n| n["name"] == full.as_str())
            .unwrap_or_else(|| panic!("no node {full}; nodes: {:?}", self.nodes()))
    }

    pub fn result_of(&self, short: &str) -> String {
        self.node(short)["outputs"]["result"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    pub fn output(&self, name: &str) -> Option<String> {
        self.json["status"]["outputs"]["parameters"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["value"].as_str().unwrap().to_string())
    }

    pub fn describe(&self) -> String {
        format!(
            "exit {}\nstderr: {}\nnodes: {:#?}",
            self.code,
            self.stderr,
            self.nodes()
        )
    }
}

/// Expected nodes written compactly: `"@[0].A Pod Succeeded"`.
pub fn expect(lines: &[&str]) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = lines
        .iter()
        .map(|l| {
            let mut parts = l.rsplitn(3, ' ');
            let phase = parts.next().unwrap().to_string();
            let ty = parts.next().unwrap().to_string();
            let name = parts.next().unwrap().to_string();
            (name, ty, phase)
        })
        .collect();
    out.sort();
    out
}

/// Argo's node id, computed independently of obsctl: FNV-1a 32 of the node name.
pub fn argo_node_id(workflow: &str, node_name: &str) -> String {
    if node_name == workflow {
        return workflow.to_string();
    }
    let mut h: u32 = 2_166_136_261;
    for b in node_name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(16_777_619);
    }
    format!("{workflow}-{h}")
}

/// Whether steps can get their private /tmp (mount namespaces need root); see
/// [`super::missing`].
pub fn require_private_tmp(test: &str) -> bool {
    let ok = obsctl::workflow::runner::private_tmp_available();
    if !ok {
        super::missing(
            test,
            "a private /tmp per step is unavailable (obsctl run needs root here)",
        );
    }
    ok
}

const VALIDATE: &str = r##"
import json, sys
from jsonschema import Draft202012Validator
schema = json.load(open(sys.argv[1]))
workflow = dict(schema)
workflow.pop("oneOf")
workflow["$ref"] = "#/definitions/io.argoproj.workflow.v1alpha1.Workflow"
validator = Draft202012Validator(workflow)
bad = 0
for name, doc in json.load(sys.stdin):
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(e.path)):
        print(f"{name}: /{'/'.join(map(str, e.path))}: {e.message}")
        bad += 1
    if not Draft202012Validator(schema).is_valid(doc):
        print(f"{name}: not valid against the schema's root (oneOf)")
        bad += 1
sys.exit(1 if bad else 0)
"##;

/// Validates `(name, document)` pairs against the official Argo Workflow JSON Schema with
/// Python's `jsonschema` (tests/python/requirements.txt); answers the validator's report when
/// some are invalid.
pub fn validate_against_argo_schema(docs: &[(String, serde_json::Value)]) -> Result<(), String> {
    let schema = shared_argo().join("schema.json");
    let mut child = Command::new("python3")
        .args(["-c", VALIDATE])
        .arg(&schema)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is needed to validate against the Argo schema");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&serde_json::to_vec(docs).unwrap())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !report.contains("ModuleNotFoundError"),
        "python jsonschema is missing: pip install -r tests/python/requirements.txt"
    );
    if out.status.success() {
        Ok(())
    } else {
        Err(report)
    }
}
