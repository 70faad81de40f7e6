//! The executor's Argo semantics, in process against a [`FakeRunner`]: node names, types and
//! phases, retries, `depends`, `continueOn`, `when`, timeouts, parallelism, the exit handler and
//! resume, each in milliseconds rather than through `obsctl run`.

use std::path::Path;

use super::RunConfig;
use super::fake::{Behaviour, FakeRunner};
use crate::conventions::env::OBSCTL_REPLACES;
use crate::otlp::TraceContext;
use crate::workflow::load;
use crate::workflow::record::{NodeStatus, NodeType, Phase, RecordStore, RunRecord};
use crate::workflow::telemetry::OtelConfig;

const HEAD: &str =
    "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  name: wf\nspec:\n";

/// A finished run and the directory its record lives in.
struct Ran {
    record: RunRecord,
    _dir: tempfile::TempDir,
}

fn config(dir: &Path) -> RunConfig {
    RunConfig {
        store: RecordStore::new(dir.join("runs")),
        otel: OtelConfig {
            endpoint: "http://127.0.0.1:9".into(),
            protocol: "grpc".into(),
            sampler: "parentbased_traceidratio".into(),
            sampler_arg: "1.0".into(),
            environment: "test".into(),
        },
        namespace: "default".into(),
    }
}

fn loaded(body: &str) -> load::LoadedWorkflow {
    load::parse(Path::new("wf.yaml"), &format!("{HEAD}{body}"), &[]).expect("valid workflow")
}

async fn run_in(dir: &Path, body: &str, fake: &FakeRunner, record: Option<RunRecord>) -> RunRecord {
    let loaded = loaded(body);
    let record = record.unwrap_or_else(|| super::new_record(&loaded, "default"));
    super::walk_for_tests(loaded, record, fake.clone(), config(dir))
        .await
        .expect("the run ends")
}

async fn run(body: &str, fake: &FakeRunner) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let record = run_in(dir.path(), body, fake, None).await;
    Ran { record, _dir: dir }
}

impl Ran {
    /// `(name with the workflow name as @, type, phase)`, sorted.
    fn nodes(&self) -> Vec<String> {
        nodes(&self.record)
    }

    fn node(&self, short: &str) -> &NodeStatus {
        node(&self.record, short)
    }
}

fn nodes(record: &RunRecord) -> Vec<String> {
    let mut out: Vec<String> = record
        .status
        .nodes
        .values()
        .map(|n| {
            format!(
                "{} {:?} {:?}",
                n.name.replacen(&record.name, "@", 1),
                n.node_type,
                n.phase
            )
        })
        .collect();
    out.sort();
    out
}

fn node<'a>(record: &'a RunRecord, short: &str) -> &'a NodeStatus {
    let full = short.replacen('@', &record.name, 1);
    record
        .status
        .nodes
        .values()
        .find(|n| n.name == full)
        .unwrap_or_else(|| panic!("no node {full}: {:?}", nodes(record)))
}

fn sorted(lines: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn steps_name_link_and_feed_results_forward() {
    let fake = FakeRunner::default();
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: a, template: say, arguments: {parameters: [{name: m, value: one}]}}
      - {name: b, template: say, arguments: {parameters: [{name: m, value: two}]}}
    - - {name: c, template: say, arguments: {parameters: [{name: m, value: "{{steps.a.outputs.result}}+{{steps.b.outputs.result}}"}]}}
  - name: say
    inputs: {parameters: [{name: m}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.m}}"]}
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
            "@[0].a Pod Succeeded",
            "@[0].b Pod Succeeded",
            "@[1] StepGroup Succeeded",
            "@[1].c Pod Succeeded",
        ])
    );
    let c = ran.node("@[1].c");
    assert_eq!(
        c.outputs.as_ref().unwrap().result.as_deref(),
        Some("one+two")
    );
    assert_eq!(c.id, crate::workflow::vars::node_id("wf", "wf[1].c"));
    // Argo's links: the steps node owns its first group, each step of a group owns the next.
    let group1 = ran.node("@[1]").id.clone();
    assert_eq!(ran.node("@").children, [ran.node("@[0]").id.clone()]);
    assert!(ran.node("@[0].a").children.contains(&group1));
    assert!(ran.node("@[0].b").children.contains(&group1));
    assert_eq!(c.boundary_id.as_deref(), Some("wf"));
}

#[tokio::test]
async fn retries_until_success_link_each_attempt_to_the_one_it_replaces() {
    let fake = FakeRunner::default();
    fake.script(
        "flaky",
        vec![Behaviour::exit(1), Behaviour::exit(2), Behaviour::exit(0)],
    );
    let ran = run(
        r#"  entrypoint: flaky
  templates:
  - name: flaky
    retryStrategy: {limit: 3, backoff: {duration: 1ms}}
    container: {image: busybox, command: [work]}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Succeeded);
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ Retry Succeeded",
            "@(0) Pod Failed",
            "@(1) Pod Failed",
            "@(2) Pod Succeeded",
        ])
    );
    assert_eq!(
        ran.node("@(1)").message.as_deref(),
        Some("Error (exit code 2)")
    );
    let started = fake.started();
    assert_eq!(started.len(), 3);
    let replaces = |i: usize| {
        started[i]
            .env
            .iter()
            .find(|(k, _)| k == OBSCTL_REPLACES)
            .map(|(_, v)| TraceContext::parse_traceparent(v).unwrap().span_id)
    };
    assert_eq!(replaces(0), None, "the first attempt replaces nothing");
    for (i, prev) in [(1, "@(0)"), (2, "@(1)")] {
        let span = ran.node(prev).telemetry.as_ref().unwrap().span_id;
        assert_eq!(replaces(i), Some(span), "attempt {i} links to {prev}");
    }
}

#[tokio::test]
async fn retries_stop_at_the_limit_and_follow_the_policy() {
    let fake = FakeRunner::default();
    fake.script("fails", vec![Behaviour::exit(1)]);
    let limited = run(
        r#"  entrypoint: fails
  templates:
  - name: fails
    retryStrategy: {limit: "1"}
    container: {image: busybox, command: [work]}
"#,
        &fake,
    )
    .await;
    assert_eq!(limited.record.status.phase, Phase::Failed);
    assert_eq!(fake.started().len(), 2, "one try and one retry");

    let fake = FakeRunner::default();
    fake.script("fails", vec![Behaviour::exit(1)]);
    let on_error = run(
        r#"  entrypoint: fails
  templates:
  - name: fails
    retryStrategy: {limit: 5, retryPolicy: OnError}
    container: {image: busybox, command: [work]}
"#,
        &fake,
    )
    .await;
    assert_eq!(on_error.record.status.phase, Phase::Failed);
    assert_eq!(fake.started().len(), 1, "OnError does not retry a failure");
}

#[tokio::test]
async fn depends_and_continue_on_decide_what_runs_and_the_dag_phase() {
    let fake = FakeRunner::default();
    fake.script("bad", vec![Behaviour::exit(1)]);
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: A, template: bad, continueOn: {failed: true}}
      - {name: B, template: ok, depends: A.Failed}
      - {name: D, template: ok, depends: A}
  - {name: ok, container: {image: busybox, command: [work]}}
  - {name: bad, container: {image: busybox, command: [work]}}
"#,
        &fake,
    )
    .await;
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ DAG Succeeded",
            "@.A Pod Failed",
            "@.B Pod Succeeded",
            "@.D Pod Succeeded",
        ])
    );
    assert_eq!(ran.record.status.phase, Phase::Succeeded);
    let a = ran.node("@.A").id.clone();
    assert!(ran.node("@").children.contains(&a));
    assert!(ran.node("@.A").children.contains(&ran.node("@.B").id));
    assert!(ran.node("@.A").children.contains(&ran.node("@.D").id));

    let fake = FakeRunner::default();
    fake.script("bad", vec![Behaviour::exit(1)]);
    let failed = run(
        r#"  entrypoint: main
  templates:
  - name: main
    dag:
      tasks:
      - {name: A, template: bad}
      - {name: B, template: ok, depends: A}
  - {name: ok, container: {image: busybox, command: [work]}}
  - {name: bad, container: {image: busybox, command: [work]}}
"#,
        &fake,
    )
    .await;
    assert_eq!(
        failed.nodes(),
        sorted(&["@ DAG Failed", "@.A Pod Failed", "@.B Skipped Omitted"])
    );
    assert_eq!(fake.started_names(), ["wf.A"]);
}

#[tokio::test]
async fn when_skips_and_a_failed_step_fails_its_group_unless_it_continues() {
    let fake = FakeRunner::default();
    fake.script("bad", vec![Behaviour::exit(3)]);
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: skip, template: ok, when: "heads == tails"}
      - {name: tolerated, template: bad, continueOn: {failed: true}}
    - - {name: fatal, template: bad}
    - - {name: never, template: ok}
  - {name: ok, container: {image: busybox, command: [work]}}
  - {name: bad, container: {image: busybox, command: [work]}}
"#,
        &fake,
    )
    .await;
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ Steps Failed",
            "@[0] StepGroup Succeeded",
            "@[0].skip Skipped Skipped",
            "@[0].tolerated Pod Failed",
            "@[1] StepGroup Failed",
            "@[1].fatal Pod Failed",
        ])
    );
    assert_eq!(
        ran.node("@[0].skip").message.as_deref(),
        Some("when 'heads == tails' evaluated false")
    );
}

#[tokio::test]
async fn a_timeout_stops_the_step_and_fails_its_node() {
    let fake = FakeRunner::default();
    fake.script("slow", vec![Behaviour::hangs()]);
    let started = std::time::Instant::now();
    let ran = run(
        r#"  entrypoint: slow
  templates:
  - name: slow
    timeout: 100ms
    container: {image: busybox, command: [work]}
"#,
        &fake,
    )
    .await;
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
    assert_eq!(ran.record.status.phase, Phase::Failed);
    assert_eq!(
        ran.node("@").message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
    assert_eq!(
        ran.node("@").outputs.as_ref().unwrap().exit_code.as_deref(),
        Some("143")
    );
}

#[tokio::test]
async fn parallelism_bounds_the_pods_running_at_once() {
    let fake = FakeRunner::default();
    fake.script(
        "work",
        vec![Behaviour {
            runs_for: Some(std::time::Duration::from_millis(20)),
            ..Behaviour::default()
        }],
    );
    let ran = run(
        r#"  entrypoint: main
  parallelism: 2
  templates:
  - name: main
    steps:
    - - {name: s, template: work, withSequence: {count: "6"}}
  - {name: work, container: {image: busybox, command: [work]}}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Succeeded);
    assert_eq!(fake.started().len(), 6);
    assert_eq!(fake.most_at_once(), 2);
}

#[tokio::test]
async fn the_exit_handler_sees_the_status_and_a_failing_handler_fails_the_run() {
    let fake = FakeRunner::default();
    fake.script("bad", vec![Behaviour::exit(1)]);
    let ran = run(
        r#"  entrypoint: bad
  onExit: report
  templates:
  - {name: bad, container: {image: busybox, command: [work]}}
  - {name: report, container: {image: busybox, command: [echo, "{{workflow.status}}"]}}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Failed);
    let handler = ran.node("@.onExit");
    assert_eq!(handler.phase, Phase::Succeeded);
    assert_eq!(
        handler.outputs.as_ref().unwrap().result.as_deref(),
        Some("Failed")
    );

    let fake = FakeRunner::default();
    fake.script("bad", vec![Behaviour::exit(1)]);
    let failing_handler = run(
        r#"  entrypoint: ok
  onExit: bad
  templates:
  - {name: ok, container: {image: busybox, command: [work]}}
  - {name: bad, container: {image: busybox, command: [work]}}
"#,
        &fake,
    )
    .await;
    assert_eq!(failing_handler.record.status.phase, Phase::Failed);
}

#[tokio::test]
async fn resume_reuses_finished_nodes_and_reruns_the_interrupted_one() {
    let body = r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: a, template: say}
    - - {name: b, template: say}
  - {name: say, container: {image: busybox, command: [echo, hi]}}
"#;
    let dir = tempfile::tempdir().unwrap();
    let first = FakeRunner::default();
    let mut record = run_in(dir.path(), body, &first, None).await;
    // As a `kill -9` during b would have left it: b running (no shim, so no span), the run too.
    let b = node(&record, "@[1].b").id.clone();
    let a_before = node(&record, "@[0].a").clone();
    record.status.phase = Phase::Running;
    record.status.finished_at = None;
    let b_node = record.status.nodes.get_mut(&b).unwrap();
    b_node.phase = Phase::Running;
    b_node.finished_at = None;
    b_node.telemetry = None;
    let again = FakeRunner::default();
    let resumed = run_in(dir.path(), body, &again, Some(record)).await;
    assert_eq!(resumed.status.phase, Phase::Succeeded);
    assert_eq!(again.started_names(), ["wf[1].b"], "a is not run again");
    assert_eq!(node(&resumed, "@[0].a"), &a_before);
    let b_after = node(&resumed, "@[1].b");
    assert_eq!(b_after.phase, Phase::Succeeded);
    assert_eq!(b_after.telemetry.as_ref().unwrap().attempt, 1);
}

#[tokio::test]
async fn a_loop_over_a_previous_steps_json_names_each_item_and_aggregates_results() {
    let fake = FakeRunner::default();
    fake.script("gen", vec![Behaviour::prints("[\"x\", \"y\"]\n")]);
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: gen, template: gen}
    - - {name: each, template: say, withParam: "{{steps.gen.outputs.result}}", arguments: {parameters: [{name: m, value: "{{item}}"}]}}
    - - {name: all, template: say, arguments: {parameters: [{name: m, value: "{{steps.each.outputs.result}}"}]}}
  - {name: gen, container: {image: busybox, command: [gen]}}
  - name: say
    inputs: {parameters: [{name: m}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.m}}"]}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Succeeded);
    assert_eq!(ran.node("@[1].each(0:x)").display_name, "each(0:x)");
    assert_eq!(ran.node("@[1].each(1:y)").phase, Phase::Succeeded);
    let all = ran.node("@[2].all");
    assert_eq!(
        all.outputs.as_ref().unwrap().result.as_deref(),
        Some(r#"["x","y"]"#)
    );
}

#[tokio::test]
async fn a_templated_limit_or_timeout_that_does_not_resolve_is_an_error_node_not_a_default() {
    let fake = FakeRunner::default();
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: retried, template: retried, arguments: {parameters: [{name: n, value: many}]}}
      - {name: timed, template: timed, arguments: {parameters: [{name: t, value: soon}]}}
  - name: retried
    inputs: {parameters: [{name: n}]}
    retryStrategy: {limit: "{{inputs.parameters.n}}"}
    container: {image: busybox, command: [work]}
  - name: timed
    inputs: {parameters: [{name: t}]}
    timeout: "{{inputs.parameters.t}}"
    container: {image: busybox, command: [work]}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Failed);
    let retried = ran.node("@[0].retried");
    assert_eq!(retried.phase, Phase::Error);
    assert_eq!(
        retried.message.as_deref(),
        Some("retryStrategy.limit: expected a whole number, got \"many\"")
    );
    let timed = ran.node("@[0].timed");
    assert_eq!(timed.phase, Phase::Error);
    assert_eq!(
        timed.message.as_deref(),
        Some("timeout: expected a duration such as 30s or 2m, got \"soon\"")
    );
    assert!(fake.started().is_empty(), "{:?}", fake.started_names());
}

#[tokio::test]
async fn when_matches_a_previous_result_against_a_regular_expression() {
    let fake = FakeRunner::default();
    fake.script("flip", vec![Behaviour::prints("heads\n")]);
    let ran = run(
        r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: flip, template: flip}
    - - {name: heads, template: ok, when: "{{steps.flip.outputs.result}} =~ hea"}
      - {name: tails, template: ok, when: "{{steps.flip.outputs.result}} =~ ^tai"}
      - {name: not-tails, template: ok, when: "{{steps.flip.outputs.result}} !~ ^tai"}
  - {name: flip, container: {image: busybox, command: [flip]}}
  - {name: ok, container: {image: busybox, command: [work]}}
"#,
        &fake,
    )
    .await;
    assert_eq!(ran.record.status.phase, Phase::Succeeded);
    assert_eq!(ran.node("@[1].heads").phase, Phase::Succeeded);
    assert_eq!(ran.node("@[1].tails").phase, Phase::Skipped);
    assert_eq!(ran.node("@[1].not-tails").phase, Phase::Succeeded);
}

/// Argo's `dag-targets.yaml`: the target comes from a parameter, and only it and the tasks it
/// depends on run.
const DAG_TARGETS: &str = r#"  entrypoint: main
  arguments:
    parameters:
    - {name: target, value: E}
  templates:
  - name: main
    dag:
      target: "{{workflow.parameters.target}}"
      tasks:
      - {name: A, template: echo, arguments: {parameters: [{name: message, value: A}]}}
      - {name: B, depends: A, template: echo, arguments: {parameters: [{name: message, value: B}]}}
      - {name: C, depends: A, template: echo, arguments: {parameters: [{name: message, value: C}]}}
      - {name: D, depends: B && C, template: echo, arguments: {parameters: [{name: message, value: D}]}}
      - {name: E, depends: C, template: echo, arguments: {parameters: [{name: message, value: E}]}}
  - name: echo
    inputs: {parameters: [{name: message}]}
    container: {image: alpine:3.7, command: [echo, "{{inputs.parameters.message}}"]}
"#;

#[tokio::test]
async fn a_templated_dag_target_runs_only_the_targets_and_what_they_depend_on() {
    let fake = FakeRunner::default();
    let ran = run(DAG_TARGETS, &fake).await;
    assert_eq!(
        ran.nodes(),
        sorted(&[
            "@ DAG Succeeded",
            "@.A Pod Succeeded",
            "@.C Pod Succeeded",
            "@.E Pod Succeeded",
        ])
    );

    let fake = FakeRunner::default();
    let unknown = DAG_TARGETS.replace("value: E}", "value: Z}");
    let ran = run(&unknown, &fake).await;
    assert_eq!(ran.nodes(), sorted(&["@ DAG Error"]));
    assert_eq!(
        ran.node("@").message.as_deref(),
        Some("dag.target: unknown task `Z`")
    );
    assert!(fake.started().is_empty());
}

/// Argo's `template-defaults.yaml`, with a step that never ends: every attempt times out.
#[tokio::test]
async fn template_defaults_give_every_template_their_timeout_and_retries() {
    let fake = FakeRunner::default();
    fake.script("main", vec![Behaviour::hangs()]);
    let ran = run(
        r#"  entrypoint: main
  templateDefaults:
    timeout: 50ms
    retryStrategy:
      limit: 1
  templates:
  - name: main
    container: {image: docker/whalesay:latest}
"#,
        &fake,
    )
    .await;
    assert_eq!(
        ran.nodes(),
        sorted(&["@ Retry Failed", "@(0) Pod Failed", "@(1) Pod Failed"])
    );
    assert_eq!(
        ran.node("@(1)").message.as_deref(),
        Some("Pod was active on the node longer than the specified deadline")
    );
}

/// Argo's `suspend-template.yaml` with a duration (one without is refused when loaded).
#[tokio::test]
async fn a_suspend_with_a_duration_waits_then_succeeds() {
    let fake = FakeRunner::default();
    let started = std::time::Instant::now();
    let ran = run(
        r#"  entrypoint: suspend
  templates:
  - name: suspend
    steps:
    - - {name: build, template: whalesay}
    - - {name: delay, template: delay}
    - - {name: release, template: whalesay}
  - name: delay
    suspend: {duration: "0.2"}
  - {name: whalesay, container: {image: docker/whalesay, command: [cowsay, hello]}}
"#,
        &fake,
    )
    .await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(200));
    assert_eq!(ran.record.status.phase, Phase::Succeeded);
    assert_eq!(ran.node("@[1].delay").node_type, NodeType::Suspend);
    assert_eq!(ran.node("@[1].delay").phase, Phase::Succeeded);
    assert_eq!(fake.started_names(), ["wf[0].build", "wf[2].release"]);
}

mod expressions;
mod fail_fast;
mod hooks;
