//! `obsctl up` / `status` / `down` on the real Docker Engine, through obsctl's own code paths.
//! No registry is reachable here, so images come from scripts/build-images.sh: Debian's real
//! Prometheus; the obsctl image, which is the aggregator itself and stands in for the collector
//! (`obsctl relay` on the stack's collector config) and for Tempo and Loki (`obsctl serve` with
//! their query APIs), whose images cannot be had here; and for Grafana a busybox-httpd stand-in
//! answering `/api/health` with 200, nothing more.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::stack::*;
use common::*;
use obsctl::stack::definition::{Component, Port};
use serde_json::Value;

/// The Docker tests of this binary run one at a time: each picks free host ports, which Docker
/// binds only later, so a test running alongside could be handed the same port in between.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// Images for every component: the stand-in everywhere but Prometheus, which is real.
fn local_env(test: &str) -> Option<(StackEnv, BTreeMap<String, String>)> {
    if !require_docker(test) {
        return None;
    }
    require_tool("busybox", test)?;
    require_tool("prometheus", test)?;
    let images = build_images();
    let mut env = StackEnv::new("t");
    env.free_ports();
    Some((env, images))
}

fn status_json(env: &StackEnv) -> (Option<i32>, Value) {
    let out = env.obsctl(&["status", "--project", &env.project, "--output", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("status --output json is JSON ({e}): {}", text(&out)));
    (out.status.code(), v)
}

fn component<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == name)
        .unwrap_or_else(|| panic!("{name} in {status}"))
}

#[test]
fn up_status_kill_repair_down_on_the_real_engine() {
    let _one = one_at_a_time();
    let Some((mut env, images)) = local_env("up_status_kill_repair_down_on_the_real_engine") else {
        return;
    };
    let p = env.project.clone();
    let standin = images["standin"].clone();
    let serve = images["obsctl"].clone();
    // Each override path once: the config file, the environment, and the --image flag.
    let config = env.dir.path().join("stack.yaml");
    std::fs::write(
        &config,
        format!("images:\n  tempo: {serve}\n  loki: {serve}\n"),
    )
    .unwrap();
    env.set("OBSCTL_IMAGE_GRAFANA", &standin);
    env.set("OBSCTL_IMAGE_PROMETHEUS", &images["prometheus"]);
    // A volume that merely looks like ours: `down --volumes` must leave it alone.
    let bystander = format!("{p}-bystander-data");
    docker(&["volume", "create", &bystander]);
    struct RemoveVolume(String);
    impl Drop for RemoveVolume {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["volume", "rm", "-f", &self.0])
                .output();
        }
    }
    let _bystander = RemoveVolume(bystander.clone());

    let config_arg = config.display().to_string();
    let collector_image = format!("collector={serve}");
    env.set("OBSCTL_IMAGE_AGGREGATOR", &serve);
    let up_args = [
        "up",
        "--runtime",
        "docker",
        "--project",
        &p,
        "--timeout",
        "90s",
        "--config",
        &config_arg,
        "--image",
        &collector_image,
    ];
    let out = env.obsctl(&up_args);
    assert!(out.status.success(), "up: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let grafana_port = env
        .env
        .iter()
        .find(|(k, _)| *k == Port::Grafana.env())
        .unwrap()
        .1
        .clone();
    assert!(
        stdout.contains(&format!("http://127.0.0.1:{grafana_port}")),
        "{stdout}"
    );
    assert!(stdout.contains("anonymous viewer"), "{stdout}");

    // What up created, seen through the docker CLI rather than obsctl.
    let mut want: Vec<String> = Component::ALL
        .iter()
        .map(|c| format!("{p}-{}", c.service()))
        .collect();
    want.sort();
    assert_eq!(labelled("container", &p), want);
    assert_eq!(labelled("network", &p), [format!("{p}-net")]);
    let mut want_volumes: Vec<String> = Component::ALL
        .iter()
        .map(|c| format!("{p}-{}-data", c.name()))
        .collect();
    want_volumes.sort();
    assert_eq!(labelled("volume", &p), want_volumes);
    for c in Component::ALL {
        let name = format!("{p}-{}", c.service());
        let bindings: Value = serde_json::from_str(&docker(&[
            "inspect",
            "--format",
            "{{json .HostConfig.PortBindings}}",
            &name,
        ]))
        .unwrap();
        for (port, binds) in bindings.as_object().unwrap() {
            for b in binds.as_array().unwrap() {
                assert_eq!(
                    b["HostIp"], "127.0.0.1",
                    "{name} {port} is published beyond loopback"
                );
            }
        }
        let image = docker(&["inspect", "--format", "{{.Config.Image}}", &name]);
        let want_image = match c {
            Component::Prometheus => &images["prometheus"],
            Component::Grafana => &standin,
            _ => &serve,
        };
        assert_eq!(&image, want_image, "{name}");
        let network = docker(&[
            "inspect",
            "--format",
            "{{json .NetworkSettings.Networks}}",
            &name,
        ]);
        assert!(
            network.contains(&format!("\"{}\"", c.service())),
            "{name} has alias {}: {network}",
            c.service()
        );
    }
    // The real Prometheus runs the mounted config and alert rules.
    let prom_port = &env
        .env
        .iter()
        .find(|(k, _)| *k == Port::Prometheus.env())
        .unwrap()
        .1;
    let (_, rules) = get_json(&format!("http://127.0.0.1:{prom_port}/api/v1/rules"), &[]);
    let names: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "AgentStepFailureRate",
            "AgentStepHighDuration",
            "AgentStepMetricsHighCardinality"
        ]
    );
    // Endpoints for the other commands, and a generated Grafana password only the user reads.
    let endpoints: Value =
        serde_json::from_slice(&std::fs::read(env.state_home().join("endpoints.json")).unwrap())
            .unwrap();
    assert_eq!(endpoints["runtime"], "docker");
    assert_eq!(
        endpoints["prometheus"],
        format!("http://127.0.0.1:{prom_port}")
    );
    let pw_path = env.state_home().join(format!("grafana/{p}.admin-password"));
    let pw = std::fs::read_to_string(&pw_path).unwrap();
    assert!(pw.len() >= 20 && pw != "admin", "generated password");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&pw_path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let (code, status) = status_json(&env);
    assert_eq!(code, Some(0), "{status}");
    for c in Component::ALL {
        let row = component(&status, c.name());
        assert_eq!(row["state"], "running", "{row}");
        assert_eq!(row["ready"], true, "{row}");
    }

    // OTLP reaches the collector's container through the published 127.0.0.1 port: a span sent
    // over OTLP/HTTP travels the collector's traces pipeline to Tempo('s stand-in) and comes back
    // from its trace API.
    let trace_id = format!("{:032x}", std::process::id() as u128 + 0x5eed_0000_0000);
    let span = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "agent-steps"}}]},
        "scopeSpans": [{"spans": [{
            "traceId": trace_id, "spanId": "00f067aa0ba902b7", "name": "clippy/verify", "kind": 1,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000001000000000"
        }]}]
    }]});
    let otlp_port = &env
        .env
        .iter()
        .find(|(k, _)| *k == Port::OtlpHttp.env())
        .unwrap()
        .1;
    let status = post_json(&format!("http://127.0.0.1:{otlp_port}/v1/traces"), &span);
    assert_eq!(status, 200, "OTLP/HTTP export through the published port");
    let tempo_port = &env
        .env
        .iter()
        .find(|(k, _)| *k == Port::Tempo.env())
        .unwrap()
        .1;
    let (code, trace) = get_json(
        &format!("http://127.0.0.1:{tempo_port}/api/traces/{trace_id}"),
        &[],
    );
    assert_eq!(code, 200, "{trace}");
    assert!(trace.to_string().contains("clippy/verify"), "{trace}");

    // A killed component is reported...
    docker(&["kill", &format!("{p}-tempo")]);
    // The engine records the exit asynchronously: wait for it rather than race it.
    let (code, status) = poll("tempo reported down", Duration::from_secs(15), || {
        let (code, status) = status_json(&env);
        (component(&status, "tempo")["state"] != "running").then_some((code, status))
    });
    assert_eq!(code, Some(3), "{status}");
    let tempo = component(&status, "tempo");
    assert_eq!(tempo["state"], "exited", "{tempo}");
    assert_eq!(tempo["ready"], false);
    assert_eq!(component(&status, "loki")["ready"], true);

    // ...and `up` again repairs only that.
    let out = env.obsctl(&up_args);
    assert!(out.status.success(), "second up: {}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tempo started"), "{stderr}");
    for c in ["collector", "aggregator", "loki", "prometheus", "grafana"] {
        assert!(stderr.contains(&format!("{c} unchanged")), "{c}: {stderr}");
    }
    let (code, status) = status_json(&env);
    assert_eq!(code, Some(0), "{status}");

    // A changed definition (another image) recreates just that container.
    let out = env.obsctl(
        &[
            &up_args[..],
            &["--image", &format!("grafana={}", images["standin"])],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));

    let out = env.obsctl(&["down", "--volumes", "--project", &p]);
    assert!(out.status.success(), "down: {}", text(&out));
    assert!(labelled("container", &p).is_empty());
    assert!(labelled("network", &p).is_empty());
    assert!(labelled("volume", &p).is_empty());
    assert!(!env.state_home().join("endpoints.json").exists());
    assert_eq!(
        docker(&[
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={bystander}")
        ]),
        bystander
    );
    let (code, status) = status_json(&env);
    assert_eq!(code, Some(3), "nothing is up: {status}");
}

#[test]
fn a_crashing_component_fails_up_with_its_state_and_last_logs() {
    let _one = one_at_a_time();
    let Some((mut env, images)) =
        local_env("a_crashing_component_fails_up_with_its_state_and_last_logs")
    else {
        return;
    };
    let p = env.project.clone();
    for c in ["COLLECTOR", "AGGREGATOR", "LOKI", "GRAFANA"] {
        env.set(&format!("OBSCTL_IMAGE_{c}"), &images["standin"]);
    }
    env.set("OBSCTL_IMAGE_PROMETHEUS", &images["prometheus"]);
    // Prometheus's binary rejects Tempo's flags and exits: a crash at start.
    env.set("OBSCTL_IMAGE_TEMPO", &images["prometheus"]);
    let out = env.obsctl(&[
        "up",
        "--runtime",
        "docker",
        "--project",
        &p,
        "--timeout",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("tempo is not ready"), "{stderr}");
    assert!(stderr.contains("exited"), "{stderr}");
    assert!(
        stderr.contains(&format!("last 20 log lines of {p}-tempo")),
        "{stderr}"
    );
    assert!(
        stderr.contains("unknown short flag"),
        "the log lines show prometheus's complaint: {stderr}"
    );
}

#[test]
fn a_missing_image_is_named_with_how_to_provide_it() {
    let _one = one_at_a_time();
    if !require_docker("a_missing_image_is_named_with_how_to_provide_it") {
        return;
    }
    let env = StackEnv::new("t");
    let out = env.obsctl(&[
        "up",
        "--runtime",
        "docker",
        "--project",
        &env.project,
        "--image",
        "tempo=obsctl-local/does-not-exist:0.0.1",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    // One message names every image Docker lacks: Tempo's override and the defaults no
    // registry can serve here.
    assert_eq!(
        stderr.matches("image(s) are not present").count(),
        1,
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{} for grafana is not present",
            obsctl::stack::pins::GRAFANA.image
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("obsctl-local/does-not-exist:0.0.1 for tempo is not present"),
        "{stderr}"
    );
    assert!(
        stderr.contains("scripts/build-images.sh") && stderr.contains("OBSCTL_IMAGE_TEMPO"),
        "{stderr}"
    );
    assert!(
        labelled("container", &env.project).is_empty(),
        "nothing was created"
    );
}

#[test]
fn bad_overrides_are_rejected_before_anything_is_created() {
    let _one = one_at_a_time();
    let mut env = StackEnv::new("t");
    env.set("OBSCTL_PORT_LOKI", "99999");
    let out = env.obsctl(&["up", "--runtime", "docker", "--project", &env.project]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("OBSCTL_PORT_LOKI"),
        "{}",
        text(&out)
    );
    // A misspelt variable is not silently ignored.
    let mut env = StackEnv::new("t");
    env.set("OBSCTL_PORT_TEMP", "13200");
    let out = env.obsctl(&["up", "--project", &env.project]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unknown environment variable OBSCTL_PORT_TEMP")
            && stderr.contains("OBSCTL_PORT_TEMPO"),
        "{stderr}"
    );
    let env = StackEnv::new("t");
    let out = env.obsctl(&["up", "--project", "Not/Valid"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("invalid project name"),
        "{}",
        text(&out)
    );
}

/// Every component on the stand-in image but Prometheus, whose readiness port the stand-in does
/// not serve: enough for `up` to create, start and find ready.
fn standin_everywhere(env: &mut StackEnv, images: &BTreeMap<String, String>) {
    for c in Component::ALL {
        env.set(&c.image_env(), &images["standin"]);
    }
    env.set(&Component::Prometheus.image_env(), &images["prometheus"]);
}

fn host_port(env: &StackEnv, p: Port) -> String {
    env.env
        .iter()
        .find(|(k, _)| *k == p.env())
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| p.container_port().to_string())
}

fn endpoints_file(env: &StackEnv) -> Value {
    serde_json::from_slice(&std::fs::read(env.state_home().join("endpoints.json")).unwrap())
        .unwrap()
}

fn nothing_of(p: &str) {
    assert!(labelled("container", p).is_empty(), "containers left");
    assert!(labelled("network", p).is_empty(), "network left");
    assert!(labelled("volume", p).is_empty(), "volumes left");
}

#[test]
fn up_refuses_the_ports_of_the_running_embedded_backend_and_creates_nothing() {
    let _one = one_at_a_time();
    let Some((mut env, images)) =
        local_env("up_refuses_the_ports_of_the_running_embedded_backend_and_creates_nothing")
    else {
        return;
    };
    let p = env.project.clone();
    standin_everywhere(&mut env, &images);
    let out = env.obsctl(&["up", "--runtime", "embedded", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out));
    let pid = endpoints_file(&env)["pid"].as_u64().unwrap();

    // auto: Docker answers and every image is present, so it is Docker's turn, but the embedded
    // backend holds three of the ports.
    let out = env.obsctl(&["up", "--project", &p, "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let tempo = host_port(&env, Port::Tempo);
    assert!(
        stderr.contains(&format!(
            "obsctl's embedded backend (pid {pid}, project {}) holds 127.0.0.1:{}",
            env.project,
            host_port(&env, Port::OtlpGrpc)
        )) && stderr.contains(&format!(
            "127.0.0.1:{tempo} (tempo); run `obsctl down --project {}` first",
            env.project
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("address already in use"), "{stderr}");
    nothing_of(&p);
    let endpoints = endpoints_file(&env);
    assert_eq!(endpoints["runtime"], "embedded");
    assert_eq!(endpoints["pid"].as_u64(), Some(pid));
}

#[test]
fn embedded_up_refuses_while_the_docker_stack_is_up() {
    let _one = one_at_a_time();
    let Some((mut env, images)) = local_env("embedded_up_refuses_while_the_docker_stack_is_up")
    else {
        return;
    };
    let p = env.project.clone();
    standin_everywhere(&mut env, &images);
    let out = env.obsctl(&[
        "up",
        "--runtime",
        "docker",
        "--project",
        &p,
        "--timeout",
        "60s",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let before = std::fs::read(env.state_home().join("endpoints.json")).unwrap();

    // The stand-in answers Tempo's /ready on the API port, as the real Tempo would: only the
    // port check keeps that answer from passing for the embedded backend's.
    let out = env.obsctl(&["up", "--runtime", "embedded", "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "obsctl's Docker stack {p:?} (containers {p}-otel-collector, {p}-tempo) holds \
             127.0.0.1:{} (otlp-grpc), 127.0.0.1:{} (otlp-http), 127.0.0.1:{} (tempo)",
            host_port(&env, Port::OtlpGrpc),
            host_port(&env, Port::OtlpHttp),
            host_port(&env, Port::Tempo)
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("run `obsctl down --project {p}` first")),
        "{stderr}"
    );
    assert!(!stderr.contains("embedded backend started"), "{stderr}");
    assert_eq!(
        std::fs::read(env.state_home().join("endpoints.json")).unwrap(),
        before,
        "the Docker stack's endpoints file is left alone"
    );
    assert!(!env.state_home().join("serve.pid").exists());
}

#[test]
fn a_container_that_cannot_start_takes_everything_this_up_created_with_it() {
    let _one = one_at_a_time();
    let Some((mut env, images)) =
        local_env("a_container_that_cannot_start_takes_everything_this_up_created_with_it")
    else {
        return;
    };
    let p = env.project.clone();
    standin_everywhere(&mut env, &images);
    // busybox has no entrypoint: Tempo's command (`-config.file=...`) is not an executable, so
    // the engine refuses to start the container after the others were created and started.
    env.set(&Component::Tempo.image_env(), &images["busybox"]);
    let out = env.obsctl(&[
        "up",
        "--runtime",
        "docker",
        "--project",
        &p,
        "--timeout",
        "60s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("start container {p}-tempo failed")),
        "{stderr}"
    );
    nothing_of(&p);
    assert!(!env.state_home().join("endpoints.json").exists());
}

#[test]
fn a_wait_longer_than_a_second_shows_progress_without_a_terminal() {
    let _one = one_at_a_time();
    let Some((mut env, images)) =
        local_env("a_wait_longer_than_a_second_shows_progress_without_a_terminal")
    else {
        return;
    };
    let p = env.project.clone();
    // The stand-in serves every readiness port but Prometheus's: in Prometheus's container it
    // runs and never answers.
    for c in Component::ALL {
        env.set(&c.image_env(), &images["standin"]);
    }
    let out = env.obsctl(&[
        "up",
        "--runtime",
        "docker",
        "--project",
        &p,
        "--timeout",
        "3s",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let waiting: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("obsctl: waiting ") && l.contains(" of 3s for "))
        .collect();
    assert!(!waiting.is_empty(), "{stderr}");
    assert!(waiting[0].contains("prometheus ("), "{stderr}");
    assert!(stderr.contains("prometheus is not ready after"), "{stderr}");
}

#[test]
fn a_port_published_by_a_compose_project_is_named_with_its_fix() {
    let _one = one_at_a_time();
    let Some((mut env, images)) =
        local_env("a_port_published_by_a_compose_project_is_named_with_its_fix")
    else {
        return;
    };
    // Any container with compose's project label is a compose project's, as
    // `docker-compose -p NAME up` would make it.
    let compose = format!("{}-compose", env.project);
    let name = format!("{compose}-tempo-1");
    let tempo = host_port(&env, Port::Tempo);
    struct RemoveContainer(String);
    impl Drop for RemoveContainer {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", &self.0])
                .output();
        }
    }
    let _container = RemoveContainer(name.clone());
    docker(&[
        "run",
        "-d",
        "--name",
        &name,
        "--label",
        &format!("com.docker.compose.project={compose}"),
        "-p",
        &format!("127.0.0.1:{tempo}:3200"),
        &images["standin"],
    ]);
    standin_everywhere(&mut env, &images);
    let out = env.obsctl(&["up", "--runtime", "embedded", "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "docker-compose project {compose:?} (container {name}) holds 127.0.0.1:{tempo} \
             (tempo); run `docker-compose -p {compose} down` first"
        )),
        "{stderr}"
    );
    assert!(!env.state_home().join("endpoints.json").exists());
}
