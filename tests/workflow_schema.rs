//! Every sample in `workflows/` is a valid Argo Workflow per the official JSON Schema
//! (`../shared/argo/schema.json`), so what runs locally also submits to a real Argo Server.
//! Validation uses Python's `jsonschema` (tests/python/requirements.txt), fed JSON converted
//! from the YAML here.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::workflow::{repo_root, shared_argo};

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

/// Validates `(name, document)` pairs; answers the validator's report when some are invalid.
fn validate(docs: &[(String, serde_json::Value)]) -> Result<(), String> {
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

#[test]
fn samples_validate_against_the_argo_schema() {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("workflows")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let text = std::fs::read_to_string(&path).unwrap();
            let doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
            docs.push((path.file_name().unwrap().to_string_lossy().to_string(), doc));
        }
    }
    let names: Vec<&str> = docs.iter().map(|(n, _)| n.as_str()).collect();
    for sample in [
        "agent-pipeline.yaml",
        "burst.yaml",
        "flaky-retry.yaml",
        "long-step.yaml",
    ] {
        assert!(names.contains(&sample), "missing sample {sample}");
    }
    validate(&docs).unwrap();
}

#[test]
fn the_validator_rejects_a_broken_workflow() {
    let text = std::fs::read_to_string(repo_root().join("workflows/burst.yaml")).unwrap();
    let mut doc: serde_json::Value = serde_norway::from_str(&text).unwrap();
    doc["spec"]["templates"][0]["steps"] = serde_json::json!("not a list");
    doc["spec"]["parallelism"] = serde_json::json!("two");
    let report = validate(&[("broken".into(), doc)]).unwrap_err();
    assert!(report.contains("broken: /spec/parallelism"), "{report}");
    assert!(report.contains("/spec/templates/0/steps"), "{report}");
}
