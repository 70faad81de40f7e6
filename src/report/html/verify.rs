//! `obsctl verify --report FILE.html`: the verdict and what was verified, one section per check
//! with its numbers and its missing and duplicated items, the counters per step as a chart, the
//! runs' traces as waterfalls with their log lines, and the links.

use std::fmt::Write as _;

use super::{
    Esc, Verdict, badge, duration_ms, facts, item_list, links, meter, page, task::runs_html, time,
    waterfall,
};
use crate::checks::collect::{Observed, count};
use crate::checks::expect::Expectation;
use crate::checks::metrics::{StepParity, parity_by_step};
use crate::checks::{CheckId, CheckResult};
use crate::otlp::TraceId;
use crate::report::task::Link;
use crate::report::verify::VerifyReport;
use crate::report::waterfall::TraceTree;

/// Steps drawn in the counter chart; a burst of thousands is summarised past this.
pub const MAX_CHART_STEPS: usize = 60;

/// What the page shows beyond the report: the runs' traces as the checks saw them, the counters
/// per step, and the links. Built from what `verify` already fetched; nothing is asked again.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub traces: Vec<TraceTree>,
    /// Traces of the runs the trace backend does not have.
    pub missing_traces: Vec<TraceId>,
    pub parity: Vec<StepParity>,
    pub links: Vec<Link>,
    /// When the runs ran: the earliest start and the latest finish the records give (RFC 3339).
    pub ran: Option<(String, Option<String>)>,
}

impl Evidence {
    pub fn of(expectation: &Expectation, observed: &Observed, links: Vec<Link>) -> Self {
        // RFC 3339 in UTC with the same precision sorts as text.
        let started = expectation
            .runs
            .iter()
            .filter_map(|r| r.status.started_at.clone())
            .min();
        let finished = expectation
            .runs
            .iter()
            .filter_map(|r| r.status.finished_at.clone())
            .max();
        let mut evidence = Self {
            parity: parity_by_step(expectation, observed),
            links,
            ran: started.map(|s| (s, finished)),
            ..Self::default()
        };
        let mut seen = Vec::new();
        for run in &expectation.runs {
            let id = run.trace_id;
            if seen.contains(&id) {
                continue;
            }
            seen.push(id);
            match observed.traces.get(&id).and_then(Option::as_ref) {
                Some(trace) => {
                    let own: Vec<_> = observed
                        .logs
                        .iter()
                        .filter(|e| e.trace_id() == Some(id))
                        .cloned()
                        .collect();
                    evidence
                        .traces
                        .push(TraceTree::build(id, &trace.spans, trace.partial, &own));
                }
                None => evidence.missing_traces.push(id),
            }
        }
        evidence
    }
}

/// Stacked bars per agent and step: found successes and failures against a dashed outline of
/// what the records expect. A short bar or one past its outline shows where the counters differ.
fn parity_chart(out: &mut String, parity: &[StepParity]) {
    if parity.is_empty() {
        return;
    }
    const LABEL: f64 = 230.0;
    const WIDTH: f64 = 1000.0;
    const ROW: f64 = 22.0;
    const RIGHT: f64 = 130.0;
    let shown = &parity[..parity.len().min(MAX_CHART_STEPS)];
    let scale = shown
        .iter()
        .map(|p| {
            ((p.expected_success + p.expected_fail) as f64).max(p.found_success + p.found_fail)
        })
        .fold(1.0, f64::max);
    let plot = WIDTH - LABEL - RIGHT;
    let px = |n: f64| n / scale * plot;
    let height = ROW * shown.len() as f64 + 8.0;
    let _ = write!(
        out,
        "<figure class=\"chart parity\"><svg viewBox=\"0 0 {WIDTH} {height}\" role=\"img\" \
         aria-label=\"counters per step: expected against found\">"
    );
    for (i, p) in shown.iter().enumerate() {
        let y = 4.0 + ROW * i as f64;
        let expected = (p.expected_success + p.expected_fail) as f64;
        let found = p.found_success + p.found_fail;
        let exact =
            p.expected_success as f64 == p.found_success && p.expected_fail as f64 == p.found_fail;
        let _ = write!(
            out,
            "<g class=\"step\"><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}/{}</text>\
             <rect class=\"ok\" x=\"{LABEL}\" y=\"{:.1}\" width=\"{:.2}\" height=\"12\"/>\
             <rect class=\"err\" x=\"{:.2}\" y=\"{:.1}\" width=\"{:.2}\" height=\"12\"/>\
             <rect class=\"expected\" x=\"{LABEL}\" y=\"{:.1}\" width=\"{:.2}\" height=\"14\"/>\
             <text x=\"{:.1}\" y=\"{:.1}\" class=\"{}\">{} of {} {}</text></g>",
            LABEL - 8.0,
            y + 11.0,
            Esc(&super::clip(&p.agent, 30)),
            Esc(&super::clip(&p.step, 30)),
            y + 2.0,
            px(p.found_success),
            LABEL + px(p.found_success),
            y + 2.0,
            px(p.found_fail),
            y + 1.0,
            px(expected).max(1.0),
            WIDTH - RIGHT + 8.0,
            y + 11.0,
            if exact { "muted" } else { "" },
            count(found),
            count(expected),
            if exact { "✓" } else { "✗" },
        );
    }
    out.push_str("</svg>");
    if parity.len() > MAX_CHART_STEPS {
        let _ = write!(
            out,
            "<figcaption class=\"note\">… and {} more step(s) not drawn</figcaption>",
            parity.len() - MAX_CHART_STEPS
        );
    }
    out.push_str(
        "</figure><div class=\"legend\"><span><i class=\"ok\"></i>successes counted</span>\
         <span><i class=\"err\"></i>failures counted</span><span><i class=\"expected\"></i>what \
         the run records expect</span></div>",
    );
}

fn check_section(out: &mut String, c: &CheckResult, evidence: &Evidence) {
    let verdict = Verdict::from(c.status);
    let _ = write!(
        out,
        "<section class=\"check {}\" id=\"check-{}\" data-check=\"{}\"><h3>{} <code>{}</code></h3>\
         <p>{}</p>",
        verdict.class(),
        c.check.name(),
        c.check.name(),
        badge(verdict),
        c.check.name(),
        Esc(&c.summary)
    );
    if verdict == Verdict::NotApplicable {
        out.push_str(
            "<p class=\"note\">This check does not apply to these runs: it neither passed nor \
             failed, and does not fail verify.</p>",
        );
    }
    let bad = |n: usize| if n > 0 { " class=\"bad\"" } else { "" };
    let _ = write!(
        out,
        "<div class=\"numbers\"><div><b>{}</b><span>expected</span></div><div><b>{}</b>\
         <span>found</span></div><div{}><b>{}</b><span>missing</span></div><div{}><b>{}</b>\
         <span>duplicated</span></div><div{}><b>{}</b><span>problems</span></div></div>",
        c.expected,
        c.found,
        bad(c.missing.len()),
        c.missing.len(),
        bad(c.duplicated.len()),
        c.duplicated.len(),
        bad(if c.failed() { c.problems.len() } else { 0 }),
        c.problems.len()
    );
    if c.check == CheckId::CounterParity {
        parity_chart(out, &evidence.parity);
    }
    item_list(out, "missing", "missing", &c.missing);
    item_list(out, "duplicated", "duplicated", &c.duplicated);
    item_list(out, "problems", "problems", &c.problems);
    out.push_str("</section>");
}

pub fn render(report: &VerifyReport, evidence: &Evidence) -> String {
    let verdict = Verdict::of(report.passed);
    let names: Vec<&str> = report.runs.iter().map(|r| r.name.as_str()).collect();
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1>obsctl verify {}</h1><p class=\"sub\">{}</p>",
        badge(verdict),
        Esc(&format!(
            "{} · {}",
            names.join(", "),
            if report.passed && report.not_applicable() > 0 {
                format!(
                    "{} checks passed, {} not applicable",
                    report.checks.len() - report.not_applicable(),
                    report.not_applicable()
                )
            } else if report.passed {
                format!("all {} checks passed", report.checks.len())
            } else {
                format!(
                    "{} of {} checks failed",
                    report.failures(),
                    report.checks.len()
                )
            }
        ))
    );
    body.push_str("<nav class=\"toc\">");
    for c in &report.checks {
        let _ = write!(body, "<a href=\"#check-{0}\">{0}</a>", c.check.name());
    }
    body.push_str("<a href=\"#traces\">traces</a></nav></header>");

    let wait = &report.wait;
    let ran = match &evidence.ran {
        Some((start, Some(end))) => format!("{} to {}", Esc(start), Esc(end)),
        Some((start, None)) => format!("from {} (not finished)", Esc(start)),
        None => "<span class=\"muted\">not recorded</span>".to_string(),
    };
    facts(
        &mut body,
        &[
            ("runs", runs_html(&report.runs)),
            ("ran", ran),
            (
                "metrics compared",
                format!(
                    "what {} added since {}",
                    Esc(&report.compared_runs.join(", ")),
                    time(report.baseline_unix_nano)
                ),
            ),
            (
                "backends",
                format!(
                    "traces <code>{}</code> · metrics <code>{}</code> · logs <code>{}</code>",
                    Esc(&report.backends.tempo),
                    Esc(&report.backends.prometheus),
                    Esc(&report.backends.loki)
                ),
            ),
            (
                "thresholds",
                format!(
                    "span coverage ≥ {} · series budget {} per step metric",
                    report.thresholds.min_coverage, report.thresholds.series_budget
                ),
            ),
            (
                "wait",
                format!(
                    "{} over {} poll(s): {}",
                    duration_ms(wait.elapsed_ms as f64),
                    wait.polls,
                    if wait.complete {
                        "every backend held the expected data".to_string()
                    } else {
                        format!(
                            "<b class=\"bad\">timed out</b>; still missing: {}",
                            Esc(&wait.outstanding.join("; "))
                        )
                    }
                ),
            ),
        ],
    );

    body.push_str(
        "<section id=\"checks\"><h2>Checks</h2><table class=\"grid\"><thead><tr><th>check</th>\
         <th>result</th><th class=\"num\">expected</th><th class=\"num\">found</th>\
         <th class=\"num\">missing</th><th class=\"num\">dup</th><th>found of expected</th>\
         </tr></thead><tbody>",
    );
    for c in &report.checks {
        let v = Verdict::from(c.status);
        let bad = |n: usize| if n > 0 { "num bad" } else { "num" };
        let name = c.check.name();
        let _ = write!(
            body,
            "<tr class=\"{}\"><td><a href=\"#check-{name}\">{name}</a></td><td>{}</td>\
             <td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"{}\">{}</td>\
             <td class=\"{}\">{}</td><td>{}</td></tr>",
            v.class(),
            badge(v),
            c.expected,
            c.found,
            bad(c.missing.len()),
            c.missing.len(),
            bad(c.duplicated.len()),
            c.duplicated.len(),
            meter(c.expected, c.found, v)
        );
    }
    body.push_str("</tbody></table>");
    for c in &report.checks {
        check_section(&mut body, c, evidence);
    }
    body.push_str("</section><section id=\"traces\"><h2>Traces</h2>");
    if evidence.traces.is_empty() && evidence.missing_traces.is_empty() {
        body.push_str("<p class=\"note\">no trace to show</p>");
    }
    for tree in &evidence.traces {
        waterfall::render(&mut body, tree);
    }
    for id in &evidence.missing_traces {
        let _ = write!(
            body,
            "<p class=\"note\">trace <code>{id}</code>: not in the trace backend</p>"
        );
    }
    body.push_str("</section>");
    links(&mut body, &evidence.links);
    page(&format!("obsctl verify: {}", names.join(", ")), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::collect::WaitReport;
    use crate::checks::{CheckStatus, Thresholds};
    use crate::report::html::tests::{assert_self_contained, parse, with_class};
    use crate::report::html::waterfall::tests::sample;
    use crate::report::verify::{BackendsUsed, RunSummary, ThresholdsUsed};
    use crate::workflow::record::Phase;

    fn result(check: CheckId, status: CheckStatus, expected: u64, found: u64) -> CheckResult {
        CheckResult {
            check,
            passed: status == CheckStatus::Passed,
            status,
            summary: format!("{} <b>summary</b>", check.name()),
            expected,
            found,
            missing: Vec::new(),
            duplicated: Vec::new(),
            problems: Vec::new(),
        }
    }

    fn report(checks: Vec<CheckResult>) -> VerifyReport {
        VerifyReport {
            passed: !checks.iter().any(CheckResult::failed),
            runs: vec![RunSummary {
                name: "verify-pipeline-x7k2q".into(),
                task_id: Some("T-1".into()),
                phase: Phase::Failed,
                trace_id: TraceId::random(),
            }],
            compared_runs: vec!["verify-pipeline-x7k2q".into()],
            baseline_unix_nano: 1_700_000_000_000_000_000,
            backends: BackendsUsed {
                tempo: "http://127.0.0.1:1/".into(),
                prometheus: "http://127.0.0.1:2/".into(),
                loki: "http://127.0.0.1:3/".into(),
            },
            thresholds: ThresholdsUsed::from(&Thresholds::default()),
            wait: WaitReport {
                polls: 3,
                elapsed_ms: 1200,
                complete: false,
                outstanding: vec!["Tempo: 1 span <missing>".into()],
            },
            checks,
        }
    }

    fn sections<'a, 'i>(doc: &'a roxmltree::Document<'i>) -> Vec<(String, String)> {
        doc.descendants()
            .filter(|n| n.attribute("data-check").is_some())
            .map(|n| {
                let verdict = n
                    .descendants()
                    .find_map(|d| d.attribute("data-verdict"))
                    .unwrap_or_default();
                (
                    n.attribute("data-check").unwrap().to_string(),
                    verdict.to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn each_check_has_a_section_with_its_verdict_and_not_applicable_is_neither() {
        let mut coverage = result(CheckId::SpanCoverage, CheckStatus::Failed, 5, 4);
        coverage.missing = vec!["attempt <script>alert(1)</script> has no span".into()];
        let checks = vec![
            coverage,
            result(CheckId::NoOrphans, CheckStatus::Passed, 4, 4),
            result(CheckId::WorkflowOutputs, CheckStatus::NotApplicable, 0, 0),
        ];
        let html = render(&report(checks), &Evidence::default());
        assert_self_contained(&html);
        let doc = parse(&html);
        assert_eq!(
            sections(&doc),
            [
                ("span-coverage".to_string(), "failed".to_string()),
                ("no-orphans".into(), "passed".into()),
                ("workflow-outputs".into(), "not applicable".into()),
            ]
        );
        let na = doc
            .descendants()
            .find(|n| n.attribute("data-check") == Some("workflow-outputs"))
            .unwrap();
        let text: String = na.descendants().filter_map(|t| t.text()).collect();
        assert!(
            text.contains("N/A") && text.contains("does not apply"),
            "{text}"
        );
        assert!(!text.contains("FAIL"), "{text}");
        // The overall verdict is a failure, and the hostile item is text.
        let h1: String = doc
            .descendants()
            .find(|n| n.has_tag_name("h1"))
            .unwrap()
            .descendants()
            .filter_map(|t| t.text())
            .collect();
        assert!(h1.contains("FAIL"), "{h1}");
        assert!(!doc.descendants().any(
            |n| n.has_tag_name("script") || n.has_tag_name("b") && n.text() == Some("summary")
        ));
        assert!(html.contains("timed out"));
    }

    #[test]
    fn a_passing_report_with_a_not_applicable_check_passes() {
        let checks = vec![
            result(CheckId::SpanCoverage, CheckStatus::Passed, 5, 5),
            result(CheckId::WorkflowOutputs, CheckStatus::NotApplicable, 0, 0),
        ];
        let html = render(&report(checks), &Evidence::default());
        let doc = parse(&html);
        let verdicts: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("h1"))
            .flat_map(|h| h.descendants())
            .filter_map(|n| n.attribute("data-verdict"))
            .collect();
        assert_eq!(verdicts, ["passed"]);
        assert!(html.contains("1 checks passed, 1 not applicable"));
    }

    #[test]
    fn the_counter_chart_draws_expected_against_found_per_step() {
        let parity = vec![
            StepParity {
                agent: "coder".into(),
                step: "implement".into(),
                expected_success: 2,
                found_success: 2.0,
                expected_fail: 0,
                found_fail: 0.0,
            },
            StepParity {
                agent: "tester".into(),
                step: "tests".into(),
                expected_success: 1,
                found_success: 0.0,
                expected_fail: 1,
                found_fail: 1.0,
            },
        ];
        let mut out = String::new();
        parity_chart(&mut out, &parity);
        let wrapped = format!("<div>{out}</div>");
        let doc = parse(&wrapped);
        let steps: Vec<_> = with_class(&doc, "step");
        assert_eq!(steps.len(), 2);
        let widths = |class: &str| -> Vec<f64> {
            with_class(&doc, class)
                .iter()
                .filter(|n| n.has_tag_name("rect"))
                .map(|n| n.attribute("width").unwrap().parse().unwrap())
                .collect()
        };
        // Scale: 2 counts over 640 units.
        assert_eq!(widths("ok"), [640.0, 0.0]);
        assert_eq!(widths("err"), [0.0, 320.0]);
        assert_eq!(widths("expected"), [640.0, 640.0]);
        let text: String = steps[1].descendants().filter_map(|t| t.text()).collect();
        assert!(text.contains("1 of 2 ✗"), "{text}");
    }

    #[test]
    fn the_traces_are_drawn_with_links() {
        let checks = vec![result(CheckId::SpanCoverage, CheckStatus::Passed, 5, 5)];
        let evidence = Evidence {
            traces: vec![sample()],
            missing_traces: vec![],
            parity: vec![],
            ran: Some(("2026-01-02T03:04:05.000Z".into(), None)),
            links: vec![Link {
                label: "trace".into(),
                url: "http://127.0.0.1:3200/api/traces/ab".into(),
            }],
        };
        let html = render(&report(checks), &evidence);
        let doc = parse(&html);
        assert_eq!(with_class(&doc, "bar").len(), 3);
        assert!(
            doc.descendants()
                .any(|n| n.attribute("href") == Some("http://127.0.0.1:3200/api/traces/ab"))
        );
        assert!(html.contains("from 2026-01-02T03:04:05.000Z (not finished)"));
    }
}
