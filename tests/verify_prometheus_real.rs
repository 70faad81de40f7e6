//! The Prometheus client against the real Debian Prometheus (`/usr/bin/prometheus`), scraping a
//! small static OpenMetrics endpoint that carries exemplars. Fails when CI=true and Prometheus is
//! missing; skips loudly otherwise.

mod verify_support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use obsctl::backends::{Http, PrometheusClient};
use obsctl::otlp::{SpanId, TraceId};
use verify_support::{Canned, FakeBackend};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const SPAN: &str = "1111111111111111";

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn prometheus_binary() -> Option<std::path::PathBuf> {
    let path = std::path::PathBuf::from("/usr/bin/prometheus");
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("CI=true but /usr/bin/prometheus is missing: scripts/test.sh installs it");
    }
    eprintln!("SKIPPING: /usr/bin/prometheus is not installed (apt-get install prometheus)");
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

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
    let Some(binary) = prometheus_binary() else {
        return;
    };
    let target = FakeBackend::start();
    target.script(
        "/metrics",
        vec![Canned::typed(
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            openmetrics(),
        )],
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n\
             scrape_configs:\n  - job_name: obsctl\n    static_configs:\n      - targets: ['{}']\n",
            target.addr
        ),
    )
    .unwrap();
    let port = free_port();
    let _prometheus = KillOnDrop(
        Command::new(binary)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--enable-feature=exemplar-storage")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let prom = PrometheusClient::new(&format!("http://127.0.0.1:{port}"), Http::default()).unwrap();

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
