//! Steps as containers: `obsctl run --runner docker` runs workflows/agent-pipeline.yaml with each
//! step in the template's image (busybox, built locally from Debian's busybox-static since no
//! registry is reachable), the shim as entrypoint although the image has neither glibc nor
//! obsctl, the seed's pod labels, outputs read after exit, every step's span delivered to the
//! embedded backend on the host, and `obsctl verify` passing against the run.

mod common;

use std::time::Duration;

use common::stack::*;
use common::*;
use obsctl::stack::definition::Port;
use serde_json::Value;

/// These Docker tests run one at a time: each picks free host ports, which Docker binds only
/// later, so a test running alongside could be handed the same port in between.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

#[test]
fn agent_pipeline_runs_in_containers_with_labels_outputs_and_spans() {
    let _one = one_at_a_time();
    let test = "agent_pipeline_runs_in_containers_with_labels_outputs_and_spans";
    if !require_docker(test) {
        return;
    }
    if require_tool("busybox", test).is_none() || require_tool("prometheus", test).is_none() {
        return;
    }
    build_images_with_busybox();
    let mut env = StackEnv::new("s");
    env.free_ports();
    let out = env.obsctl(&["up", "--runtime", "embedded"]);
    assert!(out.status.success(), "{}", text(&out));
    let api_port = env
        .env
        .iter()
        .find(|(k, _)| *k == Port::Tempo.env())
        .unwrap()
        .1
        .clone();
    let api = format!("http://127.0.0.1:{api_port}");

    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/agent-pipeline.yaml");
    let out = env.obsctl(&["run", pipeline, "--runner", "docker", "--output", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("run --output json ({e}): {}", text(&out)));
    let name = status["metadata"]["name"].as_str().unwrap().to_string();
    let _cleanup = StepContainers(name.clone());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(status["status"]["phase"], "Succeeded");
    let outputs: Vec<(String, String)> = status["status"]["outputs"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().into(),
                p["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert!(
        outputs.contains(&(
            "prHtmlUrl".into(),
            "https://github.com/5dlabs/demo/pull/42".into()
        )),
        "{outputs:?}"
    );
    assert!(
        outputs
            .iter()
            .any(|(n, v)| n == "previewUrl" && v.starts_with("https://")),
        "{outputs:?}"
    );

    // One container per Pod step, from the template's image, labelled like Argo's pods.
    let filter = format!("label=io.obsctl.run={name}");
    let ids = docker(&["ps", "-aq", "--filter", &filter]);
    let ids: Vec<&str> = ids.lines().collect();
    assert_eq!(ids.len(), 4, "implement, clippy, tests, deploy");
    let mut agents = Vec::new();
    for id in ids {
        let info: Value = serde_json::from_str(&docker(&["inspect", id])).unwrap();
        let c = &info[0];
        assert_eq!(c["Config"]["Image"], "busybox");
        assert_eq!(c["State"]["ExitCode"], 0);
        let labels = &c["Config"]["Labels"];
        assert_eq!(labels["workflows.argoproj.io/workflow"], name.as_str());
        assert_eq!(labels["repo"], "5dlabs/demo");
        assert_eq!(labels["pr"], "42");
        // The sample declares taskId empty: `obsctl run` gave the run a fresh one.
        assert!(
            labels["taskId"].as_str().unwrap().starts_with("task-"),
            "{labels:#}"
        );
        assert!(!labels["stepName"].as_str().unwrap().is_empty());
        // Seed 000's annotations: the traceparent the step started with (the run's trace) and
        // the commit.
        let tp = labels["trace.context"].as_str().unwrap();
        assert!(
            tp.starts_with(&format!(
                "00-{}-",
                status["metadata"]["uid"].as_str().unwrap()
            )),
            "{tp} is in the run's trace"
        );
        assert_eq!(
            labels["commitSha"],
            "3f2c1e0d9b8a7f6e5d4c3b2a190807f6e5d4c3b2"
        );
        // The shim is the entrypoint, run through the bundled loader.
        let entrypoint = c["Config"]["Entrypoint"].to_string();
        assert!(entrypoint.contains("\"shim\""), "{entrypoint}");
        agents.push(labels["agent"].as_str().unwrap().to_string());
    }
    agents.sort();
    assert_eq!(agents, ["clippy", "deploy", "rex", "tests"]);

    // Each step's span, sent by the shim inside its container, is in the backend.
    let search = poll(
        "the run's trace is searchable",
        Duration::from_secs(30),
        || {
            let (code, v) = get_json(
                &format!("{api}/api/search"),
                &[("tags", &format!("workflowName={name}")), ("limit", "5")],
            );
            (code == 200 && v["traces"].as_array().is_some_and(|t| !t.is_empty())).then_some(v)
        },
    );
    let trace_id = search["traces"][0]["traceID"].as_str().unwrap().to_string();
    let trace_id = format!("{trace_id:0>32}");
    let names = poll("every step span arrived", Duration::from_secs(30), || {
        let (code, v) = get_json(&format!("{api}/api/traces/{trace_id}"), &[]);
        let body = v.to_string();
        (code == 200
            && ["rex/implement", "clippy/verify", "tests/verify"]
                .iter()
                .all(|n| body.contains(n))
            && body.contains("deploy/"))
        .then_some(body)
    });
    assert!(names.contains(&name));

    // And `obsctl verify` proves the run's telemetry complete: spans, counters, exemplars, logs.
    let out = env.obsctl(&["verify", "--run", &name, "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "verify: {}", text(&out));
}

#[test]
fn on_the_docker_stack_steps_join_its_network_and_reach_the_collector_by_name() {
    let _one = one_at_a_time();
    let test = "on_the_docker_stack_steps_join_its_network_and_reach_the_collector_by_name";
    if !require_docker(test) {
        return;
    }
    if require_tool("busybox", test).is_none() || require_tool("prometheus", test).is_none() {
        return;
    }
    let images = build_images_with_busybox();
    let mut env = StackEnv::new("s");
    env.free_ports();
    // The aggregator is obsctl itself; the collector's stand-in is `obsctl relay` on the stack's
    // collector config, Tempo's and Loki's `obsctl serve`; Grafana a busybox stand-in.
    for c in ["COLLECTOR", "AGGREGATOR", "TEMPO", "LOKI"] {
        env.set(&format!("OBSCTL_IMAGE_{c}"), &images["obsctl"]);
    }
    env.set("OBSCTL_IMAGE_GRAFANA", &images["standin"]);
    env.set("OBSCTL_IMAGE_PROMETHEUS", &images["prometheus"]);
    let project = env.project.clone();
    env.set("OBSCTL_PROJECT", &project);
    let out = env.obsctl(&["up", "--runtime", "docker", "--timeout", "90s"]);
    assert!(out.status.success(), "{}", text(&out));

    // `--runner auto` picks containers because the Docker stack is up.
    let pipeline = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/agent-pipeline.yaml");
    let out = env.obsctl(&["run", pipeline, "--output", "json"]);
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("run --output json ({e}): {}", text(&out)));
    let name = status["metadata"]["name"].as_str().unwrap().to_string();
    let _cleanup = StepContainers(name.clone());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let filter = format!("label=io.obsctl.run={name}");
    let ids = docker(&["ps", "-aq", "--filter", &filter]);
    assert_eq!(ids.lines().count(), 4);
    for id in ids.lines() {
        let info: Value = serde_json::from_str(&docker(&["inspect", id])).unwrap();
        let networks = info[0]["NetworkSettings"]["Networks"].as_object().unwrap();
        assert!(
            networks.contains_key(&format!("{project}-net")),
            "{networks:?}"
        );
        let env_list = info[0]["Config"]["Env"].to_string();
        assert!(
            env_list.contains("OTEL_EXPORTER_OTLP_ENDPOINT=http://otel-collector:4317"),
            "{env_list}"
        );
    }
    // The spans went to the collector container by its network name, and on to Tempo.
    let tempo = env
        .env
        .iter()
        .find(|(k, _)| *k == Port::Tempo.env())
        .unwrap()
        .1
        .clone();
    let api = format!("http://127.0.0.1:{tempo}");
    poll(
        "step spans in Tempo, through the collector",
        Duration::from_secs(30),
        || {
            let (code, v) = get_json(
                &format!("{api}/api/search"),
                &[("tags", &format!("workflowName={name}")), ("limit", "20")],
            );
            let body = v.to_string();
            (code == 200 && body.contains("rex") && body.contains("clippy")).then_some(())
        },
    );
    // Step containers belong to the project: `down` removes them with the stack.
    let project_filter = format!("label=io.obsctl.project={project}");
    let labelled = docker(&[
        "ps",
        "-aq",
        "--filter",
        &filter,
        "--filter",
        &project_filter,
    ]);
    assert_eq!(
        labelled.lines().count(),
        4,
        "every step carries the project label"
    );
    let out = env.obsctl(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        docker(&["ps", "-aq", "--filter", &filter]),
        "",
        "{}",
        text(&out)
    );
}
