//! `cargo bench --bench run`: what `obsctl run` adds per step. `workflows/burst.yaml` with 50
//! and 500 steps of `sh -c true`, against the same number of `sh -c true` started in parallel
//! by a shell, in the same run. Two obsctl figures: orchestration alone (`--no-shim`), and
//! orchestration plus tracing (every step through `obsctl shim`, exporting to `obsctl serve`).

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

fn main() {
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
