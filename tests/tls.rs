//! TLS, credentials and tenants against a real TLS terminator: Debian's nginx (`proxy_pass`
//! for OTLP/HTTP and the query API, `grpc_pass` for OTLP/gRPC) in front of the real `obsctl
//! serve`, with certificates generated per test (`common::tls`). No TLS flag is skipped: the
//! shim, `flush`, `verify` and `trace` do full handshakes against nginx. Under CI=true a
//! missing nginx fails these tests.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::serve::ServeHome;
use common::shim::obsctl;
use common::stack::{StepContainers, build_images_with_busybox, docker};
use common::tls::{HEADER_SECRET, Nginx, Pki, TENANT, TOKEN, TokenFiles};
use common::workflow::require_private_tmp;
use common::{Serve, poll, require_docker, require_tool};
use obsctl::otlp::{SpanId, TraceId};

const WAIT: Duration = Duration::from_secs(30);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn spool_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.path().is_file())
                .count()
        })
        .unwrap_or(0)
}

/// The shim's OTLP settings for `endpoint` with the test CA, a secret header and gzip.
fn shim_env(endpoint: &str, protocol: &str, pki: &Pki) -> Vec<(&'static str, String)> {
    vec![
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.to_string()),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", protocol.to_string()),
        (
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            pki.path("ca.pem").display().to_string(),
        ),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("x-obsctl-secret={HEADER_SECRET}"),
        ),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip".to_string()),
    ]
}

/// Runs `sh -c 'exit CODE'` under the shim as a child of the trace `trace`.
fn shim(spool: &Path, env: &[(&str, String)], trace: TraceId, code: i32) -> Output {
    let mut env = env.to_vec();
    env.push(("TRACEPARENT", format!("00-{trace}-{}-01", SpanId::random())));
    env.push(("OBSCTL_EXPORT_BUDGET_MS", "3000".to_string()));
    obsctl("shim", spool, &env)
        .args(["--", "sh", "-c"])
        .arg(format!("echo step; exit {code}"))
        .output()
        .unwrap()
}

fn span_arrives(serve: &Serve, trace: TraceId) {
    poll("the step's span in obsctl serve", WAIT, || {
        serve
            .spans(&trace.to_hex())
            .into_iter()
            .find(|s| s["name"].is_string())
    });
}

#[test]
fn the_shim_exports_over_https_grpc_with_tls_and_mtls() {
    let test = "the_shim_exports_over_https_grpc_with_tls_and_mtls";
    let data = tempfile::tempdir().unwrap();
    let serve = Serve::start(data.path());
    let pki = Pki::generate();
    let Some(nginx) = Nginx::start(&serve, &pki, test) else {
        return;
    };
    let spool = tempfile::tempdir().unwrap();
    let client = |env: &mut Vec<(&'static str, String)>| {
        env.push((
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            pki.path("client.pem").display().to_string(),
        ));
        env.push((
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
            pki.path("client.key").display().to_string(),
        ));
    };
    let cases = [
        (&nginx.urls.otlp_http, "http/protobuf", false),
        (&nginx.urls.otlp_grpc, "grpc", false),
        (&nginx.urls.otlp_http_mtls, "http/protobuf", true),
        (&nginx.urls.otlp_grpc_mtls, "grpc", true),
    ];
    for (endpoint, protocol, mtls) in cases {
        let mut env = shim_env(endpoint, protocol, &pki);
        if mtls {
            client(&mut env);
        }
        let trace = TraceId::random();
        let out = shim(spool.path(), &env, trace, 3);
        assert_eq!(out.status.code(), Some(3), "{protocol}: {}", text(&out));
        span_arrives(&serve, trace);
        assert!(!text(&out).contains(HEADER_SECRET));
    }
    assert_eq!(spool_files(spool.path()), 0, "everything was delivered");

    // The same listeners without a client certificate: nginx refuses, the step keeps its code.
    for (endpoint, protocol) in [
        (&nginx.urls.otlp_http_mtls, "http/protobuf"),
        (&nginx.urls.otlp_grpc_mtls, "grpc"),
    ] {
        let trace = TraceId::random();
        let out = shim(spool.path(), &shim_env(endpoint, protocol, &pki), trace, 4);
        assert_eq!(out.status.code(), Some(4), "{protocol}");
        let shown = text(&out);
        assert!(
            shown.contains("telemetry not delivered"),
            "{protocol}: {shown}"
        );
        assert!(
            shown.contains("400") || shown.contains("client certificate"),
            "{protocol}: {shown}"
        );
        assert!(serve.spans(&trace.to_hex()).is_empty(), "{protocol}");
    }
    assert!(!nginx.logs().contains(HEADER_SECRET));
}

#[test]
fn tls_failures_are_named_and_the_step_keeps_its_code_and_spools() {
    let test = "tls_failures_are_named_and_the_step_keeps_its_code_and_spools";
    let data = tempfile::tempdir().unwrap();
    let serve = Serve::start(data.path());
    let pki = Pki::generate();
    let Some(nginx) = Nginx::start(&serve, &pki, test) else {
        return;
    };
    let wrong_ca = |mut env: Vec<(&'static str, String)>| {
        env.retain(|(k, _)| *k != "OTEL_EXPORTER_OTLP_CERTIFICATE");
        env.push((
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            pki.path("other-ca.pem").display().to_string(),
        ));
        env
    };
    let cases = [
        (
            "unknown CA",
            wrong_ca(shim_env(&nginx.urls.otlp_http, "http/protobuf", &pki)),
        ),
        (
            "unknown CA",
            wrong_ca(shim_env(&nginx.urls.otlp_grpc, "grpc", &pki)),
        ),
        (
            "has expired",
            shim_env(&nginx.urls.expired, "http/protobuf", &pki),
        ),
        (
            "wrong host",
            shim_env(&nginx.urls.wrong_host, "http/protobuf", &pki),
        ),
    ];
    for (words, env) in &cases {
        let spool = tempfile::tempdir().unwrap();
        let trace = TraceId::random();
        let out = shim(spool.path(), env, trace, 7);
        let shown = text(&out);
        assert_eq!(out.status.code(), Some(7), "{words}: {shown}");
        assert!(shown.contains(words), "{words}: {shown}");
        assert!(shown.contains("spooled"), "{words}: {shown}");
        assert!(!shown.contains(HEADER_SECRET), "{shown}");
        let spooled = spool_files(spool.path());
        assert!(spooled >= 1, "{words}: nothing spooled");
        for entry in std::fs::read_dir(spool.path()).unwrap() {
            let bytes = std::fs::read(entry.unwrap().path()).unwrap();
            let needle = HEADER_SECRET.as_bytes();
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
        // Spooled like a refused connection: `flush` with a right configuration delivers it.
        let good = shim_env(&nginx.urls.otlp_http, "http/protobuf", &pki);
        let out = obsctl("flush", spool.path(), &good)
            .args(["--timeout", "20s"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{words}: {}", text(&out));
        span_arrives(&serve, trace);
    }
}

const WORKFLOW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/workflows/verify-pipeline.yaml"
);

#[test]
fn verify_and_trace_read_over_https_with_a_token_and_a_tenant() {
    let test = "verify_and_trace_read_over_https_with_a_token_and_a_tenant";
    if !require_private_tmp(test) {
        return;
    }
    let stack = ServeHome::start();
    let pki = Pki::generate();
    let Some(nginx) = Nginx::start(&stack.serve, &pki, test) else {
        return;
    };
    let state = stack.state_dir().display().to_string();
    // `obsctl run` exports its root span, and its steps theirs, through nginx over gRPC+TLS
    // with the run's TLS and header settings.
    let mut cmd = stack.obsctl(&["run", WORKFLOW, "--state-dir", &state]);
    cmd.args(["--otlp-endpoint", &nginx.urls.otlp_grpc])
        .args(["--otlp-protocol", "grpc"])
        .env(
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            pki.path("ca.pem").display().to_string(),
        )
        .env(
            "OTEL_EXPORTER_OTLP_HEADERS",
            format!("x-obsctl-secret={HEADER_SECRET}"),
        );
    let ran = cmd.output().unwrap();
    assert!(ran.status.success(), "{}", text(&ran));
    assert!(!text(&ran).contains(HEADER_SECRET));
    let token = stack.home.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).unwrap();
    let report = stack.home.path().join("report.json");
    let api = nginx.urls.api.as_str();
    let ca = pki.path("ca.pem").display().to_string();
    let other_ca = pki.path("other-ca.pem").display().to_string();
    let args_with_ca = |ca: &str, extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = [
            "--tempo-url",
            api,
            "--prometheus-url",
            api,
            "--loki-url",
            api,
            "--ca-file",
            ca,
            "--state-dir",
            &state,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    };
    let args = |extra: &[&str]| args_with_ca(&ca, extra);
    let run = |sub: &[&str], extra: &[&str]| {
        let mut all: Vec<String> = sub.iter().map(|s| s.to_string()).collect();
        all.extend(args(extra));
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        stack.obsctl(&refs).output().unwrap()
    };
    let token_arg = token.display().to_string();
    let report_arg = report.display().to_string();
    let out = run(
        &["verify", "--timeout", "20s", "--report", &report_arg],
        &["--token-file", &token_arg, "--tenant", TENANT],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let out_trace = run(
        &["trace", "T-e2e", "--logs"],
        &["--token-file", &token_arg, "--tenant", TENANT],
    );
    assert_eq!(out_trace.status.code(), Some(0), "{}", text(&out_trace));
    assert!(text(&out_trace).contains("T-e2e"));

    // The token from the variable works the same; per-backend tenants override the shared one.
    let mut cmd = stack.obsctl(&[]);
    cmd.args(["verify", "--timeout", "20s"])
        .args(args(&[
            "--tenant",
            "someone-else",
            "--tempo-tenant",
            TENANT,
            "--loki-tenant",
            TENANT,
            "--prometheus-tenant",
            TENANT,
        ]))
        .env("OBSCTL_TOKEN", TOKEN);
    let out_env = cmd.output().unwrap();
    assert_eq!(out_env.status.code(), Some(0), "{}", text(&out_env));

    // The same from a backends file alone: URLs, CA, token file and tenant. A wrong tenant in
    // it is refused by nginx, so the file's URLs are the ones used (not the endpoints file's).
    let verify_with_file = |tenant: &str| {
        let file = nginx.backends_file(stack.home.path(), &pki, &token, tenant);
        stack
            .obsctl(&["verify", "--timeout", "20s", "--state-dir", &state])
            .args(["--backends-file", &file.display().to_string()])
            .output()
            .unwrap()
    };
    let out_file = verify_with_file(TENANT);
    assert_eq!(out_file.status.code(), Some(0), "{}", text(&out_file));
    let refused = verify_with_file("team-other");
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused));
    assert!(text(&refused).contains("HTTP 403"), "{}", text(&refused));

    // Refusals name the backend and why; TLS failures too.
    let no_token = run(&["verify", "--timeout", "5s"], &["--tenant", TENANT]);
    assert_eq!(no_token.status.code(), Some(1));
    let shown = text(&no_token);
    assert!(shown.contains("refused the request: HTTP 401"), "{shown}");
    assert!(shown.contains("token or password"), "{shown}");
    let wrong_tenant = run(
        &["trace", "T-e2e"],
        &["--token-file", &token_arg, "--tenant", "team-other"],
    );
    let shown = text(&wrong_tenant);
    assert_eq!(wrong_tenant.status.code(), Some(1), "{shown}");
    assert!(
        shown.contains("Tempo at") && shown.contains("HTTP 403"),
        "{shown}"
    );
    let mut cmd = stack.obsctl(&["verify", "--timeout", "5s"]);
    cmd.args(args_with_ca(
        &other_ca,
        &["--token-file", &token_arg, "--tenant", TENANT],
    ));
    let wrong_ca = cmd.output().unwrap();
    let shown = text(&wrong_ca);
    assert_eq!(wrong_ca.status.code(), Some(1), "{shown}");
    assert!(shown.contains("unknown CA"), "{shown}");

    for (what, shown) in [
        ("run", text(&ran)),
        ("verify", text(&out)),
        ("trace", text(&out_trace)),
        ("verify with the variable", text(&out_env)),
        ("verify with the backends file", text(&out_file)),
        (
            "the refusals",
            text(&no_token) + &text(&wrong_tenant) + &shown,
        ),
        ("the report", std::fs::read_to_string(&report).unwrap()),
        ("nginx's logs", nginx.logs()),
    ] {
        assert!(!shown.contains(TOKEN), "the token appears in {what}");
        assert!(
            !shown.contains(HEADER_SECRET),
            "the header appears in {what}"
        );
    }
    for record in walk(&stack.state_dir()) {
        let body = std::fs::read_to_string(&record).unwrap_or_default();
        assert!(!body.contains(TOKEN), "{}", record.display());
        assert!(!body.contains(HEADER_SECRET), "{}", record.display());
    }
}

#[test]
fn demo_reads_a_running_stack_over_https_with_a_token_and_a_tenant() {
    let test = "demo_reads_a_running_stack_over_https_with_a_token_and_a_tenant";
    if !require_private_tmp(test) {
        return;
    }
    let stack = ServeHome::start();
    let pki = Pki::generate();
    let Some(nginx) = Nginx::start(&stack.serve, &pki, test) else {
        return;
    };
    let tokens = TokenFiles::write();
    let demo = |token: &Path| {
        let file = nginx.backends_file(tokens.dir.path(), &pki, token, TENANT);
        stack
            .obsctl(&["demo", "--timeout", "20s"])
            .args(["--backends-file", &file.display().to_string()])
            .output()
            .unwrap()
    };
    // The pipeline exports to the running stack; its verify and trace read through nginx.
    let out = demo(&tokens.token);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("verify: all 7 checks passed"), "{shown}");
    assert!(nginx.forwarded("/api/traces/"), "{}", nginx.logs());
    assert!(
        nginx.forwarded("/loki/api/v1/query_range"),
        "{}",
        nginx.logs()
    );

    // A token nginx refuses: the backend is named, with why, and the demo exits 1.
    let refused = demo(&tokens.wrong);
    let shown_refused = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{shown_refused}");
    assert!(
        ["Tempo", "Prometheus", "Loki"]
            .iter()
            .any(|b| shown_refused.contains(&format!("{b} at https://localhost:"))),
        "{shown_refused}"
    );
    assert!(
        shown_refused.contains("refused the request: HTTP 401 (no valid credentials"),
        "{shown_refused}"
    );

    for (what, shown) in [
        ("the demo", shown),
        ("the refused demo", shown_refused),
        ("nginx's logs", nginx.logs()),
    ] {
        assert!(!shown.contains(TOKEN), "the token appears in {what}");
    }
    for record in walk(stack.home.path()) {
        let body = std::fs::read(&record).unwrap_or_default();
        let needle = TOKEN.as_bytes();
        assert!(
            !body.windows(needle.len()).any(|w| w == needle),
            "{}",
            record.display()
        );
    }
}

#[test]
fn container_steps_export_over_mtls_with_the_runs_files_mounted() {
    let test = "container_steps_export_over_mtls_with_the_runs_files_mounted";
    if !require_docker(test)
        || require_tool("busybox", test).is_none()
        || require_tool("prometheus", test).is_none()
    {
        return;
    }
    build_images_with_busybox();
    let stack = ServeHome::start();
    let pki = Pki::generate();
    let Some(nginx) = Nginx::start(&stack.serve, &pki, test) else {
        return;
    };
    // A project of its own, so that the refused run below is shown to start no container.
    let project = format!("tls-{}", std::process::id());
    let state = stack.state_dir().display().to_string();
    let path = |name: &str| pki.path(name).display().to_string();
    let run = |client_key: &str| {
        stack
            .obsctl(&["run", WORKFLOW, "--state-dir", &state, "--runner", "docker"])
            .args(["--otlp-endpoint", &nginx.urls.otlp_http_mtls])
            .args(["--otlp-protocol", "http/protobuf", "-o", "json"])
            .env("OBSCTL_PROJECT", &project)
            .env("OTEL_EXPORTER_OTLP_CERTIFICATE", path("ca.pem"))
            .env("OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE", path("client.pem"))
            .env("OTEL_EXPORTER_OTLP_CLIENT_KEY", client_key)
            .env(
                "OTEL_EXPORTER_OTLP_HEADERS",
                format!("x-obsctl-secret={HEADER_SECRET}"),
            )
            .output()
            .unwrap()
    };
    let out = run(&path("client.key"));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("run -o json ({e}): {}", text(&out)));
    let name = status["metadata"]["name"].as_str().unwrap().to_string();
    let _cleanup = StepContainers(name.clone());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(!text(&out).contains(HEADER_SECRET));

    // nginx admits only a client with the test CA's certificate: each step's span got through
    // from inside its container, with the files the run was given.
    let trace = status["metadata"]["uid"].as_str().unwrap().to_string();
    let ids = docker(&[
        "ps",
        "-aq",
        "--filter",
        &format!("label=io.obsctl.run={name}"),
    ]);
    let steps = ids.lines().count();
    assert!(steps > 0, "the run started no container");
    poll(
        "every step's span, through nginx's mTLS listener",
        WAIT,
        || {
            let spans = stack.serve.spans(&trace);
            // The steps' spans and the run's root span.
            (spans.len() > steps).then_some(())
        },
    );
    for id in ids.lines() {
        let info: serde_json::Value = serde_json::from_str(&docker(&["inspect", id])).unwrap();
        let env = info[0]["Config"]["Env"].to_string();
        for var in [
            "OTEL_EXPORTER_OTLP_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
            "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        ] {
            let mounted = format!("/.obsctl-otlp/{var}");
            assert!(env.contains(&format!("{var}={mounted}")), "{env}");
            let mount = info[0]["Mounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["Destination"] == mounted.as_str())
                .unwrap_or_else(|| panic!("no mount at {mounted}: {info:#}"));
            assert_eq!(mount["RW"], false, "{mount}");
        }
        assert!(
            env.contains(&format!(
                "OTEL_EXPORTER_OTLP_HEADERS=x-obsctl-secret={HEADER_SECRET}"
            )),
            "headers pass as they are"
        );
    }

    // A file that is not there: named with its variable, and no step container is created.
    let missing = run("/nonexistent/client.key");
    let shown = text(&missing);
    assert_eq!(missing.status.code(), Some(2), "{shown}");
    assert!(
        shown.contains("OTEL_EXPORTER_OTLP_CLIENT_KEY names /nonexistent/client.key"),
        "{shown}"
    );
    let project_filter = format!("label=io.obsctl.project={project}");
    let all = docker(&["ps", "-aq", "--filter", &project_filter]);
    assert_eq!(
        all.lines().count(),
        steps,
        "only the first run's steps: {all}"
    );
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
