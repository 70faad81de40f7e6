//! Argo's naming and templating rules: `{{...}}` substitution (and `{{=...}}` expression tags,
//! evaluated by `expression`), node ids (FNV-32a of the node name), loop item names,
//! `withSequence` expansion and the duration syntax of timeouts.

use std::collections::HashMap;
use std::time::Duration;

use super::expression::{self, ExpressionError};

/// The variable names referenced as `{{ name }}` in `text`, in order.
pub fn references(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim().to_string());
        rest = &after[end + 2..];
    }
    out
}

/// A tag that cannot be replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unresolved {
    /// A `{{...}}` that names no known variable.
    #[error("unable to resolve: {{{{{0}}}}}")]
    Variable(String),
    /// A `{{=...}}` whose expression fails.
    #[error(transparent)]
    Expression(#[from] ExpressionError),
}

/// Replaces every `{{ name }}` by its value in `scope`, and every `{{=expression}}` by its result.
pub fn substitute(text: &str, scope: &HashMap<String, String>) -> Result<String, Unresolved> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let tag = &after[..end];
        if let Some(expression) = tag.strip_prefix('=') {
            out.push_str(&expression::eval_text(expression, scope)?);
        } else {
            let name = tag.trim();
            match scope.get(name) {
                Some(value) => out.push_str(value),
                None => return Err(Unresolved::Variable(name.to_string())),
            }
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Like [`substitute`], but leaves unknown variables in place (for variables bound later, such
/// as `{{workflow.status}}` inside a template that is also called before the exit handler).
pub fn substitute_known(text: &str, scope: &HashMap<String, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match scope.get(after[..end].trim()) {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

/// Argo's node id: the workflow name for the root, else `<workflow>-<fnv32a(node name)>`.
pub fn node_id(workflow: &str, node_name: &str) -> String {
    if node_name == workflow {
        workflow.to_string()
    } else {
        format!("{workflow}-{}", crate::encode::fnv32a(node_name.bytes()))
    }
}

/// `name(index:description)` of a loop item, and the `item` variables it binds.
pub fn expand_item(
    name: &str,
    index: usize,
    item: &serde_json::Value,
) -> (String, HashMap<String, String>) {
    let mut vars = HashMap::new();
    let desc = match item {
        serde_json::Value::Object(map) => {
            let mut parts: Vec<String> = map
                .iter()
                .map(|(k, v)| {
                    vars.insert(format!("item.{k}"), scalar_text(v));
                    format!("{k}:{}", scalar_text(v))
                })
                .collect();
            parts.sort();
            vars.insert("item".into(), item.to_string());
            parts.join(",")
        }
        serde_json::Value::Array(list) => {
            vars.insert("item".into(), item.to_string());
            let parts: Vec<String> = list.iter().map(scalar_text).collect();
            format!("[{}]", parts.join(" "))
        }
        other => {
            let text = scalar_text(other);
            vars.insert("item".into(), text.clone());
            text
        }
    };
    (format!("{name}({index}:{desc})"), vars)
}

/// How Go's `%v` prints a JSON value: strings bare, numbers without a trailing `.0`.
pub fn scalar_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    #[error("withSequence.{field}: expected a whole number, got {value:?}")]
    NotANumber { field: &'static str, value: String },
    #[error("withSequence: count {0} is more than obsctl run expands (10000)")]
    TooLong(i64),
    #[error(
        "withSequence.format {0:?}: only one %d, %x, %X or %o verb (with optional 0-padding width) is supported"
    )]
    Format(String),
}

/// `withSequence`: `count` or `start`/`end` (inclusive, counting down when end < start),
/// each item formatted with `format` (a printf verb, default `%d`).
pub fn sequence(
    count: Option<&str>,
    start: Option<&str>,
    end: Option<&str>,
    format: Option<&str>,
) -> Result<Vec<String>, SequenceError> {
    let num = |field: &'static str, v: Option<&str>| -> Result<Option<i64>, SequenceError> {
        v.map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| SequenceError::NotANumber {
                    field,
                    value: v.to_string(),
                })
        })
        .transpose()
    };
    let start_n = num("start", start)?.unwrap_or(0);
    let numbers: Vec<i64> = match (num("count", count)?, num("end", end)?) {
        (Some(count), _) => {
            if count > 10_000 {
                return Err(SequenceError::TooLong(count));
            }
            (0..count.max(0)).map(|i| start_n + i).collect()
        }
        (None, Some(end)) => {
            if (end - start_n).abs() > 10_000 {
                return Err(SequenceError::TooLong((end - start_n).abs()));
            }
            if end >= start_n {
                (start_n..=end).collect()
            } else {
                (end..=start_n).rev().collect()
            }
        }
        (None, None) => Vec::new(),
    };
    numbers
        .into_iter()
        .map(|n| printf_int(format.unwrap_or("%d"), n))
        .collect()
}

fn printf_int(format: &str, n: i64) -> Result<String, SequenceError> {
    let bad = || SequenceError::Format(format.to_string());
    let start = format.find('%').ok_or_else(bad)?;
    let spec = &format[start + 1..];
    let digits: String = spec.chars().take_while(|c| c.is_ascii_digit()).collect();
    let verb = spec[digits.len()..].chars().next().ok_or_else(bad)?;
    let zero = digits.starts_with('0');
    let width: usize = if digits.is_empty() {
        0
    } else {
        digits.parse().map_err(|_| bad())?
    };
    let body = match verb {
        'd' => n.to_string(),
        'x' => format!("{n:x}"),
        'X' => format!("{n:X}"),
        'o' => format!("{n:o}"),
        _ => return Err(bad()),
    };
    let padded = if zero {
        format!("{body:0>width$}")
    } else {
        format!("{body:>width$}")
    };
    let rest = &spec[digits.len() + verb.len_utf8()..];
    if rest.contains('%') {
        return Err(bad());
    }
    Ok(format!("{}{padded}{rest}", &format[..start]))
}

/// Go-style durations (`30s`, `1m30s`, `250ms`, `2h`) and bare numbers (seconds), as Argo's
/// `timeout` and `backoff` accept them.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return (secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let mut total = 0.0;
    let mut rest = text;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let n: f64 = rest[..n_len].parse().ok()?;
        rest = &rest[n_len..];
        let u_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        total += n * unit;
        rest = &rest[u_len..];
    }
    Some(Duration::from_secs_f64(total))
}

/// Whole seconds (`activeDeadlineSeconds`).
pub fn parse_seconds(text: &str) -> Option<Duration> {
    text.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_fnv32a_decimal() {
        // FNV-1a 32 of "a" is 0xe40c292c.
        assert_eq!(node_id("wf", "wf"), "wf");
        assert_eq!(node_id("wf", "a"), format!("wf-{}", 0xe40c_292cu32));
    }

    #[test]
    fn substitution_trims_and_reports_unknown_names() {
        let scope = HashMap::from([("inputs.parameters.m".to_string(), "hi".to_string())]);
        assert_eq!(
            substitute("say {{ inputs.parameters.m }}!", &scope).unwrap(),
            "say hi!"
        );
        assert_eq!(
            substitute("{{nope}}", &scope),
            Err(Unresolved::Variable("nope".into()))
        );
        assert_eq!(
            substitute_known("{{nope}} {{inputs.parameters.m}}", &scope),
            "{{nope}} hi"
        );
        assert_eq!(references("a {{x}} b {{ y.z }}"), ["x", "y.z"]);
        assert_eq!(
            substitute(
                "{{=asInt(inputs.parameters.m2) * 10}}!",
                &HashMap::from([("inputs.parameters.m2".to_string(), "4".to_string())])
            )
            .unwrap(),
            "40!"
        );
        assert!(matches!(
            substitute("{{=nil}}", &scope),
            Err(Unresolved::Expression(_))
        ));
    }

    #[test]
    fn items_are_named_as_argo_names_them() {
        let (name, vars) = expand_item("B", 0, &serde_json::json!("foo"));
        assert_eq!(name, "B(0:foo)");
        assert_eq!(vars["item"], "foo");
        let (name, vars) =
            expand_item("d", 3, &serde_json::json!({"num": "4", "evenness": "even"}));
        assert_eq!(name, "d(3:evenness:even,num:4)");
        assert_eq!(vars["item.num"], "4");
        assert_eq!(expand_item("e", 1, &serde_json::json!(2)).0, "e(1:2)");
    }

    #[test]
    fn sequences_count_range_negative_and_format() {
        assert_eq!(
            sequence(Some("3"), None, None, None).unwrap(),
            ["0", "1", "2"]
        );
        assert_eq!(
            sequence(None, Some("100"), Some("102"), None).unwrap(),
            ["100", "101", "102"]
        );
        assert_eq!(
            sequence(None, Some("2"), Some("0"), None).unwrap(),
            ["2", "1", "0"]
        );
        assert_eq!(
            sequence(Some("2"), Some("10"), None, Some("testuser%02X")).unwrap(),
            ["testuser0A", "testuser0B"]
        );
        assert!(sequence(Some("x"), None, None, None).is_err());
    }

    #[test]
    fn durations_follow_go_syntax() {
        assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
        assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("5x"), None);
    }
}
