//! OpenAPI 3.0 and 3.1 documents: read once, then used to validate requests
//! (`validate: { openapi: … }`, in `plugins::validate::openapi`), to write routes
//! (`portico import-openapi`, in `import`), and to serve the gateway's API
//! documentation (`/docs`, in `docs`).
//!
//! Only what those need is read: paths, operations, parameters, request
//! bodies, components and servers. References are followed within the
//! document (`#/components/…`); a reference to another file is an error,
//! so that nothing is fetched.

pub mod docs;
pub mod import;

use serde_json::{Map, Value};

/// The HTTP methods an OpenAPI path item may describe, in its order.
pub const METHODS: [&str; 8] = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// 3.0.x: schemas are a JSON Schema draft 4 dialect (`nullable`).
    V30,
    /// 3.1.x: schemas are JSON Schema 2020-12.
    V31,
}

#[derive(Debug, Clone)]
pub struct Spec {
    pub doc: Value,
    pub version: Version,
    /// The path of the first server's URL (`/v1`), which every path is under.
    pub base_path: String,
}

/// One operation of the document.
pub struct Operation<'a> {
    pub method: &'static str,
    pub path: &'a str,
    pub item: &'a Value,
    pub operation: &'a Value,
}

impl Spec {
    /// Reads a JSON or YAML document.
    pub fn load(file: &str) -> Result<Spec, String> {
        let text = std::fs::read_to_string(file).map_err(|e| format!("cannot read {file}: {e}"))?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| format!("{file} is not JSON or YAML: {e}"))?;
        Spec::from_value(doc).map_err(|e| format!("{file}: {e}"))
    }

    pub fn from_value(doc: Value) -> Result<Spec, String> {
        let version = match doc.get("openapi").and_then(Value::as_str) {
            Some(v) if v.starts_with("3.0") => Version::V30,
            Some(v) if v.starts_with("3.1") => Version::V31,
            Some(v) => return Err(format!("OpenAPI {v} is not supported: give a 3.0 or 3.1 document")),
            None if doc.get("swagger").is_some() => {
                return Err("Swagger 2.0 is not supported: convert it to OpenAPI 3 first".into())
            }
            None => return Err("not an OpenAPI document (no `openapi` version)".into()),
        };
        if !doc.get("paths").is_none_or(Value::is_object) {
            return Err("`paths` must be an object".into());
        }
        let base_path = doc
            .pointer("/servers/0/url")
            .and_then(Value::as_str)
            .map(server_path)
            .unwrap_or_default();
        Ok(Spec {
            doc,
            version,
            base_path,
        })
    }

    /// Every operation, in document order.
    pub fn operations(&self) -> Vec<Operation<'_>> {
        let mut out = Vec::new();
        let Some(paths) = self.doc.get("paths").and_then(Value::as_object) else {
            return out;
        };
        for (path, item) in paths {
            let Ok(item) = self.resolve(item) else { continue };
            for method in METHODS {
                if let Some(operation) = item.get(method).filter(|o| o.is_object()) {
                    out.push(Operation {
                        method,
                        path,
                        item,
                        operation,
                    });
                }
            }
        }
        out
    }

    /// Follows `$ref`s within the document.
    pub fn resolve<'a>(&'a self, mut value: &'a Value) -> Result<&'a Value, String> {
        for _ in 0..32 {
            let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
                return Ok(value);
            };
            let pointer = reference
                .strip_prefix('#')
                .ok_or_else(|| format!("{reference}: only references within the document (#/…) are followed"))?;
            value = self
                .doc
                .pointer(pointer)
                .ok_or_else(|| format!("{reference} points at nothing"))?;
        }
        Err("references nest deeper than 32".into())
    }

    /// Compiles a schema of the document into a validator: its references
    /// into `components` resolve, and a 3.0 schema is read as 3.0 means it.
    pub fn validator(&self, schema: &Value) -> Result<jsonschema::Validator, String> {
        let mut root = Map::new();
        root.insert("allOf".into(), Value::Array(vec![schema.clone()]));
        // Components are copied only for schemas that refer to them.
        if let Some(components) = self.doc.get("components").filter(|_| has_reference(schema)) {
            root.insert("components".into(), components.clone());
        }
        let mut root = Value::Object(root);
        let built = match self.version {
            Version::V30 => {
                nullable_to_type(&mut root);
                jsonschema::draft4::new(&root)
            }
            Version::V31 => jsonschema::draft202012::new(&root),
        };
        built.map_err(|e| format!("a schema is not valid: {e}"))
    }
}

/// The path under `prefix`, segment-aware: `""` or starting with `/`.
pub fn under<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// `https://api.example.com/v1/` → `/v1`; `/v1` → `/v1`; `/` → ``.
fn server_path(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = if url.contains("://") {
        after_scheme.find('/').map_or("", |at| &after_scheme[at..])
    } else {
        after_scheme
    };
    // Server variables (`/{version}`) cannot be known: no base path then.
    if path.contains('{') {
        return String::new();
    }
    path.trim_end_matches('/').to_string()
}

fn has_reference(value: &Value) -> bool {
    match value {
        Value::Object(map) => map.contains_key("$ref") || map.values().any(has_reference),
        Value::Array(items) => items.iter().any(has_reference),
        _ => false,
    }
}

/// OpenAPI 3.0's `nullable: true` is JSON Schema's `type: [T, "null"]`.
fn nullable_to_type(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if map.remove("nullable") == Some(Value::Bool(true)) {
                if let Some(Value::String(t)) = map.get("type").cloned() {
                    map.insert("type".into(), serde_json::json!([t, "null"]));
                }
                if let Some(Value::Array(options)) = map.get_mut("enum") {
                    options.push(Value::Null);
                }
            }
            map.values_mut().for_each(nullable_to_type);
        }
        Value::Array(items) => items.iter_mut().for_each(nullable_to_type),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_servers_and_references() {
        let spec = Spec::from_value(json!({
            "openapi": "3.0.3",
            "servers": [{"url": "https://api.example.com/v1/"}],
            "paths": {"/u/{id}": {"get": {"responses": {}}, "parameters": []}},
            "components": {"schemas": {"Id": {"type": "integer", "nullable": true}}}
        }))
        .unwrap();
        assert_eq!(spec.version, Version::V30);
        assert_eq!(spec.base_path, "/v1");
        assert_eq!(spec.operations().len(), 1);
        let validator = spec.validator(&json!({"$ref": "#/components/schemas/Id"})).unwrap();
        assert!(validator.is_valid(&json!(7)) && validator.is_valid(&json!(null)));
        assert!(!validator.is_valid(&json!("7")));
        for (doc, needle) in [
            (json!({"swagger": "2.0"}), "Swagger 2.0"),
            (json!({"openapi": "4.0"}), "not supported"),
            (json!({}), "not an OpenAPI document"),
        ] {
            assert!(Spec::from_value(doc).unwrap_err().contains(needle));
        }
        assert_eq!(server_path("/api"), "/api");
        assert_eq!(server_path("https://x.example"), "");
        assert_eq!(server_path("https://x.example/{v}"), "");
    }
}
