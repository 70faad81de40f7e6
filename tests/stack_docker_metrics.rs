//! The Docker stack with only local images (scripts/build-images.sh, no registry), data taking
//! the real stack's path: steps in containers → the collector's stand-in (`obsctl relay` on the
//! stack's collector config) → the aggregator (obsctl's accumulator, the real component) →
//! Debian's real Prometheus with the stack's rules; traces and logs → the Tempo and Loki
//! stand-ins (`obsctl serve`). `obsctl demo` passes on it; 100 container steps, a fifth of them
//! failing, are counted exactly through Prometheus with one series per label set, make the
//! failure-rate alert pending, and stay exact after the aggregator and Prometheus restart.
//! Under CI=true a missing Docker, busybox or prometheus fails the test.

mod common;

use std::time::Duration;

use common::stack::*;
use common::*;
use obsctl::stack::definition::Port;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(120);

/// Removes a run's step containers when the test ends, passing or failing.
struct StepContainers(String);

impl Drop for StepContainers {
    fn drop(&mut self) {
        let filter = format!("label=io.obsctl.run={}", self.0);
        let out = std::process::Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output();
        if let Ok(out) = out {
            let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .output();
            }
        }
    }
}

fn port(env: &StackEnv, p: Port) -> String {
    env.env
        .iter()
        .find(|(k, _)| *k == p.env())
        .unwrap()
        .1
        .clone()
}

/// An instant query's first value, `None` while there is none.
fn value(prometheus: &str, query: &str) -> Option<f64> {
    let (_, v) = get_json(&format!("{prometheus}/api/v1/query"), &[("query", query)]);
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Runs workflows/burst.yaml in containers: `count` steps of PR `pr`, those whose index is a
/// multiple of 5 failing.
fn burst(env: &StackEnv, pr: &str, count: u32) -> String {
    let burst = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/burst.yaml");
    let out = env.obsctl(&[
        "run",
        burst,
        "--runner",
        "docker",
        "--output",
        "json",
        "-p",
        &format!("pr={pr}"),
        "-p",
        &format!("count={count}"),
        "-p",
        "script=[ $((STEP_INDEX % 5)) -ne 0 ]",
    ]);
    let status: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("run --output json ({e}): {}", text(&out)));
    assert_eq!(status["status"]["phase"], "Failed", "{}", text(&out));
    status["metadata"]["name"].as_str().unwrap().to_string()
}

#[test]
fn the_local_docker_stack_passes_the_demo_and_counts_100_container_steps_exactly() {
    let test = "the_local_docker_stack_passes_the_demo_and_counts_100_container_steps_exactly";
    if !require_docker(test)
        || require_tool("busybox", test).is_none()
        || require_tool("prometheus", test).is_none()
    {
        return;
    }
    let images = build_images();
    // burst.yaml asks for `busybox`; tag ours only when none exists (a real one is left alone).
    if std::process::Command::new("docker")
        .args(["image", "inspect", "busybox:latest"])
        .output()
        .is_ok_and(|o| !o.status.success())
    {
        docker(&["tag", &images["busybox"], "busybox:latest"]);
    }
    let mut env = StackEnv::new("m");
    env.free_ports();
    for c in ["COLLECTOR", "AGGREGATOR", "TEMPO", "LOKI"] {
        env.set(&format!("OBSCTL_IMAGE_{c}"), &images["obsctl"]);
    }
    env.set("OBSCTL_IMAGE_GRAFANA", &images["standin"]);
    env.set("OBSCTL_IMAGE_PROMETHEUS", &images["prometheus"]);
    let project = env.project.clone();
    env.set("OBSCTL_PROJECT", &project);
    let out = env.obsctl(&["up", "--runtime", "docker", "--timeout", "120s"]);
    assert!(out.status.success(), "up: {}", text(&out));

    // The demo: every check passes against Tempo, Loki and Prometheus of this stack.
    let out = env.obsctl(&["demo", "--timeout", "60s"]);
    assert_eq!(out.status.code(), Some(0), "demo: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("FAIL"), "{stdout}");

    // 100 steps in containers, in two bursts that Prometheus scrapes apart (rate() needs the
    // counters to grow between samples).
    let prometheus = format!("http://127.0.0.1:{}", port(&env, Port::Prometheus));
    let pr = format!("{}", 100_000 + std::process::id() % 100_000);
    let sel = format!("{{repo=\"5dlabs/demo\", prNumber=\"{pr}\"}}");
    let first = burst(&env, &pr, 50);
    let _first = StepContainers(first);
    poll("the first 50 steps in Prometheus", WAIT, || {
        (value(&prometheus, &format!("sum(agent_step_fail_total{sel})")) == Some(10.0))
            .then_some(())
    });
    let second = burst(&env, &pr, 50);
    let _second = StepContainers(second);
    let exact = |what: &str| {
        poll(what, WAIT, || {
            let success = value(&prometheus, &format!("sum(agent_step_success_total{sel})"));
            let fail = value(&prometheus, &format!("sum(agent_step_fail_total{sel})"));
            let count = value(
                &prometheus,
                &format!("sum(agent_step_duration_ms_count{sel})"),
            );
            (success == Some(80.0) && fail == Some(20.0) && count == Some(100.0)).then_some(())
        })
    };
    exact("80 successes, 20 failures and 100 durations in Prometheus");
    // One series per label set, whatever the number of step processes.
    assert_eq!(
        value(&prometheus, &format!("count(agent_step_fail_total{sel})")),
        Some(1.0)
    );
    assert_eq!(
        value(
            &prometheus,
            &format!("count(agent_step_duration_ms_count{sel})")
        ),
        Some(4.0),
        "one histogram series per run (workflowName, taskId) and outcome, never per step"
    );

    // 20 % of the agent's steps failed: the stack's alert goes pending (then firing).
    let alert = poll("AgentStepFailureRate pending or firing", WAIT, || {
        let (_, v) = get_json(
            &format!("{prometheus}/api/v1/query"),
            &[(
                "query",
                "ALERTS{alertname=\"AgentStepFailureRate\", agent=\"burst\"}",
            )],
        );
        v["data"]["result"][0]["metric"]["alertstate"]
            .as_str()
            .map(str::to_string)
    });
    assert!(["pending", "firing"].contains(&alert.as_str()), "{alert}");

    // Restart the aggregating component and Prometheus: nothing lost, nothing counted twice.
    for c in ["aggregator", "prometheus"] {
        docker(&["restart", &format!("{project}-{c}")]);
    }
    poll("Prometheus answers again", WAIT, || {
        http_get(&format!("{prometheus}/-/ready")).filter(|(s, _)| *s == 200)
    });
    poll("Prometheus scrapes the restarted aggregator", WAIT, || {
        let (_, v) = get_json(
            &format!("{prometheus}/api/v1/query"),
            &[("query", "up{job=\"aggregator\"} == 1")],
        );
        (!v["data"]["result"].as_array()?.is_empty()).then_some(())
    });
    exact("the same counts after both restarts");
    // And they stay so over further scrapes (5 s apart).
    std::thread::sleep(Duration::from_secs(11));
    exact("the same counts after more scrapes");
}
