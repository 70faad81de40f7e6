//! The waiting logic: collection polls each backend until it holds what the run records promise,
//! and on timeout says what was seen, after how many polls, and what is missing. Tempo, Loki and
//! Prometheus cannot run here; a scripted server answers with their JSON shapes, empty at first
//! and complete later, advancing by request count (no clock involved).

mod common;

use std::time::Duration;

use common::verify::scenario::{Scenario, TASK};
use common::verify::{Canned, FakeBackend};
use obsctl::backends::{BackendUrls, Backends, Http};
use obsctl::checks::collect::{CollectOptions, collect};
use obsctl::checks::{Thresholds, run_all};

fn backends(fake: &FakeBackend) -> Backends {
    let url = fake.url();
    Backends::new(
        BackendUrls {
            tempo: url.clone(),
            prometheus: url.clone(),
            loki: url,
            grafana: None,
        },
        Http::default(),
    )
    .unwrap()
}

fn options(timeout: Duration) -> CollectOptions {
    CollectOptions {
        timeout,
        service_name: "agent-steps".into(),
    }
}

#[tokio::test]
async fn late_data_is_waited_for_until_complete() {
    let s = Scenario::clean("wf");
    let fake = FakeBackend::start();
    s.serve(&fake);
    // Tempo: unknown twice, then a partial trace (deploy's span not yet flushed), then complete.
    let mut partial = Scenario::clean("wf");
    let deploy = partial.steps[3].span_id;
    partial.spans.retain(|sp| sp.span_id != deploy);
    fake.script(
        &format!("/api/traces/{}", s.trace_id()),
        vec![
            Canned::status(404, "trace not found"),
            Canned::status(404, "trace not found"),
            Canned::ok(partial.tempo_json()),
            Canned::ok(s.tempo_json()),
        ],
    );
    // Loki: nothing on the first poll.
    fake.script(
        &format!(r#"/loki/api/v1/query_range?{{service_name="agent-steps"}} | taskId="{TASK}""#),
        vec![
            Canned::ok(Scenario::loki_json(&[])),
            Canned::ok(Scenario::loki_json(&s.logs)),
        ],
    );

    let (observed, wait) = collect(
        &backends(&fake),
        &s.expectation(),
        &options(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert!(wait.complete, "{wait:?}");
    assert!(wait.outstanding.is_empty());
    assert_eq!(wait.polls, 4, "Tempo needed four answers");
    let trace_requests = fake.count(&format!("/api/traces/{}", s.trace_id()));
    assert_eq!(trace_requests, 4);
    // Loki was complete on the second poll and not asked again by the wait (once more for
    // nothing else: repo and prNumber selections are separate queries).
    let task_queries = fake
        .requests()
        .iter()
        .filter(|r| {
            r.query
                .get("query")
                .is_some_and(|q| q.ends_with(&format!("taskId=\"{TASK}\"")))
        })
        .count();
    assert_eq!(task_queries, 2);
    let results = run_all(&s.expectation(), &observed, &Thresholds::default());
    assert!(results.iter().all(|r| r.passed), "{results:#?}");
}

#[tokio::test]
async fn on_timeout_the_report_says_what_is_missing_and_how_often_it_looked() {
    let s = Scenario::clean("wf");
    let fake = FakeBackend::start();
    s.serve(&fake);
    let mut partial = Scenario::clean("wf");
    let deploy = partial.steps[3].span_id;
    partial.spans.retain(|sp| sp.span_id != deploy);
    partial.success.truncate(2);
    partial.serve(&fake);

    let (observed, wait) = collect(
        &backends(&fake),
        &s.expectation(),
        &options(Duration::from_millis(400)),
    )
    .await
    .unwrap();
    assert!(!wait.complete);
    assert!(wait.polls >= 2, "it polled more than once: {wait:?}");
    assert_eq!(wait.outstanding.len(), 2, "{:?}", wait.outstanding);
    assert_eq!(
        wait.outstanding[0],
        "Tempo: 1 of 4 step spans not found (deploy/preview)"
    );
    assert_eq!(
        wait.outstanding[1],
        "Prometheus: counts short: deploy/preview success 0/1, fail 0/0"
    );
    // The checks still run on what was seen.
    let results = run_all(&s.expectation(), &observed, &Thresholds::default());
    let failed: Vec<_> = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| r.check.name())
        .collect();
    assert_eq!(failed, ["span-coverage", "counter-parity", "exemplars"]);
}

#[tokio::test]
async fn an_unreachable_backend_stops_collection_with_an_error() {
    let s = Scenario::clean("wf");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let backends = Backends::new(
        BackendUrls {
            tempo: url.clone(),
            prometheus: url.clone(),
            loki: url,
            grafana: None,
        },
        Http::default(),
    )
    .unwrap();
    let err = collect(
        &backends,
        &s.expectation(),
        &options(Duration::from_secs(5)),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("Tempo"), "{err}");
    assert!(err.to_string().contains("unreachable"), "{err}");
}

#[tokio::test]
async fn a_backend_answering_503_is_polled_again_and_a_persistent_one_is_an_error() {
    let s = Scenario::clean("wf");
    let fake = FakeBackend::start();
    s.serve(&fake);
    let trace_path = format!("/api/traces/{}", s.trace_id());
    fake.script(
        &trace_path,
        vec![
            Canned::status(503, "Tempo is starting"),
            Canned::status(503, "Tempo is starting"),
            Canned::ok(s.tempo_json()),
        ],
    );
    let (_, wait) = collect(
        &backends(&fake),
        &s.expectation(),
        &options(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    assert!(wait.complete, "{wait:?}");
    assert_eq!(wait.polls, 3);

    fake.script(&trace_path, vec![Canned::status(503, "Tempo is starting")]);
    let err = collect(
        &backends(&fake),
        &s.expectation(),
        &options(Duration::from_millis(300)),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("HTTP 503"), "{err}");
    assert!(err.to_string().contains("Tempo is starting"), "{err}");
}

#[tokio::test]
async fn a_run_without_repo_pr_or_task_is_selected_by_what_it_has() {
    let s = Scenario::uncorrelated("wf");
    let fake = FakeBackend::start();
    s.serve(&fake);
    let expectation = s.expectation();
    let (observed, wait) = collect(
        &backends(&fake),
        &expectation,
        &options(Duration::from_secs(10)),
    )
    .await
    .unwrap();
    assert!(wait.complete, "{wait:?}");
    let queries: Vec<String> = fake
        .requests()
        .iter()
        .filter_map(|r| r.query.get("query").cloned())
        .collect();
    // Nothing selects by an empty taskId (every line of every run without one), and the logs
    // are read by the run's trace id instead.
    assert!(
        queries.iter().all(|q| !q.contains(r#"taskId="""#)),
        "{queries:#?}"
    );
    let by_trace = format!(r#"| trace_id="{}""#, s.trace_id().to_hex());
    assert!(
        queries.iter().any(|q| q.ends_with(&by_trace)),
        "{queries:#?}"
    );
    assert!(
        queries
            .iter()
            .any(|q| q == r#"agent_step_duration_ms_count{workflowName="wf"}"#),
        "{queries:#?}"
    );
    assert!(
        queries
            .iter()
            .any(|q| q == r#"agent_step_success_total{repo="",prNumber=""}"#),
        "{queries:#?}"
    );
    let results = run_all(&expectation, &observed, &Thresholds::default());
    let failed: Vec<_> = results.iter().filter(|r| r.failed()).collect();
    assert!(failed.is_empty(), "{failed:#?}");
    let logs = results
        .iter()
        .find(|r| r.check == obsctl::checks::CheckId::LogCorrelation)
        .unwrap();
    assert_eq!((logs.expected, logs.found), (4, 4));
    let parity = results
        .iter()
        .find(|r| r.check == obsctl::checks::CheckId::CounterParity)
        .unwrap();
    // Four attempts in the counters, four in the histogram: nothing passes vacuously.
    assert_eq!((parity.expected, parity.found), (8, 8));
}
