//! `obsctl instrument` on every sample in `workflows/` and every upstream example in
//! `../shared/argo/examples`: the output validates against Argo's official JSON Schema, keeps
//! everything the input said (only additions, and the shim before each command), and
//! instrumenting it again changes nothing.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

use common::workflow::{repo_root, shared_argo, validate_against_argo_schema};

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn every_workflow() -> Vec<PathBuf> {
    let mut files = yaml_files(&repo_root().join("workflows"));
    let upstream = yaml_files(&shared_argo().join("examples"));
    assert_eq!(upstream.len(), 24, "the 24 upstream examples");
    files.extend(upstream);
    files
}

fn instrument(file: &Path, format: &str) -> String {
    let out = Command::cargo_bin("obsctl")
        .unwrap()
        .args(["instrument", "-o", format])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whatever `orig` says, `new` still says: mappings keep every key, lists keep their items in
/// front (instrument only appends), and a `command` keeps its items at the end (the shim goes
/// in front).
fn assert_kept(orig: &Value, new: &Value, path: &str) {
    match (orig, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, v) in o {
                let child = n.get(k).unwrap_or_else(|| panic!("{path}.{k} was removed"));
                assert_kept(v, child, &format!("{path}.{k}"));
            }
        }
        (Value::Array(o), Value::Array(n)) => {
            assert!(n.len() >= o.len(), "{path} lost items");
            let kept = if path.ends_with(".command") {
                &n[n.len() - o.len()..]
            } else {
                &n[..o.len()]
            };
            for (i, (a, b)) in o.iter().zip(kept).enumerate() {
                assert_kept(a, b, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(orig, new, "{path} changed"),
    }
}

#[test]
fn instrumented_workflows_validate_against_the_argo_schema() {
    let docs: Vec<(String, Value)> = every_workflow()
        .iter()
        .map(|f| {
            let json = instrument(f, "json");
            (
                f.file_name().unwrap().to_string_lossy().to_string(),
                serde_json::from_str(&json).unwrap(),
            )
        })
        .collect();
    let pods = docs
        .iter()
        .map(|(_, d)| {
            d["spec"]["templates"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t.get("initContainers").is_some())
                .count()
        })
        .sum::<usize>();
    assert!(pods >= 40, "only {pods} pod templates instrumented");
    validate_against_argo_schema(&docs).unwrap();
}

#[test]
fn instrument_only_adds_and_is_idempotent() {
    for file in every_workflow() {
        let name = file.display().to_string();
        let orig: Value = serde_norway::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        let once = instrument(&file, "yaml");
        let new: Value = serde_norway::from_str(&once).unwrap();
        assert_kept(&orig, &new, &name);
        for t in new["spec"]["templates"].as_array().unwrap() {
            let Some(main) = t.get("container").or_else(|| t.get("script")) else {
                continue;
            };
            assert_eq!(main["command"][0], "/var/run/obsctl/obsctl", "{name}");
            assert_eq!(t["initContainers"][0]["name"], "obsctl-install", "{name}");
            assert!(
                t["metadata"]["annotations"]["trace.context"]
                    .as_str()
                    .is_some_and(|tp| tp.starts_with("00-")),
                "{name}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let again = dir.path().join("once.yaml");
        std::fs::write(&again, &once).unwrap();
        assert_eq!(instrument(&again, "yaml"), once, "{name}: not idempotent");
    }
}

#[test]
fn a_file_that_is_no_workflow_is_refused_with_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pod.yaml");
    std::fs::write(&file, "apiVersion: v1\nkind: Pod\n").unwrap();
    let out = Command::cargo_bin("obsctl")
        .unwrap()
        .arg("instrument")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pod.yaml: kind is \"Pod\"; expected Workflow"),
        "{err}"
    );
}

#[test]
fn the_install_init_container_copies_a_runnable_obsctl() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("shared");
    Command::cargo_bin("obsctl")
        .unwrap()
        .args(["shim", "--install"])
        .arg(&target)
        .assert()
        .success();
    let out = std::process::Command::new(target.join("obsctl"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("obsctl "));
}

#[test]
fn the_check_policy_warn_exits_0_when_the_collector_is_down() {
    // A port nothing listens on: the collector is down.
    let endpoint = format!("http://127.0.0.1:{}", common::free_port());
    let check = |extra: &[&str]| {
        Command::cargo_bin("obsctl")
            .unwrap()
            .args(["shim", "--check", "--export-budget", "300ms"])
            .args(extra)
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
            .output()
            .unwrap()
    };
    let fail = check(&[]);
    assert_eq!(fail.status.code(), Some(1));
    let warn = check(&["--warn-only"]);
    assert_eq!(warn.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&warn.stdout).contains("collector NOT reachable"));
}

/// `deploy/` for teams that skip `instrument`: its ConfigMap holds the same OTEL values that
/// `instrument` writes into each step by default, and the kustomization renders every file.
#[test]
fn the_deploy_manifests_match_instrument_and_render() {
    let deploy = repo_root().join("deploy");
    let config: Value = serde_norway::from_str(
        &std::fs::read_to_string(deploy.join("collector-endpoint.yaml")).unwrap(),
    )
    .unwrap();
    let data = config["data"].as_object().unwrap();
    assert!(data.len() >= 8, "{data:?}");
    let out: Value = serde_json::from_str(&instrument(
        &repo_root().join("workflows/agent-pipeline.yaml"),
        "json",
    ))
    .unwrap();
    let template = out["spec"]["templates"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t.get("container").is_some())
        .unwrap();
    let env = template["container"]["env"].as_array().unwrap();
    for (key, value) in data {
        let set = env
            .iter()
            .find(|e| e["name"] == key.as_str())
            .unwrap_or_else(|| panic!("instrument sets no {key}"));
        assert_eq!(&set["value"], value, "{key}");
    }
    let Some(kubectl) = common::require_tool(
        "kubectl",
        "the_deploy_manifests_match_instrument_and_render",
    ) else {
        return;
    };
    let rendered = std::process::Command::new(kubectl)
        .arg("kustomize")
        .arg(&deploy)
        .output()
        .unwrap();
    assert!(
        rendered.status.success(),
        "{}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    let kinds: Vec<String> = String::from_utf8_lossy(&rendered.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("kind: ").map(String::from))
        .collect();
    for kind in [
        "ConfigMap",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Secret",
    ] {
        assert!(kinds.iter().any(|k| k == kind), "{kind} in {kinds:?}");
    }
}
