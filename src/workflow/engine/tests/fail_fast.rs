//! `failFast` on a steps or DAG template, as Argo's `checkParallelism` applies it: once a child
//! failed or errored, nothing new starts in that template, what runs finishes, and the
//! template (and a steps template's last group) fails with Argo's message. And `dag.failFast`,
//! as Argo's `assessDAGPhase` applies it: every ready task starts whatever it says; it decides
//! which failed target names the DAG's phase.

use super::*;

/// Argo's `loops-arbitrary-sequential-steps.yaml`: with `parallelism: 1` and `failFast: true`,
/// the loop stops at the first failed item; the items after it get no node, and the group and
/// the template fail with Argo's message.
#[tokio::test]
async fn fail_fast_stops_a_sequential_loop_at_its_first_failure() {
    let fake = FakeRunner::default();
    let ok = Behaviour::exit(0);
    fake.script(
        "unit-step-template",
        vec![ok.clone(), ok.clone(), Behaviour::exit(1), ok],
    );
    let ran = run(
        r#"  entrypoint: main
  arguments:
    parameters:
    - name: step_params
      value: '[{"exit_code": 0}, {"exit_code": 0}, {"exit_code": 1}, {"exit_code": 0}, {"exit_code": 0}]'
  templates:
  - name: main
    inputs: {parameters: [{name: step_params}]}
    parallelism: 1
    failFast: true
    steps:
    - - name: unit-step
        template: unit-step-template
        arguments: {parameters: [{name: exit_code, value: "{{item.exit_code}}"}]}
        withParam: "{{inputs.parameters.step_params}}"
  - name: unit-step-template
    inputs: {parameters: [{name: exit_code}]}
    container: {image: alpine:3.23, command: [sh, -c, "exit {{inputs.parameters.exit_code}}"]}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Failed);
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ Steps Failed",
            "@[0] StepGroup Failed",
            "@[0].unit-step(0:exit_code:0) Pod Succeeded",
            "@[0].unit-step(1:exit_code:0) Pod Succeeded",
            "@[0].unit-step(2:exit_code:1) Pod Failed",
        ])
    );
    for node in ["@", "@[0]"] {
        assert_eq!(
            ran.node(node).message.as_deref(),
            Some("template has failed or errored children and failFast enabled")
        );
    }
}

/// A DAG template with `failFast: true` starts no task once one failed, even one whose
/// `depends` asks for that failure; without it, that task runs.
#[tokio::test]
async fn fail_fast_on_a_dag_template_starts_nothing_after_a_failure() {
    for (fail_fast, expected) in [
        ("true", vec!["@ DAG Failed", "@.A Pod Failed"]),
        (
            "false",
            vec!["@ DAG Succeeded", "@.A Pod Failed", "@.B Pod Succeeded"],
        ),
    ] {
        let fake = FakeRunner::default();
        fake.script("fail", vec![Behaviour::exit(1)]);
        let ran = run(
            &format!(
                r#"  entrypoint: main
  templates:
  - name: main
    failFast: {fail_fast}
    dag:
      tasks:
      - {{name: A, template: fail}}
      - {{name: B, depends: A.Failed, template: ok}}
  - name: fail
    container: {{image: alpine:3.23, command: [sh, -c, "exit 1"]}}
  - name: ok
    container: {{image: alpine:3.23, command: [echo, ok]}}
"#
            ),
            &fake,
        )
        .await;
        assert_eq!(ran.nodes(), sorted(&expected), "failFast: {fail_fast}");
    }
}

/// Argo's `dag-disable-failFast.yaml` (its retries kept; B runs while C exhausts its retries):
/// whatever `dag.failFast` says, D starts once B succeeded although C had failed, and E after
/// it, because Argo starts every ready task before it assesses the DAG (upstream #5223, #10312);
/// the DAG fails from C either way.
#[tokio::test]
async fn dag_fail_fast_never_keeps_a_ready_task_from_starting() {
    for fail_fast in ["", "failFast: true", "failFast: false"] {
        let fake = FakeRunner::default();
        fake.script(
            "b",
            vec![Behaviour {
                runs_for: Some(std::time::Duration::from_millis(100)),
                ..Behaviour::exit(0)
            }],
        );
        fake.script("c", vec![Behaviour::exit(2)]);
        let ran = run(
            &format!(
                r#"  entrypoint: statis
  templates:
  - {{name: a, container: {{image: busybox, command: [echo, hello world]}}}}
  - {{name: b, retryStrategy: {{limit: "2"}}, container: {{image: busybox, command: [sh, -c, "sleep 30; echo haha"]}}}}
  - {{name: c, retryStrategy: {{limit: "3"}}, container: {{image: busybox, command: [sh, -c, "echo intentional failure; exit 2"]}}}}
  - {{name: d, container: {{image: busybox, command: [echo, hello world]}}}}
  - name: statis
    dag:
      {fail_fast}
      tasks:
      - {{name: A, template: a}}
      - {{name: B, depends: A, template: b}}
      - {{name: C, depends: A, template: c}}
      - {{name: D, depends: B, template: d}}
      - {{name: E, depends: D, template: d}}
"#
            ),
            &fake,
        )
        .await;
        assert_eq!(ran.record.status.phase, Phase::Failed, "{fail_fast:?}");
        assert_eq!(
            ran.nodes(),
            sorted(&[
                "@ DAG Failed",
                "@.A Pod Succeeded",
                "@.B Retry Succeeded",
                "@.B(0) Pod Succeeded",
                "@.C Retry Failed",
                "@.C(0) Pod Failed",
                "@.C(1) Pod Failed",
                "@.C(2) Pod Failed",
                "@.C(3) Pod Failed",
                "@.D Pod Succeeded",
                "@.E Pod Succeeded",
            ]),
            "{fail_fast:?}"
        );
        let started = fake.started_names();
        let at = |name: &str| started.iter().position(|n| n == name).unwrap();
        assert!(
            at("wf.C(3)") < at("wf.D"),
            "{fail_fast:?}: D started after C had failed: {started:?}"
        );
        assert_eq!(
            ran.node("@").message.as_deref(),
            Some(format!("task '{}' failed", ran.node("@.C").id).as_str())
        );
    }
}

/// Two failed targets, one errored (its output file is missing) and one failed: Argo sorts the
/// leaf targets by name and, failing fast, takes the first one's phase (`a`, Error); with
/// `failFast: false` it looks at every target and the last one's phase stands (`b`, Failed).
#[tokio::test]
async fn dag_fail_fast_takes_the_first_failed_target_and_false_the_last() {
    for (fail_fast, phase, failed_task) in [
        ("", Phase::Error, "a"),
        ("failFast: true", Phase::Error, "a"),
        ("failFast: false", Phase::Failed, "b"),
    ] {
        let fake = FakeRunner::default();
        fake.script("fails", vec![Behaviour::exit(1)]);
        let ran = run(
            &format!(
                r#"  entrypoint: main
  templates:
  - name: main
    dag:
      {fail_fast}
      tasks:
      - {{name: b, template: fails}}
      - {{name: a, template: no-output}}
  - {{name: fails, container: {{image: busybox, command: [work]}}}}
  - name: no-output
    container: {{image: busybox, command: [work]}}
    outputs:
      parameters:
      - name: out
        valueFrom: {{path: /tmp/out.txt}}
"#
            ),
            &fake,
        )
        .await;
        assert_eq!(ran.node("@").phase, phase, "{fail_fast:?}");
        assert_eq!(ran.node("@.a").phase, Phase::Error, "{fail_fast:?}");
        assert_eq!(ran.node("@.b").phase, Phase::Failed, "{fail_fast:?}");
        let id = ran.node(&format!("@.{failed_task}")).id.clone();
        let verb = if phase == Phase::Error {
            "error"
        } else {
            "failed"
        };
        assert_eq!(
            ran.node("@").message.as_deref(),
            Some(format!("task '{id}' {verb}").as_str()),
            "{fail_fast:?}"
        );
    }
}
