//! `obsctl trace <taskId> --html FILE`: the task's runs, one waterfall per trace with each step's
//! log lines under its span, the traces the backend does not have, and the links.

use std::fmt::Write as _;

use super::{Esc, facts, links, page, waterfall};
use crate::report::task::TaskView;
use crate::report::verify::RunSummary;

/// The runs as one line each: name, phase, trace id.
pub(crate) fn runs_html(runs: &[RunSummary]) -> String {
    if runs.is_empty() {
        return "<span class=\"muted\">no run record (found in the trace backend)</span>".into();
    }
    runs.iter()
        .map(|r| {
            format!(
                "<code>{}</code> {} <span class=\"muted\">{}{}</span>",
                Esc(&r.name),
                Esc(r.phase.as_str()),
                r.task_id
                    .as_deref()
                    .map(|t| format!("task {} · ", Esc(t)))
                    .unwrap_or_default(),
                format_args!("trace {}", r.trace_id)
            )
        })
        .collect::<Vec<_>>()
        .join("<br/>")
}

pub fn render(view: &TaskView) -> String {
    let mut body = String::new();
    let spans: usize = view.traces.iter().map(|t| t.span_count).sum();
    let _ = write!(
        body,
        "<header><h1>obsctl trace <code>{}</code></h1><p class=\"sub\">{} trace(s), {spans} \
         span(s){}</p></header>",
        Esc(&view.task_id),
        view.traces.len(),
        if view.missing_traces.is_empty() {
            String::new()
        } else {
            format!(
                "; {} trace(s) not in the trace backend",
                view.missing_traces.len()
            )
        }
    );
    facts(&mut body, &[("runs", runs_html(&view.runs))]);
    body.push_str("<section id=\"traces\"><h2>Traces</h2>");
    for tree in &view.traces {
        waterfall::render(&mut body, tree);
    }
    for id in &view.missing_traces {
        let _ = write!(
            body,
            "<p class=\"note\">trace <code>{id}</code>: not in the trace backend (yet); \
             telemetry may still be in flight</p>"
        );
    }
    body.push_str("</section>");
    links(&mut body, &view.links);
    page(&format!("obsctl trace {}", view.task_id), &body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::html::tests::{assert_self_contained, parse, with_class};
    use crate::report::html::waterfall::tests::sample;
    use crate::report::task::Link;

    #[test]
    fn the_trace_page_has_the_task_its_waterfall_and_safe_links() {
        let tree = sample();
        let view = TaskView {
            task_id: "T-<1>".into(),
            runs: vec![],
            traces: vec![tree.clone()],
            missing_traces: vec![crate::otlp::TraceId::random()],
            links: vec![
                Link {
                    label: "prHtmlUrl".into(),
                    url: "https://github.com/acme/widgets/pull/42".into(),
                },
                Link {
                    label: "previewUrl".into(),
                    url: "javascript:alert(document.cookie)".into(),
                },
            ],
        };
        let html = render(&view);
        assert_self_contained(&html);
        let doc = parse(&html);
        let title = doc
            .descendants()
            .find(|n| n.has_tag_name("title"))
            .and_then(|n| n.text());
        assert_eq!(title, Some("obsctl trace T-<1>"));
        assert_eq!(with_class(&doc, "bar").len(), 3);
        let hrefs: Vec<&str> = doc
            .descendants()
            .filter_map(|n| n.attribute("href"))
            .collect();
        assert_eq!(hrefs, ["https://github.com/acme/widgets/pull/42"]);
        assert!(html.contains("not in the trace backend (yet)"));
        assert!(html.contains(&tree.trace_id.to_string()));
    }
}
