//! `obsctl up --runtime embedded` and the `auto` fallback: `obsctl serve` started in the
//! background, reported by `status`, stopped by `down`; `auto` says in one line why it did not
//! use Docker.

mod common;

use std::time::Duration;

use common::stack::*;
use common::*;
use obsctl::stack::definition::Port;
use serde_json::Value;

fn port(env: &StackEnv, p: Port) -> String {
    env.env
        .iter()
        .find(|(k, _)| *k == p.env())
        .unwrap()
        .1
        .clone()
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn embedded_runtime_runs_in_the_background_until_down() {
    let mut env = StackEnv::new("e");
    env.free_ports();
    let out = env.obsctl(&["up", "--runtime", "embedded", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out));
    let api = format!("http://127.0.0.1:{}", port(&env, Port::Tempo));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&api),
        "{}",
        text(&out)
    );

    let endpoints: Value =
        serde_json::from_slice(&std::fs::read(env.state_home().join("endpoints.json")).unwrap())
            .unwrap();
    assert_eq!(endpoints["runtime"], "embedded");
    assert_eq!(endpoints["tempo"], api);
    assert_eq!(
        endpoints["otlpGrpc"],
        format!("http://127.0.0.1:{}", port(&env, Port::OtlpGrpc))
    );
    let pid = endpoints["pid"].as_u64().unwrap();
    assert!(alive(pid), "the server outlives `up`");
    assert_eq!(http_get(&format!("{api}/ready")).map(|(s, _)| s), Some(200));

    let out = env.obsctl(&["status", "--output", "json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["runtime"], "embedded");
    assert_eq!(status["embedded"]["ready"], true);
    assert_eq!(status["embedded"]["pid"].as_u64(), Some(pid));

    // Idempotent: a second `up` finds it running.
    let out = env.obsctl(&["up", "--runtime", "embedded"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("already running (pid {pid}")),
        "{}",
        text(&out)
    );

    // The same, on other ports: refused, since a second server would leave the first unmanaged.
    let mut moved = StackEnv::new("e");
    moved.env = env.env.clone();
    moved.set(&Port::Tempo.env(), &free_port().to_string());
    let out = moved.obsctl(&["up", "--runtime", "embedded"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!(
            "obsctl's embedded backend (pid {pid}) is already running, but not with this \
             configuration's addresses"
        )),
        "{}",
        text(&out)
    );
    assert!(alive(pid));

    let out = env.obsctl(&["down"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains(&format!("stopped embedded backend (pid {pid})")),
        "{}",
        text(&out)
    );
    poll("the server exits", Duration::from_secs(15), || {
        (!alive(pid)).then_some(())
    });
    assert!(!env.state_home().join("endpoints.json").exists());
    let out = env.obsctl(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn auto_falls_back_to_embedded_when_docker_is_unreachable() {
    let mut env = StackEnv::new("e");
    env.free_ports();
    let sock = env.dir.path().join("no-docker.sock");
    env.set("DOCKER_HOST", &format!("unix://{}", sock.display()));
    let out = env.obsctl(&["up", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("obsctl: using the embedded backend:"))
        .collect();
    assert_eq!(why.len(), 1, "one line says why: {stderr}");
    assert!(
        why[0].contains("cannot reach the Docker daemon"),
        "{stderr}"
    );
    assert!(why[0].contains("no-docker.sock"), "{stderr}");

    // `--runtime docker` does not fall back: it fails with exit 3.
    let out = env.obsctl(&["up", "--runtime", "docker"]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
}

#[test]
fn auto_falls_back_to_embedded_when_an_image_is_missing() {
    if !require_docker("auto_falls_back_to_embedded_when_an_image_is_missing") {
        return;
    }
    let mut env = StackEnv::new("e");
    env.free_ports();
    let out = env.obsctl(&[
        "up",
        "--project",
        &env.project.clone(),
        "--image",
        "tempo=obsctl-local/does-not-exist:0.0.1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("using the embedded backend: Docker lacks")
            && stderr.contains("obsctl-local/does-not-exist:0.0.1 for tempo"),
        "{stderr}"
    );
    assert!(labelled("container", &env.project).is_empty());
    let endpoints: Value =
        serde_json::from_slice(&std::fs::read(env.state_home().join("endpoints.json")).unwrap())
            .unwrap();
    assert_eq!(endpoints["runtime"], "embedded");
}

#[test]
fn embedded_up_refuses_a_port_another_process_holds_and_answers_on() {
    let mut env = StackEnv::new("e");
    env.free_ports();
    // Something else answers every request with 200, /ready included, on the API port.
    let other = serve_openmetrics(String::new());
    let taken = other.rsplit_once(':').unwrap().1.to_string();
    env.set(&Port::Tempo.env(), &taken);
    let out = env.obsctl(&["up", "--runtime", "embedded", "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("process {} (", std::process::id()))
            && stderr.contains(&format!("holds 127.0.0.1:{taken} (tempo); stop it")),
        "names the holder: {stderr}"
    );
    assert!(stderr.contains("OBSCTL_PORT_TEMPO"), "{stderr}");
    assert!(!stderr.contains("started"), "{stderr}");
    assert!(!env.state_home().join("endpoints.json").exists());
    assert!(!env.state_home().join("serve.pid").exists());
}

#[test]
fn verbose_up_names_each_phase_and_quiet_up_does_not() {
    let mut env = StackEnv::new("e");
    env.free_ports();
    let phases = [
        "obsctl: checking that the embedded backend's ports are free: otlp-grpc ",
        "obsctl: started `obsctl serve` (pid ",
        "obsctl: `obsctl serve` listens (otlp-grpc 127.0.0.1:",
        "obsctl: embedded ready in ",
        "obsctl: recorded the endpoints in ",
    ];
    let out = env.obsctl(&["-v", "up", "--runtime", "embedded", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let mut at = 0;
    for phase in phases {
        let found = stderr[at..]
            .find(phase)
            .unwrap_or_else(|| panic!("{phase:?} after byte {at} of:\n{stderr}"));
        at += found + phase.len();
    }
    let out = env.obsctl(&["down"]);
    assert!(out.status.success(), "{}", text(&out));

    let out = env.obsctl(&["up", "--runtime", "embedded", "--timeout", "60s"]);
    assert!(out.status.success(), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for phase in phases {
        assert!(!stderr.contains(phase), "{phase:?} without -v:\n{stderr}");
    }
}

/// `--project` means the same for the embedded runtime as for Docker: `down --project other`
/// leaves this project's backend running, and `up` for another project refuses (one embedded
/// backend per state directory) and names the one running.
#[test]
fn down_and_up_for_another_project_leave_the_embedded_backend_alone() {
    let mut env = StackEnv::new("p");
    env.free_ports();
    let out = env.obsctl(&[
        "up",
        "--runtime",
        "embedded",
        "--timeout",
        "60s",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let api = format!("http://127.0.0.1:{}", port(&env, Port::Tempo));
    // `-o json` prints what endpoints.json records.
    let printed: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    let recorded: Value =
        serde_json::from_slice(&std::fs::read(env.state_home().join("endpoints.json")).unwrap())
            .unwrap();
    assert_eq!(printed, recorded);
    assert_eq!(printed["tempo"], api);

    let out = env.obsctl(&["-v", "down", "--project", "someone-else"]);
    assert!(out.status.success(), "{}", text(&out));
    // -v names what down looks for: the backend of that project, the Docker label.
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("obsctl: down: the embedded backend of project someone-else")
            && said.contains("for what carries io.obsctl.project=someone-else"),
        "{}",
        text(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "nothing to stop for project \"someone-else\"",
        "{}",
        text(&out)
    );
    assert_eq!(http_get(&format!("{api}/ready")).map(|(s, _)| s), Some(200));

    let out = env.obsctl(&["status", "--project", "someone-else", "-o", "json"]);
    let status: Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", text(&out)));
    assert!(status.get("embedded").is_none(), "{}", text(&out));

    let out = env.obsctl(&["up", "--runtime", "embedded", "--project", "someone-else"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("is running for project \"{}\"", env.project))
            && stderr.contains(&format!("obsctl down --project {}", env.project)),
        "{}",
        text(&out)
    );

    let out = env.obsctl(&["down"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).starts_with("stopped embedded backend (pid "),
        "{}",
        text(&out)
    );
}
