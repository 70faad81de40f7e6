//! The LogQL subset the embedded backend answers: a stream selector (`=`, `!=`, `=~`, `!~`)
//! over resource and log attributes (dots become underscores), line filters `|=` and `!=`, and
//! label filters `| key="value"` / `| key!="value"` on any label or structured-metadata key.

use std::collections::BTreeMap;

use super::metrics::sanitize_name;
use super::promql::{Cursor, MatchOp, Matcher, QueryError, parse_matchers};
use super::store::LogHit;
use crate::otlp::attrs;

#[derive(Debug, Clone)]
pub enum Stage {
    Contains(String),
    NotContains(String),
    Label(Matcher),
}

#[derive(Debug, Clone)]
pub struct LogQuery {
    pub selector: Vec<Matcher>,
    pub stages: Vec<Stage>,
}

pub fn parse(text: &str) -> Result<LogQuery, QueryError> {
    let mut cur = Cursor::new(text);
    cur.skip_ws();
    if !cur.rest().starts_with('{') {
        let word = cur.ident().unwrap_or("");
        return Err(QueryError(format!(
            "unsupported query {:?}: the embedded backend answers log queries that start with a \
             stream selector {{...}} (no metric queries such as count_over_time)",
            if word.is_empty() { text } else { word }
        )));
    }
    let selector = parse_matchers(&mut cur)?;
    if selector.is_empty() {
        return Err(QueryError(
            "the stream selector needs at least one matcher".into(),
        ));
    }
    let mut stages = Vec::new();
    while !cur.done() {
        if cur.eat("|=") {
            stages.push(Stage::Contains(cur.string()?));
        } else if cur.eat("!=") {
            stages.push(Stage::NotContains(cur.string()?));
        } else if cur.eat("|~") || cur.eat("!~") {
            return Err(QueryError(
                "unsupported line filter: regular-expression line filters (|~, !~) are not part \
                 of the embedded backend's LogQL subset"
                    .into(),
            ));
        } else if cur.eat("|") {
            let save = cur.pos;
            let Some(name) = cur.ident() else {
                return Err(QueryError(format!(
                    "expected a label filter after | at position {save}"
                )));
            };
            let name = name.to_string();
            let op = if cur.eat("!=") {
                MatchOp::Ne(cur.string()?)
            } else if cur.eat("=~") || cur.eat("!~") || cur.eat("==") {
                return Err(QueryError(format!(
                    "unsupported label filter operator on {name:?}: only = and != are in the subset"
                )));
            } else if cur.eat("=") {
                MatchOp::Eq(cur.string()?)
            } else {
                return Err(QueryError(format!(
                    "unsupported pipeline stage {name:?}: the embedded backend answers line \
                     filters (|=, !=) and label filters (| key=\"value\")"
                )));
            };
            stages.push(Stage::Label(Matcher { name, op }));
        } else {
            return Err(QueryError(format!(
                "unsupported expression at position {}: {:?}",
                cur.pos,
                cur.rest().trim()
            )));
        }
    }
    Ok(LogQuery { selector, stages })
}

/// Resource attributes that are index labels, as the stack's Loki is configured; the rest
/// becomes structured metadata.
fn is_index_label(key: &str) -> bool {
    crate::conventions::resource::LOG_INDEX_LABELS.contains(&key)
}

/// One log record as Loki shows it: stream labels, structured metadata, line.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub time_ns: u64,
    pub stream: BTreeMap<String, String>,
    pub metadata: BTreeMap<String, String>,
    pub line: String,
}

impl Entry {
    pub fn from_hit(hit: &LogHit) -> Self {
        let mut stream = BTreeMap::new();
        let mut metadata = BTreeMap::new();
        for kv in &hit.resource {
            let Some(v) = kv.value.as_ref().and_then(attrs::value_to_string) else {
                continue;
            };
            let target = if is_index_label(&kv.key) {
                &mut stream
            } else {
                &mut metadata
            };
            target.insert(sanitize_name(&kv.key, false), v);
        }
        let r = &hit.record;
        for kv in &r.attributes {
            if let Some(v) = kv.value.as_ref().and_then(attrs::value_to_string) {
                metadata.insert(sanitize_name(&kv.key, false), v);
            }
        }
        if !r.trace_id.is_empty() {
            metadata.insert("trace_id".into(), crate::encode::hex(&r.trace_id));
        }
        if !r.span_id.is_empty() {
            metadata.insert("span_id".into(), crate::encode::hex(&r.span_id));
        }
        if !r.severity_text.is_empty() {
            metadata.insert("severity_text".into(), r.severity_text.clone());
        }
        if r.severity_number != 0 {
            metadata.insert("severity_number".into(), r.severity_number.to_string());
        }
        if !hit.scope_name.is_empty() {
            metadata.insert("scope_name".into(), hit.scope_name.clone());
        }
        let time_ns = if r.time_unix_nano != 0 {
            r.time_unix_nano
        } else {
            r.observed_time_unix_nano
        };
        Self {
            time_ns,
            stream,
            metadata,
            line: r
                .body
                .as_ref()
                .and_then(attrs::value_to_string)
                .unwrap_or_default(),
        }
    }

    fn label(&self, name: &str) -> Option<&str> {
        self.stream
            .get(name)
            .or_else(|| self.metadata.get(name))
            .map(String::as_str)
    }
}

impl LogQuery {
    pub fn matches(&self, entry: &Entry) -> bool {
        self.selector
            .iter()
            .all(|m| m.matches(entry.label(&m.name)))
            && self.stages.iter().all(|stage| match stage {
                Stage::Contains(s) => entry.line.contains(s.as_str()),
                Stage::NotContains(s) => !entry.line.contains(s.as_str()),
                Stage::Label(m) => m.matches(entry.label(&m.name)),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry() -> Entry {
        Entry {
            time_ns: 1,
            stream: BTreeMap::from([("service_name".into(), "agent-steps".into())]),
            metadata: BTreeMap::from([
                ("taskId".into(), "T-1".into()),
                ("trace_id".into(), "ab".into()),
            ]),
            line: "step started".into(),
        }
    }

    #[test]
    fn selector_line_and_label_filters() {
        let q = parse(r#"{service_name="agent-steps"} | taskId="T-1" |= "started""#).unwrap();
        assert!(q.matches(&entry()));
        let q = parse(r#"{service_name=~"agent.*"} != "started""#).unwrap();
        assert!(!q.matches(&entry()));
        let q = parse(r#"{service_name="agent-steps"} | trace_id="cd""#).unwrap();
        assert!(!q.matches(&entry()));
    }

    #[test]
    fn outside_the_subset_is_named() {
        assert!(
            parse(r#"{a="b"} | json"#)
                .unwrap_err()
                .0
                .contains("\"json\"")
        );
        assert!(parse(r#"{a="b"} |~ "x""#).unwrap_err().0.contains("|~"));
        assert!(
            parse(r#"count_over_time({a="b"}[5m])"#)
                .unwrap_err()
                .0
                .contains("count_over_time")
        );
    }
}
