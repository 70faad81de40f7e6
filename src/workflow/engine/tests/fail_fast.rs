//! `failFast` on a steps or DAG template, as Argo's `checkParallelism` applies it: once a child
//! failed or errored, nothing new starts in that template, what runs finishes, and the
//! template (and a steps template's last group) fails with Argo's message.

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
