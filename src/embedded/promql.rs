//! The PromQL subset the embedded backend answers: an instant vector selector
//! `name{l="v",l2=~"re",l3!="x",l4!~"re"}`, optionally inside `sum(...)`, `sum by (a,b) (...)`
//! or `count(...)`. Anything else is refused with a message naming what is unsupported.

use std::collections::BTreeMap;

use regex::Regex;

use super::metrics::Sample;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct QueryError(pub String);

#[derive(Debug, Clone)]
pub enum MatchOp {
    Eq(String),
    Ne(String),
    Re(Regex),
    NotRe(Regex),
}

#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
}

impl Matcher {
    pub fn matches(&self, value: Option<&str>) -> bool {
        let v = value.unwrap_or("");
        match &self.op {
            MatchOp::Eq(x) => v == x,
            MatchOp::Ne(x) => v != x,
            MatchOp::Re(r) => r.is_match(v),
            MatchOp::NotRe(r) => !r.is_match(v),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    Sum,
    Count,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub aggregation: Option<(Aggregation, Vec<String>)>,
    pub matchers: Vec<Matcher>,
}

/// A tiny cursor over the query text; shared with the LogQL parser.
pub struct Cursor<'a> {
    pub text: &'a str,
    pub pos: usize,
}

impl<'a> Cursor<'a> {
    pub fn new(text: &'a str) -> Self {
        Self { text, pos: 0 }
    }

    pub fn rest(&self) -> &'a str {
        &self.text[self.pos..]
    }

    pub fn skip_ws(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    pub fn eat(&mut self, token: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    pub fn expect(&mut self, token: &str) -> Result<(), QueryError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(QueryError(format!(
                "expected {token:?} at position {} of the query, found {:?}",
                self.pos,
                self.rest().chars().take(20).collect::<String>()
            )))
        }
    }

    pub fn ident(&mut self) -> Option<&'a str> {
        self.skip_ws();
        let rest = self.rest();
        let len = rest
            .char_indices()
            .find(|(i, c)| {
                !(c.is_ascii_alphanumeric() || *c == '_' || *c == ':' || (*i > 0 && *c == '.'))
            })
            .map_or(rest.len(), |(i, _)| i);
        if len == 0 || rest.starts_with(|c: char| c.is_ascii_digit()) {
            return None;
        }
        self.pos += len;
        Some(&rest[..len])
    }

    /// A double-quoted or backquoted string with Go-style escapes.
    pub fn string(&mut self) -> Result<String, QueryError> {
        self.skip_ws();
        let rest = self.rest();
        let quote = rest
            .chars()
            .next()
            .filter(|c| matches!(c, '"' | '`' | '\''));
        let Some(quote) = quote else {
            return Err(QueryError(format!(
                "expected a quoted string at position {}",
                self.pos
            )));
        };
        let mut out = String::new();
        let mut chars = rest[1..].char_indices();
        while let Some((i, c)) = chars.next() {
            if c == quote {
                self.pos += i + 2;
                return Ok(out);
            }
            if c == '\\' && quote != '`' {
                match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, 't')) => out.push('\t'),
                    Some((_, other)) => out.push(other),
                    None => break,
                }
            } else {
                out.push(c);
            }
        }
        Err(QueryError("unterminated string in the query".into()))
    }

    pub fn done(&mut self) -> bool {
        self.skip_ws();
        self.rest().is_empty()
    }
}

fn anchored(pattern: &str) -> Result<Regex, QueryError> {
    Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| QueryError(format!("invalid regular expression {pattern:?}: {e}")))
}

/// `{a="b", c=~"d"}` (the opening brace not yet consumed).
pub fn parse_matchers(cur: &mut Cursor<'_>) -> Result<Vec<Matcher>, QueryError> {
    cur.expect("{")?;
    let mut matchers = Vec::new();
    loop {
        if cur.eat("}") {
            return Ok(matchers);
        }
        let name = cur
            .ident()
            .ok_or_else(|| QueryError(format!("expected a label name at position {}", cur.pos)))?
            .to_string();
        let op = if cur.eat("=~") {
            MatchOp::Re(anchored(&cur.string()?)?)
        } else if cur.eat("!~") {
            MatchOp::NotRe(anchored(&cur.string()?)?)
        } else if cur.eat("!=") {
            MatchOp::Ne(cur.string()?)
        } else if cur.eat("=") {
            MatchOp::Eq(cur.string()?)
        } else {
            return Err(QueryError(format!(
                "unsupported matcher operator after {name:?}: expected =, !=, =~ or !~"
            )));
        };
        matchers.push(Matcher { name, op });
        if !cur.eat(",") {
            cur.expect("}")?;
            return Ok(matchers);
        }
    }
}

fn parse_selector(cur: &mut Cursor<'_>) -> Result<Vec<Matcher>, QueryError> {
    let mut matchers = Vec::new();
    cur.skip_ws();
    if !cur.rest().starts_with('{') {
        let name = cur
            .ident()
            .ok_or_else(|| QueryError("expected a metric name or a {…} selector".into()))?;
        matchers.push(Matcher {
            name: "__name__".into(),
            op: MatchOp::Eq(name.to_string()),
        });
    }
    cur.skip_ws();
    if cur.rest().starts_with('{') {
        matchers.extend(parse_matchers(cur)?);
    }
    if cur.rest().trim_start().starts_with('[') {
        return Err(QueryError(
            "unsupported: range vectors ([...]) are not part of the embedded backend's PromQL subset".into(),
        ));
    }
    if matchers.is_empty() {
        return Err(QueryError(
            "a selector needs a metric name or at least one matcher".into(),
        ));
    }
    Ok(matchers)
}

fn parse_by(cur: &mut Cursor<'_>) -> Result<Option<Vec<String>>, QueryError> {
    let save = cur.pos;
    match cur.ident() {
        Some("by") => {}
        Some("without") => {
            return Err(QueryError(
                "unsupported: `without` (only `by` is in the subset)".into(),
            ));
        }
        _ => {
            cur.pos = save;
            return Ok(None);
        }
    }
    cur.expect("(")?;
    let mut labels = Vec::new();
    loop {
        if cur.eat(")") {
            return Ok(Some(labels));
        }
        labels.push(
            cur.ident()
                .ok_or_else(|| QueryError("expected a label name in by (...)".into()))?
                .to_string(),
        );
        if !cur.eat(",") {
            cur.expect(")")?;
            return Ok(Some(labels));
        }
    }
}

pub fn parse(text: &str) -> Result<Query, QueryError> {
    let mut cur = Cursor::new(text);
    let save = cur.pos;
    let aggregation = match cur.ident() {
        Some(word @ ("sum" | "count")) if cur.rest().trim_start().starts_with(['(', 'b']) => {
            let agg = if word == "sum" {
                Aggregation::Sum
            } else {
                Aggregation::Count
            };
            let mut by = parse_by(&mut cur)?;
            cur.expect("(")?;
            let matchers = parse_selector(&mut cur)?;
            cur.expect(")")?;
            if by.is_none() {
                by = parse_by(&mut cur)?;
            }
            if !cur.done() {
                return Err(unsupported_rest(&cur));
            }
            return Ok(Query {
                aggregation: Some((agg, by.unwrap_or_default())),
                matchers,
            });
        }
        Some(word) if cur.rest().trim_start().starts_with('(') => {
            return Err(QueryError(format!(
                "unsupported function or aggregation {word:?}: the embedded backend answers a \
                 selector, sum(...), sum by (...) (...) and count(...)"
            )));
        }
        _ => {
            cur.pos = save;
            None
        }
    };
    let matchers = parse_selector(&mut cur)?;
    if !cur.done() {
        return Err(unsupported_rest(&cur));
    }
    Ok(Query {
        aggregation,
        matchers,
    })
}

fn unsupported_rest(cur: &Cursor<'_>) -> QueryError {
    QueryError(format!(
        "unsupported expression after position {}: {:?} (operators, offsets and functions are \
         not part of the embedded backend's PromQL subset)",
        cur.pos,
        cur.rest().trim()
    ))
}

impl Query {
    pub fn selects(&self, sample: &Sample) -> bool {
        self.matchers.iter().all(|m| {
            let value = if m.name == "__name__" {
                Some(sample.name.as_str())
            } else {
                sample.labels.get(&m.name).map(String::as_str)
            };
            m.matches(value)
        })
    }

    /// The result vector: `(labels incl. __name__, value)` pairs.
    pub fn evaluate(&self, samples: &[Sample]) -> Vec<(BTreeMap<String, String>, f64)> {
        let selected = samples.iter().filter(|s| self.selects(s));
        match &self.aggregation {
            None => selected
                .map(|s| {
                    let mut labels = s.labels.clone();
                    labels.insert("__name__".into(), s.name.clone());
                    (labels, s.value)
                })
                .collect(),
            Some((agg, by)) => {
                let mut groups: BTreeMap<BTreeMap<String, String>, f64> = BTreeMap::new();
                for s in selected {
                    // `__name__` is a label to PromQL, though a sample keeps it apart.
                    let key = by
                        .iter()
                        .filter_map(|l| match l.as_str() {
                            "__name__" => Some((l.clone(), s.name.clone())),
                            _ => s.labels.get(l).map(|v| (l.clone(), v.clone())),
                        })
                        .collect();
                    *groups.entry(key).or_default() += match agg {
                        Aggregation::Sum => s.value,
                        Aggregation::Count => 1.0,
                    };
                }
                groups.into_iter().collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
        Sample {
            name: name.into(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            value,
            exemplar: None,
        }
    }

    #[test]
    fn grouping_by_name_keeps_each_metric_apart() {
        let q = parse(r#"count by (__name__) ({__name__=~"a_total|b_total"})"#).unwrap();
        let samples = [
            sample("a_total", &[("x", "1")], 1.0),
            sample("a_total", &[("x", "2")], 1.0),
            sample("b_total", &[("x", "1")], 1.0),
            sample("c_total", &[("x", "1")], 1.0),
        ];
        let answer = q.evaluate(&samples);
        let by_name: Vec<(String, f64)> = answer
            .iter()
            .map(|(l, v)| (l["__name__"].clone(), *v))
            .collect();
        assert_eq!(by_name, [("a_total".into(), 2.0), ("b_total".into(), 1.0)]);
    }

    #[test]
    fn selectors_and_aggregations_evaluate() {
        let samples = vec![
            sample("c_total", &[("agent", "a"), ("step", "x")], 2.0),
            sample("c_total", &[("agent", "a"), ("step", "y")], 3.0),
            sample("c_total", &[("agent", "b"), ("step", "x")], 5.0),
            sample("other", &[("agent", "a")], 7.0),
        ];
        let q = parse(r#"c_total{agent="a",step=~"x|y"}"#).unwrap();
        assert_eq!(q.evaluate(&samples).len(), 2);
        let q = parse(r#"sum(c_total{step!="y"})"#).unwrap();
        assert_eq!(q.evaluate(&samples), vec![(BTreeMap::new(), 7.0)]);
        let q = parse("sum by (agent) (c_total)").unwrap();
        let r = q.evaluate(&samples);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].1, 5.0);
        let q = parse("count(c_total)").unwrap();
        assert_eq!(q.evaluate(&samples)[0].1, 3.0);
        let q = parse(r#"sum(c_total) by (step)"#).unwrap();
        assert_eq!(q.evaluate(&samples).len(), 2);
    }

    #[test]
    fn outside_the_subset_is_named() {
        let err = parse("rate(c_total[5m])").unwrap_err();
        assert!(err.0.contains("\"rate\""), "{err}");
        let err = parse("c_total[5m]").unwrap_err();
        assert!(err.0.contains("range vectors"), "{err}");
        let err = parse("c_total + 1").unwrap_err();
        assert!(err.0.contains("unsupported expression"), "{err}");
        let err = parse("sum without (a) (c_total)").unwrap_err();
        assert!(err.0.contains("without"), "{err}");
    }
}
