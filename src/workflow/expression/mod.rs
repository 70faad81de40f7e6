//! Argo's expression language: expr (the `expr-lang` crate) over a scope's variables, expanded
//! into nested maps as Argo expands them (`steps['flip-coin'].outputs.result`,
//! `inputs.parameters['my-param']`), with Argo's helpers and Sprig functions (`helpers`).
//! Used for `{{=…}}` tags, `valueFrom.expression`, `retryStrategy.expression` and hook
//! expressions. [`check`] is the load-time half: syntax, and every function called is one obsctl
//! provides (`scan`).

mod helpers;
mod scan;

use std::collections::HashMap;
use std::sync::LazyLock;

use ::expr::{Context, Environment, Value};

pub use self::helpers::{ARGO, BUILTIN, SPRIG};

/// Why an expression was refused or could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpressionError {
    #[error("expression {expression:?} does not parse: {message}")]
    Syntax { expression: String, message: String },
    #[error(
        "expression {expression:?} calls `{name}`, which obsctl run does not provide \
         (see docs/workflows.md for the functions it does)"
    )]
    UnknownFunction {
        expression: String,
        name: String,
        /// Byte offset of the name in the expression.
        offset: usize,
    },
    #[error("failed to evaluate expression {expression:?}: {message}")]
    Eval { expression: String, message: String },
}

static ENVIRONMENT: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut env = Environment::new();
    helpers::register(&mut env);
    env
});

/// A stand-in for `{{...}}` tags inside an expression that is substituted before it is
/// evaluated (`{{inputs.parameters.x}} == true`), so that its syntax can be checked at load.
const TAG_STAND_IN: &str = "_";

/// Whether `name` (as written: `asInt`, `sprig.trim`) is a function obsctl provides.
pub fn provides(name: &str) -> bool {
    match name.strip_prefix("sprig.") {
        Some(s) => SPRIG.contains(&s),
        None => BUILTIN.contains(&name) || ARGO.contains(&name),
    }
}

/// The load-time check: `text` parses (its `{{...}}` tags standing for values), and calls only
/// functions obsctl provides.
pub fn check(text: &str) -> Result<(), ExpressionError> {
    let stand_in = stand_in_tags(text);
    for call in scan::calls(&stand_in.text) {
        if !provides(&call.name) {
            return Err(ExpressionError::UnknownFunction {
                expression: text.to_string(),
                name: call.name,
                offset: stand_in.original_offset(call.offset),
            });
        }
    }
    compile(text, &stand_in.text)?;
    Ok(())
}

/// Parses `code` (the expression `original`, perhaps with its tags stood in for).
fn compile(original: &str, code: &str) -> Result<::expr::Program, ExpressionError> {
    let syntax = |message: String| ExpressionError::Syntax {
        expression: original.to_string(),
        message,
    };
    // expr-lang 2.1 panics on a few literals it does not handle (a list inside a map literal);
    // that is a refusal of the expression, not a crash of the run.
    let rewritten = scan::rewrite(code);
    std::panic::catch_unwind(|| ::expr::compile(&rewritten))
        .map_err(|_| syntax("expr-lang cannot parse this expression".into()))?
        .map_err(|e| syntax(one_line(&e.to_string())))
}

/// Evaluates `text` over `scope` (variable name to value, as `{{...}}` reads them).
pub fn eval(text: &str, scope: &HashMap<String, String>) -> Result<Value, ExpressionError> {
    let failed = |message: String| ExpressionError::Eval {
        expression: text.to_string(),
        message,
    };
    let program = compile(text, text)?;
    ENVIRONMENT
        .run(&program, &context(scope))
        .map_err(|e| failed(one_line(&e.to_string())))
}

/// Evaluates a condition (`retryStrategy.expression`, a hook's `expression`).
pub fn eval_bool(text: &str, scope: &HashMap<String, String>) -> Result<bool, ExpressionError> {
    match eval(text, scope)? {
        Value::Bool(b) => Ok(b),
        other => Err(ExpressionError::Eval {
            expression: text.to_string(),
            message: format!("expected a boolean, got {}", helpers::text(&other)),
        }),
    }
}

/// Evaluates `text` to the text Argo puts in its place: a string as it is, anything else as
/// JSON; nil is an error, as in Argo.
pub fn eval_text(text: &str, scope: &HashMap<String, String>) -> Result<String, ExpressionError> {
    let failed = |message: String| ExpressionError::Eval {
        expression: text.to_string(),
        message,
    };
    match eval(text, scope)? {
        Value::String(s) => Ok(s),
        Value::Nil => Err(failed("the result is nil".into())),
        other => helpers::to_json(&other)
            .map(|j| j.to_string())
            .map_err(|e| failed(e.to_string())),
    }
}

/// The expression environment of `scope`: `a.b.c` becomes `a` → `b` → `c`, and a variable that
/// is also the parent of others (`workflow.parameters` beside `workflow.parameters.x`) gives
/// way to its children, as Argo's `expand` does.
fn context(scope: &HashMap<String, String>) -> Context {
    let mut keys: Vec<&String> = scope.keys().collect();
    // Parents before children, so that a child replaces a parent's text by a map.
    keys.sort_by_key(|k| k.matches('.').count());
    let mut root = Value::Map(Default::default());
    for key in keys {
        let mut node = &mut root;
        let mut parts = key.split('.').peekable();
        while let Some(part) = parts.next() {
            let Value::Map(map) = node else {
                unreachable!("every inner node is made a map")
            };
            if parts.peek().is_none() {
                if !matches!(map.get(part), Some(Value::Map(_))) {
                    map.insert(part.to_string(), Value::String(scope[key].clone()));
                }
                break;
            }
            let child = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Map(Default::default()));
            if !matches!(child, Value::Map(_)) {
                *child = Value::Map(Default::default());
            }
            node = child;
        }
    }
    let mut ctx = Context::default();
    if let Value::Map(map) = root {
        for (k, v) in map {
            ctx.insert(k, v);
        }
    }
    ctx
}

/// An expression with its `{{...}}` tags replaced by [`TAG_STAND_IN`], and where they were.
struct StandIn {
    text: String,
    /// (offset in `text`, bytes removed there) for each tag replaced.
    shifts: Vec<(usize, usize)>,
}

impl StandIn {
    fn original_offset(&self, offset: usize) -> usize {
        offset
            + self
                .shifts
                .iter()
                .filter(|(at, _)| *at < offset)
                .map(|(_, n)| n)
                .sum::<usize>()
    }
}

fn stand_in_tags(text: &str) -> StandIn {
    let mut out = String::with_capacity(text.len());
    let mut shifts = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let Some(len) = rest[start..].find("}}") else {
            break;
        };
        out.push_str(&rest[..start]);
        shifts.push((out.len(), len + 2 - TAG_STAND_IN.len()));
        out.push_str(TAG_STAND_IN);
        rest = &rest[start + len + 2..];
    }
    out.push_str(rest);
    StandIn { text: out, shifts }
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn variables_nest_and_hyphenated_names_are_reached_by_index() {
        let s = scope(&[
            ("inputs.parameters.my-param", "7"),
            ("steps.flip-coin.outputs.result", "heads"),
            ("steps.heads.outputs.result", "it was heads"),
            ("workflow.parameters", "[{\"name\":\"x\"}]"),
            ("workflow.parameters.x", "1"),
        ]);
        assert_eq!(
            eval_text("asInt(inputs.parameters['my-param']) * 10", &s).unwrap(),
            "70"
        );
        assert_eq!(
            eval_text(
                "steps['flip-coin'].outputs.result == 'heads' ? steps.heads.outputs.result : 'no'",
                &s
            )
            .unwrap(),
            "it was heads"
        );
        // The parent gives way to its children, as Argo's expand does.
        assert_eq!(eval_text("workflow.parameters.x", &s).unwrap(), "1");
    }

    #[test]
    fn results_are_written_as_argo_writes_them() {
        let s = scope(&[]);
        assert_eq!(
            eval_text("toJson(filter([1, 3], {# > 1}))", &s).unwrap(),
            "[3]"
        );
        assert_eq!(
            eval_text("{b: 1, a: 'x', c: true}", &s).unwrap(),
            r#"{"a":"x","b":1,"c":true}"#
        );
        // expr-lang 2.1 panics on a map inside a map literal: refused, not a crash.
        assert!(matches!(
            eval_text("{a: {b: 1}}", &s),
            Err(ExpressionError::Syntax { .. })
        ));
        assert_eq!(eval_text("[{b: 1}, 'x']", &s).unwrap(), r#"[{"b":1},"x"]"#);
        assert_eq!(eval_text("1.5 * 2", &s).unwrap(), "3");
        assert_eq!(eval_text("string(12) + 'a'", &s).unwrap(), "12a");
        assert!(eval_text("nil", &s).is_err());
        assert!(eval_text("asInt('x')", &s).is_err());
    }

    #[test]
    fn argo_helpers_and_sprig() {
        let s = scope(&[
            (
                "workflow.parameters.config",
                r#"{"a": "1", "b": {"c": [2, 3]}}"#,
            ),
            ("s", "  padded  "),
        ]);
        assert_eq!(
            eval_text("jsonpath(workflow.parameters.config, '$.a')", &s).unwrap(),
            "1"
        );
        assert_eq!(
            eval_text("jsonpath(workflow.parameters.config, '$.b.c')", &s).unwrap(),
            "[2,3]"
        );
        assert_eq!(eval_text("asFloat('2.5') + 1", &s).unwrap(), "3.5");
        assert_eq!(eval_text("sprig.trim(s)", &s).unwrap(), "padded");
        assert_eq!(
            eval_text("sprig.upper(sprig.trim(s))", &s).unwrap(),
            "PADDED"
        );
        assert_eq!(eval_text("sprig.add(1, '2', 3)", &s).unwrap(), "6");
        assert_eq!(eval_text("sprig.max(1, 5, '3')", &s).unwrap(), "5");
        assert_eq!(
            eval_text("sprig.b64dec(sprig.b64enc('hi'))", &s).unwrap(),
            "hi"
        );
        assert_eq!(
            eval_text("sprig.replace('a', 'b', 'banana')", &s).unwrap(),
            "bbnbnb"
        );
        assert_eq!(eval_text("sprig.default('d', '')", &s).unwrap(), "d");
        assert_eq!(eval_text("fromJSON('{\"k\": 2}').k + 1", &s).unwrap(), "3");
        assert!(eval_bool("'tails' matches '^t'", &s).unwrap());
        assert!(eval_bool("1 + 1", &s).is_err());
    }

    #[test]
    fn check_refuses_unknown_functions_with_their_offset_and_bad_syntax() {
        assert!(check("asInt(inputs.parameters.x) > 1").is_ok());
        assert!(check("{{inputs.parameters.safe-to-retry}} == true || x matches 'a|b'").is_ok());
        assert_eq!(
            check("{{inputs.parameters.a}} + sprig.nope(1)"),
            Err(ExpressionError::UnknownFunction {
                expression: "{{inputs.parameters.a}} + sprig.nope(1)".into(),
                name: "sprig.nope".into(),
                offset: 26,
            })
        );
        assert!(matches!(
            check("now()"),
            Err(ExpressionError::UnknownFunction { name, .. }) if name == "now"
        ));
        assert!(matches!(
            check("x.Year()"),
            Err(ExpressionError::UnknownFunction { name, .. }) if name == ".Year"
        ));
        assert!(matches!(check("1 +"), Err(ExpressionError::Syntax { .. })));
    }
}
