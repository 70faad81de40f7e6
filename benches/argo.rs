//! `cargo bench --bench argo`: what real-Argo support costs, each figure against a baseline
//! measured in the same run.
//! - `instrument` on the 24 upstream examples (`../shared/argo/examples`), in process, against
//!   only reading and parsing the same files.
//! - Time from starting `obsctl run --argo-server` (against the stand-in Argo Server of
//!   `tests/common/argo.rs`, which runs the workflow with obsctl's own executor) to the first
//!   node being visible in its run record, against a local `obsctl run` of the same workflow.
//! - The watch's work per event, in process: one `workflow-events` line of a 200-step workflow
//!   decoded, applied to the run record and the record saved, against only parsing the line as
//!   JSON.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;

use common::argo::{ArgoStandIn, NAMESPACE, TOKEN};
use common::workflow::shared_argo;
use common::{ChildGuard, poll};
use obsctl::argo::instrument::{Options, instrument_file};

const ROUNDS: usize = 5;

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs[xs.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn examples() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(shared_argo().join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 24, "the 24 upstream examples");
    files
}

fn instrument_vs_parse() {
    let files = examples();
    let opts = Options::default();
    let time = |f: &dyn Fn(&Path)| {
        median(
            (0..ROUNDS * 4)
                .map(|_| {
                    let start = Instant::now();
                    files.iter().for_each(|p| f(p));
                    start.elapsed()
                })
                .collect(),
        )
    };
    let parse = time(&|p| {
        let text = std::fs::read_to_string(p).unwrap();
        std::hint::black_box(serde_norway::from_str::<serde_norway::Value>(&text).unwrap());
    });
    let instrument = time(&|p| {
        std::hint::black_box(instrument_file(p, &opts).unwrap());
    });
    println!("| 24 upstream examples | read + parse | instrument | ratio |");
    println!("|---|---:|---:|---:|");
    println!(
        "| median of {} | {:.2} ms | {:.2} ms | {:.2}x |\n",
        ROUNDS * 4,
        ms(parse),
        ms(instrument),
        instrument.as_secs_f64() / parse.as_secs_f64()
    );
}

/// Starts `cmd` (recording in `state`) and answers how long until its record shows a node
/// that started; the run is then killed.
fn first_node(mut cmd: Command, state: &Path) -> Duration {
    let start = Instant::now();
    let _child = ChildGuard::new(
        cmd.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    poll(
        "a started node in the record",
        Duration::from_secs(30),
        || {
            let dir = std::fs::read_dir(state).ok()?;
            dir.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
                .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .any(|r| {
                    r["status"]["nodes"].as_object().is_some_and(|n| {
                        n.values()
                            .any(|n| n["type"] == "Pod" && n["phase"] != "Pending")
                    })
                })
                .then_some(())
        },
    );
    start.elapsed()
}

fn time_to_first_node() {
    let Some(argo) = ArgoStandIn::start("bench argo", 0) else {
        return;
    };
    let workflow = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("workflows/long-step.yaml");
    let dir = tempfile::tempdir().unwrap();
    let dead = format!("http://127.0.0.1:{}", common::free_port());
    let (mut local, mut remote) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let state = dir.path().join(format!("local-{round}"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
        cmd.arg("run")
            .arg(&workflow)
            .args([
                "-p",
                "seconds=2",
                "--no-shim",
                "--otlp-endpoint",
                &dead,
                "--state-dir",
            ])
            .arg(&state)
            .env("XDG_STATE_HOME", dir.path());
        local.push(first_node(cmd, &state));
        let state = dir.path().join(format!("remote-{round}"));
        let mut cmd = argo.run_command(
            Command::new(env!("CARGO_BIN_EXE_obsctl")),
            &workflow,
            &state,
            NAMESPACE,
        );
        // Short, so killed runs do not pile up on the stand-in between rounds.
        cmd.args(["-p", "seconds=2", "--otlp-endpoint", &dead])
            .env("ARGO_TOKEN", TOKEN)
            .env("XDG_STATE_HOME", dir.path());
        remote.push(first_node(cmd, &state));
    }
    let (l, r) = (median(local), median(remote));
    println!(
        "| long-step.yaml, start to first node visible | local run | --argo-server (stand-in) | ratio |"
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| median of {ROUNDS} | {:.1} ms | {:.1} ms | {:.2}x |",
        ms(l),
        ms(r),
        r.as_secs_f64() / l.as_secs_f64()
    );
}

/// An event line as the Argo Server streams it: a running workflow of `n` finished Pod nodes.
fn event_line(n: usize) -> Vec<u8> {
    let nodes: serde_json::Map<String, serde_json::Value> = (0..n)
        .map(|i| {
            let id = format!("wf-{}", 1_000_000 + i);
            let node = serde_json::json!({
                "id": id, "name": format!("wf[{i}].step"), "displayName": "step", "type": "Pod",
                "templateName": "step", "phase": "Succeeded", "boundaryID": "wf",
                "startedAt": "2026-01-01T00:00:00Z", "finishedAt": "2026-01-01T00:00:01Z",
                "outputs": {"exitCode": "0", "parameters": [{"name": "out", "value": "x"}]}
            });
            (id, node)
        })
        .collect();
    let event = serde_json::json!({"result": {"type": "MODIFIED", "object": {
        "metadata": {"name": "wf", "namespace": "argo", "uid": "u", "resourceVersion": "1"},
        "spec": {"entrypoint": "main"},
        "status": {"phase": "Running", "startedAt": "2026-01-01T00:00:00Z", "nodes": nodes}
    }}});
    serde_json::to_vec(&event).unwrap()
}

fn watch_work_per_event() {
    use obsctl::argo::{client::event_of, remote::apply};
    use obsctl::workflow::record::{RecordStore, RunRecord};
    let line = event_line(200);
    let dir = tempfile::tempdir().unwrap();
    let store = RecordStore::new(dir.path());
    let steps = std::collections::BTreeMap::from([(
        "step".to_string(),
        ("rex".to_string(), "step".to_string()),
    )]);
    let mut record: RunRecord = serde_json::from_value(serde_json::json!({
        "name": "wf", "namespace": "argo", "workflowFile": "wf.yaml", "parameters": [],
        "traceId": "0af7651916cd43dd8448eb211c80319c", "rootSpanId": "b7ad6b7169203331",
        "status": {"phase": "Pending", "nodes": {}}
    }))
    .unwrap();
    let per = |f: &mut dyn FnMut()| {
        median(
            (0..ROUNDS * 4)
                .map(|_| {
                    let start = Instant::now();
                    for _ in 0..20 {
                        f();
                    }
                    start.elapsed() / 20
                })
                .collect(),
        )
    };
    let parse = per(&mut || {
        std::hint::black_box(serde_json::from_slice::<serde_json::Value>(&line).unwrap());
    });
    let watch = per(&mut || {
        let wf = event_of(&line, "wf", "bench").unwrap().unwrap();
        apply(&mut record, &wf, &steps);
        store.save(&record).unwrap();
    });
    println!(
        "\n| one event of a 200-node workflow ({} KiB) | parse as JSON | decode + apply + save record | ratio |",
        line.len() / 1024
    );
    println!("|---|---:|---:|---:|");
    println!(
        "| median of {} | {:.3} ms | {:.3} ms | {:.2}x |",
        ROUNDS * 4,
        ms(parse),
        ms(watch),
        watch.as_secs_f64() / parse.as_secs_f64()
    );
}

fn main() {
    watch_work_per_event();
    instrument_vs_parse();
    time_to_first_node();
}
