//! One trace as a waterfall in the style of Grafana's trace view: a time axis, one row per span
//! with its name indented under its parent and its bar placed on the axis, coloured by status.
//! Each row is a `<details>`: opening it shows the span's attributes, with no script. Rows of
//! failed spans start open. The step's log lines sit under its row; in a large trace they move
//! into the row's details, so that the bars still read as one waterfall.

use std::fmt::Write as _;

use super::{Esc, clip, duration_ms, time};
use crate::backends::tempo::StatusCode;
use crate::report::waterfall::{LogLine, SpanNode, TraceTree};

/// Rows drawn per trace; a burst of thousands of steps is summarised past this.
pub const MAX_ROWS: usize = 1000;
/// Log lines shown per span (the first ones; the rest are counted).
pub const MAX_LOGS_PER_SPAN: usize = 40;
/// Characters of one log line or attribute value.
pub const MAX_LINE: usize = 400;
/// Bytes of log text per trace: past it a span's lines are counted, not shown. Bounds a burst of
/// chatty steps (500 steps of 40 long lines would be 8 MB) to a file of a few MB.
pub const LOG_BUDGET: usize = 1024 * 1024;
/// A trace with at most this many spans shows each step's log lines under its row; a larger one
/// inside the row's details.
const INLINE_LOGS_UP_TO: usize = 50;
/// Failed rows opened at most, so a mass failure does not unfold the whole file.
const OPEN_FAILED: usize = 10;
/// The bar area's width in SVG units; positions are fractions of the trace times this.
pub const SCALE: f64 = 1000.0;

fn status_class(status: StatusCode) -> &'static str {
    match status {
        StatusCode::Ok => "ok",
        StatusCode::Error => "err",
        StatusCode::Unset => "unset",
    }
}

fn status_word(status: StatusCode) -> &'static str {
    match status {
        StatusCode::Ok => "OK",
        StatusCode::Error => "ERROR",
        StatusCode::Unset => "UNSET",
    }
}

/// Spans in display order with their depth.
fn flatten(tree: &TraceTree) -> Vec<(usize, &SpanNode)> {
    fn walk<'a>(node: &'a SpanNode, depth: usize, out: &mut Vec<(usize, &'a SpanNode)>) {
        out.push((depth, node));
        for child in &node.children {
            walk(child, depth + 1, out);
        }
    }
    let mut out = Vec::with_capacity(tree.span_count);
    for root in &tree.roots {
        walk(root, 0, &mut out);
    }
    out
}

/// Where a span's bar sits on the trace's axis, in [`SCALE`] units. A bar is at least 0.2 % wide
/// so that an instant span is still visible; the rest is proportional to the duration.
pub fn bar_geometry(node: &SpanNode, tree: &TraceTree) -> (f64, f64) {
    let total = (tree.duration_ms * 1e6).max(1.0);
    let offset = node.start_unix_nano.saturating_sub(tree.start_unix_nano) as f64;
    let x = (offset / total * SCALE).clamp(0.0, SCALE);
    let width = (node.duration_ms * 1e6 / total * SCALE).clamp(2.0, SCALE - x.min(SCALE - 2.0));
    (x, width)
}

/// The log lines as a list, charging what is shown to `budget`.
fn logs(out: &mut String, lines: &[LogLine], trace_start: u64, budget: &mut usize) {
    out.push_str("<ol class=\"logs\">");
    let mut shown = 0;
    for log in lines.iter().take(MAX_LOGS_PER_SPAN) {
        let line = clip(&log.line, MAX_LINE);
        if line.len() > *budget {
            break;
        }
        *budget -= line.len();
        shown += 1;
        let offset = (log.timestamp_ns as i128 - trace_start as i128) as f64 / 1e9;
        let _ = write!(out, "<li><time>{offset:+.3}s</time>");
        if let Some(sev) = &log.severity {
            let _ = write!(out, "<span class=\"sev {0}\">{0}</span>", Esc(sev));
        }
        let _ = write!(out, "{}</li>", Esc(&line));
    }
    if lines.len() > shown {
        let _ = write!(
            out,
            "<li class=\"more\">… and {} more line(s) not shown here; `obsctl trace --logs` \
             prints them all</li>",
            lines.len() - shown
        );
    }
    out.push_str("</ol>");
}

/// How one row is drawn.
struct RowStyle {
    /// The details (attributes) start open.
    open: bool,
    /// The log lines go under the row rather than into its details.
    inline_logs: bool,
}

fn row(
    out: &mut String,
    depth: usize,
    node: &SpanNode,
    tree: &TraceTree,
    style: RowStyle,
    budget: &mut usize,
) {
    let class = status_class(node.status);
    let (x, width) = bar_geometry(node, tree);
    let end_pct = (x + width) / SCALE * 100.0;
    // The duration sits right of the bar; inside its end when the bar reaches the right edge
    // and is wide enough to hold it, else left of it.
    let (label_class, label_pos) = if end_pct < 86.0 {
        ("dur", format!("left:calc({end_pct:.2}% + 6px)"))
    } else if width / SCALE > 0.15 {
        (
            "dur in",
            format!("right:calc({:.2}% + 6px)", 100.0 - end_pct),
        )
    } else {
        (
            "dur",
            format!("right:calc({:.2}% + 6px)", 100.0 - x / SCALE * 100.0),
        )
    };
    let dur = duration_ms(node.duration_ms);
    let _ = write!(
        out,
        "<div class=\"span-block\"><details class=\"span {class}\"{}><summary class=\"wf-row\" title=\"{} · {dur} · {}\">\
         <span class=\"wf-name\" style=\"padding-left:{}px\"><span class=\"nm\">{}</span>",
        if style.open { " open=\"\"" } else { "" },
        Esc(&node.name),
        status_word(node.status),
        10 + depth * 16,
        Esc(&node.name),
    );
    if node.orphan {
        out.push_str("<span class=\"flag\">parent missing</span>");
    }
    if node.status == StatusCode::Error {
        out.push_str("<span class=\"flag\">error</span>");
    }
    if !node.logs.is_empty() {
        let _ = write!(out, "<span class=\"nlogs\">{} log</span>", node.logs.len());
    }
    let _ = write!(
        out,
        "</span><span class=\"wf-track\"><svg viewBox=\"0 0 {SCALE} 14\" \
         preserveAspectRatio=\"none\" aria-hidden=\"true\"><rect class=\"bar {class}\" \
         x=\"{x:.2}\" y=\"0\" width=\"{width:.2}\" height=\"14\" data-duration-ms=\"{:.3}\">\
         <title>{} {dur}</title></rect></svg><span class=\"{label_class}\" style=\"{label_pos}\">{dur}</span>\
         </span></summary><div class=\"span-detail\">",
        node.duration_ms,
        Esc(&node.name),
    );
    let _ = write!(
        out,
        "<p class=\"status\">status <b>{}</b>{} · starts at +{} · span <code>{}</code>{}</p>",
        status_word(node.status),
        if node.status_message.is_empty() {
            String::new()
        } else {
            format!(": {}", Esc(&clip(&node.status_message, MAX_LINE)))
        },
        duration_ms(node.start_unix_nano.saturating_sub(tree.start_unix_nano) as f64 / 1e6),
        node.span_id,
        node.parent_span_id
            .map(|p| format!(" · parent <code>{p}</code>"))
            .unwrap_or_default()
    );
    if !node.attributes.is_empty() {
        out.push_str("<table class=\"kv\">");
        for (key, value) in &node.attributes {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td></tr>",
                Esc(&clip(key, 120)),
                Esc(&clip(value, MAX_LINE))
            );
        }
        out.push_str("</table>");
    }
    if !node.logs.is_empty() && !style.inline_logs {
        logs(out, &node.logs, tree.start_unix_nano, budget);
    }
    out.push_str("</div></details>");
    if !node.logs.is_empty() && style.inline_logs {
        let _ = write!(
            out,
            "<div class=\"span-logs\" style=\"padding-left:{}px\">",
            30 + depth * 16
        );
        logs(out, &node.logs, tree.start_unix_nano, budget);
        out.push_str("</div>");
    }
    out.push_str("</div>");
}

/// The trace's section: a heading with its id, start, duration and span count, the axis, one row
/// per span (at most [`MAX_ROWS`]), and the log lines that name no span of it.
pub fn render(out: &mut String, tree: &TraceTree) {
    let rows = flatten(tree);
    let errors = rows
        .iter()
        .filter(|(_, n)| n.status == StatusCode::Error)
        .count();
    let _ = write!(
        out,
        "<section class=\"trace\" id=\"trace-{0}\"><h3>trace <code>{0}</code>\
         <span class=\"muted\">{1} · {2} · {3} span(s){4}{5}</span></h3>",
        tree.trace_id,
        time(tree.start_unix_nano),
        duration_ms(tree.duration_ms),
        tree.span_count,
        if errors > 0 {
            format!(" · {errors} failed")
        } else {
            String::new()
        },
        if tree.partial {
            " · partial: the backend cut this trace short"
        } else {
            ""
        }
    );
    out.push_str(
        "<div class=\"legend\"><span><i class=\"ok\"></i>OK</span><span><i class=\"err\"></i>\
         ERROR</span><span><i class=\"unset\"></i>UNSET</span><span>open a row for its attributes</span>\
         </div>",
    );
    out.push_str(
        "<div class=\"wf\"><div class=\"wf-row wf-head\"><span class=\"wf-name\">span</span>\
         <span class=\"wf-ticks\">",
    );
    for i in 0..=4 {
        let _ = write!(
            out,
            "<span style=\"left:{}%\">{}</span>",
            i * 25,
            duration_ms(tree.duration_ms * f64::from(i) / 4.0)
        );
    }
    out.push_str("</span></div>");
    let inline_logs = rows.len() <= INLINE_LOGS_UP_TO;
    let mut opened_failed = 0;
    let mut budget = LOG_BUDGET;
    for (depth, node) in rows.iter().take(MAX_ROWS) {
        let open = node.status == StatusCode::Error && {
            opened_failed += 1;
            opened_failed <= OPEN_FAILED
        };
        row(
            out,
            *depth,
            node,
            tree,
            RowStyle { open, inline_logs },
            &mut budget,
        );
    }
    out.push_str("</div>");
    if rows.len() > MAX_ROWS {
        let _ = write!(
            out,
            "<p class=\"note\">… and {} more span(s) not drawn; `obsctl trace --json` has the \
             whole tree</p>",
            rows.len() - MAX_ROWS
        );
    }
    if !tree.other_logs.is_empty() {
        let _ = write!(
            out,
            "<details class=\"items\"><summary>log lines naming no span of this trace \
             <span class=\"count\">{}</span></summary>",
            tree.other_logs.len()
        );
        logs(out, &tree.other_logs, tree.start_unix_nano, &mut budget);
        out.push_str("</details>");
    }
    out.push_str("</section>");
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::backends::tempo::{Span, SpanStatus};
    use crate::otlp::{SpanId, TraceId};
    use crate::report::html::page;
    use crate::report::html::tests::{assert_self_contained, parse, with_class};

    pub fn span(
        trace: TraceId,
        parent: Option<SpanId>,
        name: &str,
        start_ms: u64,
        end_ms: u64,
        code: StatusCode,
    ) -> Span {
        Span {
            trace_id: trace,
            span_id: SpanId::random(),
            parent_span_id: parent,
            name: name.to_string(),
            start_unix_nano: 1_700_000_000_000_000_000 + start_ms * 1_000_000,
            end_unix_nano: 1_700_000_000_000_000_000 + end_ms * 1_000_000,
            status: SpanStatus {
                code,
                message: String::new(),
            },
            attributes: BTreeMap::new(),
            resource: BTreeMap::new(),
        }
    }

    pub fn log(
        span: SpanId,
        trace: TraceId,
        at_ms: u64,
        line: &str,
    ) -> crate::backends::loki::LogEntry {
        crate::backends::loki::LogEntry {
            timestamp_ns: 1_700_000_000_000_000_000 + at_ms * 1_000_000,
            line: line.into(),
            labels: Default::default(),
            structured_metadata: [
                ("span_id".to_string(), span.to_hex()),
                ("trace_id".to_string(), trace.to_hex()),
            ]
            .into(),
            parsed: Default::default(),
        }
    }

    /// A root of 1000 ms, a 400 ms OK child, a 100 ms failing child with a hostile log line and
    /// attribute.
    pub fn sample() -> TraceTree {
        let trace = TraceId::random();
        let root = span(trace, None, "workflow", 0, 1000, StatusCode::Unset);
        let ok = span(
            trace,
            Some(root.span_id),
            "coder/implement",
            100,
            500,
            StatusCode::Ok,
        );
        let mut bad = span(
            trace,
            Some(root.span_id),
            "tester/tests",
            600,
            700,
            StatusCode::Error,
        );
        bad.attributes.insert(
            "agent\"><script>alert(1)</script>".into(),
            "x\" onmouseover=\"alert(2)".into(),
        );
        bad.status.message = "exit <1>".into();
        let logs = vec![
            log(bad.span_id, trace, 650, "<script>alert('log')</script>"),
            log(ok.span_id, trace, 200, "compiling \u{1b}[32mok\u{1b}[0m"),
        ];
        TraceTree::build(trace, &[root, ok, bad], false, &logs)
    }

    #[test]
    fn bars_are_proportional_to_durations_and_placed_on_the_axis() {
        let tree = sample();
        let mut out = String::new();
        render(&mut out, &tree);
        let doc = parse(&out);
        let bars = with_class(&doc, "bar");
        assert_eq!(bars.len(), 3);
        let geometry: Vec<(f64, f64)> = bars
            .iter()
            .map(|b| {
                (
                    b.attribute("x").unwrap().parse().unwrap(),
                    b.attribute("width").unwrap().parse().unwrap(),
                )
            })
            .collect();
        // Depth-first: root (0..1000 ms), implement (100..500), tests (600..700).
        assert_eq!(
            geometry,
            vec![(0.0, 1000.0), (100.0, 400.0), (600.0, 100.0)]
        );
        let classes: Vec<&str> = bars.iter().map(|b| b.attribute("class").unwrap()).collect();
        assert_eq!(classes, ["bar unset", "bar ok", "bar err"]);
    }

    #[test]
    fn hostile_log_lines_and_attributes_stay_text() {
        let tree = sample();
        let mut body = String::new();
        render(&mut body, &tree);
        let html = page("t", &body);
        assert_self_contained(&html);
        let doc = parse(&html);
        assert!(
            !doc.descendants().any(|n| n.has_tag_name("script")),
            "a log line became a script element"
        );
        assert!(
            doc.descendants()
                .all(|n| n.attributes().all(|a| !a.name().starts_with("on"))),
            "an attribute value became an event handler"
        );
        let lines: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("li"))
            .map(|n| n.descendants().filter_map(|t| t.text()).collect())
            .collect();
        assert!(
            lines
                .iter()
                .any(|l| l.ends_with("<script>alert('log')</script>")),
            "{lines:?}"
        );
        // The ANSI escape is gone, its printable rest kept.
        assert!(
            lines.iter().any(|l| l.ends_with("compiling [32mok[0m")),
            "{lines:?}"
        );
        let cells: Vec<&str> = doc
            .descendants()
            .filter(|n| n.has_tag_name("td"))
            .filter_map(|n| n.text())
            .collect();
        assert!(cells.contains(&"x\" onmouseover=\"alert(2)"), "{cells:?}");
    }

    #[test]
    fn a_small_trace_opens_failed_rows_and_shows_logs_under_their_span() {
        let tree = sample();
        let mut out = String::new();
        render(&mut out, &tree);
        let doc = parse(&out);
        let rows = with_class(&doc, "span");
        assert_eq!(rows.len(), 3);
        let open: Vec<bool> = rows.iter().map(|r| r.attribute("open").is_some()).collect();
        assert_eq!(
            open,
            [false, false, true],
            "only the failed span starts open"
        );
        let failed = rows[2];
        let details: String = failed.descendants().filter_map(|t| t.text()).collect();
        assert!(details.contains("exit <1>"), "{details}");
        // Its log line follows the row, outside the details, so it shows with the row closed.
        let logs = failed
            .next_sibling_element()
            .expect("the log lines after the row");
        assert_eq!(logs.attribute("class"), Some("span-logs"));
        let text: String = logs.descendants().filter_map(|t| t.text()).collect();
        assert!(text.contains("alert('log')"), "{text}");
    }

    #[test]
    fn five_hundred_spans_stay_within_a_few_megabytes() {
        let trace = TraceId::random();
        let root = span(
            trace,
            None,
            "workflow burst-abcdef",
            0,
            60_000,
            StatusCode::Unset,
        );
        let mut spans = vec![root.clone()];
        let mut logs = Vec::new();
        for i in 0..500u64 {
            let mut s = span(
                trace,
                Some(root.span_id),
                &format!("burst/step-{i}"),
                i * 10,
                i * 10 + 5_000,
                if i % 25 == 0 {
                    StatusCode::Error
                } else {
                    StatusCode::Ok
                },
            );
            for key in [
                "repo",
                "prNumber",
                "ref",
                "taskId",
                "agent",
                "workflowName",
                "nodeId",
                "stepName",
            ] {
                s.attributes
                    .insert(key.into(), format!("{key}-value-{i}-{}", "x".repeat(40)));
            }
            // More lines than shown, and longer than shown.
            for n in 0..60 {
                logs.push(log(
                    s.span_id,
                    trace,
                    i * 10 + n,
                    &format!("{n} {}", "y".repeat(1000)),
                ));
            }
            spans.push(s);
        }
        let tree = TraceTree::build(trace, &spans, false, &logs);
        let mut body = String::new();
        render(&mut body, &tree);
        let html = page("burst", &body);
        assert!(
            html.len() < 3 * 1024 * 1024,
            "500 spans gave {} bytes",
            html.len()
        );
        assert!(html.contains("more line(s) not shown here"));
        eprintln!(
            "500 spans with 60 lines of 1000 bytes each: {} bytes",
            html.len()
        );
        let doc = parse(&html);
        assert_eq!(with_class(&doc, "bar").len(), 501);
        let opened = with_class(&doc, "span")
            .iter()
            .filter(|r| r.attribute("open").is_some())
            .count();
        assert_eq!(opened, OPEN_FAILED, "only the first failed rows start open");
    }

    #[test]
    fn a_trace_larger_than_the_row_limit_is_summarised() {
        let trace = TraceId::random();
        let root = span(trace, None, "root", 0, 10, StatusCode::Unset);
        let mut spans = vec![root.clone()];
        spans.extend((0..MAX_ROWS as u64 + 50).map(|i| {
            span(
                trace,
                Some(root.span_id),
                &format!("s{i}"),
                0,
                1,
                StatusCode::Ok,
            )
        }));
        let tree = TraceTree::build(trace, &spans, false, &[]);
        let mut out = String::new();
        render(&mut out, &tree);
        let doc = parse(&out);
        assert_eq!(with_class(&doc, "bar").len(), MAX_ROWS);
        assert!(out.contains("… and 51 more span(s) not drawn"));
    }
}
