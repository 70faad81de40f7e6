//! The Prometheus client against the real Debian Prometheus (`/usr/bin/prometheus`), scraping a
//! small static OpenMetrics endpoint that carries exemplars. Fails when CI=true and Prometheus is
//! missing; skips loudly otherwise.

mod common;

use std::time::{Duration, Instant};

use common::Prometheus;
use common::verify::{Canned, FakeBackend};
use obsctl::backends::{Http, PrometheusClient};
use obsctl::otlp::{SpanId, TraceId};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "1111111111111111";

fn openmetrics() -> String {
    let labels = r#"agent="clippy",repo="acme/widgets",prNumber="42",stepName="verify""#;
    let hist = r#"agent="clippy",repo="acme/widgets",prNumber="42",taskId="T-1",workflowName="wf",stepName="verify",outcome="success""#;
    format!(
        "# TYPE agent_step_success counter\n\
         agent_step_success_total{{{labels}}} 3\n\
         # TYPE agent_step_fail counter\n\
         agent_step_fail_total{{{labels}}} 1\n\
         # TYPE agent_step_duration_ms histogram\n\
         agent_step_duration_ms_bucket{{{hist},le=\"1000\"}} 2 # {{trace_id=\"{TRACE}\",span_id=\"{SPAN}\"}} 812 1763900000.5\n\
         agent_step_duration_ms_bucket{{{hist},le=\"+Inf\"}} 4\n\
         agent_step_duration_ms_count{{{hist}}} 4\n\
         agent_step_duration_ms_sum{{{hist}}} 5000\n\
         # EOF\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_reads_raw_counters_and_exemplars_from_real_prometheus() {
    let target = FakeBackend::start();
    target.script(
        "/metrics",
        vec![Canned::typed(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            openmetrics(),
        )],
    );
    // Starting it blocks (polling for readiness) on a runtime of its own.
    let Some(prometheus) = tokio::task::block_in_place(|| {
        Prometheus::start(
            "client_reads_raw_counters_and_exemplars_from_real_prometheus",
            &target.addr.to_string(),
        )
    }) else {
        return;
    };
    let prom = PrometheusClient::new(&prometheus.url, Http::default()).unwrap();

    // Poll until the first scrape has landed; Prometheus needs a moment to start.
    let deadline = Instant::now() + Duration::from_secs(60);
    let samples = loop {
        if let Ok(samples) = prom.query("agent_step_success_total", None).await
            && !samples.is_empty()
        {
            break samples;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the target"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(samples.len(), 1);
    assert_eq!(samples[0].value, 3.0);
    assert_eq!(samples[0].label("stepName"), Some("verify"));
    assert_eq!(samples[0].label("job"), Some("obsctl"));

    let fails = prom
        .query(
            r#"agent_step_fail_total{repo="acme/widgets",prNumber="42"}"#,
            None,
        )
        .await
        .unwrap();
    assert_eq!(fails[0].value, 1.0);
    let count = prom
        .query("count(agent_step_duration_ms_bucket)", None)
        .await
        .unwrap();
    assert_eq!(count[0].value, 2.0);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let exemplars = prom
        .query_exemplars(
            r#"agent_step_duration_ms_bucket{taskId="T-1"}"#,
            1_763_899_000.0,
            now + 60.0,
        )
        .await
        .unwrap();
    assert_eq!(exemplars.len(), 1, "{exemplars:?}");
    assert_eq!(
        exemplars[0].trace_id(),
        Some(TraceId::from_hex(TRACE).unwrap())
    );
    assert_eq!(
        exemplars[0].span_id(),
        Some(SpanId::from_hex(SPAN).unwrap())
    );
    assert_eq!(exemplars[0].value, 812.0);

    let err = prom.query("sum by (", None).await.unwrap_err();
    assert!(err.to_string().contains("bad_data"), "{err}");
}
