//! `obsctl verify` and `obsctl trace` as a user runs them: the real binary, a run record on disk,
//! and a scripted server standing in for Tempo, Prometheus and Loki (which cannot run here),
//! answering with bodies shaped exactly like theirs. Outputs are parsed back (JSON, JUnit XML) or
//! compared line by line (the waterfall).

mod common;

use assert_cmd::Command;
use common::verify::scenario::Scenario;
use common::verify::{Canned, FakeBackend};

struct Env {
    fake: FakeBackend,
    home: tempfile::TempDir,
}

impl Env {
    fn new(scenario: &Scenario) -> Self {
        let fake = FakeBackend::start();
        scenario.serve(&fake);
        let home = tempfile::tempdir().unwrap();
        scenario.save(&home.path().join("runs"));
        Self { fake, home }
    }

    fn state_dir(&self) -> String {
        self.home.path().join("runs").display().to_string()
    }

    /// `obsctl <args>` with URL flags pointing at the stand-in, isolated state and no colour.
    fn obsctl(&self, args: &[&str]) -> Command {
        let mut cmd = self.bare(args);
        let url = self.fake.url();
        cmd.args([
            "--tempo-url",
            &url,
            "--prometheus-url",
            &url,
            "--loki-url",
            &url,
        ]);
        cmd
    }

    fn bare(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_obsctl"));
        cmd.args(args)
            .args(["--state-dir", &self.state_dir()])
            .env("XDG_STATE_HOME", self.home.path().join("xdg"))
            .env("NO_COLOR", "1")
            .env_remove("CI");
        cmd
    }
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

#[test]
fn verify_a_clean_run_prints_the_table_and_exits_0() {
    let env = Env::new(&Scenario::clean("agent-pipeline-abc12"));
    let out = env.obsctl(&["verify", "--timeout", "5s"]).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.starts_with("verifying agent-pipeline-abc12 (task T-1, Succeeded)\n"),
        "{text}"
    );
    for check in [
        "span-coverage",
        "no-orphans",
        "counter-parity",
        "exemplars",
        "log-correlation",
        "workflow-outputs",
        "cardinality",
    ] {
        let row = text
            .lines()
            .find(|l| l.contains(&format!("| {check} ")))
            .unwrap_or_else(|| panic!("no row for {check}:\n{text}"));
        assert!(row.contains("| PASS "), "{row}");
    }
    assert!(
        text.contains(
            "4 of 4 step attempts of sampled runs have a correct span (100.0%, threshold 95.0%)"
        ),
        "{text}"
    );
    assert!(
        text.contains("over 1 poll(s): every backend held the expected data"),
        "{text}"
    );
    assert!(text.ends_with("verify: all 7 checks passed\n"), "{text}");
    assert!(!text.contains('\x1b'), "no colour when NO_COLOR is set");
}

#[test]
fn verify_json_output_parses_back_with_every_number() {
    let mut s = Scenario::clean("wf-json");
    s.success[0].value = 2.0; // a counter sent twice
    let env = Env::new(&s);
    s.serve(&env.fake);
    let out = env
        .obsctl(&[
            "verify",
            "--run",
            "wf-json",
            "--output",
            "json",
            "--timeout",
            "2s",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], false);
    assert_eq!(report["runs"][0]["name"], "wf-json");
    assert_eq!(report["runs"][0]["taskId"], "T-1");
    assert_eq!(
        report["runs"][0]["traceId"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(report["thresholds"]["minCoverage"], 0.95);
    assert_eq!(report["wait"]["complete"], true);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 7);
    let parity = checks
        .iter()
        .find(|c| c["check"] == "counter-parity")
        .unwrap();
    assert_eq!(parity["passed"], false);
    assert_eq!(parity["expected"], 8);
    assert_eq!(parity["found"], 9);
    assert_eq!(
        parity["duplicated"][0],
        "agent_step_success_total clippy/verify: expected 1, found 2"
    );
    for c in checks.iter().filter(|c| c["check"] != "counter-parity") {
        assert_eq!(c["passed"], true, "{c}");
    }
    assert!(stderr(&out).contains("1 of 7 checks failed"));
}

#[test]
fn verify_junit_output_has_one_testcase_per_check_and_a_failure_with_numbers() {
    let mut s = Scenario::clean("wf-junit");
    let dropped = s.steps[3].span_id;
    s.spans.retain(|sp| sp.span_id != dropped);
    let env = Env::new(&s);
    let out = env
        .obsctl(&["verify", "--output", "junit", "--timeout", "300ms"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let xml = stdout(&out);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    assert_eq!(root.attribute("tests"), Some("7"));
    assert_eq!(root.attribute("failures"), Some("2"));
    let suite = root
        .children()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("name"), Some("obsctl verify: wf-junit"));
    let cases: Vec<_> = suite
        .children()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), 7);
    let names: Vec<_> = cases.iter().map(|c| c.attribute("name").unwrap()).collect();
    assert_eq!(
        names,
        [
            "span-coverage",
            "no-orphans",
            "counter-parity",
            "exemplars",
            "log-correlation",
            "workflow-outputs",
            "cardinality"
        ]
    );
    let failure = cases[0]
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("span-coverage failed");
    let message = failure.attribute("message").unwrap();
    assert!(message.contains("3 of 4 step attempts"), "{message}");
    assert!(
        message.contains("expected=4 found=3 missing=1"),
        "{message}"
    );
    assert!(
        failure
            .text()
            .unwrap()
            .contains("missing: deploy/preview #0")
    );
    assert!(cases[1].children().all(|n| !n.has_tag_name("failure")));
    // The wait timed out waiting for the dropped span: said in system-err.
    let err = suite
        .children()
        .find(|n| n.has_tag_name("system-err"))
        .unwrap();
    assert!(
        err.text()
            .unwrap()
            .contains("Tempo: 1 of 4 step spans not found (deploy/preview)")
    );
    let polls: u32 = suite
        .descendants()
        .find(|n| n.attribute("name") == Some("polls"))
        .and_then(|n| n.attribute("value"))
        .unwrap()
        .parse()
        .unwrap();
    assert!(polls >= 2, "it kept polling until the timeout: {polls}");
}

#[test]
fn verify_without_any_backend_tells_the_user_to_start_one_and_exits_1() {
    let env = Env::new(&Scenario::clean("wf"));
    let out = env.bare(&["verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("no Tempo URL"), "{err}");
    assert!(
        err.contains("obsctl up") && err.contains("obsctl serve"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn verify_reads_backend_urls_from_the_endpoints_file() {
    let env = Env::new(&Scenario::clean("wf"));
    let addr = env.fake.addr.to_string();
    let endpoints =
        obsctl::stack::endpoints::Endpoints::embedded("127.0.0.1:1", "127.0.0.1:2", &addr);
    endpoints
        .save(&env.home.path().join("xdg/obsctl/endpoints.json"))
        .unwrap();
    let out = env.bare(&["verify", "--timeout", "5s"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.fake.count("/api/v1/query") > 0);
}

#[test]
fn verify_unreachable_backend_unknown_run_and_bad_threshold_exit_1() {
    let env = Env::new(&Scenario::clean("wf"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://127.0.0.1:{port}");
    let out = env
        .bare(&[
            "verify",
            "--tempo-url",
            &dead,
            "--prometheus-url",
            &dead,
            "--loki-url",
            &dead,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("unreachable"), "{}", stderr(&out));

    let out = env.obsctl(&["verify", "--run", "nope"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(r#"no recorded run named "nope""#),
        "{}",
        stderr(&out)
    );

    let out = env
        .obsctl(&["verify", "--min-coverage", "1.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--min-coverage must be between 0 and 1"));
}

fn expected_waterfall(url: &str) -> String {
    format!(
        "task T-1
  run wf-trace (Succeeded)

trace 4bf92f3577b34da6a3ce929d0e0e4736  6000 ms  5 span(s)
wf-trace                             |##############################|    6000.0 ms  UNSET
  clippy/verify                      |##########                    |    2000.0 ms  OK     node=wf-trace-1000 exit=0
      +0.000s clippy/verify: step started
      +2.000s clippy/verify: step finished
  tests/unit                         |          #####               |    1000.0 ms  ERROR  node=wf-trace-1001 exit=1 \"exit code 1\"
      +2.000s tests/unit: step started
      +3.000s tests/unit: step finished
  tests/unit                         |               ##########     |    2000.0 ms  OK     node=wf-trace-1002 exit=0
      +3.000s tests/unit: step started
      +5.000s tests/unit: step finished
  deploy/preview                     |                         #####|    1000.0 ms  OK     node=wf-trace-1003 exit=0
      +5.000s deploy/preview: step started
      +6.000s deploy/preview: step finished

links:
  trace 4bf92f3577b34da6a3ce929d0e0e4736  {url}/api/traces/4bf92f3577b34da6a3ce929d0e0e4736
  prHtmlUrl                               https://github.com/acme/widgets/pull/42
  actionsRunUrl                           https://github.com/acme/widgets/actions/runs/777
  previewUrl                              https://pr-42.preview.example.com/
"
    )
}

#[test]
fn trace_prints_the_waterfall_with_logs_and_links_line_by_line() {
    let s = Scenario::clean("wf-trace");
    let env = Env::new(&s);
    let out = env.obsctl(&["trace", "T-1", "--logs"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let want = expected_waterfall(&env.fake.url());
    for (i, (got, want)) in text.lines().zip(want.lines()).enumerate() {
        assert_eq!(got, want, "line {}:\n{text}", i + 1);
    }
    assert_eq!(text.lines().count(), want.lines().count(), "{text}");
    // The step logs were selected by taskId.
    let loki = env
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/loki/api/v1/query_range")
        .unwrap();
    assert_eq!(
        loki.query["query"],
        r#"{service_name="agent-steps"} | taskId="T-1""#
    );
}

#[test]
fn trace_json_is_the_structured_tree() {
    let s = Scenario::clean("wf-json-tree");
    let env = Env::new(&s);
    let out = env.obsctl(&["trace", "T-1", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let view: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(view["taskId"], "T-1");
    let tree = &view["traces"][0];
    assert_eq!(tree["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(tree["spanCount"], 5);
    let root = &tree["roots"][0];
    assert_eq!(root["name"], "wf-json-tree");
    let children = root["children"].as_array().unwrap();
    let names: Vec<_> = children
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "clippy/verify",
            "tests/unit",
            "tests/unit",
            "deploy/preview"
        ]
    );
    assert_eq!(children[1]["status"], "error");
    assert_eq!(children[1]["durationMs"], 1000.0);
    assert_eq!(children[1]["attributes"]["taskId"], "T-1");
    assert!(children[1].get("logs").is_none(), "no logs without --logs");
    assert_eq!(view["links"][1]["label"], "prHtmlUrl");
}

#[test]
fn trace_of_an_unknown_task_says_so_and_exits_1() {
    let env = Env::new(&Scenario::clean("wf"));
    env.fake.script(
        "/api/search",
        vec![Canned::ok(r#"{"traces":[],"metrics":{}}"#)],
    );
    let out = env.obsctl(&["trace", "T-404"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains(r#"unknown task "T-404""#), "{err}");
    assert!(out.stdout.is_empty());
    let search = env
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == "/api/search")
        .expect("Tempo was searched for the task");
    assert_eq!(search.query["tags"], r#"taskId="T-404""#);
}

#[test]
fn trace_links_to_grafana_explore_when_the_stack_has_grafana() {
    let env = Env::new(&Scenario::clean("wf"));
    let addr = env.fake.url();
    let mut endpoints =
        obsctl::stack::endpoints::Endpoints::embedded("127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3");
    endpoints.tempo = addr.clone();
    endpoints.loki = addr.clone();
    endpoints.prometheus = addr;
    endpoints.grafana = Some("http://127.0.0.1:3000".into());
    endpoints
        .save(&env.home.path().join("xdg/obsctl/endpoints.json"))
        .unwrap();
    let out = env.bare(&["trace", "T-1"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let link = text
        .lines()
        .find(|l| l.starts_with("  trace 4bf92f3577b34da6a3ce929d0e0e4736 "))
        .unwrap();
    assert!(
        link.contains("http://127.0.0.1:3000/explore?orgId=1&left="),
        "{link}"
    );
    assert!(
        link.contains("4bf92f3577b34da6a3ce929d0e0e4736%22"),
        "{link}"
    );
}

#[test]
fn credentials_in_backend_urls_are_used_but_never_printed() {
    let env = Env::new(&Scenario::clean("wf"));
    let with_creds = format!("http://admin:s3cret@{}", env.fake.addr);
    let out = env
        .bare(&["verify", "--output", "json", "--timeout", "5s"])
        .args(["--tempo-url", &with_creds])
        .args([
            "--prometheus-url",
            &env.fake.url(),
            "--loki-url",
            &env.fake.url(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        !text.contains("s3cret") && !text.contains("admin"),
        "{text}"
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["backends"]["tempo"], env.fake.url());
    let tempo = env
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path.starts_with("/api/traces/"))
        .unwrap();
    // Basic auth from the URL's user info: "admin:s3cret" in base64.
    assert_eq!(tempo.headers["authorization"], "Basic YWRtaW46czNjcmV0");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dead = format!("http://admin:s3cret@127.0.0.1:{port}");
    let out = env
        .bare(&[
            "verify",
            "--tempo-url",
            &dead,
            "--prometheus-url",
            &dead,
            "--loki-url",
            &dead,
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("unreachable"), "{err}");
    assert!(!err.contains("s3cret"), "{err}");
}

/// A run of a workflow that declares no link outputs (burst.yaml) and set none.
fn without_links(name: &str) -> Scenario {
    let mut s = Scenario::clean(name);
    s.record.workflow_file = "workflows/burst.yaml".into();
    s.record.status.outputs = None;
    s
}

#[test]
fn workflow_outputs_is_not_applicable_without_declared_links_in_every_format() {
    let env = Env::new(&without_links("burst-abc12"));
    let out = env.obsctl(&["verify", "--timeout", "5s"]).output().unwrap();
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    let row = text
        .lines()
        .find(|l| l.contains("| workflow-outputs "))
        .unwrap_or_else(|| panic!("no workflow-outputs row:\n{text}"));
    assert!(row.contains("| N/A "), "{row}");
    assert!(
        text.ends_with("verify: 6 checks passed, 1 not applicable\n"),
        "{text}"
    );

    let out = env
        .obsctl(&["verify", "--output", "json", "--timeout", "5s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["passed"], true);
    let outputs = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "workflow-outputs")
        .unwrap();
    assert_eq!(outputs["status"], "not-applicable");
    assert_eq!(outputs["passed"], false);

    let out = env
        .obsctl(&["verify", "--output", "junit", "--timeout", "5s"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let xml = stdout(&out);
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("workflow-outputs"))
        .unwrap();
    let skipped = case
        .children()
        .find(|n| n.has_tag_name("skipped"))
        .unwrap_or_else(|| panic!("no <skipped> in {xml}"));
    assert!(
        skipped
            .attribute("message")
            .unwrap()
            .contains("declare no link outputs")
    );
    assert!(!case.children().any(|n| n.has_tag_name("failure")));
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("skipped"), Some("1"));
    assert_eq!(suite.attribute("failures"), Some("0"));
}

#[test]
fn a_pipeline_run_that_lost_every_link_output_still_fails() {
    // agent-pipeline.yaml declares the three links: missing all of them is not "not applicable".
    let mut s = Scenario::clean("agent-pipeline-nolinks");
    s.record.status.outputs = None;
    let env = Env::new(&s);
    let out = env.obsctl(&["verify", "--timeout", "5s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stdout(&out));
    let text = stdout(&out);
    let row = text
        .lines()
        .find(|l| l.contains("| workflow-outputs "))
        .unwrap();
    assert!(row.contains("| FAIL "), "{row}");
}

#[test]
fn trace_and_verify_refuse_an_empty_task_id() {
    let env = Env::new(&Scenario::clean("wf"));
    // Usage errors exit 2, except verify's, which are "could not run" (1) like its others.
    for (args, code) in [
        (&["trace", ""][..], 2),
        (&["verify", "--task-id", " "][..], 1),
    ] {
        let out = env.obsctl(args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "usage error for {args:?}");
        assert!(
            stderr(&out).contains("the task id must not be empty"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn trace_of_a_task_whose_traces_are_nowhere_exits_1_and_says_so() {
    let s = Scenario::clean("wf");
    let env = Env::new(&s);
    env.fake.script(
        &format!("/api/traces/{}", s.trace_id()),
        vec![Canned::status(404, "trace not found")],
    );
    let out = env.obsctl(&["trace", "T-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(r#"none of the 1 trace(s) of task "T-1" is in the trace backend"#),
        "{err}"
    );
}

/// Progress on a wait longer than a second, off a terminal: one line on stderr naming what
/// verify waits for and its limit, and nothing at all for a wait that ends at once.
#[test]
fn a_long_wait_says_so_once_on_stderr_and_a_short_one_says_nothing() {
    let mut s = Scenario::clean("wf-wait");
    s.spans.pop(); // a span that never arrives: verify waits for it until the timeout
    let env = Env::new(&s);
    let out = env.obsctl(&["verify", "--timeout", "3s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    let waiting: Vec<&str> = err
        .lines()
        .filter(|l| l.starts_with("obsctl: verify: waiting up to 3s ("))
        .collect();
    assert_eq!(waiting.len(), 1, "{err}");
    assert!(
        waiting[0].contains("span"),
        "names what is missing: {}",
        waiting[0]
    );

    let env = Env::new(&Scenario::clean("wf-quick"));
    let out = env.obsctl(&["verify", "--timeout", "5s"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("waiting"), "{}", stderr(&out));
}
