//! One trace as a tree a person can read: spans indented under their parents, a duration bar
//! scaled to the whole trace, status and key attributes, optionally the span's log lines in time
//! order beneath it. The same tree serializes for `--json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use serde::Serialize;

use crate::backends::loki::LogEntry;
use crate::backends::tempo::{Span, StatusCode};
use crate::checks::spans::dedup;
use crate::conventions::attr;
use crate::otlp::{SpanId, TraceId};

const BAR_WIDTH: usize = 30;
const NAME_WIDTH: usize = 36;

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LogLine {
    pub timestamp_ns: u64,
    pub line: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub severity: Option<String>,
}

impl LogLine {
    fn of(entry: &LogEntry) -> Self {
        Self {
            timestamp_ns: entry.timestamp_ns,
            line: entry.line.clone(),
            severity: ["severity_text", "level", "detected_level"]
                .iter()
                .find_map(|k| entry.field(k))
                .map(str::to_string),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpanNode {
    pub span_id: SpanId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<SpanId>,
    pub name: String,
    pub start_unix_nano: u64,
    pub duration_ms: f64,
    pub status: StatusCode,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub status_message: String,
    pub attributes: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub logs: Vec<LogLine>,
    pub children: Vec<SpanNode>,
    /// Set on a span whose parent is not in the trace: it is shown at the top level.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub orphan: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TraceTree {
    pub trace_id: TraceId,
    pub start_unix_nano: u64,
    pub duration_ms: f64,
    pub span_count: usize,
    pub partial: bool,
    pub roots: Vec<SpanNode>,
    /// Log lines of the trace that name no span in it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub other_logs: Vec<LogLine>,
}

impl TraceTree {
    /// Builds the tree; spans received twice appear once; children start-time ordered.
    pub fn build(trace_id: TraceId, spans: &[Span], partial: bool, logs: &[LogEntry]) -> Self {
        let (unique, _) = dedup(spans);
        let ids: BTreeSet<SpanId> = unique.iter().map(|s| s.span_id).collect();
        let mut by_span: BTreeMap<SpanId, Vec<LogLine>> = BTreeMap::new();
        let mut other_logs = Vec::new();
        let mut sorted_logs: Vec<&LogEntry> = logs.iter().collect();
        sorted_logs.sort_by_key(|e| e.timestamp_ns);
        for entry in sorted_logs {
            match entry.span_id().filter(|id| ids.contains(id)) {
                Some(id) => by_span.entry(id).or_default().push(LogLine::of(entry)),
                None => other_logs.push(LogLine::of(entry)),
            }
        }
        let mut children: BTreeMap<Option<SpanId>, Vec<&Span>> = BTreeMap::new();
        for span in &unique {
            let parent = span.parent_span_id.filter(|p| ids.contains(p));
            children.entry(parent).or_default().push(span);
        }
        fn node(
            span: &Span,
            children: &BTreeMap<Option<SpanId>, Vec<&Span>>,
            logs: &mut BTreeMap<SpanId, Vec<LogLine>>,
        ) -> SpanNode {
            let mut kids: Vec<&Span> = children
                .get(&Some(span.span_id))
                .cloned()
                .unwrap_or_default();
            kids.sort_by_key(|s| (s.start_unix_nano, s.name.clone()));
            SpanNode {
                span_id: span.span_id,
                parent_span_id: span.parent_span_id,
                name: span.name.clone(),
                start_unix_nano: span.start_unix_nano,
                duration_ms: span.duration_nanos() as f64 / 1e6,
                status: span.status.code,
                status_message: span.status.message.clone(),
                attributes: span.attributes.clone(),
                logs: logs.remove(&span.span_id).unwrap_or_default(),
                children: kids.iter().map(|k| node(k, children, logs)).collect(),
                orphan: false,
            }
        }
        let mut tops: Vec<&Span> = children.get(&None).cloned().unwrap_or_default();
        tops.sort_by_key(|s| (s.start_unix_nano, s.name.clone()));
        let roots = tops
            .iter()
            .map(|s| {
                let mut n = node(s, &children, &mut by_span);
                n.orphan = s.parent_span_id.is_some();
                n
            })
            .collect();
        let start = unique.iter().map(|s| s.start_unix_nano).min().unwrap_or(0);
        let end = unique.iter().map(|s| s.end_unix_nano).max().unwrap_or(0);
        Self {
            trace_id,
            start_unix_nano: start,
            duration_ms: end.saturating_sub(start) as f64 / 1e6,
            span_count: unique.len(),
            partial,
            roots,
            other_logs,
        }
    }
}

impl TraceTree {
    /// The same tree without log lines: `trace --html` fetches them for the file, the terminal
    /// shows them only with `--logs`.
    pub fn without_logs(&self) -> Self {
        fn strip(node: &SpanNode) -> SpanNode {
            SpanNode {
                logs: Vec::new(),
                children: node.children.iter().map(strip).collect(),
                ..node.clone()
            }
        }
        Self {
            roots: self.roots.iter().map(strip).collect(),
            other_logs: Vec::new(),
            ..self.clone()
        }
    }
}

/// The attributes worth a glance on one line; the span name already says agent and step.
fn key_attributes(node: &SpanNode) -> String {
    let mut parts = Vec::new();
    for (key, label) in [
        (attr::NODE_ID, "node"),
        (attr::PROCESS_EXIT_CODE, "exit"),
        (attr::PROCESS_SIGNAL, "signal"),
    ] {
        if let Some(value) = node.attributes.get(key) {
            parts.push(format!("{label}={value}"));
        }
    }
    if !node.status_message.is_empty() {
        parts.push(crate::ui::quoted(&node.status_message));
    }
    parts.join(" ")
}

fn bar(node: &SpanNode, tree: &TraceTree, color: bool) -> String {
    let total = (tree.duration_ms * 1e6).max(1.0);
    let offset_ns = node.start_unix_nano.saturating_sub(tree.start_unix_nano) as f64;
    let start = ((offset_ns / total) * BAR_WIDTH as f64).floor() as usize;
    let start = start.min(BAR_WIDTH - 1);
    let len = (((node.duration_ms * 1e6) / total) * BAR_WIDTH as f64).round() as usize;
    let len = len.clamp(1, BAR_WIDTH - start);
    let (fill, edge) = if color { ('█', '│') } else { ('#', '|') };
    let filled: String = std::iter::repeat_n(fill, len).collect();
    let filled = if color {
        let code = match node.status {
            StatusCode::Error => "31",
            StatusCode::Ok => "32",
            StatusCode::Unset => "36",
        };
        format!("\x1b[{code}m{filled}\x1b[0m")
    } else {
        filled
    };
    format!(
        "{edge}{}{filled}{}{edge}",
        " ".repeat(start),
        " ".repeat(BAR_WIDTH - start - len)
    )
}

fn status_text(status: StatusCode, color: bool) -> String {
    let (text, code) = match status {
        StatusCode::Error => ("ERROR", "31"),
        StatusCode::Ok => ("OK", "32"),
        StatusCode::Unset => ("UNSET", "2"),
    };
    if color {
        format!("\x1b[{code}m{text:<5}\x1b[0m")
    } else {
        format!("{text:<5}")
    }
}

fn offset(ns: u64, from: u64) -> String {
    let delta = ns as i128 - from as i128;
    format!("{:+.3}s", delta as f64 / 1e9)
}

/// The waterfall as text: a header line, one line per span, log lines under their span.
pub fn render(tree: &TraceTree, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "trace {}  {:.0} ms  {} span(s){}",
        tree.trace_id,
        tree.duration_ms,
        tree.span_count,
        if tree.partial {
            "  (partial: the backend cut this trace short)"
        } else {
            ""
        }
    );
    fn walk(node: &SpanNode, depth: usize, tree: &TraceTree, color: bool, out: &mut String) {
        let indent = "  ".repeat(depth);
        let mut label = format!("{indent}{}", node.name);
        if node.orphan {
            label.push_str(" (parent missing)");
        }
        let width = NAME_WIDTH.max(label.chars().count());
        let _ = writeln!(
            out,
            "{label:<width$} {} {:>9.1} ms  {}  {}",
            bar(node, tree, color),
            node.duration_ms,
            status_text(node.status, color),
            key_attributes(node)
        );
        for log in &node.logs {
            let _ = writeln!(
                out,
                "{indent}    {} {}{}",
                offset(log.timestamp_ns, tree.start_unix_nano),
                log.severity
                    .as_deref()
                    .map(|s| format!("{s} "))
                    .unwrap_or_default(),
                log.line
            );
        }
        for child in &node.children {
            walk(child, depth + 1, tree, color, out);
        }
    }
    for root in &tree.roots {
        walk(root, 0, tree, color, &mut out);
    }
    if !tree.other_logs.is_empty() {
        let _ = writeln!(out, "log lines naming no span of this trace:");
        for log in &tree.other_logs {
            let _ = writeln!(
                out,
                "    {} {}",
                offset(log.timestamp_ns, tree.start_unix_nano),
                log.line
            );
        }
    }
    out.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}
