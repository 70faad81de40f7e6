//! `spec.templateDefaults`, merged into every template as Argo merges it: the template's own
//! fields win, objects merge field by field, lists are replaced whole, and a template keeps its
//! kind (a default `container` does not turn a steps template into a pod). A default `timeout`
//! or `activeDeadlineSeconds` goes to container and script templates only, as Argo applies them
//! to no steps or DAG template.

use serde_json::{Map, Value};

use crate::workflow::spec::{Template, Workflow};

/// The fields that decide a template's kind.
const KINDS: [&str; 5] = ["container", "script", "steps", "dag", "suspend"];

/// The fields Argo applies to pod templates only.
const POD_ONLY: [&str; 2] = ["timeout", "activeDeadlineSeconds"];

/// Merges the workflow's template defaults, if any, into each of its templates.
pub fn apply(wf: &mut Workflow) -> Result<(), String> {
    let Some(defaults) = wf.spec.template_defaults.clone() else {
        return Ok(());
    };
    let Value::Object(defaults) = defaults else {
        return Err("spec.templateDefaults: expected a template's fields".into());
    };
    for t in &mut wf.spec.templates {
        *t = merged(&defaults, t).map_err(|e| {
            format!(
                "spec.templateDefaults, merged into template `{}`: {e}",
                t.name
            )
        })?;
    }
    Ok(())
}

fn merged(defaults: &Map<String, Value>, t: &Template) -> Result<Template, serde_json::Error> {
    let mut own = serde_json::to_value(t)?;
    prune(&mut own);
    let mut base = defaults.clone();
    for kind in KINDS {
        if own.get(kind).is_none() {
            base.remove(kind);
        }
    }
    if !t.is_pod() {
        for field in POD_ONLY {
            base.remove(field);
        }
    }
    let mut out = Value::Object(base);
    overlay(&mut out, own);
    serde_json::from_value(out)
}

/// Lays `top` over `base`: objects field by field, anything else replaced.
fn overlay(base: &mut Value, top: Value) {
    match (base, top) {
        (Value::Object(base), Value::Object(top)) => {
            for (key, value) in top {
                match base.get_mut(&key) {
                    Some(under) => overlay(under, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, top) => *base = top,
    }
}

/// Drops what the template did not set (nulls, empty lists and objects), as Go's `omitempty`
/// leaves them out of the JSON Argo merges. Returns whether `value` is then empty.
fn prune(value: &mut Value) -> bool {
    match value {
        Value::Null => true,
        Value::Array(items) => items.is_empty(),
        Value::Object(map) => {
            map.retain(|_, v| !prune(v));
            map.is_empty()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_template_wins_objects_merge_and_lists_are_replaced() {
        let mut base = json!({"a": 1, "m": {"x": 1, "y": 2}, "l": [1, 2]});
        overlay(&mut base, json!({"a": 2, "m": {"y": 3}, "l": [9]}));
        assert_eq!(base, json!({"a": 2, "m": {"x": 1, "y": 3}, "l": [9]}));
        let mut own = json!({"n": null, "e": [], "o": {"p": {}}, "k": false});
        prune(&mut own);
        assert_eq!(own, json!({"k": false}));
    }
}
