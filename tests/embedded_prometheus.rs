//! A real Prometheus (Debian's package, `--enable-feature=exemplar-storage`) scrapes the
//! embedded backend's `/metrics` while N separate Python processes, each a new
//! `service.instance.id`, push one increment each (alternating delta and cumulative). The
//! counter Prometheus stores must equal what was sent, and its exemplar API must return every
//! process's trace id.

mod embedded_support;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::time::Duration;

use embedded_support::{Backend, ChildGuard, Http, poll, require, require_python, run_python};

const PROCESSES: u64 = 6;
const WAIT: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn scalar(http: &Http, prometheus: &str, query: &str) -> Option<f64> {
    let reply = http.get_query(
        &format!("{prometheus}/api/v1/query"),
        &[("query", query)],
        &[],
    );
    if reply.status != 200 {
        return None;
    }
    reply.json()["data"]["result"][0]["value"][1]
        .as_str()
        .map(|v| v.parse().unwrap())
}

#[test]
fn prometheus_scrapes_exact_counters_and_exemplars_from_separate_processes() {
    if !require("prometheus", Command::new("prometheus").arg("--version")) || !require_python() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = Backend::start(dir.path());
    let http = Http::new();
    let target = backend.api.trim_start_matches("http://");
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: obsctl\n    scrape_interval: 1s\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let prometheus = format!("http://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let _prometheus = ChildGuard(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn prometheus"),
    );
    poll("prometheus is ready", WAIT, || {
        let reply = http.try_get(&format!("{prometheus}/-/ready"))?;
        (reply.status == 200).then_some(())
    });
    poll("prometheus scrapes the backend", WAIT, || {
        (scalar(&http, &prometheus, "up{job=\"obsctl\"}") == Some(1.0)).then_some(())
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
            (scalar(&http, &prometheus, "sum(agent_step_success_total)") == Some(expected))
                .then_some(())
        });
    }
    assert_eq!(expected, (PROCESSES * (PROCESSES + 1) / 2) as f64);
    assert_eq!(
        scalar(&http, &prometheus, "sum(agent_step_duration_ms_count)"),
        Some(PROCESSES as f64)
    );
    assert_eq!(
        scalar(&http, &prometheus, "sum(agent_step_duration_ms_sum)"),
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

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let seen = poll("prometheus returns every exemplar", WAIT, || {
        let reply = http.get_query(
            &format!("{prometheus}/api/v1/query_exemplars"),
            &[
                ("query", "agent_step_success_total"),
                ("start", &(now - 600).to_string()),
                ("end", &(now + 60).to_string()),
            ],
            &[],
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        let json = reply.json();
        let seen: BTreeSet<String> = json["data"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["exemplars"].as_array().unwrap().clone())
            .filter_map(|e| e["labels"]["trace_id"].as_str().map(str::to_string))
            .collect();
        (seen == sent_traces).then_some(seen)
    });
    assert_eq!(seen.len() as u64, PROCESSES);
}
