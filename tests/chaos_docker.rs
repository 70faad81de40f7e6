//! `obsctl chaos --runtime docker` against a real Docker stack brought up by `obsctl up` on the
//! real Docker Engine. No registry is reachable here, so images come from
//! scripts/build-images.sh: the collector is the `obsctl relay` stand-in (forwards along the
//! stack's collector config, no queue), Tempo and Loki `obsctl serve` stand-ins with their query
//! APIs, the aggregator obsctl itself, Prometheus Debian's real one. The faults are real Docker
//! operations on the collector container (stop, kill, pause, network disconnect) and on step
//! containers (stop with a grace, kill). Under `CI=true` a missing Docker or tool fails. The
//! dropping-spool defect is the shim's own and is shown on the embedded runtime
//! (tests/chaos.rs); here every outage passing with nothing lost shows that step containers
//! share the run's spool, so the backlog is replayed after them.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::chaos::{row, scenario};
use common::stack::*;
use common::tls::{Nginx, Pki, TENANT, TOKEN, TokenFiles, Upstreams};
use common::{ChildGuard, poll, require_docker, require_tool, wait_with_deadline};
use obsctl::stack::definition::Port;
use serde_json::Value;

/// One stack at a time: each picks free host ports, which Docker binds only later.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// A Docker stack of this test's own project, up; `None` (after saying why) when Docker or the
/// image tools are missing and `CI` is not set.
fn stack(test: &str) -> Option<StackEnv> {
    if !require_docker(test) {
        return None;
    }
    require_tool("busybox", test)?;
    require_tool("prometheus", test)?;
    let images = build_images_with_busybox();
    let mut env = StackEnv::new("k");
    env.free_ports();
    for c in ["COLLECTOR", "AGGREGATOR", "TEMPO", "LOKI"] {
        env.set(&format!("OBSCTL_IMAGE_{c}"), &images["obsctl"]);
    }
    env.set("OBSCTL_IMAGE_GRAFANA", &images["standin"]);
    env.set("OBSCTL_IMAGE_PROMETHEUS", &images["prometheus"]);
    let project = env.project.clone();
    env.set("OBSCTL_PROJECT", &project);
    let out = env.obsctl(&["up", "--runtime", "docker", "--timeout", "90s"]);
    assert!(out.status.success(), "{}", text(&out));
    Some(env)
}

/// `obsctl chaos ARGS --runtime docker -o json` against the stack.
fn chaos(env: &StackEnv, args: &[&str], extra: &[(&str, &str)]) -> (i32, Value) {
    let mut args = args.to_vec();
    args.extend(["--runtime", "docker", "--timeout", "20s"]);
    let mut vars: Vec<(&str, &str)> = env
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    vars.extend(extra);
    common::chaos::run(&args, &vars)
}

/// The collector container's state and networks, as `docker inspect` reports them.
fn collector(env: &StackEnv) -> Value {
    let name = format!("{}-otel-collector", env.project);
    let info: Value = serde_json::from_str(&docker(&["inspect", &name])).unwrap();
    info[0].clone()
}

/// The collector runs, unpaused, on the stack's network under its alias.
fn assert_collector_whole(env: &StackEnv) {
    let c = collector(env);
    assert_eq!(c["State"]["Running"], true, "{:#}", c["State"]);
    assert_eq!(c["State"]["Paused"], false, "{:#}", c["State"]);
    let net = &c["NetworkSettings"]["Networks"][format!("{}-net", env.project)];
    assert!(
        net["Aliases"]
            .as_array()
            .is_some_and(|a| a.iter().any(|x| x == "otel-collector")),
        "collector not on its network under its alias: {:#}",
        c["NetworkSettings"]["Networks"]
    );
}

/// Step containers chaos started that are still there.
fn step_containers() -> Vec<String> {
    docker(&[
        "ps",
        "-a",
        "--filter",
        "label=io.obsctl.run",
        "--filter",
        "label=workflows.argoproj.io/workflow",
        "--format",
        "{{.Label \"io.obsctl.run\"}}",
    ])
    .lines()
    .map(str::to_string)
    .collect()
}

#[test]
fn every_scenario_passes_on_the_docker_stack_with_nothing_lost() {
    let _one = one_at_a_time();
    let Some(env) = stack("every_scenario_passes_on_the_docker_stack_with_nothing_lost") else {
        return;
    };
    let (code, report) = chaos(&env, &["all", "--outage", "2s", "--steps", "10"], &[]);
    assert_eq!(report["runtime"], "docker", "{report:#}");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(common::chaos::names(&report), common::chaos::ALL);
    let mut runs = Vec::new();
    for s in report["scenarios"].as_array().unwrap() {
        assert_eq!(s["passed"], true, "{s:#}");
        for r in s["rows"].as_array().unwrap() {
            assert_eq!(r["lost"], 0, "{}: {r:#}", s["scenario"]);
            assert_eq!(r["duplicated"], 0, "{}: {r:#}", s["scenario"]);
        }
        // The stand-ins and the aggregator absorb repeats and say how many.
        let absorbed = row(s, "duplicates-absorbed");
        assert!(absorbed["found"].as_u64() <= absorbed["expected"].as_u64());
        runs.extend(s["runs"].as_array().unwrap().iter().cloned());
    }
    // The killed pods were containers: the SIGKILLed one recorded from outside, by the runner.
    let pod_kill = scenario(&report, "pod-kill");
    assert_eq!(row(pod_kill, "killed-pod-recorded-outside")["passed"], true);
    assert_eq!(row(pod_kill, "deleted-pod-span")["passed"], true);
    assert_collector_whole(&env);
    let left = step_containers();
    for run in runs {
        assert!(
            !left.iter().any(|l| *l == run.as_str().unwrap()),
            "step containers of {run} left behind"
        );
    }
}

#[test]
fn a_scenario_reads_the_stack_through_a_tls_terminator_with_a_token_and_a_tenant() {
    let _one = one_at_a_time();
    let test = "a_scenario_reads_the_stack_through_a_tls_terminator_with_a_token_and_a_tenant";
    let Some(env) = stack(test) else {
        return;
    };
    let port = |p: Port| {
        let port = &env.env.iter().find(|(k, _)| *k == p.env()).unwrap().1;
        format!("127.0.0.1:{port}")
    };
    let upstreams = Upstreams {
        otlp_http: port(Port::OtlpHttp),
        otlp_grpc: port(Port::OtlpGrpc),
        tempo: port(Port::Tempo),
        prometheus: port(Port::Prometheus),
        loki: port(Port::Loki),
    };
    let pki = Pki::generate();
    let Some(nginx) = Nginx::in_front_of(&upstreams, &pki, test) else {
        return;
    };
    let tokens = TokenFiles::write();
    let file = |token| {
        let file = nginx.backends_file(tokens.dir.path(), &pki, token, TENANT);
        file.display().to_string()
    };

    // Tempo, Prometheus and Loki are read through nginx, which checks the token and tenant.
    let good = file(&tokens.token);
    let (code, report) = chaos(&env, &["pod-kill", "--backends-file", &good], &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(scenario(&report, "pod-kill")["passed"], true, "{report:#}");
    for path in [
        "/api/status",
        "/api/traces/",
        "/loki/api/v1/",
        "/api/v1/query",
    ] {
        assert!(
            nginx.forwarded(path),
            "nothing read through nginx at {path}: {}",
            nginx.logs()
        );
    }

    // A token nginx refuses: named with its backend before any step runs, exit 1.
    let refused = common::chaos::output(
        &[
            "pod-kill",
            "--runtime",
            "docker",
            "--backends-file",
            &file(&tokens.wrong),
        ],
        &env.env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    );
    let shown = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains(&format!("Tempo at {}/", nginx.urls.api))
            && shown.contains("refused the request: HTTP 401"),
        "{shown}"
    );
    for shown in [report.to_string(), shown, nginx.logs()] {
        assert!(!shown.contains(TOKEN), "{shown}");
    }
}

#[test]
fn a_runner_that_does_not_record_killed_containers_loses_the_killed_span() {
    let _one = one_at_a_time();
    let Some(env) = stack("a_runner_that_does_not_record_killed_containers_loses_the_killed_span")
    else {
        return;
    };
    let (code, report) = chaos(
        &env,
        &["pod-kill"],
        &[("OBSCTL_DEFECT", "no-outside-record")],
    );
    assert_eq!(code, 2, "{report:#}");
    let s = scenario(&report, "pod-kill");
    assert_eq!(row(s, "killed-pod-recorded-outside")["passed"], false);
    assert_eq!(row(s, "span-coverage")["lost"], 1, "{s:#}");
    assert_eq!(row(s, "deleted-pod-span")["passed"], true, "{s:#}");
}

/// Ctrl-C while the fault is in force: chaos exits 130 and the collector is whole again.
fn ctrl_c_during(env: &StackEnv, mode: &str, in_force: impl Fn(&Value) -> bool) {
    let work = tempfile::tempdir().unwrap();
    let stderr_path = work.path().join("stderr");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
    cmd.args([
        "chaos",
        "collector-outage",
        "--runtime",
        "docker",
        "--mode",
        mode,
        "--outage",
        "120s",
        "--work-dir",
    ])
    .arg(work.path())
    .env_remove("OBSCTL_DEFECT")
    .env("NO_COLOR", "1")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&stderr_path).unwrap());
    for (k, v) in &env.env {
        cmd.env(k, v);
    }
    let mut guard = ChildGuard::new(cmd.spawn().unwrap());
    poll("the fault to be in force", Duration::from_secs(90), || {
        in_force(&collector(env)).then_some(())
    });
    let chaos: &mut std::process::Child = &mut guard;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(chaos.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = wait_with_deadline(chaos, Duration::from_secs(60));
    let stderr = std::fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("every fault was undone"), "{stderr}");
    assert_collector_whole(env);
}

#[test]
fn ctrl_c_during_a_pause_or_a_partition_leaves_the_collector_whole() {
    let _one = one_at_a_time();
    let Some(env) = stack("ctrl_c_during_a_pause_or_a_partition_leaves_the_collector_whole") else {
        return;
    };
    ctrl_c_during(&env, "pause", |c| c["State"]["Paused"] == true);
    ctrl_c_during(&env, "partition", |c| {
        c["NetworkSettings"]["Networks"]
            .as_object()
            .is_some_and(|n| n.is_empty())
    });
}
