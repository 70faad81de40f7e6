//! The functions Argo adds to expr (`asInt`, `asFloat`, `toJson`, `jsonpath`), `fromJSON`, and
//! the Sprig functions obsctl provides under `sprig.`, with Sprig's lenient conversions (an
//! unparsable number is 0, as Sprig's `cast` makes it).

use ::expr::{Environment, Value};
use base64::Engine;

use crate::workflow::clock;

/// Argo's names, beside expr's own built-ins.
pub const ARGO: &[&str] = &["asInt", "asFloat", "toJson", "jsonpath", "fromJSON"];

/// The Sprig functions provided, as called after `sprig.`.
pub const SPRIG: &[&str] = &[
    "trim",
    "trimAll",
    "trimPrefix",
    "trimSuffix",
    "upper",
    "lower",
    "replace",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "repeat",
    "substr",
    "trunc",
    "splitList",
    "join",
    "toString",
    "atoi",
    "int",
    "int64",
    "float64",
    "add",
    "add1",
    "sub",
    "mul",
    "div",
    "mod",
    "max",
    "min",
    "b64enc",
    "b64dec",
    "default",
    "empty",
    "quote",
    "squote",
    "list",
    "ternary",
    "date",
];

/// expr's built-ins that need none of the crate's optional features.
pub const BUILTIN: &[&str] = &[
    "all",
    "any",
    "one",
    "none",
    "map",
    "filter",
    "find",
    "findIndex",
    "findLast",
    "findLastIndex",
    "count",
    "sum",
    "reduce",
    "groupBy",
    "sort",
    "sortBy",
    "join",
    "first",
    "last",
    "take",
    "reverse",
    "uniq",
    "concat",
    "flatten",
    "int",
    "float",
    "string",
    "keys",
    "values",
    "len",
    "type",
    "get",
    "toPairs",
    "fromPairs",
    "max",
    "min",
    "abs",
    "ceil",
    "floor",
    "round",
    "mean",
    "median",
    "trim",
    "trimPrefix",
    "trimSuffix",
    "upper",
    "lower",
    "split",
    "splitAfter",
    "replace",
    "repeat",
    "indexOf",
    "lastIndexOf",
    "hasPrefix",
    "hasSuffix",
    "bitand",
    "bitor",
    "bitxor",
    "bitnand",
    "bitnot",
    "bitshl",
    "bitshr",
    "bitushr",
];

type Outcome = ::expr::Result<Value>;

fn fail(message: String) -> ::expr::Error {
    ::expr::Error::ExprError(message)
}

/// Registers Argo's helpers and the Sprig functions (as `sprig_<name>`, see `scan::rewrite`).
pub fn register(env: &mut Environment<'static>) {
    env.add_function("asInt", |c| c.env.eval_func(c.ctx, "int", c.args, None));
    env.add_function("asFloat", |c| c.env.eval_func(c.ctx, "float", c.args, None));
    env.add_function("toJson", |c| {
        let [v] = args::<1>("toJson", c.args)?;
        Ok(to_json(&v)?.to_string().into())
    });
    env.add_function("fromJSON", |c| {
        let [v] = args::<1>("fromJSON", c.args)?;
        let parsed: serde_json::Value =
            serde_json::from_str(&text(&v)).map_err(|e| fail(format!("fromJSON: {e}")))?;
        Ok(from_json(&parsed))
    });
    env.add_function("jsonpath", |c| {
        let [doc, path] = args::<2>("jsonpath", c.args)?;
        let parsed: serde_json::Value = serde_json::from_str(&text(&doc))
            .map_err(|e| fail(format!("jsonpath: the document is not JSON: {e}")))?;
        Ok(from_json(&jsonpath(&parsed, &text(&path))?))
    });
    register_sprig_strings(env);
    register_sprig_numbers(env);
    register_sprig_misc(env);
}

fn args<const N: usize>(name: &str, values: Vec<Value>) -> ::expr::Result<[Value; N]> {
    let n = values.len();
    values
        .try_into()
        .map_err(|_| fail(format!("{name}() takes {N} arguments, got {n}")))
}

fn sprig(env: &mut Environment<'static>, name: &'static str, f: fn(Vec<Value>) -> Outcome) {
    env.add_function(&format!("sprig_{name}"), move |c| f(c.args));
}

/// Two string arguments, as most Sprig string functions take them.
fn sprig2(env: &mut Environment<'static>, name: &'static str, f: fn(&str, &str) -> Value) {
    env.add_function(&format!("sprig_{name}"), move |c| {
        let [a, b] = args::<2>(&format!("sprig.{name}"), c.args)?;
        Ok(f(&text(&a), &text(&b)))
    });
}

fn register_sprig_strings(env: &mut Environment<'static>) {
    sprig(env, "trim", |a| {
        Ok(text(&one("sprig.trim", a)?).trim().into())
    });
    sprig(env, "upper", |a| {
        Ok(text(&one("sprig.upper", a)?).to_uppercase().into())
    });
    sprig(env, "lower", |a| {
        Ok(text(&one("sprig.lower", a)?).to_lowercase().into())
    });
    sprig(env, "toString", |a| {
        Ok(text(&one("sprig.toString", a)?).into())
    });
    sprig2(env, "trimAll", |cut, s| {
        s.trim_matches(|c| cut.contains(c)).into()
    });
    sprig2(env, "trimPrefix", |p, s| {
        s.strip_prefix(p).unwrap_or(s).into()
    });
    sprig2(env, "trimSuffix", |p, s| {
        s.strip_suffix(p).unwrap_or(s).into()
    });
    sprig2(env, "contains", |sub, s| s.contains(sub).into());
    sprig2(env, "hasPrefix", |p, s| s.starts_with(p).into());
    sprig2(env, "hasSuffix", |p, s| s.ends_with(p).into());
    sprig2(env, "splitList", |sep, s| {
        Value::Array(s.split(sep).map(Value::from).collect())
    });
    sprig(env, "replace", |a| {
        let [old, new, s] = args::<3>("sprig.replace", a)?;
        Ok(text(&s).replace(&text(&old), &text(&new)).into())
    });
    sprig(env, "repeat", |a| {
        let [n, s] = args::<2>("sprig.repeat", a)?;
        Ok(text(&s).repeat(int(&n).max(0) as usize).into())
    });
    sprig(env, "substr", |a| {
        let [start, end, s] = args::<3>("sprig.substr", a)?;
        let s = text(&s);
        let (start, end) = (int(&start), int(&end));
        let len = s.len() as i64;
        let (from, to) = if start < 0 {
            (0, end.clamp(0, len))
        } else if end < 0 || end > len {
            (start.min(len), len)
        } else {
            (start.min(end), end)
        };
        Ok(
            String::from_utf8_lossy(&s.as_bytes()[from as usize..to as usize])
                .into_owned()
                .into(),
        )
    });
    sprig(env, "trunc", |a| {
        let [n, s] = args::<2>("sprig.trunc", a)?;
        let (s, n) = (text(&s), int(&n));
        let len = s.len() as i64;
        let out = if n < 0 && len + n > 0 {
            &s.as_bytes()[(len + n) as usize..]
        } else if n >= 0 && len > n {
            &s.as_bytes()[..n as usize]
        } else {
            s.as_bytes()
        };
        Ok(String::from_utf8_lossy(out).into_owned().into())
    });
    sprig(env, "join", |a| {
        let [sep, list] = args::<2>("sprig.join", a)?;
        let parts: Vec<String> = match list {
            Value::Array(items) => items.iter().map(text).collect(),
            other => vec![text(&other)],
        };
        Ok(parts.join(&text(&sep)).into())
    });
    sprig(env, "quote", |a| {
        let quoted: Vec<String> = a
            .iter()
            .filter(|v| !v.is_nil())
            .map(|v| serde_json::Value::String(text(v)).to_string())
            .collect();
        Ok(quoted.join(" ").into())
    });
    sprig(env, "squote", |a| {
        let quoted: Vec<String> = a
            .iter()
            .filter(|v| !v.is_nil())
            .map(|v| format!("'{}'", text(v)))
            .collect();
        Ok(quoted.join(" ").into())
    });
    sprig(env, "b64enc", |a| {
        let s = text(&one("sprig.b64enc", a)?);
        Ok(base64::engine::general_purpose::STANDARD.encode(s).into())
    });
    sprig(env, "b64dec", |a| {
        let s = text(&one("sprig.b64dec", a)?);
        // Sprig returns the decoding error as the result rather than failing.
        Ok(match base64::engine::general_purpose::STANDARD.decode(s) {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned().into(),
            Err(e) => e.to_string().into(),
        })
    });
}

fn register_sprig_numbers(env: &mut Environment<'static>) {
    sprig(env, "atoi", |a| {
        Ok(text(&one("sprig.atoi", a)?)
            .parse::<i64>()
            .unwrap_or(0)
            .into())
    });
    sprig(env, "int", |a| Ok(int(&one("sprig.int", a)?).into()));
    sprig(env, "int64", |a| Ok(int(&one("sprig.int64", a)?).into()));
    sprig(env, "float64", |a| {
        Ok(float(&one("sprig.float64", a)?).into())
    });
    sprig(env, "add", |a| Ok(a.iter().map(int).sum::<i64>().into()));
    sprig(
        env,
        "add1",
        |a| Ok((int(&one("sprig.add1", a)?) + 1).into()),
    );
    sprig(env, "mul", |a| {
        Ok(a.iter().map(int).product::<i64>().into())
    });
    sprig(env, "sub", |a| {
        let [x, y] = args::<2>("sprig.sub", a)?;
        Ok((int(&x) - int(&y)).into())
    });
    sprig(env, "div", |a| {
        let [x, y] = args::<2>("sprig.div", a)?;
        int(&x)
            .checked_div(int(&y))
            .map(Value::from)
            .ok_or_else(|| fail("sprig.div: integer divide by zero".into()))
    });
    sprig(env, "mod", |a| {
        let [x, y] = args::<2>("sprig.mod", a)?;
        int(&x)
            .checked_rem(int(&y))
            .map(Value::from)
            .ok_or_else(|| fail("sprig.mod: integer divide by zero".into()))
    });
    sprig(env, "max", |a| {
        a.iter()
            .map(int)
            .max()
            .map(Value::from)
            .ok_or_else(|| fail("sprig.max() needs an argument".into()))
    });
    sprig(env, "min", |a| {
        a.iter()
            .map(int)
            .min()
            .map(Value::from)
            .ok_or_else(|| fail("sprig.min() needs an argument".into()))
    });
}

fn register_sprig_misc(env: &mut Environment<'static>) {
    sprig(env, "list", |a| Ok(Value::Array(a)));
    sprig(env, "empty", |a| Ok(empty(&one("sprig.empty", a)?).into()));
    sprig(env, "default", |a| {
        let mut a = a.into_iter();
        let fallback = a
            .next()
            .ok_or_else(|| fail("sprig.default() needs a default".into()))?;
        Ok(match a.next() {
            Some(given) if !empty(&given) => given,
            _ => fallback,
        })
    });
    sprig(env, "ternary", |a| {
        let [yes, no, cond] = args::<3>("sprig.ternary", a)?;
        Ok(if cond.as_bool() == Some(true) {
            yes
        } else {
            no
        })
    });
    sprig(env, "date", |a| {
        let [layout, when] = args::<2>("sprig.date", a)?;
        // Sprig formats a number as Unix seconds and anything else (Argo's timestamps are
        // strings) as the current time.
        let secs = match when {
            Value::Integer(s) => s,
            _ => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64),
        };
        Ok(go_date(&text(&layout), secs).into())
    });
}

fn one(name: &str, values: Vec<Value>) -> ::expr::Result<Value> {
    let [v] = args::<1>(name, values)?;
    Ok(v)
}

/// A value as Sprig's `toString` (Go's `%v`) writes it.
pub fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Integer(i) => i.to_string(),
        Value::Float(f) => f.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Nil => String::new(),
        other => to_json(other).map_or_else(|_| String::new(), |j| j.to_string()),
    }
}

/// Sprig's `toInt64`: numbers truncated, numeric strings parsed, everything else 0.
fn int(v: &Value) -> i64 {
    match v {
        Value::Integer(i) => *i,
        Value::Float(f) => *f as i64,
        Value::Bool(b) => i64::from(*b),
        Value::String(s) => s
            .trim()
            .parse::<i64>()
            .ok()
            .or_else(|| s.trim().parse::<f64>().ok().map(|f| f as i64))
            .unwrap_or(0),
        _ => 0,
    }
}

fn float(v: &Value) -> f64 {
    match v {
        Value::Integer(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s.trim().parse().unwrap_or(0.0),
        _ => 0.0,
    }
}

/// Sprig's `empty`: nil, zero, false and empty strings, lists and maps.
fn empty(v: &Value) -> bool {
    match v {
        Value::Nil => true,
        Value::Bool(b) => !b,
        Value::Integer(i) => *i == 0,
        Value::Float(f) => *f == 0.0,
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Map(m) => m.is_empty(),
        _ => false,
    }
}

/// A value as Go's `json.Marshal` writes it (map keys sorted, as Go sorts them).
pub fn to_json(v: &Value) -> ::expr::Result<serde_json::Value> {
    Ok(match v {
        Value::Nil => serde_json::Value::Null,
        Value::Bool(b) => (*b).into(),
        Value::Integer(i) => (*i).into(),
        // Go writes a whole float without a fraction (3, not 3.0).
        Value::Float(f) if f.fract() == 0.0 && f.abs() < 1e15 => (*f as i64).into(),
        Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(serde_json::Value::Number)
            .ok_or_else(|| fail(format!("json: unsupported value: {f}")))?,
        Value::String(s) => s.clone().into(),
        Value::Bytes(b) => base64::engine::general_purpose::STANDARD.encode(b).into(),
        Value::Array(items) => items.iter().map(to_json).collect::<Result<_, _>>()?,
        Value::Map(map) => serde_json::Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), to_json(v)?)))
                .collect::<::expr::Result<_>>()?,
        ),
        Value::KeyedMap(pairs) => serde_json::Value::Object(
            pairs
                .iter()
                .map(|(k, v)| Ok((text(k), to_json(v)?)))
                .collect::<::expr::Result<_>>()?,
        ),
    })
}

pub fn from_json(v: &serde_json::Value) -> Value {
    match v {
        serde_json::Value::Null => Value::Nil,
        serde_json::Value::Bool(b) => (*b).into(),
        serde_json::Value::Number(n) => n
            .as_i64()
            .map_or_else(|| n.as_f64().unwrap_or(0.0).into(), Value::from),
        serde_json::Value::String(s) => s.as_str().into(),
        serde_json::Value::Array(items) => Value::Array(items.iter().map(from_json).collect()),
        serde_json::Value::Object(map) => {
            let mut out = Value::Map(Default::default());
            if let Value::Map(m) = &mut out {
                for (k, v) in map {
                    m.insert(k.clone(), from_json(v));
                }
            }
            out
        }
    }
}

/// One step of a JSONPath.
#[derive(Debug, PartialEq)]
enum PathStep {
    Key(String),
    Index(i64),
    Wildcard,
}

/// The JSONPath subset Argo's examples use: `$`, `.key`, `['key']`, `[n]` (negative from the
/// end), `[*]` and `.*`. A path with a wildcard gives a list of what it matched.
fn jsonpath(doc: &serde_json::Value, path: &str) -> ::expr::Result<serde_json::Value> {
    let steps = parse_path(path)?;
    let wild = steps.contains(&PathStep::Wildcard);
    let mut current = vec![doc.clone()];
    for step in &steps {
        let mut next = Vec::new();
        for v in current {
            match (step, v) {
                (PathStep::Key(k), serde_json::Value::Object(mut m)) => {
                    next.extend(m.remove(k));
                }
                (PathStep::Index(i), serde_json::Value::Array(mut a)) => {
                    let at = if *i < 0 { a.len() as i64 + i } else { *i };
                    if (0..a.len() as i64).contains(&at) {
                        next.push(a.swap_remove(at as usize));
                    }
                }
                (PathStep::Wildcard, serde_json::Value::Array(a)) => next.extend(a),
                (PathStep::Wildcard, serde_json::Value::Object(m)) => next.extend(m.into_values()),
                _ => {}
            }
        }
        current = next;
    }
    if wild {
        return Ok(serde_json::Value::Array(current));
    }
    current
        .pop()
        .ok_or_else(|| fail(format!("jsonpath: {path:?} matches nothing")))
}

fn parse_path(path: &str) -> ::expr::Result<Vec<PathStep>> {
    let bad = || {
        fail(format!(
            "jsonpath: {path:?} is outside the subset obsctl supports ($, .key, ['key'], [n], [*], .*)"
        ))
    };
    let mut rest = path.trim().strip_prefix('$').ok_or_else(bad)?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            if after.starts_with('.') {
                return Err(bad());
            }
            let end = after.find(['.', '[']).unwrap_or(after.len());
            let key = &after[..end];
            steps.push(match key {
                "*" => PathStep::Wildcard,
                "" => return Err(bad()),
                k => PathStep::Key(k.to_string()),
            });
            rest = &after[end..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let end = after.find(']').ok_or_else(bad)?;
            let inner = after[..end].trim();
            steps.push(if inner == "*" {
                PathStep::Wildcard
            } else if let Some(q) = inner
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
            {
                PathStep::Key(q.to_string())
            } else {
                PathStep::Index(inner.parse().map_err(|_| bad())?)
            });
            rest = &after[end + 1..];
        } else {
            return Err(bad());
        }
    }
    Ok(steps)
}

/// Go's time layout (`2006-01-02 15:04:05`, `Jan`, `Mon`) applied to Unix seconds, in UTC.
fn go_date(layout: &str, secs: i64) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = clock::civil_from_days(days);
    let tokens: [(&str, String); 10] = [
        ("2006", format!("{y:04}")),
        ("Jan", MONTHS[m as usize - 1].to_string()),
        ("Mon", DAYS[days.rem_euclid(7) as usize].to_string()),
        ("01", format!("{m:02}")),
        ("02", format!("{d:02}")),
        ("15", format!("{:02}", rem / 3600)),
        ("04", format!("{:02}", rem % 3600 / 60)),
        ("05", format!("{:02}", rem % 60)),
        ("06", format!("{:02}", y % 100)),
        ("MST", "UTC".to_string()),
    ];
    let mut out = String::new();
    let mut rest = layout;
    'outer: while !rest.is_empty() {
        for (token, value) in &tokens {
            if let Some(after) = rest.strip_prefix(token) {
                out.push_str(value);
                rest = after;
                continue 'outer;
            }
        }
        let ch = rest.chars().next().expect("not empty");
        out.push(ch);
        rest = &rest[ch.len_utf8()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonpath_subset() {
        let doc = serde_json::json!({"a": "1", "b": {"c": [10, 20, 30]}, "my-key": true});
        assert_eq!(jsonpath(&doc, "$.a").unwrap(), "1");
        assert_eq!(jsonpath(&doc, "$.b.c[1]").unwrap(), 20);
        assert_eq!(jsonpath(&doc, "$.b.c[-1]").unwrap(), 30);
        assert_eq!(jsonpath(&doc, "$['my-key']").unwrap(), true);
        assert_eq!(
            jsonpath(&doc, "$.b.c[*]").unwrap(),
            serde_json::json!([10, 20, 30])
        );
        assert!(jsonpath(&doc, "$.nope").is_err());
        assert!(jsonpath(&doc, "$..a").is_err());
        assert!(jsonpath(&doc, "a").is_err());
    }

    #[test]
    fn go_layouts_format_utc() {
        // 2021-03-04T05:06:07Z was a Thursday.
        let t = 1_614_834_367;
        assert_eq!(go_date("2006-01-02T15:04:05", t), "2021-03-04T05:06:07");
        assert_eq!(go_date("Mon Jan 02 '06", t), "Thu Mar 04 '21");
    }
}
