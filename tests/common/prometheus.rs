//! Debian's real Prometheus (`/usr/bin/prometheus`) as a test fixture: scrapes one target every
//! second with exemplar storage (optionally evaluating the stack's alert rules every second),
//! ready before the test goes on, killed on drop.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ChildGuard, free_port, http_get, poll, require_tool, serve::urlencode};

pub const READY: Duration = Duration::from_secs(60);

pub struct Prometheus {
    /// `http://127.0.0.1:PORT`
    pub url: String,
    child: ChildGuard,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Scrapes `target` (`host:port`) as job `obsctl`. `None` when prometheus is not installed
    /// and the test may skip (see [`super::missing`]).
    pub fn start(test: &str, target: &str) -> Option<Self> {
        Self::spawn(test, target, false)
    }

    /// Like `start`, also evaluating the alert rules obsctl's stack mounts
    /// (`stack/prometheus/rules/*.yml`, as embedded in obsctl).
    pub fn start_with_stack_rules(test: &str, target: &str) -> Option<Self> {
        Self::spawn(test, target, true)
    }

    fn spawn(test: &str, target: &str, stack_rules: bool) -> Option<Self> {
        let binary = require_tool("prometheus", test)?;
        let dir = tempfile::tempdir().unwrap();
        let rules = if stack_rules {
            obsctl::stack::files::write_all(dir.path()).unwrap();
            "rule_files:\n  - prometheus/rules/*.yml\n"
        } else {
            ""
        };
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n{rules}\
                 scrape_configs:\n  - job_name: obsctl\n    \
                 static_configs:\n      - targets: ['{target}']\n"
            ),
        )
        .unwrap();
        let log = dir.path().join("prometheus.log");
        let port = free_port();
        let mut child = ChildGuard::new(
            Command::new(binary)
                .arg(format!("--config.file={}", config.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .arg("--enable-feature=exemplar-storage")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("spawn prometheus"),
        );
        let url = format!("http://127.0.0.1:{port}");
        poll("prometheus /-/ready", READY, || {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!(
                    "prometheus exited ({status}):\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            http_get(&format!("{url}/-/ready")).filter(|(s, _)| *s == 200)
        });
        Some(Self {
            url,
            child,
            _dir: dir,
        })
    }

    /// The value of an instant query's first result, `None` while it has none.
    pub fn value(&self, query: &str) -> Option<f64> {
        let (_, body) = http_get(&format!(
            "{}/api/v1/query?query={}",
            self.url,
            urlencode(query)
        ))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let value = v["data"]["result"].as_array()?.first()?["value"][1].as_str()?;
        Some(
            value
                .parse()
                .unwrap_or_else(|e| panic!("{query}: value {value:?} is not a number: {e}")),
        )
    }

    /// Trace ids of the exemplars stored for `query` over the last hour; the API must answer.
    pub fn exemplar_trace_ids(&self, query: &str) -> Vec<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let url = format!(
            "{}/api/v1/query_exemplars?query={}&start={}&end={}",
            self.url,
            urlencode(query),
            now - 3600,
            now + 60
        );
        let (status, body) = http_get(&url).unwrap_or_else(|| panic!("GET {url} failed"));
        assert_eq!(status, 200, "{url}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|series| series["exemplars"].as_array().cloned().unwrap_or_default())
            .filter_map(|e| {
                let labels = &e["labels"];
                labels["trace_id"]
                    .as_str()
                    .or(labels["traceID"].as_str())
                    .map(str::to_string)
            })
            .collect()
    }
}
