//! Regressions of obsctl living under /tmp (as CI clones and scratch directories often do) while
//! each step gets a private /tmp: the shim binary there must stay visible, and a step must not
//! be left in obsctl's working directory, which the private /tmp hides.

mod common;

use std::path::Path;
use std::process::Command;

use common::workflow::Sandbox;

#[test]
fn steps_start_when_the_obsctl_binary_lives_under_tmp() {
    let dir = tempfile::Builder::new()
        .prefix("obsctl-exe-")
        .tempdir_in("/tmp")
        .unwrap();
    let exe = dir.path().join("bin/obsctl");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    let built = Path::new(env!("CARGO_BIN_EXE_obsctl"));
    if std::fs::hard_link(built, &exe).is_err() {
        std::fs::copy(built, &exe).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let workflow = state.path().join("wf.yaml");
    std::fs::write(
        &workflow,
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: t-\nspec:\n  \
         entrypoint: main\n  templates:\n  - name: main\n    container: {image: busybox, command: \
         [sh, -c, 'echo ok > /tmp/out'], args: []}\n    outputs:\n      parameters:\n      - name: \
         out\n        globalName: out\n        valueFrom: {path: /tmp/out}\n",
    )
    .unwrap();
    let output = Command::new(&exe)
        .args(["run", "--output", "json", "--state-dir"])
        .arg(state.path().join("runs"))
        .arg(&workflow)
        // No backend: telemetry is spooled, which must not change the outcome.
        .env("OBSCTL_SPOOL_DIR", state.path().join("spool"))
        .env("XDG_STATE_HOME", state.path().join("xdg"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(status["status"]["phase"], "Succeeded", "{stdout}");
    assert_eq!(
        status["status"]["outputs"]["parameters"][0]["value"], "ok",
        "{stdout}"
    );
}

#[test]
fn a_step_works_in_its_own_tmp_or_its_working_dir_when_obsctl_was_started_under_tmp() {
    let sb = Sandbox::new();
    let cwd = tempfile::Builder::new()
        .prefix("obsctl-cwd-")
        .tempdir_in("/tmp")
        .unwrap();
    // `cd "$PWD"` is what fails ("cannot change working directory") when the step is left in a
    // directory its private /tmp hides.
    let file = sb.write(
        "wf.yaml",
        r#"apiVersion: argoproj.io/v1alpha1
kind: Workflow
metadata:
  generateName: cwd-
spec:
  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: own, template: pwd}
      - {name: given, template: pwd-root}
  - name: pwd
    container: {image: busybox, command: [sh, -c, 'cd "$PWD" && pwd -P']}
  - name: pwd-root
    container: {image: busybox, command: [sh, -c, 'cd "$PWD" && pwd -P'], workingDir: /}
"#,
    );
    let run = sb.run_from(cwd.path(), &file, &[]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let own = run.result_of("@[0].own");
    assert_ne!(Path::new(&own), cwd.path(), "{}", run.describe());
    if common::workflow::require_private_tmp("a step's own /tmp as its working directory") {
        assert_eq!(own, "/tmp", "{}", run.describe());
    } else {
        assert!(own.ends_with("/tmp"), "{own}");
    }
    assert_eq!(run.result_of("@[0].given"), "/");
}
