//! `obsctl chaos` as the tests and the chaos bench run it: the real binary with `-o json` in a
//! scratch work directory, and lookups into the JSON report.

use std::process::{Command, Output, Stdio};

use serde_json::Value;

/// Runs `obsctl chaos ARGS -o json` with `env`, in its own work and state directories; answers
/// the exit code and the parsed report (a run that prints no JSON fails, naming its stderr).
pub fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, Value) {
    let out = output(args, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("chaos printed no JSON report ({e}); stderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), report)
}

/// [`run`] as it ended, for a chaos that cannot run and prints no report.
pub fn output(args: &[&str], env: &[(&str, &str)]) -> Output {
    let work = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_obsctl"))
        .arg("chaos")
        .args(args)
        .args(["-o", "json", "--work-dir"])
        .arg(work.path())
        .env_remove("OBSCTL_DEFECT")
        .env_remove("OBSCTL_SPOOL_MAX_BYTES")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .env("NO_COLOR", "1")
        .env("XDG_STATE_HOME", work.path())
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Every scenario `chaos all` runs, in its order.
pub const ALL: [&str; 7] = [
    "pod-kill",
    "collector-outage/stop",
    "collector-outage/kill",
    "collector-outage/pause",
    "collector-outage/partition",
    "burst",
    "controller-restart",
];

/// The scenarios a report holds, in its order.
pub fn names(report: &Value) -> Vec<&str> {
    report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["scenario"].as_str().unwrap())
        .collect()
}

/// One scenario's report by name.
pub fn scenario<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["scenarios"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["scenario"] == name)
        .unwrap_or_else(|| panic!("no scenario {name} in {report:#}"))
}

/// One row of a scenario's table by check name.
pub fn row<'a>(scenario: &'a Value, check: &str) -> &'a Value {
    scenario["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["check"] == check)
        .unwrap_or_else(|| panic!("no row {check} in {scenario:#}"))
}

/// One of a scenario's measurements by name.
pub fn measure(scenario: &Value, name: &str) -> f64 {
    scenario["timings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .and_then(|m| m["value"].as_f64())
        .unwrap_or_else(|| panic!("no {name} in {scenario:#}"))
}
