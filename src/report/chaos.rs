//! How `obsctl chaos` results are shown: a table per scenario (each check's expected, found,
//! lost and duplicated items, then the measurements), JSON with each scenario's timeline, and
//! JUnit XML with one testcase per scenario and check.

use std::fmt::Write;

use comfy_table::{Cell, Color};
use serde::Serialize;

use super::verify::xml_escape;
use crate::chaos::ScenarioReport;

/// The whole result of one `obsctl chaos` invocation.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub passed: bool,
    pub runtime: String,
    pub elapsed_ms: u64,
    pub scenarios: Vec<ScenarioReport>,
}

impl ChaosReport {
    pub fn new(runtime: &str, elapsed_ms: u64, scenarios: Vec<ScenarioReport>) -> Self {
        Self {
            passed: !scenarios.is_empty() && scenarios.iter().all(|s| s.passed),
            runtime: runtime.to_string(),
            elapsed_ms,
            scenarios,
        }
    }
}

fn verdict(passed: bool, color: bool) -> Cell {
    let cell = Cell::new(if passed { "PASS" } else { "FAIL" });
    match color {
        true => cell.fg(if passed { Color::Green } else { Color::Red }),
        false => cell,
    }
}

/// One table per scenario, then its measurements and what went wrong, named.
pub fn table(report: &ChaosReport, color: bool) -> String {
    let mut out = String::new();
    for s in &report.scenarios {
        let _ = writeln!(
            out,
            "\n{} ({})",
            s.scenario,
            if s.passed { "passed" } else { "FAILED" }
        );
        if !s.runs.is_empty() {
            let _ = writeln!(out, "runs: {}", s.runs.join(", "));
        }
        if let Some((start, end)) = s.timeline.fault {
            let _ = writeln!(out, "fault: {start} ms → {end} ms after the run started");
        }
        let mut table = super::table(
            ["check", "result", "expected", "found", "lost", "dup"],
            color,
        );
        for row in &s.rows {
            table.add_row(vec![
                Cell::new(&row.check),
                verdict(row.passed, color),
                Cell::new(row.expected),
                Cell::new(row.found),
                Cell::new(row.lost),
                Cell::new(row.duplicated),
            ]);
        }
        let _ = writeln!(out, "{table}");
        for measure in &s.timings {
            let _ = writeln!(out, "  {}", measure.to_string().trim_end());
        }
        for row in s.rows.iter().filter(|r| !r.passed) {
            for item in &row.items {
                let _ = writeln!(out, "  {}: {item}", row.check);
            }
        }
    }
    let failed = report.scenarios.iter().filter(|s| !s.passed).count();
    let _ = writeln!(
        out,
        "\n{} of {} scenario(s) passed on the {} runtime in {:.1} s",
        report.scenarios.len() - failed,
        report.scenarios.len(),
        report.runtime,
        report.elapsed_ms as f64 / 1000.0
    );
    out
}

pub fn json(report: &ChaosReport) -> String {
    serde_json::to_string_pretty(report).expect("reports always serialize")
}

/// One testsuite per scenario, one testcase per check.
pub fn junit(report: &ChaosReport) -> String {
    let mut out = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"obsctl chaos\">\n",
    );
    for s in &report.scenarios {
        let failures = s.rows.iter().filter(|r| !r.passed).count();
        let _ = writeln!(
            out,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"0\" skipped=\"0\">",
            xml_escape(&s.scenario),
            s.rows.len()
        );
        for row in &s.rows {
            let _ = write!(
                out,
                "    <testcase classname=\"chaos.{}\" name=\"{}\"",
                xml_escape(&s.scenario),
                xml_escape(&row.check)
            );
            if row.passed {
                out.push_str("/>\n");
            } else {
                let _ = writeln!(
                    out,
                    ">\n      <failure message=\"expected {} found {} lost {} dup {}\">{}</failure>\n    </testcase>",
                    row.expected,
                    row.found,
                    row.lost,
                    row.duplicated,
                    xml_escape(&row.items.join("\n"))
                );
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}
