//! Every sample in `workflows/` is a valid Argo Workflow per the official JSON Schema
//! (`../shared/argo/schema.json`), so what runs locally also submits to a real Argo Server.
//! Validation uses Python's `jsonschema` (tests/python/requirements.txt), fed JSON converted
//! from the YAML here.

mod common;

use common::workflow::{repo_root, validate_against_argo_schema as validate};

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
