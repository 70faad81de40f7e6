//! `obsctl chaos --report FILE.html`: per scenario its verdict, the loss account (expected,
//! found, lost, duplicated per check, with the items named), its measurements, and a timeline:
//! every step attempt on one axis with the fault window shaded over them, retries linked to the
//! attempt they replace, and the attempts that ran while the fault was on marked.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{Esc, Verdict, badge, clip, duration_ms, facts, item_list, meter, page};
use crate::chaos::{ScenarioReport, Timeline, TimelineStep};
use crate::report::chaos::ChaosReport;

/// Attempts drawn one row each; a larger burst is drawn as steps running over time instead.
pub const MAX_ROWS: usize = 120;
/// Time buckets of the concurrency chart.
const BUCKETS: usize = 200;
const WIDTH: f64 = 1000.0;
const LABEL: f64 = 250.0;
const PLOT_END: f64 = 985.0;
const AXIS: f64 = 22.0;
const ROW: f64 = 16.0;

/// The attempt's step without run name and retry number: `steps[0].work(1)` → `steps[0].work`.
fn step_of(node: &str) -> &str {
    let short = node.split_once('.').map_or(node, |(_, rest)| rest);
    match short.rfind('(') {
        Some(i) if short.ends_with(')') && short[i + 1..short.len() - 1].parse::<u32>().is_ok() => {
            &short[..i]
        }
        _ => short,
    }
}

fn short_name(node: &str) -> &str {
    node.split_once('.').map_or(node, |(_, rest)| rest)
}

fn phase_class(phase: &str) -> &'static str {
    match phase {
        "Succeeded" => "ok",
        "Failed" | "Error" => "err",
        _ => "unset",
    }
}

fn overlaps(step: &TimelineStep, fault: Option<(u64, u64)>) -> bool {
    fault.is_some_and(|(a, b)| step.start_ms < b && step.end_ms > a)
}

struct Axis {
    total: f64,
}

impl Axis {
    fn of(timeline: &Timeline) -> Self {
        let end = timeline
            .steps
            .iter()
            .map(|s| s.end_ms)
            .chain(timeline.fault.map(|(_, b)| b))
            .max()
            .unwrap_or(0);
        Self {
            total: (end as f64).max(1.0),
        }
    }

    fn x(&self, ms: u64) -> f64 {
        LABEL + (ms as f64 / self.total).min(1.0) * (PLOT_END - LABEL)
    }

    fn ticks(&self, out: &mut String, bottom: f64) {
        for i in 0..=4 {
            let ms = self.total * f64::from(i) / 4.0;
            let x = LABEL + (PLOT_END - LABEL) * f64::from(i) / 4.0;
            let anchor = match i {
                0 => "start",
                4 => "end",
                _ => "middle",
            };
            let _ = write!(
                out,
                "<line class=\"gridline\" x1=\"{x:.1}\" y1=\"{AXIS}\" x2=\"{x:.1}\" y2=\"{bottom:.1}\"/>\
                 <text class=\"muted\" x=\"{x:.1}\" y=\"14\" text-anchor=\"{anchor}\">{}</text>",
                duration_ms(ms)
            );
        }
    }

    fn fault(&self, out: &mut String, fault: Option<(u64, u64)>, bottom: f64) {
        if let Some((a, b)) = fault {
            let (x1, x2) = (self.x(a), self.x(b));
            let _ = write!(
                out,
                "<rect class=\"fault\" x=\"{x1:.2}\" y=\"{AXIS}\" width=\"{:.2}\" height=\"{:.1}\">\
                 <title>fault from {} to {}</title></rect>\
                 <text x=\"{:.1}\" y=\"{:.1}\" class=\"muted\" text-anchor=\"end\">fault</text>",
                (x2 - x1).max(1.0),
                bottom - AXIS,
                duration_ms(a as f64),
                duration_ms(b as f64),
                // Inside the window's top right corner, clear of the markers at bar ends.
                (x2 - 4.0).max(x1 + 24.0),
                AXIS + 11.0
            );
        }
    }
}

/// One row per attempt, in start order, with retries linked.
fn rows_chart(out: &mut String, timeline: &Timeline) {
    let axis = Axis::of(timeline);
    let mut steps: Vec<&TimelineStep> = timeline.steps.iter().collect();
    steps.sort_by_key(|s| (s.start_ms, s.node.clone()));
    let bottom = AXIS + ROW * steps.len() as f64 + 4.0;
    let _ = write!(
        out,
        "<figure class=\"chart timeline\"><svg viewBox=\"0 0 {WIDTH} {:.0}\" role=\"img\" \
         aria-label=\"step attempts over time with the fault window\">",
        bottom + 2.0
    );
    axis.ticks(out, bottom);
    axis.fault(out, timeline.fault, bottom);
    let mut last_of_step: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        let y = AXIS + 4.0 + ROW * i as f64;
        let (x1, x2) = (axis.x(s.start_ms), axis.x(s.end_ms));
        let class = phase_class(&s.phase);
        let _ = write!(
            out,
            "<g class=\"attempt\" data-phase=\"{}\"><text x=\"{:.1}\" y=\"{:.1}\" \
             text-anchor=\"end\">{}</text><rect class=\"{class}\" x=\"{x1:.2}\" y=\"{y:.1}\" \
             width=\"{:.2}\" height=\"10\" rx=\"2\"><title>{} {} · {} → {}</title></rect>",
            Esc(&s.phase),
            LABEL - 8.0,
            y + 9.0,
            Esc(&clip(short_name(&s.node), 38)),
            (x2 - x1).max(1.5),
            Esc(&s.node),
            Esc(&s.phase),
            duration_ms(s.start_ms as f64),
            duration_ms(s.end_ms as f64),
        );
        // A retry replaces the attempt of the same step before it: an elbow from that attempt's
        // end down to this one's start (a retry often starts the moment the attempt ends, where
        // a straight line would have no length).
        let step = step_of(&s.node);
        if let Some((px, py)) = last_of_step.get(step) {
            let knee = px + 5.0;
            let _ = write!(
                out,
                "<path class=\"retry\" d=\"M{px:.1},{:.1} H{knee:.1} V{:.1} H{x1:.1}\">\
                 <title>retry of {}</title></path><circle class=\"retry-start\" cx=\"{x1:.1}\" \
                 cy=\"{:.1}\" r=\"2.5\"/>",
                py + 5.0,
                y + 5.0,
                Esc(step),
                y + 5.0
            );
        }
        if overlaps(s, timeline.fault) {
            let (cx, cy) = (x2 + 7.0, y + 5.0);
            let _ = write!(
                out,
                "<path class=\"mark\" d=\"M{cx:.1},{:.1} L{:.1},{cy:.1} L{cx:.1},{:.1} L{:.1},{cy:.1} Z\">\
                 <title>ran while the fault was on</title></path>",
                cy - 4.5,
                cx + 4.5,
                cy + 4.5,
                cx - 4.5
            );
        }
        out.push_str("</g>");
        last_of_step.insert(step, (x2, y));
    }
    out.push_str("</svg></figure>");
    out.push_str(
        "<div class=\"legend\"><span><i class=\"ok\"></i>succeeded</span><span><i class=\"err\">\
         </i>failed (killed, interrupted)</span><span><i class=\"fault\"></i>fault window</span>\
         <span><i class=\"mark\"></i>ran while the fault was on</span><span>a line leads from an \
         attempt to the retry that replaces it</span></div>",
    );
}

/// Attempts running over time, failed ones on top: a burst of thousands in one picture.
fn concurrency_chart(out: &mut String, timeline: &Timeline) {
    let axis = Axis::of(timeline);
    let height = 140.0;
    let bottom = AXIS + height;
    let bucket_ms = axis.total / BUCKETS as f64;
    let mut running = vec![(0u32, 0u32); BUCKETS];
    for s in &timeline.steps {
        let first = (s.start_ms as f64 / bucket_ms) as usize;
        let last = ((s.end_ms as f64 / bucket_ms) as usize).min(BUCKETS - 1);
        for bucket in running
            .iter_mut()
            .take(last + 1)
            .skip(first.min(BUCKETS - 1))
        {
            if phase_class(&s.phase) == "err" {
                bucket.1 += 1;
            } else {
                bucket.0 += 1;
            }
        }
    }
    let peak = running.iter().map(|(a, b)| a + b).max().unwrap_or(1).max(1);
    let _ = write!(
        out,
        "<figure class=\"chart timeline\"><svg viewBox=\"0 0 {WIDTH} {:.0}\" role=\"img\" \
         aria-label=\"attempts running over time with the fault window\">",
        bottom + 4.0
    );
    axis.ticks(out, bottom);
    axis.fault(out, timeline.fault, bottom);
    let _ = write!(
        out,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{peak} running</text>\
         <text x=\"{:.1}\" y=\"{bottom:.1}\" text-anchor=\"end\">0</text>",
        LABEL - 8.0,
        AXIS + 10.0,
        LABEL - 8.0
    );
    let w = (PLOT_END - LABEL) / BUCKETS as f64;
    for (i, (ok, failed)) in running.iter().enumerate() {
        let x = LABEL + w * i as f64;
        let h_ok = f64::from(*ok) / f64::from(peak) * height;
        let h_err = f64::from(*failed) / f64::from(peak) * height;
        if *ok > 0 {
            let _ = write!(
                out,
                "<rect class=\"area\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{w:.2}\" height=\"{h_ok:.2}\"/>",
                bottom - h_ok
            );
        }
        if *failed > 0 {
            let _ = write!(
                out,
                "<rect class=\"area err\" x=\"{x:.2}\" y=\"{:.2}\" width=\"{w:.2}\" height=\"{h_err:.2}\"/>",
                bottom - h_ok - h_err
            );
        }
    }
    let during = timeline
        .steps
        .iter()
        .filter(|s| overlaps(s, timeline.fault))
        .count();
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"{LABEL}\" y1=\"{bottom:.1}\" x2=\"{PLOT_END}\" y2=\"{bottom:.1}\"/>\
         </svg><figcaption class=\"note\">{} attempts, too many for a row each: drawn as how many \
         ran at once{}</figcaption></figure>",
        timeline.steps.len(),
        if timeline.fault.is_some() {
            format!("; {during} ran while the fault was on")
        } else {
            String::new()
        }
    );
    out.push_str(
        "<div class=\"legend\"><span><i class=\"unset\"></i>running</span><span><i class=\"err\">\
         </i>failed</span><span><i class=\"fault\"></i>fault window</span></div>",
    );
}

fn scenario(out: &mut String, s: &ScenarioReport) {
    let verdict = Verdict::of(s.passed);
    let lost: u64 = s.rows.iter().map(|r| r.lost).sum();
    let dup: u64 = s.rows.iter().map(|r| r.duplicated).sum();
    let _ = write!(
        out,
        "<section class=\"scenario {}\" id=\"scenario-{}\" data-scenario=\"{}\"><h3>{} {}</h3>\
         <p class=\"muted\">{} lost · {} duplicated{}</p>",
        verdict.class(),
        Esc(&s.scenario.replace('/', "-")),
        Esc(&s.scenario),
        badge(verdict),
        Esc(&s.scenario),
        lost,
        dup,
        if s.runs.is_empty() {
            String::new()
        } else {
            format!(" · runs {}", Esc(&s.runs.join(", ")))
        }
    );
    if !s.timeline.steps.is_empty() {
        if s.timeline.steps.len() <= MAX_ROWS {
            rows_chart(out, &s.timeline);
        } else {
            concurrency_chart(out, &s.timeline);
        }
    }
    out.push_str(
        "<table class=\"grid\"><thead><tr><th>check</th><th>result</th><th class=\"num\">expected\
         </th><th class=\"num\">found</th><th class=\"num\">lost</th><th class=\"num\">dup</th>\
         <th>found of expected</th></tr></thead><tbody>",
    );
    for row in &s.rows {
        let v = Verdict::of(row.passed);
        let bad = |n: u64| if n > 0 { "num bad" } else { "num" };
        let _ = write!(
            out,
            "<tr class=\"{}\" data-row=\"{}\"><td>{}</td><td>{}</td><td class=\"num\">{}</td>\
             <td class=\"num\">{}</td><td class=\"{}\">{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            v.class(),
            Esc(&row.check),
            Esc(&row.check),
            badge(v),
            row.expected,
            row.found,
            bad(row.lost),
            row.lost,
            bad(row.duplicated),
            row.duplicated,
            meter(row.expected, row.found, v)
        );
    }
    out.push_str("</tbody></table>");
    if !s.timings.is_empty() {
        let pairs: Vec<(&str, String)> = s
            .timings
            .iter()
            .map(|m| {
                let value = if m.value.fract() == 0.0 {
                    format!("{:.0}", m.value)
                } else {
                    format!("{:.2}", m.value)
                };
                (m.name, format!("{} {}", value, Esc(m.unit)))
            })
            .collect();
        out.push_str("<h4>measurements</h4>");
        facts(out, &pairs);
    }
    for row in s.rows.iter().filter(|r| !r.passed && !r.items.is_empty()) {
        item_list(
            out,
            &format!("{}: what went wrong", row.check),
            "missing",
            &row.items,
        );
    }
    out.push_str("</section>");
}

pub fn render(report: &ChaosReport) -> String {
    let verdict = Verdict::of(report.passed);
    let failed = report.scenarios.iter().filter(|s| !s.passed).count();
    let mut body = String::new();
    let _ = write!(
        body,
        "<header><h1>obsctl chaos {}</h1><p class=\"sub\">{} of {} scenario(s) passed on the {} \
         runtime in {}</p><nav class=\"toc\">",
        badge(verdict),
        report.scenarios.len() - failed,
        report.scenarios.len(),
        Esc(&report.runtime),
        duration_ms(report.elapsed_ms as f64)
    );
    for s in &report.scenarios {
        let _ = write!(
            body,
            "<a href=\"#scenario-{}\">{}</a>",
            Esc(&s.scenario.replace('/', "-")),
            Esc(&s.scenario)
        );
    }
    body.push_str("</nav></header><h2>Scenarios</h2>");
    if report.scenarios.is_empty() {
        body.push_str("<p class=\"note\">no scenario ran</p>");
    }
    for s in &report.scenarios {
        scenario(&mut body, s);
    }
    page("obsctl chaos", &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::{Measure, Row};
    use crate::report::html::tests::{assert_self_contained, parse, with_class};

    fn step(node: &str, start: u64, end: u64, phase: &str) -> TimelineStep {
        TimelineStep {
            node: node.into(),
            start_ms: start,
            end_ms: end,
            phase: phase.into(),
        }
    }

    fn outage() -> ScenarioReport {
        ScenarioReport {
            scenario: "collector-outage/pause".into(),
            passed: false,
            elapsed_ms: 15_000,
            runs: vec!["chaos-steady-abc".into()],
            rows: vec![
                Row::condition("workflow-succeeded", true, 1, 1, String::new()),
                Row {
                    check: "log-lines".into(),
                    passed: false,
                    expected: 40,
                    found: 38,
                    lost: 2,
                    duplicated: 0,
                    items: vec!["lost: span 01 \"line <3>\"".into()],
                },
            ],
            timings: vec![Measure::new("added-delay-ms", 412.0, "ms")],
            timeline: Timeline {
                fault: Some((2000, 12_000)),
                steps: vec![
                    step("chaos-steady-abc.steps[0].work(0)", 0, 1000, "Succeeded"),
                    step("chaos-steady-abc.steps[1].work(0)", 1500, 3000, "Failed"),
                    step("chaos-steady-abc.steps[1].work(1)", 3500, 5000, "Succeeded"),
                    step(
                        "chaos-steady-abc.steps[2].work(0)",
                        13_000,
                        14_000,
                        "Succeeded",
                    ),
                ],
            },
        }
    }

    #[test]
    fn the_timeline_shades_the_fault_links_retries_and_marks_what_ran_during_it() {
        let report = ChaosReport::new("embedded", 20_000, vec![outage()]);
        let html = render(&report);
        assert_self_contained(&html);
        let doc = parse(&html);
        let fault = with_class(&doc, "fault")
            .into_iter()
            .find(|n| n.has_tag_name("rect"))
            .expect("a shaded fault window");
        // 2 s to 12 s of a 14 s axis from x=250 to x=985.
        let x: f64 = fault.attribute("x").unwrap().parse().unwrap();
        let w: f64 = fault.attribute("width").unwrap().parse().unwrap();
        assert!((x - (250.0 + 735.0 * 2.0 / 14.0)).abs() < 0.01, "{x}");
        assert!((w - 735.0 * 10.0 / 14.0).abs() < 0.01, "{w}");
        assert_eq!(with_class(&doc, "attempt").len(), 4);
        let retries = with_class(&doc, "retry");
        assert_eq!(retries.len(), 1, "one retry, of steps[1].work");
        // steps[1] attempts 0 and 1 overlap the fault; steps[0] and steps[2] do not.
        assert_eq!(
            with_class(&doc, "mark")
                .iter()
                .filter(|n| n.has_tag_name("path"))
                .count(),
            2
        );
        let failed_row = doc
            .descendants()
            .find(|n| n.attribute("data-row") == Some("log-lines"))
            .unwrap();
        assert_eq!(failed_row.attribute("class"), Some("fail"));
        assert!(html.contains("line &lt;3&gt;"));
        assert!(html.contains("412 ms"));
    }

    #[test]
    fn a_large_burst_is_drawn_as_concurrency_and_stays_small() {
        let mut burst = outage();
        burst.scenario = "burst".into();
        burst.timeline.fault = None;
        burst.timeline.steps = (0..5000)
            .map(|i| {
                step(
                    &format!("burst-x.steps[{i}]"),
                    i / 10,
                    i / 10 + 800,
                    "Succeeded",
                )
            })
            .collect();
        let html = render(&ChaosReport::new("embedded", 1, vec![burst]));
        assert!(html.len() < 200_000, "{} bytes", html.len());
        let doc = parse(&html);
        assert_eq!(with_class(&doc, "attempt").len(), 0);
        assert!(!with_class(&doc, "area").is_empty());
        assert!(html.contains("5000 attempts"));
    }

    #[test]
    fn retry_numbers_are_stripped_from_the_step() {
        assert_eq!(step_of("run-x.steps[1].work(12)"), "steps[1].work");
        assert_eq!(step_of("run-x.steps[1].work"), "steps[1].work");
        assert_eq!(step_of("run-x.f(a)"), "f(a)");
        assert_eq!(step_of("plain"), "plain");
    }
}
