//! `obsctl shim` against the real `obsctl serve` backend, read back through its Tempo-, Loki-
//! and Prometheus-shaped APIs, with a real Prometheus scraping the backend's `/metrics` for
//! counter parity and exemplars. Prometheus tests fail when CI=true and prometheus is missing.

mod common;

use std::process::{Output, Stdio};
use std::time::Duration;

use common::shim::obsctl;
use common::{ChildGuard, Prometheus, Serve, free_ports, poll};
use obsctl::conventions::{attr, metric};
use obsctl::otlp::{SpanId, TraceId};

const WAIT: Duration = Duration::from_secs(30);

fn first_line(out: &Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().next().expect("a first line")).expect("JSON first line")
}

fn id(line: &serde_json::Value, key: &str) -> String {
    line[key].as_str().unwrap().to_string()
}

/// Tempo JSON carries ids as base64.
fn b64_span(hex: &str) -> String {
    SpanId::from_hex(hex).unwrap().to_base64()
}

fn attr_of(span: &serde_json::Value, key: &str) -> Option<String> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)
        .map(|a| {
            let v = &a["value"];
            v["stringValue"]
                .as_str()
                .or(v["intValue"].as_str())
                .map(str::to_string)
                .unwrap_or_else(|| v["intValue"].to_string())
        })
}

#[test]
fn spans_logs_status_and_parentage_arrive_in_obsctl_serve() {
    let data = tempfile::tempdir().unwrap();
    let serve = Serve::start(data.path());
    let spool = tempfile::tempdir().unwrap();
    let parent_trace = TraceId::random();
    let parent_span = SpanId::random();
    for (protocol, code) in [("grpc", 0), ("http/protobuf", 3), ("http/json", 0)] {
        let mut env = serve.env(protocol);
        env.extend([
            ("TRACEPARENT", format!("00-{parent_trace}-{parent_span}-01")),
            ("AGENT", "claude".into()),
            ("STEP", "implement".into()),
            ("REPO", "org/repo".into()),
            ("PR_NUMBER", "17".into()),
            ("REF", "main".into()),
            ("TASK_ID", "task-9".into()),
            ("WORKFLOW_NAME", "wf-9".into()),
            ("NODE_ID", "wf-9-1".into()),
            ("NAMESPACE", "agents".into()),
        ]);
        let out = obsctl("shim", spool.path(), &env)
            .args(["--", "sh", "-c"])
            .arg(format!("echo working; echo careful >&2; exit {code}"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{protocol}");
        let line = first_line(&out);
        assert_eq!(line["agent"], "claude");
        assert_eq!(line["step"], "implement");
        assert_eq!(line["taskId"], "task-9");
        assert_eq!(
            line["traceparent"],
            format!("00-{}-{}-01", id(&line, "trace_id"), id(&line, "span_id"))
        );
        let span_id = id(&line, "span_id");
        let span = poll("the span in obsctl serve", WAIT, || {
            serve
                .spans(&parent_trace.to_hex())
                .into_iter()
                .find(|s| s["spanId"] == b64_span(&span_id))
        });
        assert_eq!(span["name"], "claude/implement");
        assert_eq!(span["parentSpanId"], parent_span.to_base64());
        let expected_status = if code == 0 {
            "STATUS_CODE_OK"
        } else {
            "STATUS_CODE_ERROR"
        };
        assert_eq!(span["status"]["code"], expected_status, "{protocol}");
        for (key, value) in [
            (attr::REPO, "org/repo"),
            (attr::PR_NUMBER, "17"),
            (attr::REF, "main"),
            (attr::TASK_ID, "task-9"),
            (attr::AGENT, "claude"),
            (attr::WORKFLOW_NAME, "wf-9"),
            (attr::NODE_ID, "wf-9-1"),
            (attr::STEP_NAME, "implement"),
            (attr::NAMESPACE, "agents"),
        ] {
            assert_eq!(attr_of(&span, key).as_deref(), Some(value), "{key}");
        }
        assert_eq!(
            attr_of(&span, attr::PROCESS_EXIT_CODE),
            Some(code.to_string())
        );
        let logs = poll("both log lines in obsctl serve", WAIT, || {
            let logs: Vec<_> = serve
                .logs(&parent_trace.to_hex())
                .into_iter()
                .filter(|(labels, _)| labels["span_id"] == span_id.as_str())
                .collect();
            (logs.len() == 2).then_some(logs)
        });
        let lines: Vec<&str> = logs.iter().map(|(_, l)| l.as_str()).collect();
        assert!(lines.contains(&"working") && lines.contains(&"careful"));
        for (labels, _) in &logs {
            assert_eq!(labels["taskId"], "task-9");
            assert_eq!(labels["repo"], "org/repo");
        }
    }
}

#[test]
fn exit_codes_and_forwarded_sigterm_are_recorded_in_obsctl_serve() {
    let data = tempfile::tempdir().unwrap();
    let serve = Serve::start(data.path());
    let spool = tempfile::tempdir().unwrap();
    let env = serve.env("grpc");
    for (command, code) in [
        (vec!["true"], 0),
        (vec!["sh", "-c", "exit 3"], 3),
        (vec!["/"], 126),
        (vec!["no-such-command-xyz"], 127),
        (vec!["sh", "-c", "kill -INT $$"], 130),
    ] {
        let out = obsctl("shim", spool.path(), &env)
            .arg("--")
            .args(&command)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{command:?}");
        let line = first_line(&out);
        let span = poll("the span", WAIT, || {
            serve.spans(&id(&line, "trace_id")).into_iter().next()
        });
        assert_eq!(
            attr_of(&span, attr::PROCESS_EXIT_CODE),
            Some(code.to_string())
        );
    }

    let mut child = ChildGuard::new(
        obsctl("shim", spool.path(), &env)
            .args(["--", "sh", "-c", "echo ready; exec sleep 60"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).unwrap();
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut ready).unwrap();
    assert_eq!(ready, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(143));
    let line: serde_json::Value = serde_json::from_str(&first).unwrap();
    let span = poll("the SIGTERM span", WAIT, || {
        serve.spans(&id(&line, "trace_id")).into_iter().next()
    });
    assert_eq!(span["status"]["code"], "STATUS_CODE_ERROR");
    assert_eq!(
        attr_of(&span, attr::PROCESS_SIGNAL).as_deref(),
        Some("SIGTERM")
    );
}

/// 120 separate shim processes, some failing, some unsampled: Prometheus, scraping the
/// backend, must count exactly what ran, and every exemplar must name a stored trace.
#[test]
fn counters_over_many_processes_are_exact_in_a_real_prometheus_with_exemplars() {
    let data = tempfile::tempdir().unwrap();
    let serve = Serve::start(data.path());
    let Some(prometheus) = Prometheus::start(
        "counters_over_many_processes_are_exact_in_a_real_prometheus_with_exemplars",
        serve.api_addr(),
    ) else {
        return;
    };
    let spool = tempfile::tempdir().unwrap();
    let agent = format!("parity-{}", &TraceId::random().to_hex()[..8]);
    const STEPS: usize = 120;
    let mut expected_ok = 0;
    let mut expected_fail = 0;
    let mut unsampled_traces = Vec::new();
    let mut children = Vec::new();
    for i in 0..STEPS {
        let fail = i % 3 == 0;
        let unsampled = i % 4 == 1;
        let mut env = serve.env(if i % 2 == 0 { "grpc" } else { "http/protobuf" });
        env.extend([
            ("AGENT", agent.clone()),
            ("STEP", "check".into()),
            ("REPO", "org/parity".into()),
            ("PR_NUMBER", "5".into()),
        ]);
        if unsampled {
            env.push(("OTEL_TRACES_SAMPLER", "always_off".into()));
        }
        if fail {
            expected_fail += 1;
        } else {
            expected_ok += 1;
        }
        children.push((
            unsampled,
            fail,
            ChildGuard::new(
                obsctl("shim", spool.path(), &env)
                    .args(["--", "sh", "-c", if fail { "exit 1" } else { "exit 0" }])
                    .stdout(Stdio::piped())
                    .spawn()
                    .unwrap(),
            ),
        ));
        // Eight at a time: many processes, but not a fork bomb on a small CI machine.
        if children.len() == 8 || i == STEPS - 1 {
            for (unsampled, fail, mut child) in children.drain(..) {
                let mut line = String::new();
                std::io::BufRead::read_line(
                    &mut std::io::BufReader::new(child.stdout.take().unwrap()),
                    &mut line,
                )
                .unwrap();
                let status = child.wait().unwrap();
                assert_eq!(status.code(), Some(i32::from(fail)));
                if unsampled {
                    let line: serde_json::Value = serde_json::from_str(&line).unwrap();
                    unsampled_traces.push(id(&line, "trace_id"));
                }
            }
        }
    }
    let selector = format!("{{agent=\"{agent}\"}}");
    let ok = poll("success count in prometheus", WAIT, || {
        prometheus
            .value(&format!("sum({}{selector})", metric::STEP_SUCCESS_TOTAL))
            .filter(|v| *v == expected_ok as f64)
    });
    assert_eq!(ok, expected_ok as f64);
    let fail = poll("fail count in prometheus", WAIT, || {
        prometheus
            .value(&format!("sum({}{selector})", metric::STEP_FAIL_TOTAL))
            .filter(|v| *v == expected_fail as f64)
    });
    assert_eq!(fail, expected_fail as f64);
    let count = prometheus
        .value(&format!("sum({}_count{selector})", metric::STEP_DURATION))
        .unwrap();
    assert_eq!(count, STEPS as f64);
    let failures = prometheus
        .value(&format!(
            "sum({}_count{{agent=\"{agent}\",outcome=\"failure\"}})",
            metric::STEP_DURATION
        ))
        .unwrap();
    assert_eq!(failures, expected_fail as f64);

    let exemplars = poll("exemplars in prometheus", WAIT, || {
        let ids =
            prometheus.exemplar_trace_ids(&format!("{}_bucket{selector}", metric::STEP_DURATION));
        (!ids.is_empty()).then_some(ids)
    });
    for trace_id in &exemplars {
        assert!(
            !unsampled_traces.contains(trace_id),
            "an unsampled step has an exemplar"
        );
        assert!(
            serve.trace(trace_id).is_some(),
            "exemplar trace {trace_id} is not in the backend"
        );
    }
}

#[test]
fn collector_down_then_back_delivers_spooled_items_exactly_once() {
    let data = tempfile::tempdir().unwrap();
    let spool = tempfile::tempdir().unwrap();
    let ports = free_ports(3);
    let (grpc, http, api) = (ports[0], ports[1], ports[2]);
    let mut serve = Serve::start_on(data.path(), grpc, http, api);
    let env = serve.env("http/protobuf");
    let agent = format!("outage-{}", &TraceId::random().to_hex()[..8]);
    let mut env = env.clone();
    env.push(("AGENT", agent.clone()));
    serve.terminate();

    let mut traces = Vec::new();
    for code in [0, 0, 2] {
        let out = obsctl("shim", spool.path(), &env)
            .args([
                "--",
                "sh",
                "-c",
                &format!("echo during outage; exit {code}"),
            ])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code));
        traces.push(id(&first_line(&out), "trace_id"));
    }
    let serve = Serve::start_on(data.path(), grpc, http, api);
    assert!(
        serve.trace(&traces[0]).is_none(),
        "nothing arrives before replay"
    );
    let flush = obsctl("flush", spool.path(), &env).output().unwrap();
    assert_eq!(flush.status.code(), Some(0), "{flush:?}");
    assert!(String::from_utf8_lossy(&flush.stdout).contains("delivered 9 request(s)"));
    let again = obsctl("flush", spool.path(), &env).output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&again.stdout).contains("delivered 0 request(s)"));

    for trace in &traces {
        assert_eq!(serve.spans(trace).len(), 1, "each span exactly once");
        assert_eq!(serve.logs(trace).len(), 1, "each log record exactly once");
    }
    let metrics = serve.get("/metrics").unwrap().1;
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with(name) && l.contains(&agent))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(value(metric::STEP_SUCCESS_TOTAL), 2.0);
    assert_eq!(value(metric::STEP_FAIL_TOTAL), 1.0);
}

#[test]
fn a_secret_a_step_prints_is_in_no_record_the_backend_stored() {
    let data = tempfile::tempdir().unwrap();
    let serve = Serve::start(data.path());
    let spool = tempfile::tempdir().unwrap();
    let secret = "sk-live-0123456789abcdef";
    let mut env = serve.env("grpc");
    env.push(("OPENAI_API_KEY", secret.into()));
    env.push(("TASK_ID", format!("task-{secret}")));
    let out = obsctl("shim", spool.path(), &env)
        .args([
            "--",
            "sh",
            "-c",
            "echo key=$OPENAI_API_KEY; echo $OPENAI_API_KEY >&2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let trace = id(&first_line(&out), "trace_id");
    let logs = poll("the log lines", WAIT, || {
        let logs = serve.logs(&trace);
        (logs.len() == 2).then_some(logs)
    });
    let stored = [
        serde_json::to_string(&serve.trace(&trace).unwrap()).unwrap(),
        serde_json::to_string(&logs.iter().map(|(l, b)| (l, b)).collect::<Vec<_>>()).unwrap(),
        serve.get("/metrics").unwrap().1,
    ];
    for text in &stored {
        assert!(!text.contains(secret), "secret leaked: {text}");
    }
    assert!(stored[1].contains("key=[REDACTED]"));
}

#[test]
fn shim_and_flush_find_the_running_stack_and_name_a_protocol_mismatch() {
    let home = tempfile::tempdir().unwrap();
    let serve = Serve::start_in_home(home.path());
    let spool = tempfile::tempdir().unwrap();
    let state = ("XDG_STATE_HOME", home.path().display().to_string());
    let check = |env: &[(&str, String)]| {
        let out = obsctl("shim", spool.path(), env)
            .arg("--check")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.code(), stdout)
    };

    // No OTEL variable: the endpoints file names the stack, and the protocol is the one
    // default `obsctl run` uses too, gRPC.
    let (code, stdout) = check(std::slice::from_ref(&state));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.contains(&format!("collector reachable: grpc {}", serve.grpc)),
        "{stdout}"
    );
    let out = obsctl("flush", spool.path(), std::slice::from_ref(&state))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains(&format!("to grpc {}", serve.grpc)),
        "{stdout}"
    );

    // The OTLP/HTTP port asked for gRPC (it speaks HTTP/2 too, without gRPC status).
    let (code, stdout) = check(&[
        state.clone(),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", serve.http.clone()),
    ]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "answered HTTP 404 without a gRPC status (OTLP/HTTP?); set \
             OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
        ),
        "{stdout}"
    );
    // An HTTP/1.1-only server asked for gRPC.
    let http1 = common::stack::serve_openmetrics(String::new());
    let (code, stdout) = check(&[
        state.clone(),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{http1}")),
    ]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains(
            "answered HTTP/1.1 (OTLP/HTTP?); set OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf"
        ),
        "{stdout}"
    );
    // The gRPC port asked for OTLP/HTTP.
    let (code, stdout) = check(&[
        state,
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf".into()),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", serve.grpc.clone()),
    ]);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("answered HTTP/2 (gRPC?); set OTEL_EXPORTER_OTLP_PROTOCOL=grpc"),
        "{stdout}"
    );
}

/// `-v` says something on `shim`, `flush` and `serve`: the shim names each export's endpoint,
/// protocol and budget and what was acknowledged, flush where it sends the spool; serve says
/// where its data lives and what each request stored. Without `-v` the shim says none of it.
#[test]
fn verbose_shim_and_serve_say_what_they_send_and_store() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start_verbose(dir.path());
    let spool = dir.path().join("spool");
    let run = |verbose: bool| {
        let mut cmd = obsctl("shim", &spool, &serve.env("grpc"));
        if verbose {
            cmd.arg("-v");
        }
        let out = cmd
            .args(["--agent", "rex", "--step", "say", "--", "echo", "hello"])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let stderr = run(true);
    for signal in ["traces", "metrics", "logs"] {
        let line = format!(
            "obsctl: shim: exporting {signal} to {} over grpc within",
            serve.grpc
        );
        assert!(stderr.contains(&line), "no {line:?} in:\n{stderr}");
    }
    assert!(
        stderr.contains("obsctl: shim: 3 of 3 request(s) acknowledged in "),
        "{stderr}"
    );
    assert_eq!(
        run(false),
        "",
        "a quiet shim says nothing when all went well"
    );
    let out = obsctl("flush", &spool, &serve.env("grpc"))
        .args(["-v", "--timeout", "1m30s"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let flushed = String::from_utf8_lossy(&out.stderr);
    let line = format!(
        "obsctl: flush: replaying {} to grpc {} within 1m30s",
        spool.display(),
        serve.grpc
    );
    assert!(flushed.contains(&line), "no {line:?} in:\n{flushed}");

    let lines = serve.stderr.as_ref().unwrap();
    let mut seen = Vec::new();
    // One span and one log line per shim; the metric points are the histogram's and the
    // counter's, however many the request carries.
    let wanted = [
        (
            "obsctl: serve: data in ",
            ", retention 168 h or 2048 MiB; -v prints",
        ),
        ("obsctl: serve: stored 1 span(s)", ", rejected 0"),
        ("obsctl: serve: stored 1 log record(s)", ", rejected 0"),
        ("obsctl: serve: stored ", " metric point(s), rejected 0"),
    ];
    poll("serve's -v lines for both shims", WAIT, || {
        seen.extend(lines.lock().unwrap().try_iter());
        wanted
            .iter()
            .all(|(start, end)| seen.iter().any(|l| l.starts_with(start) && l.contains(end)))
            .then_some(())
    });
}
