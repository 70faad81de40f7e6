//! Every upstream Argo example (`../shared/argo/examples`) and every sample in `workflows/` runs
//! with the phases, node names, node ids and outputs a real Argo gives them; the one using
//! artifacts is refused, naming `artifacts`, before anything runs.

mod common;

use common::workflow::{Sandbox, argo_node_id, expect, repo_root, shared_argo};

fn example(name: &str) -> std::path::PathBuf {
    shared_argo().join("examples").join(name)
}

/// Runs `file` and checks the workflow phase, exit code and the full node list.
fn check(file: &std::path::Path, phase: &str, nodes: &[&str]) -> common::workflow::RunResult {
    let sb = Sandbox::new();
    let run = sb.run(file, &[]);
    assert_eq!(run.phase(), phase, "{}", run.describe());
    assert_eq!(
        run.code,
        if phase == "Succeeded" { 0 } else { 1 },
        "{}",
        run.describe()
    );
    assert_eq!(run.nodes(), expect(nodes), "{}", run.describe());
    // Node ids are Argo's: keys of status.nodes, FNV-32a of the node name.
    for (id, node) in run.json["status"]["nodes"].as_object().unwrap() {
        assert_eq!(
            id,
            &argo_node_id(run.name(), node["name"].as_str().unwrap())
        );
        assert_eq!(node["id"], id.as_str());
    }
    // The record is persisted and listed by `obsctl runs`.
    let listed = sb
        .command()
        .args(["runs", "-o", "json", "--state-dir"])
        .arg(sb.state_dir())
        .output()
        .unwrap();
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["metadata"]["name"], run.name());
    assert_eq!(listed[0]["status"]["phase"], phase);
    run
}

#[test]
fn hello_world_and_parameters() {
    let run = check(
        &example("hello-world.yaml"),
        "Succeeded",
        &["@ Pod Succeeded"],
    );
    assert_eq!(run.result_of("@"), "hello world");
    assert!(run.name().starts_with("hello-world-") && run.name().len() == "hello-world-".len() + 5);
    let run = check(
        &example("arguments-parameters.yaml"),
        "Succeeded",
        &["@ Pod Succeeded"],
    );
    assert_eq!(run.result_of("@"), "hello world");
    let run = check(
        &example("global-parameters.yaml"),
        "Succeeded",
        &["@ Pod Succeeded"],
    );
    assert_eq!(run.result_of("@"), "hello world");
}

#[test]
fn steps_and_their_links() {
    let run = check(
        &example("steps.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].hello1 Pod Succeeded",
            "@[1] StepGroup Succeeded",
            "@[1].hello2a Pod Succeeded",
            "@[1].hello2b Pod Succeeded",
        ],
    );
    let id = |short: &str| run.node(short)["id"].as_str().unwrap().to_string();
    let children = |short: &str| -> Vec<String> {
        let mut c: Vec<String> = run.node(short)["children"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_str().unwrap().to_string()).collect())
            .unwrap_or_default();
        c.sort();
        c
    };
    // Argo's shape: the steps node owns group 0, a group owns its steps, and a step's
    // outbound node owns the next group.
    assert_eq!(children("@"), [id("@[0]")]);
    assert_eq!(children("@[0]"), [id("@[0].hello1")]);
    assert_eq!(children("@[0].hello1"), [id("@[1]")]);
    let mut two = vec![id("@[1].hello2a"), id("@[1].hello2b")];
    two.sort();
    assert_eq!(children("@[1]"), two);
    assert_eq!(run.node("@[1].hello2a")["boundaryID"], id("@").as_str());
    assert_eq!(run.node("@[1].hello2a")["displayName"], "hello2a");
    assert_eq!(run.node("@[1]")["displayName"], "[1]");
    assert_eq!(run.result_of("@[1].hello2b"), "hello2b");

    check(
        &example("pod-metadata.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].hello1 Pod Succeeded",
        ],
    );
}

#[test]
fn continue_on_fail_and_status_and_exit_code_variables() {
    check(
        &example("continue-on-fail.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].A Pod Succeeded",
            "@[1] StepGroup Succeeded",
            "@[1].B Pod Succeeded",
            "@[1].C Pod Failed",
            "@[2] StepGroup Succeeded",
            "@[2].D Pod Succeeded",
        ],
    );
    let run = check(
        &example("exit-code-output-variable.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].failing-container Pod Failed",
            "@[1] StepGroup Succeeded",
            "@[1].echo-container Pod Succeeded",
        ],
    );
    assert_eq!(run.result_of("@[1].echo-container"), "Exit code was: 123");
    assert_eq!(
        run.node("@[0].failing-container")["outputs"]["exitCode"],
        "123"
    );
    assert_eq!(
        run.node("@[0].failing-container")["message"],
        "Error (exit code 123)"
    );
    let run = check(
        &example("status-reference.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].flakey-container Pod Failed",
            "@[1] StepGroup Succeeded",
            "@[1].failed Pod Succeeded",
            "@[1].succeeded Skipped Skipped",
        ],
    );
    assert_eq!(run.result_of("@[1].failed"), "the flakey container failed");
}

#[test]
fn dags() {
    let run = check(
        &example("dag-diamond.yaml"),
        "Succeeded",
        &[
            "@ DAG Succeeded",
            "@.A Pod Succeeded",
            "@.B Pod Succeeded",
            "@.C Pod Succeeded",
            "@.D Pod Succeeded",
        ],
    );
    assert_eq!(run.result_of("@.D"), "D");
    let d = run.node("@.D")["id"].clone();
    assert_eq!(run.node("@.B")["children"], serde_json::json!([d]));
    check(
        &example("dag-multiroot.yaml"),
        "Succeeded",
        &[
            "@ DAG Succeeded",
            "@.A Pod Succeeded",
            "@.B Pod Succeeded",
            "@.C Pod Succeeded",
            "@.D Pod Succeeded",
        ],
    );
    let run = check(
        &example("dag-nested.yaml"),
        "Succeeded",
        &[
            "@ DAG Succeeded",
            "@.A DAG Succeeded",
            "@.A.A Pod Succeeded",
            "@.A.B Pod Succeeded",
            "@.A.C Pod Succeeded",
            "@.A.D Pod Succeeded",
            "@.B DAG Succeeded",
            "@.B.A Pod Succeeded",
            "@.B.B Pod Succeeded",
            "@.B.C Pod Succeeded",
            "@.B.D Pod Succeeded",
            "@.C DAG Succeeded",
            "@.C.A Pod Succeeded",
            "@.C.B Pod Succeeded",
            "@.C.C Pod Succeeded",
            "@.C.D Pod Succeeded",
            "@.D DAG Succeeded",
            "@.D.A Pod Succeeded",
            "@.D.B Pod Succeeded",
            "@.D.C Pod Succeeded",
            "@.D.D Pod Succeeded",
        ],
    );
    assert_eq!(run.result_of("@.C.B"), "CB");
    let mut names = vec!["@ DAG Succeeded".to_string()];
    for t in ["A", "B", "C", "D"] {
        names.push(format!("@.{t} Steps Succeeded"));
        names.push(format!("@.{t}[0] StepGroup Succeeded"));
        for (i, n) in ["1", "2", "3"].iter().enumerate() {
            names.push(format!("@.{t}[0].echo({i}:{n}) Pod Succeeded"));
        }
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let run = check(&example("dag-diamond-steps.yaml"), "Succeeded", &names);
    assert_eq!(run.result_of("@.B[0].echo(2:3)"), "B3");
}

#[test]
fn dag_depends_logic() {
    check(
        &example("dag-enhanced-depends.yaml"),
        "Succeeded",
        &[
            "@ DAG Succeeded",
            "@.A Pod Succeeded",
            "@.B Pod Succeeded",
            "@.C Pod Failed",
            "@.should-execute-1 Pod Succeeded",
            "@.should-execute-2 Pod Succeeded",
            "@.should-not-execute Skipped Omitted",
            "@.should-execute-3 Pod Succeeded",
        ],
    );
    check(
        &example("dag-continue-on-fail.yaml"),
        "Failed",
        &[
            "@ DAG Failed",
            "@.A Pod Succeeded",
            "@.B Pod Failed",
            "@.C Pod Succeeded",
            "@.D Pod Succeeded",
            "@.E Pod Failed",
            "@.F Pod Succeeded",
            "@.G Skipped Omitted",
        ],
    );
}

#[test]
fn loops() {
    let run = check(
        &example("loops.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].print-message-loop(0:hello world) Pod Succeeded",
            "@[0].print-message-loop(1:goodbye world) Pod Succeeded",
        ],
    );
    assert_eq!(
        run.result_of("@[0].print-message-loop(1:goodbye world)"),
        "goodbye world"
    );
    check(
        &example("loops-dag.yaml"),
        "Succeeded",
        &[
            "@ DAG Succeeded",
            "@.A Pod Succeeded",
            "@.B TaskGroup Succeeded",
            "@.B(0:foo) Pod Succeeded",
            "@.B(1:bar) Pod Succeeded",
            "@.B(2:baz) Pod Succeeded",
            "@.C Pod Succeeded",
        ],
    );
    let mut names = vec![
        "@ Steps Succeeded".to_string(),
        "@[0] StepGroup Succeeded".to_string(),
    ];
    let seqs: [(&str, Vec<String>); 5] = [
        ("sequence-count", (0..5).map(|i| i.to_string()).collect()),
        (
            "sequence-start-end",
            (100..=105).map(|i| i.to_string()).collect(),
        ),
        (
            "sequence-param",
            (200..203).map(|i| i.to_string()).collect(),
        ),
        (
            "sequence-negative",
            (0..=5).rev().map(|i| i.to_string()).collect(),
        ),
        (
            "sequence-format",
            (0..5).map(|i| format!("testuser{i:02X}")).collect(),
        ),
    ];
    for (step, items) in &seqs {
        for (i, item) in items.iter().enumerate() {
            names.push(format!("@[0].{step}({i}:{item}) Pod Succeeded"));
        }
    }
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let run = check(&example("loops-sequence.yaml"), "Succeeded", &names);
    assert_eq!(
        run.result_of("@[0].sequence-format(4:testuser04)"),
        "testuser04"
    );
}

#[test]
fn outputs_scripts_and_aggregation() {
    let run = check(
        &example("output-parameter.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].generate-parameter Pod Succeeded",
            "@[1] StepGroup Succeeded",
            "@[1].consume-parameter Pod Succeeded",
        ],
    );
    assert_eq!(run.result_of("@[1].consume-parameter"), "hello world");
    assert_eq!(
        run.node("@[0].generate-parameter")["outputs"]["parameters"][0],
        serde_json::json!({"name": "hello-param", "value": "hello world"})
    );

    let run = check(
        &example("scripts-bash.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].generate Pod Succeeded",
            "@[1] StepGroup Succeeded",
            "@[1].print Pod Succeeded",
        ],
    );
    let n: u32 = run.result_of("@[0].generate").parse().unwrap();
    assert!((1..=101).contains(&n));
    assert_eq!(run.result_of("@[1].print"), format!("result was: {n}"));

    let run = check(
        &example("parameter-aggregation.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].odd-or-even(0:1) Pod Succeeded",
            "@[0].odd-or-even(1:2) Pod Succeeded",
            "@[0].odd-or-even(2:3) Pod Succeeded",
            "@[0].odd-or-even(3:4) Pod Succeeded",
            "@[1] StepGroup Succeeded",
            "@[1].print-nums Pod Succeeded",
            "@[2] StepGroup Succeeded",
            "@[2].print-evenness Pod Succeeded",
            "@[3] StepGroup Succeeded",
            "@[3].divide-by-2(0:evenness:odd,num:1) Skipped Skipped",
            "@[3].divide-by-2(1:evenness:even,num:2) Pod Succeeded",
            "@[3].divide-by-2(2:evenness:odd,num:3) Skipped Skipped",
            "@[3].divide-by-2(3:evenness:even,num:4) Pod Succeeded",
            "@[4] StepGroup Succeeded",
            "@[4].print(0:1) Pod Succeeded",
            "@[4].print(1:2) Pod Succeeded",
        ],
    );
    assert_eq!(run.result_of("@[1].print-nums"), r#"["1","2","3","4"]"#);
    assert_eq!(
        run.result_of("@[2].print-evenness"),
        r#"["odd","even","odd","even"]"#
    );
}

#[test]
fn exit_handler_sees_the_workflow_status() {
    let run = check(
        &example("exit-handlers.yaml"),
        "Failed",
        &[
            "@ Pod Failed",
            "@.onExit Steps Succeeded",
            "@.onExit[0] StepGroup Succeeded",
            "@.onExit[0].notify Pod Succeeded",
            "@.onExit[0].celebrate Skipped Skipped",
            "@.onExit[0].cry Pod Succeeded",
        ],
    );
    let notify = run.result_of("@.onExit[0].notify");
    assert!(
        notify.starts_with(&format!("send e-mail: {} Failed ", run.name())),
        "{notify}"
    );
    assert!(notify.contains("displayName:"), "{notify}");
    assert_eq!(run.result_of("@.onExit[0].cry"), "boohoo!");
}

#[test]
fn artifacts_are_refused_before_anything_runs() {
    let sb = Sandbox::new();
    let run = sb.run(&example("global-outputs.yaml"), &[]);
    assert_eq!(run.code, 2, "{}", run.describe());
    assert!(
        run.stderr.contains("global-outputs.yaml:33:7"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("`artifacts`"), "{}", run.stderr);
    assert!(
        !sb.state_dir().exists(),
        "nothing may be recorded or started"
    );
}

#[test]
fn step_level_timeout() {
    let run = check(
        &example("step-level-timeout.yaml"),
        "Failed",
        &[
            "@ Steps Failed",
            "@[0] StepGroup Failed",
            "@[0].sleep1 Pod Failed",
            "@[0].sleep2 Pod Failed",
        ],
    );
    assert_eq!(
        run.node("@[0].sleep1")["message"],
        "Pod was active on the node longer than the specified deadline"
    );
}

#[test]
fn parallelism_limit() {
    let run = check(&example("parallelism-limit.yaml"), "Succeeded", &{
        let mut n = vec!["@ Steps Succeeded", "@[0] StepGroup Succeeded"];
        n.extend([
            "@[0].sleep(0:this) Pod Succeeded",
            "@[0].sleep(1:workflow) Pod Succeeded",
            "@[0].sleep(2:should) Pod Succeeded",
            "@[0].sleep(3:take) Pod Succeeded",
            "@[0].sleep(4:at) Pod Succeeded",
            "@[0].sleep(5:least) Pod Succeeded",
            "@[0].sleep(6:60) Pod Succeeded",
            "@[0].sleep(7:seconds) Pod Succeeded",
            "@[0].sleep(8:to) Pod Succeeded",
            "@[0].sleep(9:complete) Pod Succeeded",
        ]);
        n
    });
    // At no instant did more than two pods run.
    let mut edges = Vec::new();
    for n in run.json["status"]["nodes"].as_object().unwrap().values() {
        if n["type"] == "Pod" {
            edges.push((n["startedAt"].as_str().unwrap().to_string(), 1));
            edges.push((n["finishedAt"].as_str().unwrap().to_string(), -1));
        }
    }
    edges.sort();
    let mut running = 0;
    for (_, delta) in edges {
        running += delta;
        assert!(running <= 2, "more than 2 pods ran at once");
    }
}

#[test]
fn samples_run_with_their_outputs() {
    let root = repo_root().join("workflows");
    let run = check(
        &root.join("agent-pipeline.yaml"),
        "Succeeded",
        &[
            "@ DAG Succeeded",
            "@.implement Pod Succeeded",
            "@.clippy Pod Succeeded",
            "@.tests Pod Succeeded",
            "@.deploy Pod Succeeded",
        ],
    );
    assert_eq!(
        run.output("prHtmlUrl").as_deref(),
        Some("https://github.com/5dlabs/demo/pull/42")
    );
    assert_eq!(
        run.output("actionsRunUrl").as_deref(),
        Some("https://github.com/5dlabs/demo/actions/runs/7001")
    );
    assert_eq!(
        run.output("previewUrl").as_deref(),
        Some("https://pr-42.preview.example.com")
    );

    let run = check(
        &root.join("flaky-retry.yaml"),
        "Succeeded",
        &[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].flaky Retry Succeeded",
            "@[0].flaky(0) Pod Failed",
            "@[0].flaky(1) Pod Succeeded",
            "@[1] StepGroup Succeeded",
            "@[1].after Pod Succeeded",
        ],
    );
    assert_eq!(
        run.result_of("@[0].flaky(1)"),
        "attempt 1\nsucceeded on retry"
    );

    let mut names = vec![
        "@ Steps Succeeded".to_string(),
        "@[0] StepGroup Succeeded".to_string(),
    ];
    names.extend((0..50).map(|i| format!("@[0].step({i}:{i}) Pod Succeeded")));
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let run = check(&root.join("burst.yaml"), "Succeeded", &names);
    assert_eq!(run.result_of("@[0].step(17:17)"), "burst step 17 done");

    let sb = Sandbox::new();
    let run = sb.run(&root.join("long-step.yaml"), &["-p", "seconds=1"]);
    assert_eq!(run.phase(), "Succeeded", "{}", run.describe());
    assert_eq!(
        run.result_of("@[1].long"),
        "working: second 0 of 1\nlong step done"
    );
}
