//! Expressions in a run: `{{=…}}` tags in arguments, `withParam` and commands, a steps
//! template's `valueFrom.expression` over hyphenated step names, and `retryStrategy.expression`
//! over `lastRetry.*`.

use super::*;

#[tokio::test]
async fn expression_tags_feed_loops_arguments_and_commands() {
    // Argo's examples/expression-tag-template-workflow.yaml, its date's layout kept.
    let fake = FakeRunner::default();
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: task-0
        template: pod-0
        arguments:
          parameters:
          - name: foo
            value: "{{=item}}"
        withParam: "{{=toJson(filter([1, 3], {# > 1}))}}"
  - name: pod-0
    inputs:
      parameters:
      - name: foo
    container:
      image: argoproj/argosay:v2
      command: [echo]
      args: ["hello {{=asInt(inputs.parameters.foo) * 10}} @ {{=sprig.date('2006', workflow.creationTimestamp)}}"]
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Succeeded);
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ DAG Succeeded",
            "@.task-0 TaskGroup Succeeded",
            "@.task-0(0:3) Pod Succeeded",
        ])
    );
    let argv = &fake.started()[0].argv;
    let year = &crate::workflow::clock::now()[..4];
    assert_eq!(argv, &["echo".to_string(), format!("hello 30 @ {year}")]);
}

#[tokio::test]
async fn a_steps_output_comes_from_an_expression_over_hyphenated_step_names() {
    // Argo's examples/conditional-parameters.yaml, with the coin scripted.
    for (coin, skipped) in [("heads", "tails"), ("tails", "heads")] {
        let fake = FakeRunner::default();
        fake.script("flip-coin", vec![Behaviour::prints(coin)]);
        fake.script("heads", vec![Behaviour::prints("heads")]);
        fake.script("tails", vec![Behaviour::prints("tails")]);
        let ran = run(
            r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: flip-coin
        template: flip-coin
    - - name: heads
        template: heads
        when: "{{steps.flip-coin.outputs.result}} == heads"
      - name: tails
        template: tails
        when: "{{steps.flip-coin.outputs.result}} == tails"
    outputs:
      parameters:
      - name: stepresult
        valueFrom:
          expression: "steps['flip-coin'].outputs.result == 'heads' ? steps.heads.outputs.result : steps.tails.outputs.result"
  - {name: flip-coin, script: {image: python, command: [python], source: "print(1)"}}
  - {name: heads, script: {image: python, command: [python], source: "print(1)"}}
  - {name: tails, script: {image: python, command: [python], source: "print(1)"}}
"#,
            &fake,
        )
        .await;
        assert_eq!(ran.record.status.phase, Phase::Succeeded);
        assert_eq!(ran.node(&format!("@[1].{skipped}")).phase, Phase::Skipped);
        let outputs = ran.node("@").outputs.as_ref().expect("outputs");
        assert_eq!(outputs.parameters[0].name, "stepresult");
        assert_eq!(outputs.parameters[0].value, coin);
    }
}

#[tokio::test]
async fn an_output_expression_that_fails_is_an_error_node() {
    let fake = FakeRunner::default();
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps: [[{name: a, template: a}]]
    outputs:
      parameters:
      - name: n
        valueFrom: {expression: "asInt(steps.a.outputs.result)"}
  - {name: a, container: {image: busybox, command: [echo, not-a-number]}}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Error);
    let message = ran.node("@").message.clone().unwrap_or_default();
    assert!(
        message.contains("failed to evaluate expression") && message.contains("int(not-a-number)"),
        "{message}"
    );
}

/// Argo's examples/retry-conditional.yaml with the exit codes scripted: retried while the exit
/// code is above 1, and the retry ends when the expression says so.
#[tokio::test]
async fn retry_expression_sees_the_last_attempt_and_stops_the_retries() {
    let fake = FakeRunner::default();
    fake.script("safe-to-retry", vec![Behaviour::prints("true")]);
    fake.script(
        "retry-script",
        vec![Behaviour::exit(2), Behaviour::exit(3), Behaviour::exit(1)],
    );
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: safe-to-retry
        template: safe-to-retry
    - - name: retry
        template: retry-script
        arguments:
          parameters:
          - name: safe-to-retry
            value: "{{steps.safe-to-retry.outputs.result}}"
  - name: safe-to-retry
    script: {image: python, command: [python], source: "print('true')"}
  - name: retry-script
    inputs:
      parameters:
      - name: safe-to-retry
    retryStrategy:
      limit: "10"
      expression: >-
        asInt(lastRetry.exitCode) > 1 &&
        lastRetry.status != "Error" &&
        asFloat(lastRetry.duration) < 120 &&
        ({{inputs.parameters.safe-to-retry}} == true || lastRetry.message matches 'imminent node shutdown|pod deleted')
    script: {image: python, command: [python], source: "exit(1)"}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Failed);
    let retry = ran.node("@[1].retry");
    assert_eq!(retry.node_type, NodeType::Retry);
    assert_eq!(retry.phase, Phase::Failed);
    assert_eq!(
        retry.message.as_deref(),
        Some("retryStrategy.expression evaluated to false")
    );
    assert_eq!(
        ran.nodes()
            .iter()
            .filter(|n| n.starts_with("@[1].retry("))
            .count(),
        3,
        "exit 2 and 3 are retried, exit 1 is not: {:?}",
        ran.nodes()
    );
}

#[tokio::test]
async fn a_retry_expression_that_fails_ends_the_retry_node_in_error() {
    let fake = FakeRunner::default();
    fake.script("a", vec![Behaviour::exit(1)]);
    let ran = run(
        r#"  entrypoint: a
  templates:
  - name: a
    retryStrategy: {limit: 3, expression: "asInt(lastRetry.message) > 1"}
    container: {image: busybox, command: [work]}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Error);
    assert_eq!(fake.started().len(), 1);
    let message = ran.node("@").message.clone().unwrap_or_default();
    assert!(
        message.starts_with("retryStrategy.expression: failed to evaluate"),
        "{message}"
    );
}
