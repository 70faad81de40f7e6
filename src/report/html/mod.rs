//! The reports as one self-contained HTML file: `verify --report x.html`, `chaos --report x.html`
//! and `trace --html x.html`. Everything is inline (CSS, SVG), there is no script at all, and a
//! Content-Security-Policy forbids loading anything, so the file reads the same as a CI artifact
//! on a machine without network. Hand-written markup through one escaping helper: every value
//! that reaches the page (step output, attribute values, URLs, check messages) is untrusted.
//!
//! The markup is also well-formed XML (void elements self-closed, boolean attributes spelled
//! out), so tests can parse it and look at the bars and sections instead of grepping.

pub mod chaos;
pub mod task;
pub mod verify;
pub mod waterfall;

use std::fmt::{self, Write as _};
use std::path::Path;

/// Items listed per list (missing, duplicated, problems); the rest is counted. Bounds the file
/// for a run with thousands of failures; the JSON report has them all.
pub const MAX_ITEMS: usize = 200;
/// Lists longer than this start collapsed.
pub const OPEN_ITEMS: usize = 12;

/// What `--report FILE` writes, chosen by the file's extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportFormat {
    Html,
    Json,
}

impl ReportFormat {
    /// `.html`/`.htm` (any case) is HTML; anything else keeps the JSON report that `--report`
    /// wrote before HTML existed.
    pub fn of(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(ext) if ext.eq_ignore_ascii_case("html") || ext.eq_ignore_ascii_case("htm") => {
                Self::Html
            }
            _ => Self::Json,
        }
    }
}

/// Text made safe for HTML content and double-quoted attribute values. Control characters other
/// than tab and newline are dropped (a step's ANSI colour codes among them: `ESC [ … m` loses its
/// ESC and the rest is shown as written), because XML forbids them and they render as garbage.
pub struct Esc<'a>(pub &'a str);

impl fmt::Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(|c: char| {
            matches!(c, '&' | '<' | '>' | '"' | '\'') || (c.is_control() && c != '\n' && c != '\t')
        }) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().expect("found a char at i");
            match c {
                '&' => f.write_str("&amp;")?,
                '<' => f.write_str("&lt;")?,
                '>' => f.write_str("&gt;")?,
                '"' => f.write_str("&quot;")?,
                '\'' => f.write_str("&#39;")?,
                _ => {}
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Escaped text, owned.
pub fn esc(text: &str) -> String {
    Esc(text).to_string()
}

/// At most `max` characters of `text`, with an ellipsis when cut: one log line or attribute value
/// must not make the file huge.
pub fn clip(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        None => text.into(),
        Some((i, _)) => format!("{}… ({} more bytes)", &text[..i], text.len() - i).into(),
    }
}

/// A link when `url` is an absolute http(s) URL, else the text alone: a workflow output such as
/// `javascript:…` must never become clickable.
pub fn link(url: &str, text: &str) -> String {
    let safe = reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
    match safe {
        Some(_) => format!(
            "<a href=\"{}\" rel=\"noreferrer noopener\">{}</a>",
            Esc(url),
            Esc(text)
        ),
        None => format!("<span class=\"nolink\">{}</span>", Esc(text)),
    }
}

/// A verdict as the page shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Passed,
    Failed,
    NotApplicable,
}

impl Verdict {
    pub fn of(passed: bool) -> Self {
        if passed { Self::Passed } else { Self::Failed }
    }

    /// The CSS class that colours it.
    pub fn class(self) -> &'static str {
        match self {
            Self::Passed => "pass",
            Self::Failed => "fail",
            Self::NotApplicable => "na",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Passed => "PASS",
            Self::Failed => "FAIL",
            Self::NotApplicable => "N/A",
        }
    }

    pub fn words(self) -> &'static str {
        match self {
            Self::Passed => "passed",
            Self::Failed => "failed",
            Self::NotApplicable => "not applicable",
        }
    }
}

impl From<crate::checks::CheckStatus> for Verdict {
    fn from(status: crate::checks::CheckStatus) -> Self {
        match status {
            crate::checks::CheckStatus::Passed => Self::Passed,
            crate::checks::CheckStatus::Failed => Self::Failed,
            crate::checks::CheckStatus::NotApplicable => Self::NotApplicable,
        }
    }
}

/// The verdict as a coloured badge; the word is in the text, so it survives printing in black.
pub fn badge(verdict: Verdict) -> String {
    format!(
        "<span class=\"badge {}\" data-verdict=\"{}\">{}</span>",
        verdict.class(),
        verdict.words(),
        verdict.label()
    )
}

/// A small bar: how much of `expected` was `found`, and what was over. Says at a glance what the
/// two numbers beside it say exactly.
pub fn meter(expected: u64, found: u64, verdict: Verdict) -> String {
    let scale = expected.max(found).max(1) as f64;
    let part = |n: u64| (n as f64 / scale * 100.0).clamp(0.0, 100.0);
    let filled = part(found.min(expected));
    let over = part(found.saturating_sub(expected));
    format!(
        "<svg class=\"meter\" viewBox=\"0 0 100 8\" preserveAspectRatio=\"none\" role=\"img\" \
         aria-label=\"{found} of {expected}\"><rect class=\"track\" x=\"0\" y=\"0\" width=\"{:.2}\" \
         height=\"8\"/><rect class=\"fill {}\" x=\"0\" y=\"0\" width=\"{filled:.2}\" height=\"8\"/>\
         <rect class=\"fill over\" x=\"{filled:.2}\" y=\"0\" width=\"{over:.2}\" height=\"8\"/></svg>",
        part(expected),
        verdict.class()
    )
}

/// A list of items, at most [`MAX_ITEMS`] of them with the rest counted, inside `<details>`
/// that starts open when the list is short.
pub fn item_list(out: &mut String, label: &str, class: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    let open = if items.len() <= OPEN_ITEMS {
        " open=\"\""
    } else {
        ""
    };
    let _ = write!(
        out,
        "<details class=\"items {}\"{open}><summary>{} <span class=\"count\">{}</span></summary><ul>",
        Esc(class),
        Esc(label),
        items.len()
    );
    for item in items.iter().take(MAX_ITEMS) {
        let _ = write!(out, "<li>{}</li>", Esc(&clip(item, 2000)));
    }
    if items.len() > MAX_ITEMS {
        let _ = write!(
            out,
            "<li class=\"more\">… and {} more (the JSON report lists every one)</li>",
            items.len() - MAX_ITEMS
        );
    }
    out.push_str("</ul></details>");
}

/// A `<dl>` of label and already-escaped HTML value pairs.
pub fn facts(out: &mut String, pairs: &[(&str, String)]) {
    out.push_str("<dl class=\"facts\">");
    for (label, value) in pairs {
        let _ = write!(out, "<dt>{}</dt><dd>{value}</dd>", Esc(label));
    }
    out.push_str("</dl>");
}

/// Unix nanoseconds as RFC 3339 (UTC).
pub fn time(unix_nano: u64) -> String {
    crate::workflow::clock::rfc3339(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_nano),
    )
}

/// Milliseconds as people read them: `850 ms`, `1.25 s`, `2 min 5 s`.
pub fn duration_ms(ms: f64) -> String {
    if ms == 0.0 {
        "0".to_string()
    } else if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else if ms < 60_000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        let s = (ms / 1000.0).round() as u64;
        format!("{} min {} s", s / 60, s % 60)
    }
}

/// Links as a list; each label and URL escaped, only http(s) URLs clickable.
pub fn links(out: &mut String, links: &[super::task::Link]) {
    if links.is_empty() {
        return;
    }
    out.push_str("<section id=\"links\"><h2>Links</h2><ul class=\"links\">");
    for l in links {
        let _ = write!(
            out,
            "<li><span class=\"label\">{}</span> {}</li>",
            Esc(&l.label),
            link(&l.url, &l.url)
        );
    }
    out.push_str("</ul></section>");
}

const STYLE: &str = include_str!("style.css");

/// The document around `body`: the CSP that forbids any load or script, the inline style, and a
/// footer saying when and by what it was written.
pub fn page(title: &str, body: &str) -> String {
    let mut out = String::with_capacity(body.len() + STYLE.len() + 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"/>\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; \
         style-src 'unsafe-inline'\"/>\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"/>\
         <meta name=\"color-scheme\" content=\"light dark\"/>\
         <meta name=\"generator\" content=\"obsctl {}\"/>\
         <title>{}</title><style>{STYLE}</style></head><body>{body}\
         <footer>written by obsctl {} at {}; self-contained: no script, nothing loaded from the \
         network</footer></body></html>\n",
        env!("CARGO_PKG_VERSION"),
        Esc(title),
        env!("CARGO_PKG_VERSION"),
        time(crate::encode::now_unix_nanos()),
    );
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Parses the page as XML: a stray `<` or an unescaped quote from hostile input makes it
    /// fail, so every test that renders checks the escaping too.
    pub fn parse(html: &str) -> roxmltree::Document<'_> {
        let opts = roxmltree::ParsingOptions {
            allow_dtd: true,
            ..Default::default()
        };
        roxmltree::Document::parse_with_options(html, opts)
            .unwrap_or_else(|e| panic!("not well-formed: {e}\n{html}"))
    }

    /// The elements whose class list contains `class`.
    pub fn with_class<'a, 'i>(
        doc: &'a roxmltree::Document<'i>,
        class: &str,
    ) -> Vec<roxmltree::Node<'a, 'i>> {
        doc.descendants()
            .filter(|n| {
                n.attribute("class")
                    .is_some_and(|c| c.split_whitespace().any(|w| w == class))
            })
            .collect()
    }

    /// The page has nothing that loads or runs: no script, no stylesheet link, no remote image,
    /// no `url(` in the style.
    pub fn assert_self_contained(html: &str) {
        let lower = html.to_ascii_lowercase();
        for bad in [
            "<script", "<link", "<iframe", "<img", "url(", "@import", " src=",
        ] {
            assert!(!lower.contains(bad), "the page contains {bad:?}");
        }
    }

    #[test]
    fn escaping_covers_markup_quotes_and_control_characters() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\"\u{1b}[31mred\u{7}"),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;[31mred"
        );
        assert_eq!(esc("plain\ttext\n"), "plain\ttext\n");
    }

    #[test]
    fn only_http_urls_become_links() {
        assert!(
            link("https://example.com/a?b=1&c=\"2\"", "x")
                .contains("href=\"https://example.com/a?b=1&amp;c=&quot;2&quot;\"")
        );
        let js = link("javascript:alert(1)", "javascript:alert(1)");
        assert!(!js.contains("href"), "{js}");
        assert!(!link("data:text/html,<b>", "d").contains("href"));
        assert!(!link("not a url", "n").contains("href"));
    }

    #[test]
    fn report_format_follows_the_extension() {
        assert_eq!(ReportFormat::of(Path::new("a/r.html")), ReportFormat::Html);
        assert_eq!(ReportFormat::of(Path::new("R.HTM")), ReportFormat::Html);
        assert_eq!(ReportFormat::of(Path::new("r.json")), ReportFormat::Json);
        assert_eq!(ReportFormat::of(Path::new("report")), ReportFormat::Json);
    }

    #[test]
    fn long_lists_are_bounded_and_collapsed() {
        let items: Vec<String> = (0..1000).map(|i| format!("item <{i}>")).collect();
        let mut out = String::new();
        item_list(&mut out, "missing", "missing", &items);
        let doc = parse(&out);
        let details = doc.root_element();
        assert_eq!(details.attribute("open"), None, "long lists start closed");
        let lis: Vec<_> = doc.descendants().filter(|n| n.has_tag_name("li")).collect();
        assert_eq!(lis.len(), MAX_ITEMS + 1);
        assert_eq!(lis[0].text(), Some("item <0>"));
        assert!(lis[MAX_ITEMS].text().unwrap().contains("800 more"));
        let mut short = String::new();
        item_list(&mut short, "missing", "missing", &items[..3]);
        assert_eq!(parse(&short).root_element().attribute("open"), Some(""));
    }

    #[test]
    fn clip_cuts_on_a_char_boundary() {
        assert_eq!(clip("ééé", 5), "ééé");
        assert_eq!(clip("éééé", 2), "éé… (4 more bytes)");
    }

    #[test]
    fn meter_widths_follow_the_numbers() {
        let doc_text = meter(10, 5, Verdict::Failed);
        let doc = parse(&doc_text);
        let fill = with_class(&doc, "fill")[0];
        assert_eq!(fill.attribute("width"), Some("50.00"));
        let over_text = meter(10, 15, Verdict::Failed);
        let over = parse(&over_text);
        let rects = with_class(&over, "over");
        // 5 over on a scale of 15.
        assert_eq!(rects[0].attribute("width"), Some("33.33"));
    }
}
