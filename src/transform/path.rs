//! JSON field paths for transforms: `user.id`, `items[*].sku`, `a.b[*].c`.
//! `[*]` stands for every element of an array; a path never indexes one
//! element (the transforms apply to shapes, not to positions).

use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Each,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath {
    segments: Vec<Segment>,
}

impl JsonPath {
    pub fn parse(text: &str) -> Result<JsonPath, String> {
        let fix = "write it like user.id or items[*].sku";
        let mut segments = Vec::new();
        for part in text.split('.') {
            let (key, mut rest) = match part.find('[') {
                Some(at) => (&part[..at], &part[at..]),
                None => (part, ""),
            };
            if key.is_empty() {
                return Err(format!("{text:?} has an empty field name: {fix}"));
            }
            segments.push(Segment::Key(key.to_string()));
            while !rest.is_empty() {
                match rest.strip_prefix("[*]") {
                    Some(after) => {
                        segments.push(Segment::Each);
                        rest = after;
                    }
                    None => return Err(format!("{text:?}: only [*] may follow a field name: {fix}")),
                }
            }
        }
        Ok(JsonPath { segments })
    }

    /// How many `[*]` it has: a rename must keep the same number.
    pub fn arrays(&self) -> usize {
        self.segments.iter().filter(|s| **s == Segment::Each).count()
    }

    /// Removes the field(s) and returns what was there, in document order.
    pub fn take(&self, root: &mut Value) -> Vec<Value> {
        let mut out = Vec::new();
        take(root, &self.segments, &mut out);
        out
    }

    /// Sets the field(s), creating objects on the way; with `[*]`, the n-th
    /// array element gets the n-th value (the last one repeats).
    pub fn put(&self, root: &mut Value, values: &mut dyn FnMut() -> Option<Value>, only_if_absent: bool) {
        put(root, &self.segments, values, only_if_absent);
    }

    /// What the path names, in document order (several with `[*]`).
    pub fn values<'v>(&self, root: &'v Value) -> Vec<&'v Value> {
        let mut out = Vec::new();
        collect(root, &self.segments, &mut out);
        out
    }

    /// Keeps only what the paths name, dropping every other field.
    pub fn keep_only(root: &Value, paths: &[JsonPath]) -> Value {
        let mut out = Value::Null;
        for path in paths {
            copy(root, &mut out, &path.segments);
        }
        out
    }
}

fn collect<'v>(value: &'v Value, segments: &[Segment], out: &mut Vec<&'v Value>) {
    match segments.split_first() {
        None => out.push(value),
        Some((Segment::Key(key), rest)) => {
            if let Some(inner) = value.get(key.as_str()) {
                collect(inner, rest, out);
            }
        }
        Some((Segment::Each, rest)) => {
            for item in value.as_array().into_iter().flatten() {
                collect(item, rest, out);
            }
        }
    }
}

fn take(value: &mut Value, segments: &[Segment], out: &mut Vec<Value>) {
    match segments {
        [] => {}
        [Segment::Key(key)] => {
            if let Some(taken) = value.as_object_mut().and_then(|m| m.remove(key)) {
                out.push(taken);
            }
        }
        [Segment::Key(key), rest @ ..] => {
            if let Some(inner) = value.as_object_mut().and_then(|m| m.get_mut(key)) {
                take(inner, rest, out);
            }
        }
        [Segment::Each, rest @ ..] => {
            if let Some(items) = value.as_array_mut() {
                for item in items {
                    if rest.is_empty() {
                        out.push(item.take());
                    } else {
                        take(item, rest, out);
                    }
                }
            }
        }
    }
}

fn put(value: &mut Value, segments: &[Segment], values: &mut dyn FnMut() -> Option<Value>, only_if_absent: bool) {
    match segments {
        [] => {}
        [Segment::Key(key), rest @ ..] => {
            if value.is_null() {
                *value = Value::Object(Map::new());
            }
            let Some(map) = value.as_object_mut() else { return };
            if rest.is_empty() {
                if only_if_absent && map.contains_key(key) {
                    return;
                }
                if let Some(v) = values() {
                    map.insert(key.clone(), v);
                }
            } else {
                put(
                    map.entry(key.clone()).or_insert(Value::Null),
                    rest,
                    values,
                    only_if_absent,
                );
            }
        }
        [Segment::Each, rest @ ..] => {
            if let Some(items) = value.as_array_mut() {
                for item in items {
                    put(item, rest, values, only_if_absent);
                }
            }
        }
    }
}

fn copy(from: &Value, to: &mut Value, segments: &[Segment]) {
    match segments {
        [] => *to = from.clone(),
        [Segment::Key(key), rest @ ..] => {
            let Some(inner) = from.as_object().and_then(|m| m.get(key)) else {
                return;
            };
            if !to.is_object() {
                *to = Value::Object(Map::new());
            }
            if let Some(map) = to.as_object_mut() {
                copy(inner, map.entry(key.clone()).or_insert(Value::Null), rest);
            }
        }
        [Segment::Each, rest @ ..] => {
            let Some(items) = from.as_array() else { return };
            if !to.is_array() {
                *to = Value::Array(vec![Value::Null; items.len()]);
            }
            if let Some(out) = to.as_array_mut() {
                for (item, slot) in items.iter().zip(out.iter_mut()) {
                    copy(item, slot, rest);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renames_move_values_inside_arrays() {
        let mut doc = json!({ "user": { "userId": "7" }, "items": [ { "sku": "a" }, { "sku": "b" } ] });
        let from = JsonPath::parse("items[*].sku").unwrap();
        let to = JsonPath::parse("items[*].id").unwrap();
        let mut values = from.take(&mut doc).into_iter();
        to.put(&mut doc, &mut || values.next(), false);
        assert_eq!(doc["items"], json!([ { "id": "a" }, { "id": "b" } ]));
    }

    #[test]
    fn keep_only_filters_nested_fields() {
        let doc = json!({ "id": 1, "password": "x", "profile": { "name": "A", "ssn": "1" }, "tags": [ { "k": 1, "secret": 2 } ] });
        let paths: Vec<JsonPath> = ["id", "profile.name", "tags[*].k"]
            .iter()
            .map(|p| JsonPath::parse(p).unwrap())
            .collect();
        assert_eq!(
            JsonPath::keep_only(&doc, &paths),
            json!({ "id": 1, "profile": { "name": "A" }, "tags": [ { "k": 1 } ] })
        );
    }

    #[test]
    fn bad_paths_are_refused() {
        for bad in ["", "a..b", "a[0]", "[*]", "a[*", "a.b[x]"] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }
}
