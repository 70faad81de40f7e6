//! `obsctl shim` and `obsctl flush` end to end against a throwaway OTLP receiver (the generated
//! tonic servers and a plain HTTP endpoint): every protocol, exit codes, signals, the first
//! line, redaction, sampling and the spool. The same behaviour against `obsctl serve` and a
//! real Prometheus is in `shim_serve.rs`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::shim::{BlackHole, Receiver, TEST_HEADER, obsctl};
use common::{ChildGuard, free_port, poll};
use obsctl::conventions::{attr, metric};
use obsctl::encode::hex;
use obsctl::otlp::attrs;
use obsctl::otlp::export::Signal;
use obsctl::otlp::proto::metrics::v1::metric::Data;
use obsctl::otlp::proto::metrics::v1::number_data_point::Value;
use obsctl::otlp::proto::trace::v1::status::StatusCode;
use obsctl::otlp::{SpanId, TraceId};

const WAIT: Duration = Duration::from_secs(20);

/// A shim command with a clean OTel environment and its own spool directory.
fn shim(spool: &std::path::Path, env: &[(&str, String)]) -> Command {
    obsctl("shim", spool, env)
}

#[derive(serde::Deserialize)]
struct StartLine {
    trace_id: String,
    span_id: String,
    traceparent: String,
    agent: String,
    step: String,
    #[serde(rename = "taskId")]
    task_id: String,
}

fn start_line(out: &Output) -> StartLine {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().next().expect("a first line")).expect("JSON first line")
}

fn counter(rx: &Receiver, name: &str) -> i64 {
    rx.received
        .metrics()
        .iter()
        .filter(|m| m.name == name)
        .map(|m| match &m.data {
            Some(Data::Sum(s)) => s
                .data_points
                .iter()
                .map(|p| match p.value {
                    Some(Value::AsInt(i)) => i,
                    _ => panic!("integer counter expected"),
                })
                .sum::<i64>(),
            _ => panic!("{name} is not a Sum"),
        })
        .sum()
}

#[test]
fn every_protocol_delivers_span_metrics_and_logs_with_the_parent_and_ids() {
    let rx = Receiver::start();
    for protocol in ["grpc", "http/protobuf", "http/json"] {
        let spool = tempfile::tempdir().unwrap();
        let parent_trace = TraceId::random();
        let parent_span = SpanId::random();
        let mut env = rx.env(protocol);
        env.extend([
            ("TRACEPARENT", format!("00-{parent_trace}-{parent_span}-01")),
            ("REPO", "org/repo".into()),
            ("PR_NUMBER", "42".into()),
            ("TASK_ID", "task-7".into()),
            ("ARGO_WORKFLOW_NAME", "wf-1".into()),
            ("ARGO_NODE_ID", "wf-1-99".into()),
            ("REF", "refs/pull/42/head".into()),
            ("COMMIT_SHA", "deadbeef".into()),
        ]);
        let before = rx.received.spans().len();
        let out = shim(spool.path(), &env)
            .args(["--agent", "clippy", "--step", "verify", "--"])
            .args([
                "sh",
                "-c",
                "echo \"child sees $TRACEPARENT\"; echo oops >&2; exit 3",
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{protocol}: {out:?}");
        let first = start_line(&out);
        assert_eq!(first.agent, "clippy");
        assert_eq!(first.step, "verify");
        assert_eq!(first.task_id, "task-7");
        assert_eq!(first.trace_id, parent_trace.to_hex());
        let stdout = String::from_utf8(out.stdout.clone()).unwrap();
        assert_eq!(
            stdout.lines().nth(1).unwrap(),
            format!("child sees {}", first.traceparent)
        );
        assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n", "{protocol}");

        let span = poll("the span", WAIT, || {
            rx.received
                .spans()
                .into_iter()
                .skip(before)
                .find(|s| hex(&s.span_id) == first.span_id)
        });
        assert_eq!(span.name, "clippy/verify");
        assert_eq!(hex(&span.trace_id), parent_trace.to_hex());
        assert_eq!(hex(&span.parent_span_id), parent_span.to_hex());
        let status = span.status.clone().unwrap();
        assert_eq!(status.code, StatusCode::Error as i32);
        assert!(status.message.contains('3'), "{}", status.message);
        let a = |k| attrs::get(&span.attributes, k);
        assert_eq!(a(attr::REPO).as_deref(), Some("org/repo"));
        assert_eq!(a(attr::PR_NUMBER).as_deref(), Some("42"));
        assert_eq!(a(attr::WORKFLOW_NAME).as_deref(), Some("wf-1"));
        assert_eq!(a(attr::NODE_ID).as_deref(), Some("wf-1-99"));
        assert_eq!(a(attr::STEP_NAME).as_deref(), Some("verify"));
        assert_eq!(a(attr::COMMIT_SHA).as_deref(), Some("deadbeef"));
        assert_eq!(a(attr::PROCESS_EXIT_CODE).as_deref(), Some("3"));
        assert!(a(attr::PROCESS_COMMAND).unwrap().starts_with("sh -c"));
        for key in attr::REQUIRED {
            assert!(a(key).is_some(), "{protocol}: {key} missing");
        }

        let logs = poll("two log records", WAIT, || {
            let logs: Vec<_> = rx
                .received
                .logs()
                .into_iter()
                .filter(|l| hex(&l.span_id) == first.span_id)
                .collect();
            (logs.len() == 2).then_some(logs)
        });
        for log in &logs {
            assert_eq!(hex(&log.trace_id), first.trace_id);
            assert_eq!(
                attrs::get(&log.attributes, attr::TASK_ID).as_deref(),
                Some("task-7")
            );
        }
        let oops = logs.iter().find(|l| l.severity_text == "WARN").unwrap();
        assert_eq!(
            attrs::value_to_string(oops.body.as_ref().unwrap()).unwrap(),
            "oops"
        );
        assert_eq!(
            spooled(spool.path()),
            0,
            "{protocol}: nothing may be spooled when the receiver is up"
        );
    }
    assert_eq!(counter(&rx, metric::STEP_FAIL), 3);
    assert_eq!(counter(&rx, metric::STEP_SUCCESS), 0);
    let exemplar_traces: Vec<String> = rx
        .received
        .metrics()
        .iter()
        .filter_map(|m| match &m.data {
            Some(Data::Histogram(h)) => Some(h.data_points[0].exemplars[0].trace_id.clone()),
            _ => None,
        })
        .map(|t| hex(&t))
        .collect();
    assert_eq!(exemplar_traces.len(), 3);
    let span_traces: Vec<String> = rx
        .received
        .spans()
        .iter()
        .map(|s| hex(&s.trace_id))
        .collect();
    assert!(exemplar_traces.iter().all(|t| span_traces.contains(t)));
}

/// Requests waiting in a spool directory.
fn spooled(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".pb")
        })
        .count()
}

#[test]
fn exit_codes_126_127_and_signals_are_passed_on_and_each_gets_a_span() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().unwrap();
    let env = rx.env("grpc");
    let cases: [(&[&str], i32, &str); 4] = [
        (&["true"], 0, ""),
        (&["/nonexistent/step"], 127, "command not found"),
        (&["/"], 126, "not executable"),
        (&["sh", "-c", "kill -KILL $$"], 137, ""),
    ];
    for (command, code, message) in cases {
        let out = shim(spool.path(), &env)
            .arg("--")
            .args(command)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{command:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains(message));
        let id = start_line(&out).span_id;
        let span = poll("the span", WAIT, || {
            rx.received
                .spans()
                .into_iter()
                .find(|s| hex(&s.span_id) == id)
        });
        assert_eq!(
            attrs::get(&span.attributes, attr::PROCESS_EXIT_CODE),
            Some(code.to_string())
        );
        let expected = if code == 0 {
            StatusCode::Ok
        } else {
            StatusCode::Error
        };
        assert_eq!(span.status.unwrap().code, expected as i32, "{command:?}");
        if code == 137 {
            assert_eq!(
                attrs::get(&span.attributes, attr::PROCESS_SIGNAL).as_deref(),
                Some("SIGKILL")
            );
        }
    }
}

#[test]
fn termination_signals_are_forwarded_and_the_span_ends_in_error() {
    use nix::sys::signal::Signal;
    let rx = Receiver::start();
    let spool = tempfile::tempdir().unwrap();
    let signals = [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ];
    for signal in signals {
        let mut child = ChildGuard::new(
            shim(spool.path(), &rx.env("http/protobuf"))
                .args(["--", "sh", "-c", "echo ready; exec sleep 30"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut first = String::new();
        stdout.read_line(&mut first).unwrap();
        // "ready" passes through once the step runs: the signal then reaches a live child.
        let mut ready = String::new();
        stdout.read_line(&mut ready).unwrap();
        assert_eq!(ready, "ready\n");
        let span_id: String = serde_json::from_str::<serde_json::Value>(&first).unwrap()["span_id"]
            .as_str()
            .unwrap()
            .to_string();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(128 + signal as i32), "{signal}");
        let span = poll("the span", WAIT, || {
            rx.received
                .spans()
                .into_iter()
                .find(|s| hex(&s.span_id) == span_id)
        });
        assert_eq!(span.status.unwrap().code, StatusCode::Error as i32);
        assert_eq!(
            attrs::get(&span.attributes, attr::PROCESS_SIGNAL).as_deref(),
            Some(signal.as_str())
        );
    }
    assert_eq!(counter(&rx, metric::STEP_FAIL), signals.len() as i64);
}

#[test]
fn secrets_in_the_environment_are_in_no_exported_record() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().unwrap();
    let mut env = rx.env("http/json");
    env.push(("GITHUB_TOKEN", "ghp_s3cr3t-v4lue".into()));
    env.push(("REPO", "org/ghp_s3cr3t-v4lue".into()));
    let out = shim(spool.path(), &env)
        .args(["--attr", "extra=ghp_s3cr3t-v4lue", "--", "sh", "-c"])
        .arg("echo token=$GITHUB_TOKEN; echo $GITHUB_TOKEN >&2; env >/dev/null")
        .arg("ghp_s3cr3t-v4lue")
        .output()
        .unwrap();
    assert!(out.status.success());
    // The step's own output passes through unchanged; only exports are redacted.
    assert!(String::from_utf8_lossy(&out.stdout).contains("token=ghp_s3cr3t-v4lue"));
    poll("span, metrics and logs", WAIT, || {
        (rx.received.all().len() == 3).then_some(())
    });
    for request in rx.received.all() {
        let json = String::from_utf8(request.encode_json()).unwrap();
        assert!(!json.contains("s3cr3t"), "{json}");
    }
    let logs = rx.received.logs();
    assert_eq!(logs.len(), 2);
    assert!(
        attrs::value_to_string(logs[0].body.as_ref().unwrap())
            .unwrap()
            .contains("[REDACTED]")
    );
}

#[test]
fn sampling_off_drops_only_the_span_and_the_counters_still_count() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().unwrap();
    let mut env = rx.env("grpc");
    env.push(("OTEL_TRACES_SAMPLER", "always_off".into()));
    for script in ["exit 0", "exit 0", "exit 1"] {
        let out = shim(spool.path(), &env)
            .args(["--", "sh", "-c", script])
            .output()
            .unwrap();
        assert!(start_line(&out).traceparent.ends_with("-00"));
    }
    poll("three metric requests", WAIT, || {
        (rx.received.count(Signal::Metrics) == 3).then_some(())
    });
    assert_eq!(counter(&rx, metric::STEP_SUCCESS), 2);
    assert_eq!(counter(&rx, metric::STEP_FAIL), 1);
    assert!(rx.received.spans().is_empty());
    for m in rx.received.metrics() {
        if let Some(Data::Histogram(h)) = m.data {
            assert!(h.data_points[0].exemplars.is_empty());
        }
    }
}

#[test]
fn an_invalid_traceparent_warns_once_and_starts_a_new_trace() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().unwrap();
    let mut env = rx.env("grpc");
    env.push(("TRACEPARENT", "00-nothex-xyz-01".into()));
    let out = shim(spool.path(), &env)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches("TRACEPARENT").count(), 1, "{stderr}");
    let id = start_line(&out).span_id;
    let span = poll("the span", WAIT, || {
        rx.received
            .spans()
            .into_iter()
            .find(|s| hex(&s.span_id) == id)
    });
    assert!(span.parent_span_id.is_empty());
}

#[test]
fn collector_down_spools_and_flush_delivers_each_item_exactly_once() {
    let spool = tempfile::tempdir().unwrap();
    let (grpc_port, http_port) = (free_port(), free_port());
    let env = vec![
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{http_port}"),
        ),
    ];
    let mut span_ids = Vec::new();
    for code in [0, 5] {
        let out = shim(spool.path(), &env)
            .args(["--", "sh", "-c", &format!("echo line; exit {code}")])
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(code),
            "telemetry never changes the code"
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("spooled"));
        span_ids.push(start_line(&out).span_id);
    }
    let spooled = spooled(spool.path());
    assert_eq!(spooled, 6, "span, metrics and logs of two steps");

    let flush = |spool: &std::path::Path| obsctl("flush", spool, &env).output().unwrap();
    let down = flush(spool.path());
    assert_eq!(down.status.code(), Some(1), "{down:?}");

    let rx = Receiver::start_on(grpc_port, http_port);
    let up = flush(spool.path());
    assert_eq!(up.status.code(), Some(0), "{up:?}");
    assert!(String::from_utf8_lossy(&up.stdout).contains("delivered 6 request(s)"));
    let again = flush(spool.path());
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("delivered 0 request(s)"));
    let spans = rx.received.spans();
    assert_eq!(spans.len(), 2);
    for id in &span_ids {
        assert_eq!(spans.iter().filter(|s| &hex(&s.span_id) == id).count(), 1);
    }
    assert_eq!(counter(&rx, metric::STEP_SUCCESS), 1);
    assert_eq!(counter(&rx, metric::STEP_FAIL), 1);
    assert_eq!(rx.received.logs().len(), 2);
}

#[test]
fn the_next_shim_that_reaches_the_collector_replays_the_spool() {
    let spool = tempfile::tempdir().unwrap();
    let (grpc_port, http_port) = (free_port(), free_port());
    let env = vec![
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc".to_string()),
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{grpc_port}"),
        ),
    ];
    let out = shim(spool.path(), &env)
        .args(["--", "true"])
        .output()
        .unwrap();
    let down_id = start_line(&out).span_id;
    let rx = Receiver::start_on(grpc_port, http_port);
    let out = shim(spool.path(), &env)
        .args(["--", "true"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let up_id = start_line(&out).span_id;
    let ids: Vec<String> = rx
        .received
        .spans()
        .iter()
        .map(|s| hex(&s.span_id))
        .collect();
    assert_eq!(ids.iter().filter(|i| **i == down_id).count(), 1);
    assert_eq!(ids.iter().filter(|i| **i == up_id).count(), 1);
    assert_eq!(counter(&rx, metric::STEP_SUCCESS), 2);
    let left = spooled(spool.path());
    assert_eq!(left, 0);
}

#[test]
fn a_black_holed_collector_costs_the_budget_and_the_telemetry_is_spooled() {
    let hole = BlackHole::start();
    let spool = tempfile::tempdir().unwrap();
    for protocol in ["grpc", "http/protobuf"] {
        let env = vec![
            ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                format!("http://{}", hole.addr),
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "60000".to_string()),
            ("OBSCTL_EXPORT_BUDGET_MS", "300".to_string()),
        ];
        let out = shim(spool.path(), &env)
            .args(["--", "sh", "-c", "exit 4"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(4));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("deadline"), "{protocol}: {stderr}");
    }
    let spooled = spooled(spool.path());
    assert_eq!(spooled, 4);
}

#[test]
fn check_reports_reachable_and_unreachable_collectors() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().unwrap();
    for protocol in ["grpc", "http/protobuf", "http/json"] {
        let out = shim(spool.path(), &rx.env(protocol))
            .arg("--check")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{protocol}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("reachable"));
    }
    let env = vec![(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        format!("http://127.0.0.1:{}", free_port()),
    )];
    let out = shim(spool.path(), &env).arg("--check").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("NOT reachable"));
}

#[test]
fn output_passes_through_byte_for_byte_including_binary_and_very_long_lines() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().unwrap();
    let script = "printf 'caf\\303\\251 \\377\\376\\n'; head -c 300000 /dev/zero | tr '\\0' y; \
                  echo; printf 'err\\r\\n' >&2; printf 'tail without newline'";
    let out = shim(spool.path(), &rx.env("grpc"))
        .args(["--", "sh", "-c", script])
        .output()
        .unwrap();
    assert!(out.status.success());
    let bare = Command::new("sh").args(["-c", script]).output().unwrap();
    let after_first = out.stdout.splitn(2, |b| *b == b'\n').nth(1).unwrap();
    assert_eq!(after_first, bare.stdout.as_slice());
    assert_eq!(out.stderr, bare.stderr);
    let logs = poll("four records", WAIT, || {
        let logs = rx.received.logs();
        (logs.len() == 4).then_some(logs)
    });
    let bodies: Vec<String> = logs
        .iter()
        .map(|l| attrs::value_to_string(l.body.as_ref().unwrap()).unwrap())
        .collect();
    assert!(
        bodies.contains(&"café \u{fffd}\u{fffd}".to_string()),
        "{bodies:?}"
    );
    assert!(bodies.contains(&"err".to_string()));
    assert!(bodies.contains(&"tail without newline".to_string()));
    let long = bodies.iter().find(|b| b.starts_with("yyy")).unwrap();
    assert!(
        long.len() < 10_000 && long.ends_with("bytes]"),
        "{}",
        long.len()
    );
}

#[test]
fn a_full_spool_drops_the_oldest_and_says_so() {
    let spool = tempfile::tempdir().unwrap();
    let env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        ),
        // Room for about one step's metrics: every further step pushes older requests out.
        ("OBSCTL_SPOOL_MAX_BYTES", "1500".to_string()),
    ];
    let mut warned = false;
    for _ in 0..4 {
        let out = shim(spool.path(), &env)
            .args(["--", "true"])
            .output()
            .unwrap();
        assert!(out.status.success());
        warned |= String::from_utf8_lossy(&out.stderr).contains("spool full");
    }
    assert!(warned, "a drop must be announced on stderr");
    let kept = spooled(spool.path());
    assert!((1..8).contains(&kept), "{kept}");
    let flush = obsctl("flush", spool.path(), &env).output().unwrap();
    assert_eq!(flush.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&flush.stdout);
    let dropped = 8 - kept;
    assert!(
        stdout.contains(&format!("{dropped} request(s)")) && stdout.contains("spool was full"),
        "{stdout}"
    );
}

#[test]
fn configured_headers_reach_the_collector_over_every_protocol() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().unwrap();
    for protocol in ["grpc", "http/protobuf", "http/json"] {
        let mut env = rx.env(protocol);
        env.push((
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("{}=tenant%20a,other=x", TEST_HEADER),
        ));
        let out = shim(spool.path(), &env)
            .args(["--", "true"])
            .output()
            .unwrap();
        assert!(out.status.success());
    }
    // Span and metrics per step, three steps.
    let seen = poll("six requests with the header", WAIT, || {
        let seen = rx.received.headers();
        (seen.len() == 6).then_some(seen)
    });
    assert!(seen.iter().all(|v| v == "tenant a"), "{seen:?}");
}

/// Seed 000 sets `OTEL_LOGS_EXPORTER=none` for the step's own SDK: the shim still exports the
/// step's output (log correlation needs it). Only obsctl's `OBSCTL_STEP_LOGS=none` turns the
/// step logs off, and the span and metrics go out either way.
#[test]
fn step_logs_follow_obsctl_step_logs_not_otel_logs_exporter() {
    let rx = Receiver::start();
    let spool = tempfile::tempdir().unwrap();
    for (var, value, logs_expected) in [
        ("OTEL_LOGS_EXPORTER", "none", true),
        ("OBSCTL_STEP_LOGS", "none", false),
    ] {
        let mut env = rx.env("grpc");
        env.push((var, value.into()));
        let before = (
            rx.received.count(Signal::Logs),
            rx.received.count(Signal::Metrics),
        );
        let out = shim(spool.path(), &env)
            .args(["--agent", "clippy", "--step", "verify", "--"])
            .args(["sh", "-c", "echo line for the logs"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        poll("the metrics of the step", WAIT, || {
            (rx.received.count(Signal::Metrics) > before.1).then_some(())
        });
        let logs = rx.received.count(Signal::Logs) - before.0;
        assert_eq!(
            logs > 0,
            logs_expected,
            "{var}={value}: {logs} log requests"
        );
    }
}
