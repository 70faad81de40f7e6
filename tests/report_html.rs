//! The HTML reports end to end: a real pipeline through `obsctl run` and the shim into a real
//! `obsctl serve`, then `obsctl verify --report x.html`, `obsctl trace --html` and `obsctl chaos
//! --report x.html`; a 500-step burst's page stays within a few MB. Each file must be self-contained (nothing that loads or runs), name the run
//! and every check, and draw its bars; a failed check must read as failed. Then Debian's headless
//! chromium renders each file: its DOM must still hold the sections and bars, and the pages and
//! their screenshots (light and dark) are kept in `target/tmp/html-report/` for a person to look at.

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;

use common::browser::Chromium;
use common::serve::ServeHome;
use common::workflow::require_private_tmp;

const WORKFLOW: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/workflows/verify-pipeline.yaml"
);

/// The chaos scenario measures step delays; the other tests would skew them if run alongside.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn read(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()))
}

/// Nothing in the page loads from anywhere or runs: links to the PR or Grafana are fine, an asset
/// is not.
fn assert_self_contained(html: &str) {
    let lower = html.to_ascii_lowercase();
    for bad in [
        "<script",
        "<link",
        "<iframe",
        "<img",
        "@import",
        "url(",
        "src=\"http",
        "src='http",
        " src=",
    ] {
        assert!(!lower.contains(bad), "the page contains {bad:?}");
    }
    assert!(lower.contains("content-security-policy"), "no CSP");
}

fn parse(html: &str) -> roxmltree::Document<'_> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    roxmltree::Document::parse_with_options(html, opts)
        .unwrap_or_else(|e| panic!("the page is not well-formed: {e}"))
}

/// Each check section's name and verdict, in order.
fn check_verdicts(doc: &roxmltree::Document) -> Vec<(String, String)> {
    doc.descendants()
        .filter_map(|n| {
            let check = n.attribute("data-check")?;
            let verdict = n.descendants().find_map(|d| d.attribute("data-verdict"))?;
            Some((check.to_string(), verdict.to_string()))
        })
        .collect()
}

/// The span bars with their width in the SVG's units and the span's duration.
fn bars(doc: &roxmltree::Document) -> Vec<(f64, f64)> {
    doc.descendants()
        .filter(|n| n.has_tag_name("rect") && n.attribute("data-duration-ms").is_some())
        .map(|n| {
            (
                n.attribute("width").unwrap().parse().unwrap(),
                n.attribute("data-duration-ms").unwrap().parse().unwrap(),
            )
        })
        .collect()
}

fn run_name(json: &[u8]) -> String {
    let report: serde_json::Value = serde_json::from_slice(json).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {}",
            String::from_utf8_lossy(json)
        )
    });
    report["runs"][0]["name"].as_str().unwrap().to_string()
}

/// Renders `file` in chromium (light and dark screenshots kept), and checks that the rendered
/// DOM still holds `needles`.
fn render_in_browser(test: &str, file: &Path, stem: &str, needles: &[&str]) {
    let Some(chromium) = Chromium::require(test) else {
        return;
    };
    // The page itself is kept beside its screenshots, as a CI artifact to open.
    std::fs::copy(
        file,
        common::browser::artifact_dir().join(format!("{stem}.html")),
    )
    .unwrap();
    let dom = chromium.dom(file);
    for needle in needles {
        assert!(dom.contains(needle), "the rendered DOM lacks {needle:?}");
    }
    for dark in [false, true] {
        let png = chromium.screenshot(
            file,
            &format!("{stem}-{}.png", if dark { "dark" } else { "light" }),
            dark,
        );
        eprintln!("screenshot: {}", png.display());
    }
}

#[test]
fn a_passing_run_gives_self_contained_verify_and_trace_pages() {
    let test = "a_passing_run_gives_self_contained_verify_and_trace_pages";
    if !require_private_tmp(test) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stack = ServeHome::start();
    stack.run_workflow(WORKFLOW, &[]);
    let state = stack.state_dir().display().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let verify_html = out_dir.path().join("verify.html");
    let out = stack
        .obsctl(&[
            "verify",
            "--state-dir",
            &state,
            "--timeout",
            "20s",
            "--output",
            "json",
        ])
        .arg("--report")
        .arg(&verify_html)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = run_name(&out.stdout);
    let html = read(&verify_html);
    assert_self_contained(&html);
    assert!(html.contains(&run), "the page does not name run {run}");
    assert!(html.contains("<svg"));
    let doc = parse(&html);
    let verdicts = check_verdicts(&doc);
    let names: Vec<&str> = verdicts.iter().map(|(c, _)| c.as_str()).collect();
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
    assert!(verdicts.iter().all(|(_, v)| v == "passed"), "{verdicts:?}");
    // The root and five step attempts, each bar as wide as its span is long.
    let drawn = bars(&doc);
    assert_eq!(drawn.len(), 6, "{drawn:?}");
    let (root_width, root_ms) = drawn[0];
    assert_eq!(root_width, 1000.0);
    for (width, ms) in &drawn[1..] {
        let expected = (ms / root_ms * 1000.0).max(2.0);
        assert!(
            (width - expected).abs() < 0.02,
            "a {ms} ms bar is {width} wide, expected {expected}"
        );
    }
    // The failing attempt's log line sits under its span, and the PR link is clickable.
    assert!(html.contains("tests: 1 failed"));
    assert!(html.contains("href=\"https://github.com/acme/widgets/pull/42\""));
    // Expected against found per step.
    assert!(html.contains("class=\"chart parity\""));

    let trace_html = out_dir.path().join("trace.html");
    let out = stack
        .obsctl(&["trace", "T-e2e", "--state-dir", &state, "--html"])
        .arg(&trace_html)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        !stdout.contains("tests: 12 passed"),
        "without --logs the terminal shows no log lines: {stdout}"
    );
    let page = read(&trace_html);
    assert_self_contained(&page);
    assert!(page.contains("T-e2e") && page.contains(&run));
    assert!(
        page.contains("tests: 12 passed"),
        "logs are always in the page"
    );
    assert_eq!(bars(&parse(&page)).len(), 6);

    render_in_browser(
        test,
        &verify_html,
        "verify-pass",
        &[
            "data-check=\"counter-parity\"",
            "<rect class=\"bar err\"",
            "tests: 1 failed",
        ],
    );
    render_in_browser(
        test,
        &trace_html,
        "trace",
        &["<rect class=\"bar ok\"", "T-e2e"],
    );
}

#[test]
fn a_run_without_spans_is_marked_failed_in_the_page() {
    let test = "a_run_without_spans_is_marked_failed_in_the_page";
    if !require_private_tmp(test) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stack = ServeHome::start();
    stack.run_workflow(WORKFLOW, &["--no-shim"]);
    let state = stack.state_dir().display().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("verify.html");
    let out = stack
        .obsctl(&[
            "verify",
            "--state-dir",
            &state,
            "--timeout",
            "1s",
            "--report",
        ])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let html = read(&file);
    assert_self_contained(&html);
    let doc = parse(&html);
    let verdicts = check_verdicts(&doc);
    assert!(
        verdicts.contains(&("span-coverage".into(), "failed".into())),
        "{verdicts:?}"
    );
    let h1: String = doc
        .descendants()
        .find(|n| n.has_tag_name("h1"))
        .unwrap()
        .descendants()
        .filter_map(|n| n.text())
        .collect();
    assert!(h1.contains("FAIL"), "{h1}");
    assert!(html.contains("ran without telemetry"));
    // Any other extension keeps the JSON report.
    let json_file = out_dir.path().join("verify.json");
    let out = stack
        .obsctl(&[
            "verify",
            "--state-dir",
            &state,
            "--timeout",
            "1s",
            "--report",
        ])
        .arg(&json_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let json: serde_json::Value = serde_json::from_str(&read(&json_file)).unwrap();
    assert_eq!(json["passed"], false);
    render_in_browser(
        test,
        &file,
        "verify-fail",
        &["data-verdict=\"failed\"", "ran without telemetry"],
    );
}

#[test]
fn a_chaos_outage_page_shades_the_fault_over_the_steps() {
    let test = "a_chaos_outage_page_shades_the_fault_over_the_steps";
    if !require_private_tmp(test) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::tempdir().unwrap();
    let file: PathBuf = work.path().join("chaos.html");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_obsctl"))
        .args([
            "chaos",
            "collector-outage",
            "--mode",
            "stop",
            "--outage",
            "2s",
        ])
        .args(["--timeout", "15s", "--work-dir"])
        .arg(work.path().join("scratch"))
        .arg("--report")
        .arg(&file)
        .env("XDG_STATE_HOME", work.path())
        .env("NO_COLOR", "1")
        .env_remove("OBSCTL_DEFECT")
        .env_remove("OBSCTL_SPOOL_MAX_BYTES")
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    // The page is what is judged here; the scenario's own verdict is tests/chaos.rs's.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = read(&file);
    assert_self_contained(&html);
    let doc = parse(&html);
    let section = doc
        .descendants()
        .find(|n| n.attribute("data-scenario") == Some("collector-outage/stop"))
        .expect("a section for the scenario");
    let fault = section
        .descendants()
        .find(|n| n.has_tag_name("rect") && n.attribute("class") == Some("fault"))
        .expect("the fault window shaded");
    assert!(fault.attribute("width").unwrap().parse::<f64>().unwrap() > 1.0);
    let attempts = section
        .descendants()
        .filter(|n| n.attribute("class") == Some("attempt"))
        .count();
    assert!(attempts >= 4, "{attempts} attempts drawn");
    for row in ["span-coverage", "log-lines", "counter-parity"] {
        assert!(
            section
                .descendants()
                .any(|n| n.attribute("data-row") == Some(row)),
            "no row {row}"
        );
    }
    render_in_browser(
        test,
        &file,
        "chaos-outage",
        &["class=\"fault\"", "collector-outage/stop"],
    );
}

#[test]
fn a_500_step_burst_gives_a_page_of_a_few_megabytes_at_most() {
    let test = "a_500_step_burst_gives_a_page_of_a_few_megabytes_at_most";
    if !require_private_tmp(test) {
        return;
    }
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let stack = ServeHome::start();
    let burst = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/burst.yaml");
    stack.run_workflow(burst, &["-p", "count=500"]);
    let state = stack.state_dir().display().to_string();
    let out_dir = tempfile::tempdir().unwrap();
    let file = out_dir.path().join("burst.html");
    let out = stack
        .obsctl(&[
            "verify",
            "--state-dir",
            &state,
            "--timeout",
            "30s",
            "--report",
        ])
        .arg(&file)
        .output()
        .unwrap();
    // The size is judged here, whatever the checks found.
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = read(&file);
    eprintln!("500-step burst: verify page of {} bytes", html.len());
    assert!(html.len() < 3 * 1024 * 1024, "{} bytes", html.len());
    assert_self_contained(&html);
    // The workflow's root and one bar per step.
    assert_eq!(bars(&parse(&html)).len(), 501);
}
