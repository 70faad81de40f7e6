//! Regression: obsctl built in a checkout under /tmp (as CI clones often are) must still start
//! its steps when each step gets a private /tmp, which would otherwise hide the shim binary.

use std::path::Path;
use std::process::Command;

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
