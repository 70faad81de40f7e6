//! The verification report and its three renderings: a table for people, JSON for scripts and
//! JUnit XML for CI systems (one testcase per check, a failure element carrying the numbers).

use std::fmt::Write as _;

use comfy_table::{Cell, Color};
use serde::Serialize;

use crate::checks::collect::WaitReport;
use crate::checks::expect::Expectation;
use crate::checks::{CheckResult, CheckStatus, Thresholds};
use crate::otlp::TraceId;
use crate::workflow::record::{Phase, RunRecord};

/// Items listed per kind (missing, duplicated, problems) in the table; JSON has them all.
const LISTED: usize = 10;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RunSummary {
    pub name: String,
    pub task_id: Option<String>,
    pub phase: Phase,
    pub trace_id: TraceId,
}

impl RunSummary {
    pub fn of(record: &RunRecord) -> Self {
        Self {
            name: record.name.clone(),
            task_id: crate::checks::expect::task_of(record).map(str::to_string),
            phase: record.status.phase,
            trace_id: record.trace_id,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendsUsed {
    pub tempo: String,
    pub prometheus: String,
    pub loki: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ThresholdsUsed {
    pub min_coverage: f64,
    pub series_budget: u64,
}

impl From<&Thresholds> for ThresholdsUsed {
    fn from(t: &Thresholds) -> Self {
        Self {
            min_coverage: t.min_coverage,
            series_budget: t.series_budget,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// No check failed (checks that do not apply do not fail).
    pub passed: bool,
    pub runs: Vec<RunSummary>,
    /// The runs whose recorded attempts the metric checks compared with: the verified runs and
    /// any other recorded run that added to the same series since `baselineUnixNano`.
    pub compared_runs: Vec<String>,
    /// Metrics were compared by what they added since this time (unix nanoseconds).
    pub baseline_unix_nano: u64,
    pub backends: BackendsUsed,
    pub thresholds: ThresholdsUsed,
    pub wait: WaitReport,
    pub checks: Vec<CheckResult>,
}

impl VerifyReport {
    pub fn new(
        expectation: &Expectation,
        backends: BackendsUsed,
        thresholds: &Thresholds,
        wait: WaitReport,
        checks: Vec<CheckResult>,
    ) -> Self {
        Self {
            passed: !checks.iter().any(CheckResult::failed),
            runs: expectation.runs.iter().map(RunSummary::of).collect(),
            compared_runs: expectation.compared_runs.clone(),
            baseline_unix_nano: expectation.baseline,
            backends,
            thresholds: thresholds.into(),
            wait,
            checks,
        }
    }

    pub fn failures(&self) -> usize {
        self.checks.iter().filter(|c| c.failed()).count()
    }

    pub fn not_applicable(&self) -> usize {
        self.checks
            .iter()
            .filter(|c| c.status == CheckStatus::NotApplicable)
            .count()
    }
}

fn listed(items: &[String]) -> impl Iterator<Item = String> + '_ {
    let extra = items.len().saturating_sub(LISTED);
    items
        .iter()
        .take(LISTED)
        .cloned()
        .chain((extra > 0).then(|| format!("… and {extra} more (see --output json)")))
}

/// The table a person reads, then the details of each failing check and how the wait went.
pub fn table(report: &VerifyReport, color: bool) -> String {
    let mut out = String::new();
    let runs: Vec<String> = report
        .runs
        .iter()
        .map(|r| match &r.task_id {
            Some(task) => format!("{} (task {task}, {})", r.name, r.phase.as_str()),
            None => format!("{} ({})", r.name, r.phase.as_str()),
        })
        .collect();
    let _ = writeln!(out, "verifying {}", runs.join(", "));
    let since = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(report.baseline_unix_nano);
    let _ = writeln!(
        out,
        "metrics: what {} {} added since {}",
        if report.compared_runs.len() == 1 {
            "run"
        } else {
            "runs"
        },
        report.compared_runs.join(", "),
        crate::workflow::clock::rfc3339(since)
    );

    let mut table = super::table(
        [
            "check", "result", "expected", "found", "missing", "dup", "summary",
        ],
        color,
    );
    for c in &report.checks {
        let mut verdict_cell = Cell::new(c.status.label());
        if color {
            verdict_cell = verdict_cell.fg(match c.status {
                CheckStatus::Passed => Color::Green,
                CheckStatus::Failed => Color::Red,
                CheckStatus::NotApplicable => Color::Yellow,
            });
        }
        table.add_row(vec![
            Cell::new(c.check.name()),
            verdict_cell,
            Cell::new(c.expected),
            Cell::new(c.found),
            Cell::new(c.missing.len()),
            Cell::new(c.duplicated.len()),
            Cell::new(&c.summary),
        ]);
    }
    let _ = writeln!(out, "{table}");

    for c in &report.checks {
        if c.missing.is_empty() && c.duplicated.is_empty() && c.problems.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "\n{} ({}):",
            c.check.name(),
            match c.status {
                CheckStatus::Passed => "passed",
                CheckStatus::Failed => "FAILED",
                CheckStatus::NotApplicable => "not applicable",
            }
        );
        for (label, items) in [
            ("missing", &c.missing),
            ("duplicated", &c.duplicated),
            ("problem", &c.problems),
        ] {
            for item in listed(items) {
                let _ = writeln!(out, "  {label}: {item}");
            }
        }
    }

    let wait = &report.wait;
    let _ = writeln!(
        out,
        "\nwaited {:.1} s over {} poll(s): {}",
        wait.elapsed_ms as f64 / 1000.0,
        wait.polls,
        if wait.complete {
            "every backend held the expected data".to_string()
        } else {
            format!("timed out; still missing: {}", wait.outstanding.join("; "))
        }
    );
    let _ = writeln!(
        out,
        "{}",
        if report.passed && report.not_applicable() > 0 {
            format!(
                "verify: {} checks passed, {} not applicable",
                report.checks.len() - report.not_applicable(),
                report.not_applicable()
            )
        } else if report.passed {
            format!("verify: all {} checks passed", report.checks.len())
        } else {
            format!(
                "verify: {} of {} checks failed",
                report.failures(),
                report.checks.len()
            )
        }
    );
    out
}

pub fn json(report: &VerifyReport) -> String {
    serde_json::to_string_pretty(report).expect("reports always serialize")
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0 forbids.
pub(crate) fn xml_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 => {}
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML as Jenkins, GitLab and GitHub test reporters read it.
pub fn junit(report: &VerifyReport) -> String {
    let seconds = report.wait.elapsed_ms as f64 / 1000.0;
    let suite = format!(
        "obsctl verify: {}",
        report
            .runs
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let counts = format!(
        "tests=\"{}\" failures=\"{}\" errors=\"0\" skipped=\"{}\" time=\"{seconds:.3}\"",
        report.checks.len(),
        report.failures(),
        report.not_applicable()
    );
    let _ = writeln!(out, "<testsuites name=\"obsctl verify\" {counts}>");
    let _ = writeln!(
        out,
        "  <testsuite name=\"{}\" {counts}>",
        xml_escape(&suite)
    );
    let _ = writeln!(out, "    <properties>");
    for (name, value) in [
        ("tempo", report.backends.tempo.clone()),
        ("prometheus", report.backends.prometheus.clone()),
        ("loki", report.backends.loki.clone()),
        ("minCoverage", report.thresholds.min_coverage.to_string()),
        ("seriesBudget", report.thresholds.series_budget.to_string()),
        ("polls", report.wait.polls.to_string()),
        ("comparedRuns", report.compared_runs.join(", ")),
        ("waitComplete", report.wait.complete.to_string()),
    ] {
        let _ = writeln!(
            out,
            "      <property name=\"{name}\" value=\"{}\"/>",
            xml_escape(&value)
        );
    }
    let _ = writeln!(out, "    </properties>");
    for c in &report.checks {
        let _ = write!(
            out,
            "    <testcase classname=\"obsctl.verify\" name=\"{}\" time=\"0\">",
            c.check.name()
        );
        let numbers = format!(
            "expected={} found={} missing={} duplicated={}",
            c.expected,
            c.found,
            c.missing.len(),
            c.duplicated.len()
        );
        let mut details = vec![numbers.clone(), c.summary.clone()];
        details.extend(c.missing.iter().map(|m| format!("missing: {m}")));
        details.extend(c.duplicated.iter().map(|m| format!("duplicated: {m}")));
        details.extend(c.problems.iter().map(|m| format!("problem: {m}")));
        if c.status == CheckStatus::NotApplicable {
            let _ = write!(
                out,
                "\n      <skipped message=\"{}\"/>",
                xml_escape(&c.summary)
            );
        } else if c.failed() {
            let _ = write!(
                out,
                "\n      <failure type=\"{}\" message=\"{}\">{}</failure>",
                c.check.name(),
                xml_escape(&format!("{} ({numbers})", c.summary)),
                xml_escape(&details.join("\n"))
            );
        }
        let _ = writeln!(
            out,
            "\n      <system-out>{}</system-out>\n    </testcase>",
            xml_escape(&details.join("\n"))
        );
    }
    if !report.wait.complete {
        let _ = writeln!(
            out,
            "    <system-err>{}</system-err>",
            xml_escape(&format!(
                "timed out after {} polls; still missing: {}",
                report.wait.polls,
                report.wait.outstanding.join("; ")
            ))
        );
    }
    let _ = writeln!(out, "  </testsuite>\n</testsuites>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escape_handles_markup_and_control_characters() {
        assert_eq!(
            xml_escape("a<b & \"c\" 'd'>\u{1}\n"),
            "a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;\n"
        );
    }
}
