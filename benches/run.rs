//! `cargo bench --bench run`: what `obsctl run` adds per step. `workflows/burst.yaml` with 50
//! and 500 steps of `sh -c true`, against the same number of `sh -c true` started in parallel
//! by a shell, in the same run. Two obsctl figures: orchestration alone (`--no-shim`), and
//! orchestration plus tracing (every step through `obsctl shim`, exporting to `obsctl serve`).
//! First, in process, the time to load and validate a workflow of 1,000 templates.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::Serve;

const OBSCTL: &str = env!("CARGO_BIN_EXE_obsctl");
const ROUNDS: usize = 3;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

/// The baseline: N bare `sh -c true` started in parallel by one shell, waited for.
fn bare(n: usize) -> Duration {
    let start = Instant::now();
    let status = Command::new("sh")
        .args([
            "-c",
            &format!("i=0; while [ $i -lt {n} ]; do sh -c true & i=$((i+1)); done; wait"),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    start.elapsed()
}

fn obsctl_run(n: usize, state: &Path, endpoint: &str, shim: bool) -> Duration {
    let burst = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows/burst.yaml");
    let mut cmd = Command::new(OBSCTL);
    cmd.arg("run")
        .arg(&burst)
        .args([
            "-p",
            &format!("count={n}"),
            "-p",
            "script=true",
            "-o",
            "json",
        ])
        .arg("--state-dir")
        .arg(state.join("runs"))
        .args(["--otlp-protocol", "grpc", "--otlp-endpoint", endpoint])
        .env("XDG_STATE_HOME", state.join("xdg"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if !shim {
        cmd.arg("--no-shim");
    }
    let start = Instant::now();
    let status = cmd.status().unwrap();
    let elapsed = start.elapsed();
    assert!(status.success(), "obsctl run failed");
    elapsed
}

/// A workflow of `n` templates: a DAG calling `n - 1` script templates in a chain, each with an
/// input, an output, a retry strategy and a timeout, so that every check has work to do.
fn many_templates(n: usize) -> String {
    let mut out = String::from(
        "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: many-\nspec:\n  \
         entrypoint: main\n  arguments:\n    parameters:\n    - {name: seed, value: x}\n  templates:\n  \
         - name: main\n    dag:\n      tasks:\n",
    );
    for i in 1..n {
        let depends = if i > 1 {
            format!(", depends: \"t{} && t{}.Succeeded\"", i - 1, i - 1)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "      - {{name: t{i}, template: s{i}{depends}, arguments: {{parameters: [{{name: m, value: \"{{{{workflow.parameters.seed}}}}\"}}]}}}}\n"
        ));
    }
    for i in 1..n {
        out.push_str(&format!(
            "  - name: s{i}\n    inputs: {{parameters: [{{name: m}}]}}\n    outputs: {{parameters: [{{name: o, valueFrom: {{path: /tmp/o}}}}]}}\n    \
             retryStrategy: {{limit: 2, backoff: {{duration: 1s}}}}\n    timeout: 1m\n    \
             script: {{image: busybox, command: [sh], source: \"echo {{{{inputs.parameters.m}}}} > /tmp/o\"}}\n"
        ));
    }
    out
}

fn load_time(n: usize) -> Duration {
    let source = many_templates(n);
    let path = Path::new("many.yaml");
    let times = (0..5)
        .map(|_| {
            let start = Instant::now();
            let loaded = obsctl::workflow::load::parse(path, &source, &[]).unwrap();
            let elapsed = start.elapsed();
            assert_eq!(loaded.workflow.spec.templates.len(), n);
            elapsed
        })
        .collect();
    median(times)
}

fn main() {
    let load = load_time(1000);
    println!(
        "load and validation of a workflow of 1,000 templates: {:.1} ms (median of 5)\n",
        load.as_secs_f64() * 1000.0
    );
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path());
    println!("obsctl run: burst.yaml of `sh -c true` steps, median of {ROUNDS} rounds\n");
    println!(
        "| steps | bare processes | obsctl --no-shim | added/step | obsctl + shim | added/step | target |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---|");
    for n in [50usize, 500] {
        let (mut base, mut orch, mut traced) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..ROUNDS {
            let state = dir.path().join(format!("s{n}-{round}"));
            base.push(bare(n));
            orch.push(obsctl_run(n, &state, &serve.grpc, false));
            traced.push(obsctl_run(n, &state, &serve.grpc, true));
        }
        let (b, o, t) = (median(base), median(orch), median(traced));
        let per = |x: Duration| (x.as_secs_f64() - b.as_secs_f64()) * 1000.0 / n as f64;
        let verdict = |ms: f64| if ms <= 2.0 { "met" } else { "missed" };
        println!(
            "| {n} | {:.1} ms | {:.1} ms ({:.2}x) | {:.2} ms | {:.1} ms ({:.2}x) | {:.2} ms | <= 2 ms/step: orchestration {}, with tracing {} |",
            b.as_secs_f64() * 1000.0,
            o.as_secs_f64() * 1000.0,
            o.as_secs_f64() / b.as_secs_f64(),
            per(o),
            t.as_secs_f64() * 1000.0,
            t.as_secs_f64() / b.as_secs_f64(),
            per(t),
            verdict(per(o)),
            verdict(per(t)),
        );
    }
}
