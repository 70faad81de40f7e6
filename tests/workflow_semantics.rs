//! Focused checks of the executor's Argo semantics, one feature each: parameters and invalid
//! input, loops, retries, depends, when, exit handlers, timeouts, outputs (with a private
//! /tmp per step) and the environment a step gets.

mod common;

use common::workflow::{Sandbox, expect};

const HEAD: &str =
    "apiVersion: argoproj.io/v1alpha1\nkind: Workflow\nmetadata:\n  generateName: t-\nspec:\n";

fn wf(sb: &Sandbox, body: &str) -> std::path::PathBuf {
    sb.write("wf.yaml", &format!("{HEAD}{body}"))
}

#[test]
fn parameters_override_and_invalid_input_exits_2_with_nothing_started() {
    let sb = Sandbox::new();
    let file = wf(
        &sb,
        r#"  entrypoint: main
  arguments:
    parameters:
    - {name: who}
    - {name: greeting, value: hello}
  templates:
  - name: main
    inputs:
      parameters:
      - {name: greeting}
    container: {image: busybox, command: [echo, "{{inputs.parameters.greeting}} {{workflow.parameters.who}}"]}
"#,
    );
    let missing = sb.run(&file, &[]);
    assert_eq!(missing.code, 2, "{}", missing.describe());
    assert!(missing.stderr.contains("wf.yaml:9:"), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("missing parameter `who`"),
        "{}",
        missing.stderr
    );
    let unknown = sb.run(&file, &["-p", "who=x", "-p", "whom=y"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains("declares no parameter `whom`"),
        "{}",
        unknown.stderr
    );
    assert!(!sb.state_dir().exists(), "invalid input must start nothing");

    for (body, needle) in [
        ("  entrypoint: main\n  templates: [\n", "bad.yaml:8:1"),
        (
            "  entrypoint: nope\n  templates:\n  - {name: main, container: {image: busybox, command: [true]}}\n",
            "unknown template `nope`",
        ),
        (
            "  entrypoint: main\n  templates:\n  - name: main\n    dag:\n      tasks:\n      - {name: a, template: t, dependencies: [b]}\n      - {name: b, template: t, dependencies: [a]}\n  - {name: t, container: {image: busybox, command: [true]}}\n",
            "dependency cycle",
        ),
        (
            "  entrypoint: main\n  templates:\n  - {name: main, container: {image: busybox, command: [true]}, daemon: true}\n",
            "`daemon`",
        ),
    ] {
        let run = sb.run(&sb.write("bad.yaml", &format!("{HEAD}{body}")), &[]);
        assert_eq!(run.code, 2, "{body}: {}", run.describe());
        assert!(run.stderr.contains(needle), "{body}: {}", run.stderr);
    }
    assert!(!sb.state_dir().exists());
    let ok = sb.run(&file, &["-p", "who=world", "-p", "greeting=hi"]);
    assert_eq!(ok.code, 0, "{}", ok.describe());
    assert_eq!(ok.result_of("@"), "hi world");
}

#[test]
fn loops_over_maps_and_json_from_a_previous_step() {
    let sb = Sandbox::new();
    let run = sb.run(
        &wf(
            &sb,
            r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - name: gen
        template: gen
    - - name: map
        template: echo
        arguments: {parameters: [{name: m, value: "{{item.os}}-{{item.v}}"}]}
        withItems:
        - {os: debian, v: 12}
        - {os: alpine, v: 3}
      - name: json
        template: echo
        arguments: {parameters: [{name: m, value: "got {{item}}"}]}
        withParam: "{{steps.gen.outputs.result}}"
  - name: gen
    script: {image: busybox, command: [sh], source: 'echo "[\"a\", \"b\"]"'}
  - name: echo
    inputs: {parameters: [{name: m}]}
    container: {image: busybox, command: [echo, "{{inputs.parameters.m}}"]}
"#,
        ),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(run.result_of("@[1].map(0:os:debian,v:12)"), "debian-12");
    assert_eq!(run.result_of("@[1].map(1:os:alpine,v:3)"), "alpine-3");
    assert_eq!(run.result_of("@[1].json(0:a)"), "got a");
    assert_eq!(run.result_of("@[1].json(1:b)"), "got b");
}

#[test]
fn retries_exhaust_the_limit_respect_the_policy_and_back_off() {
    let sb = Sandbox::new();
    let run = sb.run(
        &wf(
            &sb,
            r#"  entrypoint: main
  templates:
  - name: main
    steps:
    - - {name: always, template: always-fails}
      - {name: onerror, template: only-on-error, continueOn: {failed: true}}
  - name: always-fails
    retryStrategy: {limit: 2, backoff: {duration: "300ms", factor: 2}}
    container: {image: busybox, command: [sh, -c, "echo try {{retries}}; exit 3"]}
  - name: only-on-error
    retryStrategy: {limit: 3, retryPolicy: OnError}
    container: {image: busybox, command: [sh, -c, "exit 1"]}
"#,
        ),
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_eq!(
        run.nodes(),
        expect(&[
            "@ Steps Failed",
            "@[0] StepGroup Failed",
            "@[0].always Retry Failed",
            "@[0].always(0) Pod Failed",
            "@[0].always(1) Pod Failed",
            "@[0].always(2) Pod Failed",
            "@[0].onerror Retry Failed",
            "@[0].onerror(0) Pod Failed",
        ])
    );
    assert_eq!(run.result_of("@[0].always(2)"), "try 2");
    assert_eq!(run.node("@[0].always")["message"], "Error (exit code 3)");
    // Backoff: 300ms, then 600ms between attempts, measured on the recorded timestamps.
    let at = |n: &str, f: &str| {
        obsctl::workflow::clock::parse(run.node(n)[f].as_str().unwrap()).unwrap()
    };
    let gap1 = at("@[0].always(1)", "startedAt")
        .duration_since(at("@[0].always(0)", "finishedAt"))
        .unwrap();
    let gap2 = at("@[0].always(2)", "startedAt")
        .duration_since(at("@[0].always(1)", "finishedAt"))
        .unwrap();
    assert!(gap1.as_millis() >= 290, "{gap1:?}");
    assert!(gap2.as_millis() >= 590, "{gap2:?}");
}

#[test]
fn dag_dependencies_continue_on_and_when() {
    let sb = Sandbox::new();
    let run = sb.run(
        &wf(
            &sb,
            r#"  entrypoint: main
  arguments:
    parameters: [{name: n, value: "5"}]
  templates:
  - name: main
    dag:
      tasks:
      - {name: a, template: fail, continueOn: {failed: true}}
      - {name: b, template: ok, dependencies: [a]}
      - {name: c, template: ok, depends: "a.Succeeded"}
      - {name: d, template: ok, depends: "c || b", when: "{{workflow.parameters.n}} > 3"}
      - {name: e, template: ok, depends: "d", when: "{{workflow.parameters.n}} < 3"}
      - {name: f, template: ok, depends: "c.Omitted && e.Skipped"}
  - {name: ok, container: {image: busybox, command: [true]}}
  - {name: fail, container: {image: busybox, command: [sh, -c, "exit 1"]}}
"#,
        ),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    assert_eq!(
        run.nodes(),
        expect(&[
            "@ DAG Succeeded",
            "@.a Pod Failed",
            "@.b Pod Succeeded",
            "@.c Skipped Omitted",
            "@.d Pod Succeeded",
            "@.e Skipped Skipped",
            "@.f Pod Succeeded",
        ])
    );
    assert_eq!(run.node("@.e")["message"], "when '5 < 3' evaluated false");
}

#[test]
fn exit_handler_runs_on_success_and_its_failure_fails_the_workflow() {
    let sb = Sandbox::new();
    let run = sb.run(
        &wf(
            &sb,
            r#"  entrypoint: main
  onExit: bye
  templates:
  - {name: main, container: {image: busybox, command: [true]}}
  - name: bye
    container: {image: busybox, command: [sh, -c, "echo status={{workflow.status}}; exit 4"]}
"#,
        ),
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_eq!(run.phase(), "Failed");
    assert_eq!(run.result_of("@.onExit"), "status=Succeeded");
    assert_eq!(run.node("@")["phase"], "Succeeded");
}

#[test]
fn workflow_deadline_stops_running_steps() {
    let sb = Sandbox::new();
    let run = sb.run(
        &wf(
            &sb,
            r#"  entrypoint: main
  activeDeadlineSeconds: 1
  onExit: report
  templates:
  - {name: report, container: {image: busybox, command: [echo, "{{workflow.status}}"]}}
  - name: main
    steps:
    - - {name: slow, template: slow}
    - - {name: never, template: slow}
  - {name: slow, container: {image: busybox, command: [sleep, "60"]}}
"#,
        ),
        &[],
    );
    assert_eq!(run.code, 1, "{}", run.describe());
    assert_eq!(
        run.nodes(),
        expect(&[
            "@ Steps Failed",
            "@[0] StepGroup Failed",
            "@[0].slow Pod Failed",
            "@.onExit Pod Succeeded",
        ])
    );
    assert_eq!(run.result_of("@.onExit"), "Failed");
    assert_eq!(
        run.node("@[0].slow")["message"],
        "Step exceeded its deadline"
    );
    assert_eq!(run.node("@[0].slow")["outputs"]["exitCode"], "143");
}

#[test]
fn parallel_steps_each_see_their_own_tmp() {
    own_tmp_with("rewrite");
    if obsctl::workflow::runner::private_tmp_available() {
        own_tmp_with("namespace");
    } else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must allow a mount namespace per step (run as root or with CAP_SYS_ADMIN)"
        );
        eprintln!(
            "SKIPPED: the namespace half of parallel_steps_each_see_their_own_tmp: this system \
             refuses mount namespaces (not root, no CAP_SYS_ADMIN)"
        );
    }
}

fn own_tmp_with(isolation: &str) {
    let sb = Sandbox::new();
    // A barrier outside /tmp: both steps write /tmp/v, then wait until both have written,
    // so a shared /tmp would hand one of them the other's value.
    let barrier = common::dir_visible_to_steps();
    let run = sb.run(
        &wf(
            &sb,
            &format!(
                r#"  entrypoint: main
  activeDeadlineSeconds: 60
  templates:
  - name: main
    dag:
      tasks:
      - {{name: a, template: write, arguments: {{parameters: [{{name: v, value: alpha}}]}}}}
      - {{name: b, template: write, arguments: {{parameters: [{{name: v, value: beta}}]}}}}
      - {{name: c, template: missing}}
    outputs:
      parameters:
      - {{name: both, globalName: both, valueFrom: {{parameter: "{{{{tasks.a.outputs.parameters.v}}}}+{{{{tasks.b.outputs.parameters.v}}}}"}}}}
  - name: write
    inputs: {{parameters: [{{name: v}}]}}
    container:
      image: busybox
      command: [sh, -c, 'echo {{{{inputs.parameters.v}}}} > /tmp/v; touch {dir}/{{{{inputs.parameters.v}}}}; while [ ! -e {dir}/alpha ] || [ ! -e {dir}/beta ]; do sleep 0.02; done']
    outputs:
      parameters:
      - {{name: v, valueFrom: {{path: /tmp/v}}}}
  - name: missing
    container: {{image: busybox, command: [true]}}
    outputs:
      parameters:
      - {{name: fallback, valueFrom: {{path: /tmp/nothing, default: dflt}}}}
"#,
                dir = barrier.path().display()
            ),
        ),
        &["--tmp-isolation", isolation],
    );
    assert_eq!(run.code, 0, "{isolation}: {}", run.describe());
    let out = |n: &str| {
        run.node(n)["outputs"]["parameters"][0]["value"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(out("@.a"), "alpha");
    assert_eq!(out("@.b"), "beta");
    assert_eq!(out("@.c"), "dflt");
    assert_eq!(run.output("both").as_deref(), Some("alpha+beta"));
}

#[test]
fn a_missing_output_file_without_default_is_an_error() {
    let sb = Sandbox::new();
    let run = sb.run(
        &wf(
            &sb,
            "  entrypoint: main\n  templates:\n  - name: main\n    container: {image: busybox, command: [true]}\n    outputs:\n      parameters:\n      - {name: x, valueFrom: {path: /tmp/absent}}\n",
        ),
        &[],
    );
    assert_eq!(run.code, 1);
    assert_eq!(run.node("@")["phase"], "Error");
    assert!(
        run.node("@")["message"]
            .as_str()
            .unwrap()
            .contains("/tmp/absent")
    );
}

#[test]
fn a_step_gets_the_correlation_environment_and_the_root_span_as_parent() {
    let sb = Sandbox::new();
    let run = sb.run(
        &wf(
            &sb,
            r#"  entrypoint: main
  arguments:
    parameters:
    - {name: repo, value: org/app}
    - {name: pr, value: "12"}
    - {name: taskId, value: T-3}
    - {name: commitSha, value: abc123}
  templates:
  - name: main
    steps:
    - - {name: work, template: work}
  - name: work
    metadata: {labels: {agent: rex, step: implement}}
    container:
      image: busybox
      command: [sh, -c, 'echo "$AGENT|$STEP|$REPO|$PR_NUMBER|$TASK_ID|$COMMIT_SHA|$WORKFLOW_NAME|$NODE_ID|$ARGO_NODE_ID|$ARGO_WORKFLOW_NAME|$OTEL_SERVICE_NAME|$TRACEPARENT"']
"#,
        ),
        &[],
    );
    assert_eq!(run.code, 0, "{}", run.describe());
    let record: serde_json::Value = serde_json::from_slice(
        &std::fs::read(sb.state_dir().join(format!("{}.json", run.name()))).unwrap(),
    )
    .unwrap();
    let node = run.node("@[0].work");
    let id = node["id"].as_str().unwrap();
    let wf_name = run.name();
    let expected = format!(
        "rex|implement|org/app|12|T-3|abc123|{wf_name}|{id}|{id}|{wf_name}|agent-steps|00-{}-{}-01",
        record["traceId"].as_str().unwrap(),
        record["rootSpanId"].as_str().unwrap()
    );
    assert_eq!(run.result_of("@[0].work"), expected);
}

#[test]
fn kubernetes_only_fields_and_memoize_are_accepted_and_named_once_under_v() {
    let sb = Sandbox::new();
    let file = wf(
        &sb,
        r#"  entrypoint: main
  nodeSelector: {disk: ssd}
  podGC: {strategy: OnPodCompletion}
  templates:
  - name: main
    steps:
    - - {name: a, template: t}
      - {name: b, template: t}
  - name: t
    memoize: {key: "{{workflow.name}}", maxAge: 1h, cache: {configMap: {name: cache}}}
    nodeSelector: {disk: ssd}
    tolerations: [{key: gpu, operator: Exists}]
    container: {image: busybox, command: [echo, hi], securityContext: {runAsNonRoot: true}}
"#,
    );
    let run = sb.run(&file, &["-v"]);
    assert_eq!(run.code, 0, "{}", run.describe());
    let note = "ignored, as only a Kubernetes scheduler acts on them: nodeSelector, podGC, \
                securityContext, tolerations";
    assert_eq!(run.stderr.matches(note).count(), 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "memoize is accepted but nothing is cached locally; these templates always run: t"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(run.nodes().len(), 4, "both steps ran: {}", run.describe());
    let quiet = sb.run(&file, &[]);
    assert_eq!(quiet.code, 0, "{}", quiet.describe());
    assert!(
        !quiet.stderr.contains("ignored, as only"),
        "{}",
        quiet.stderr
    );
}
