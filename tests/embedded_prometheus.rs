//! A real Prometheus (Debian's package, `--enable-feature=exemplar-storage`) scrapes the
//! embedded backend's `/metrics` while N separate Python processes, each a new
//! `service.instance.id`, push one increment each (alternating delta and cumulative). The
//! counter Prometheus stores must equal what was sent, and its exemplar API must return every
//! process's trace id.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::embedded::{require_python, run_python};
use common::{Http, Prometheus, Serve, poll};

const PROCESSES: u64 = 6;
const WAIT: Duration = Duration::from_secs(60);

#[test]
fn prometheus_scrapes_exact_counters_and_exemplars_from_separate_processes() {
    let test = "prometheus_scrapes_exact_counters_and_exemplars_from_separate_processes";
    if !require_python(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = Serve::start(dir.path());
    let http = Http::new();
    let Some(prometheus) = Prometheus::start(test, backend.api_addr()) else {
        return;
    };
    poll("prometheus scrapes the backend", WAIT, || {
        (prometheus.value("up{job=\"obsctl\"}") == Some(1.0)).then_some(())
    });

    let mut sent_traces = BTreeSet::new();
    let mut expected = 0.0;
    for i in 1..=PROCESSES {
        let temporality = if i % 2 == 0 { "delta" } else { "cumulative" };
        let (endpoint, protocol) = if i % 3 == 0 {
            (&backend.http, "http")
        } else {
            (&backend.grpc, "grpc")
        };
        let ids = run_python(&[
            "--endpoint",
            endpoint,
            "--protocol",
            protocol,
            "--temporality",
            temporality,
            "--task-id",
            &format!("N-{i}"),
            "--increment",
            &i.to_string(),
            "--duration-ms",
            &(i * 10).to_string(),
        ]);
        sent_traces.insert(ids["trace_id"].as_str().unwrap().to_string());
        expected += i as f64;
        // Wait until Prometheus has scraped this process's increment, so that every
        // process's exemplar is seen by at least one scrape.
        poll("prometheus sees the new total", WAIT, || {
            (prometheus.value("sum(agent_step_success_total)") == Some(expected)).then_some(())
        });
    }
    assert_eq!(expected, (PROCESSES * (PROCESSES + 1) / 2) as f64);
    assert_eq!(
        prometheus.value("sum(agent_step_duration_ms_count)"),
        Some(PROCESSES as f64)
    );
    assert_eq!(
        prometheus.value("sum(agent_step_duration_ms_sum)"),
        Some((10..=PROCESSES * 10).step_by(10).sum::<u64>() as f64)
    );
    // The same figure through the backend's own Prometheus-shaped API.
    let own = http.get_query(
        &format!("{}/api/v1/query", backend.api),
        &[("query", "sum(agent_step_success_total)")],
        &[],
    );
    assert_eq!(
        own.json()["data"]["result"][0]["value"][1],
        expected.to_string()
    );

    let seen = poll("prometheus returns every exemplar", WAIT, || {
        let seen: BTreeSet<String> = prometheus
            .exemplar_trace_ids("agent_step_success_total")
            .into_iter()
            .collect();
        (seen == sent_traces).then_some(seen)
    });
    assert_eq!(seen.len() as u64, PROCESSES);
}
