//! The composite answer: each call's answer under its key (or merged at
//! the top level), trimmed by `select`, grouped by `group_by`, and the list
//! of optional calls that failed.

use super::{Aggregate, Call};
use crate::transform::path::JsonPath;
use serde_json::{Map, Value};

/// The answer's body from each call's answer (`None` for one that failed:
/// only optional calls may have, by now), and the keys of those that did.
pub fn compose(aggregate: &Aggregate, answers: Vec<Option<Value>>) -> (Value, Vec<String>) {
    let mut body = Map::new();
    let mut partial = Vec::new();
    for (call, answer) in aggregate.calls.iter().zip(answers) {
        let value = match answer {
            Some(answer) => shape(call, answer),
            None => {
                partial.push(call.key.clone());
                Value::Null
            }
        };
        match value {
            Value::Object(fields) if aggregate.merge => body.extend(fields),
            // Arrays, scalars and failed calls cannot merge: they keep a key.
            value => {
                body.insert(call.key.clone(), value);
            }
        }
    }
    if let (Some(field), false) = (&aggregate.partial_field, partial.is_empty()) {
        body.insert(
            field.clone(),
            partial.iter().map(|k| Value::String(k.clone())).collect(),
        );
    }
    (Value::Object(body), partial)
}

/// One answer after `select` (on each element of an array answer) and `group_by`.
fn shape(call: &Call, answer: Value) -> Value {
    let selected = match (call.select.is_empty(), answer) {
        (true, answer) => answer,
        (false, Value::Array(items)) => {
            Value::Array(items.iter().map(|i| JsonPath::keep_only(i, &call.select)).collect())
        }
        (false, answer) => JsonPath::keep_only(&answer, &call.select),
    };
    match (&call.group_by, selected) {
        (Some(field), Value::Array(items)) => {
            let mut groups = Map::new();
            for item in items {
                let key = match field.values(&item).first() {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Null) | None => "null".to_string(),
                    Some(other) => other.to_string(),
                };
                if let Value::Array(group) = groups.entry(key).or_insert_with(|| Value::Array(Vec::new())) {
                    group.push(item);
                }
            }
            Value::Object(groups)
        }
        (_, value) => value,
    }
}
