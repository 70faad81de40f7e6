//! Lifecycle hooks and exit handlers, each run compared with what Argo's own end-to-end tests
//! (`test/e2e/hooks_test.go`) and examples (`exit-handler-step-level.yaml`,
//! `exit-handler-with-param.yaml`, `exit-handler-dag-level.yaml`) document: node names, types,
//! phases and where each hook hangs. Argo's examples call an `http` template as the hook;
//! obsctl refuses `http`, so the hooks here run a container instead.

use super::*;

/// Argo's `TestWorkflowLevelHooksSuccessVersion` and `...FailVersion`: `running` fires as the run
/// starts, the hook on the final status once the entrypoint ended; both hang under the root.
#[tokio::test]
async fn workflow_hooks_fire_while_running_and_on_the_entrypoints_phase() {
    for (exit_code, phase, fired, not_fired) in [
        (0, Phase::Succeeded, "succeed", "failed"),
        (1, Phase::Failed, "failed", "succeed"),
    ] {
        let fake = FakeRunner::default();
        fake.script("argosay", vec![Behaviour::exit(exit_code)]);
        let ran = run(
            r#"  entrypoint: main
  hooks:
    running:
      expression: workflow.status == "Running"
      template: hook
    succeed:
      expression: workflow.status == "Succeeded"
      template: hook
    failed:
      expression: workflow.status == "Failed"
      template: hook
  templates:
  - name: main
    steps:
    - - name: step1
        template: argosay
  - name: argosay
    container: {image: argoproj/argosay:v2, command: [/bin/sh, -c], args: ["/argosay"]}
  - name: hook
    container: {image: argoproj/argosay:v2, command: [/bin/sh, -c], args: ["/argosay"]}
"#,
            &fake,
        )
        .await;
        assert_eq!(ran.record.status.phase, phase);
        let step_phase = format!("{phase:?}");
        assert_eq!(
            ran.nodes(),
            sorted(&[
                &format!("@ Steps {step_phase}"),
                &format!("@[0] StepGroup {step_phase}"),
                &format!("@[0].step1 Pod {step_phase}"),
                "@.hooks.running Pod Succeeded",
                &format!("@.hooks.{fired} Pod Succeeded"),
            ]),
            "no @.hooks.{not_fired}"
        );
        let root = &ran.node("@").children;
        for hook in ["@.hooks.running", &format!("@.hooks.{fired}")] {
            assert!(root.contains(&ran.node(hook).id), "{hook} under the root");
        }
    }
}

/// Argo's `TestTemplateLevelHooksStepSuccessVersion` and `...FailVersion`, with the hyphenated
/// `steps["step-1"]` form: each step's hooks hang under that step's node.
#[tokio::test]
async fn step_hooks_see_their_steps_status_and_hang_under_it() {
    for (exit_code, phase, fired) in [(0, "Succeeded", "succeed"), (1, "Failed", "failed")] {
        let fake = FakeRunner::default();
        fake.script("argosay", vec![Behaviour::exit(exit_code)]);
        let ran = run(
            r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: step-1
        hooks:
          running:
            expression: steps["step-1"].status == "Running"
            template: hook
          succeed:
            expression: steps["step-1"].status == "Succeeded"
            template: hook
          failed:
            expression: steps["step-1"].status == "Failed"
            template: hook
        template: argosay
  - name: argosay
    container: {image: argoproj/argosay:v2, command: [/argosay]}
  - name: hook
    container: {image: argoproj/argosay:v2, command: [/argosay]}
"#,
            &fake,
        )
        .await;
        assert_eq!(
            ran.nodes(),
            sorted(&[
                &format!("@ Steps {phase}"),
                &format!("@[0] StepGroup {phase}"),
                &format!("@[0].step-1 Pod {phase}"),
                "@[0].step-1.hooks.running Pod Succeeded",
                &format!("@[0].step-1.hooks.{fired} Pod Succeeded"),
            ])
        );
        let step = ran.node("@[0].step-1");
        let hooks: Vec<&String> = ["running", fired]
            .iter()
            .map(|h| &ran.node(&format!("@[0].step-1.hooks.{h}")).id)
            .collect();
        for id in hooks {
            assert!(step.children.contains(id), "{id} under step-1");
        }
    }
}

/// Argo's `TestTemplateLevelHooksDagHasDependencyVersion`: A fails, so only its `running` hook
/// fires, and B, omitted, fires none.
#[tokio::test]
async fn task_hooks_fire_for_tasks_that_run_and_not_for_omitted_ones() {
    let fake = FakeRunner::default();
    fake.script("fail", vec![Behaviour::exit(1)]);
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - name: A
        template: fail
        hooks:
          running: {template: hook, expression: tasks.A.status == "Running"}
          success: {template: hook, expression: tasks.A.status == "Succeeded"}
      - name: B
        template: success
        dependencies: [A]
        hooks:
          running: {template: hook, expression: tasks.B.status == "Running"}
          success: {template: hook, expression: tasks.B.status == "Succeeded"}
  - name: success
    container: {image: argoproj/argosay:v2, command: [/argosay]}
  - name: fail
    container: {image: argoproj/argosay:v2, command: [/argosay]}
  - name: hook
    container: {image: argoproj/argosay:v2, command: [/argosay]}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Failed);
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ DAG Failed",
            "@.A Pod Failed",
            "@.A.hooks.running Pod Succeeded",
            "@.B Skipped Omitted",
        ])
    );
}

/// Argo's `exit-handler-step-level.yaml`: each step's exit hook runs after it as
/// `<step>.onExit`, under the step, and the next group still hangs under the step itself.
#[tokio::test]
async fn step_exit_hooks_run_after_each_step_under_it() {
    let fake = FakeRunner::default();
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: hello1
        template: print-message
        arguments: {parameters: [{name: message, value: "hello1"}]}
        hooks: {exit: {template: exit}}
    - - name: hello2a
        template: print-message
        arguments: {parameters: [{name: message, value: "hello2a"}]}
        hooks: {exit: {template: exit}}
      - name: hello2b
        template: print-message
        arguments: {parameters: [{name: message, value: "hello2b"}]}
        hooks: {exit: {template: exit}}
  - name: exit
    container: {image: busybox, command: [echo], args: ["step cleanup"]}
  - name: print-message
    inputs: {parameters: [{name: message}]}
    container: {image: busybox, command: [echo], args: ["{{inputs.parameters.message}}"]}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Succeeded);
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].hello1 Pod Succeeded",
            "@[0].hello1.onExit Pod Succeeded",
            "@[1] StepGroup Succeeded",
            "@[1].hello2a Pod Succeeded",
            "@[1].hello2a.onExit Pod Succeeded",
            "@[1].hello2b Pod Succeeded",
            "@[1].hello2b.onExit Pod Succeeded",
        ])
    );
    let hello1 = ran.node("@[0].hello1");
    let mut children = hello1.children.clone();
    children.sort();
    let mut expected = vec![
        ran.node("@[0].hello1.onExit").id.clone(),
        ran.node("@[1]").id.clone(),
    ];
    expected.sort();
    assert_eq!(children, expected);
    let names = fake.started_names();
    let exit_at = names.iter().position(|n| n.ends_with("hello1.onExit"));
    let next_at = names.iter().position(|n| n.ends_with("hello2a"));
    assert!(
        exit_at < next_at,
        "the exit hook ran before the next group: {names:?}"
    );
}

/// Argo's `exit-handler-with-param.yaml`: the exit hook's arguments see the step's outputs.
#[tokio::test]
async fn a_step_exit_hook_gets_the_steps_outputs_as_arguments() {
    let fake = FakeRunner::default();
    let mut wrote = Behaviour::exit(0);
    wrote
        .files
        .insert("/tmp/hello_world.txt".into(), "hello world".into());
    fake.script("output", vec![wrote]);
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: step-1
        template: output
        hooks:
          exit:
            template: exit
            arguments:
              parameters:
              - name: message
                value: "{{steps.step-1.outputs.parameters.result}}"
  - name: output
    container: {image: python:alpine3.23, command: [sh, -c], args: ["echo -n hello world > /tmp/hello_world.txt"]}
    outputs:
      parameters:
      - name: result
        valueFrom: {default: "Foobar", path: /tmp/hello_world.txt}
  - name: exit
    inputs: {parameters: [{name: message}]}
    container: {image: python:alpine3.23, command: [echo, "{{inputs.parameters.message}}"]}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Succeeded);
    let exit = fake
        .started()
        .into_iter()
        .find(|s| s.argv.first().is_some_and(|a| a == "echo"))
        .expect("the exit hook ran");
    assert_eq!(exit.argv, ["echo", "hello world"]);
    assert!(
        ran.nodes()
            .contains(&"@[0].step-1.onExit Pod Succeeded".to_string())
    );
}

/// Argo's `exit-handler-dag-level.yaml` with B failing: every task's `onExit` runs, failed
/// or not, the dependents still hang under the task, and an exit hook does not change the
/// phase of its task.
#[tokio::test]
async fn task_on_exit_runs_whatever_the_tasks_phase() {
    let fake = FakeRunner::default();
    fake.script("fail", vec![Behaviour::exit(1)]);
    fake.script("exit", vec![Behaviour::exit(3)]);
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: A, onExit: exit, template: echo}
      - {name: B, depends: "A", onExit: exit, template: fail}
      - {name: C, depends: "A", onExit: exit, template: echo}
  - name: echo
    container: {image: alpine:3.23, command: [echo, hi]}
  - name: fail
    container: {image: alpine:3.23, command: [sh, -c, "exit 1"]}
  - name: exit
    container: {image: alpine:3.23, command: [echo, bye]}
"#,
        &fake,
    )
    .await;
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ DAG Failed",
            "@.A Pod Succeeded",
            "@.A.onExit Pod Failed",
            "@.B Pod Failed",
            "@.B.onExit Pod Failed",
            "@.C Pod Succeeded",
            "@.C.onExit Pod Failed",
        ])
    );
    let a = ran.node("@.A");
    for child in ["@.A.onExit", "@.B", "@.C"] {
        assert!(a.children.contains(&ran.node(child).id), "{child} under A");
    }
}

/// A skipped step completes nothing, so its exit hook does not run (Argo runs it only for a
/// node that Succeeded, Failed or Errored); an exit hook whose `expression` is false does not
/// run either, and one that cannot be evaluated is an Error node saying why.
#[tokio::test]
async fn exit_hooks_follow_their_step_and_their_expression() {
    let fake = FakeRunner::default();
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: skipped, template: echo, when: "1 == 2", onExit: echo}
      - name: never
        template: echo
        hooks: {exit: {template: echo, expression: 'steps.never.status == "Failed"'}}
      - name: broken
        template: echo
        hooks: {exit: {template: echo, expression: 'asInt("x") > 1'}}
  - name: echo
    container: {image: alpine:3.23, command: [echo, hi]}
"#,
        &fake,
    )
    .await;
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ Steps Succeeded",
            "@[0] StepGroup Succeeded",
            "@[0].broken Pod Succeeded",
            "@[0].broken.onExit Pod Error",
            "@[0].never Pod Succeeded",
            "@[0].skipped Skipped Skipped",
        ])
    );
    let message = ran.node("@[0].broken.onExit").message.clone();
    assert!(
        message.is_some_and(|m| m.contains("asInt")),
        "why it failed"
    );
}

/// `spec.hooks.exit` is the workflow's exit handler, and, naming no arguments, it gets the
/// workflow's, valued as the run has them.
#[tokio::test]
async fn the_workflow_exit_hook_gets_the_workflows_arguments() {
    let fake = FakeRunner::default();
    let ran = run(
        r#"  entrypoint: main
  arguments: {parameters: [{name: who, value: world}]}
  hooks:
    exit: {template: bye}
  templates:
  - name: main
    container: {image: alpine:3.23, command: [echo, hi]}
  - name: bye
    inputs: {parameters: [{name: who}]}
    container: {image: alpine:3.23, command: [echo, "bye {{inputs.parameters.who}}"]}
"#,
        &fake,
    )
    .await;
    assert_eq!(
        ran.nodes(),
        sorted(&["@ Pod Succeeded", "@.onExit Pod Succeeded"])
    );
    let argv: Vec<Vec<String>> = fake.started().into_iter().map(|s| s.argv).collect();
    assert_eq!(argv[1], ["echo", "bye world"]);
}

/// A hook over the step's own output cannot be evaluated while the step runs (the output does
/// not exist yet): it waits, and fires, or not, on the output once the step ended.
#[tokio::test]
async fn a_hook_over_an_output_waits_for_the_step_to_end() {
    for (coin, fired) in [("heads", true), ("tails", false)] {
        let fake = FakeRunner::default();
        fake.script("flip", vec![Behaviour::prints(coin)]);
        let ran = run(
            r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: flip
        template: flip
        hooks:
          heads: {expression: 'steps.flip.outputs.result == "heads"', template: echo}
  - name: flip
    container: {image: alpine:3.23, command: [sh, -c, "echo heads"]}
  - name: echo
    container: {image: alpine:3.23, command: [echo, hi]}
"#,
            &fake,
        )
        .await;
        let hook = "@[0].flip.hooks.heads Pod Succeeded".to_string();
        assert_eq!(
            ran.nodes().contains(&hook),
            fired,
            "{coin}: {:?}",
            ran.nodes()
        );
        assert_eq!(ran.nodes().len(), if fired { 4 } else { 3 }, "{coin}");
    }
}
