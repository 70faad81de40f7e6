//! Helpers over OTLP `KeyValue` lists: build string and int attributes, read one back as text.
//! OTLP keeps attributes as ordered lists, not maps; these keep call sites short.

use super::proto::common::v1::{AnyValue, KeyValue, any_value::Value};

pub fn string(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

pub fn int(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

/// The value as a label would show it: strings as they are, numbers and booleans in decimal,
/// arrays and maps as compact JSON-like text. `None` for an absent value.
pub fn value_to_string(value: &AnyValue) -> Option<String> {
    Some(match value.value.as_ref()? {
        Value::StringValue(s) => s.clone(),
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        Value::BytesValue(b) => crate::encode::hex(b),
        Value::ArrayValue(a) => format!(
            "[{}]",
            a.values
                .iter()
                .filter_map(value_to_string)
                .collect::<Vec<_>>()
                .join(",")
        ),
        // Dictionary references only occur in the profiles signal, which obsctl does not take.
        Value::StringValueStrindex(_) => return None,
        Value::KvlistValue(kv) => format!(
            "{{{}}}",
            kv.values
                .iter()
                .map(|e| format!(
                    "{}={}",
                    e.key,
                    e.value
                        .as_ref()
                        .and_then(value_to_string)
                        .unwrap_or_default()
                ))
                .collect::<Vec<_>>()
                .join(",")
        ),
    })
}

/// The first attribute named `key`, as text.
pub fn get(attributes: &[KeyValue], key: &str) -> Option<String> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(value_to_string)
}
