//! Requests checked against an OpenAPI document: each is matched to its
//! operation by method and by the path the service receives (after the
//! route's `rewrite`, under the first server's base path), then checked
//! against the operation's parameters and request body.

use super::violations;
use crate::openapi::Spec;
use http::Method;
use regex::{Regex, RegexSet};
use serde_json::{json, Value as Json};

/// An operation's checks, compiled.
pub struct Operation {
    /// `operationId`, or `GET /users/{id}`.
    pub id: String,
    params: Vec<Param>,
    body: Option<Body>,
}

struct Param {
    name: String,
    location: Location,
    required: bool,
    kind: Kind,
    /// Query arrays as `?id=1&id=2` (the default) rather than `?id=1,2`.
    explode: bool,
    schema: Option<jsonschema::Validator>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Location {
    Path,
    Query,
    Header,
    Cookie,
}

impl Location {
    fn prefix(self) -> &'static str {
        match self {
            Location::Path => "/path",
            Location::Query => "/query",
            Location::Header => "/headers",
            Location::Cookie => "/cookies",
        }
    }
}

/// What a parameter's text is read as before its schema checks it.
#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Text,
    Integer,
    Number,
    Boolean,
    Array(Box<Kind>),
    /// Objects (`deepObject` and the like) are not read: only presence is checked.
    Unread,
}

struct Body {
    required: bool,
    /// The media types the operation takes.
    types: Vec<String>,
    /// The schema of its JSON type, if it has one.
    json: Option<jsonschema::Validator>,
}

/// One path of the document and its operations.
struct PathEntry {
    template: String,
    regex: Regex,
    names: Vec<String>,
    operations: Vec<(Method, Operation)>,
}

pub struct Operations {
    base_path: String,
    set: RegexSet,
    /// Concrete paths before templated ones, as OpenAPI says they match.
    paths: Vec<PathEntry>,
}

pub enum Found<'a> {
    Operation(&'a Operation, Vec<(String, String)>),
    UnknownPath,
    UnknownMethod(Vec<Method>),
}

impl Operations {
    /// Errors name their place in the document (`paths./u/{id}.get.parameters[0]`).
    pub fn compile(spec: &Spec) -> Result<Operations, Vec<String>> {
        let mut errors = Vec::new();
        let mut paths: Vec<PathEntry> = Vec::new();
        for op in spec.operations() {
            let at = format!("paths.{}.{}", op.path, op.method);
            let method = Method::from_bytes(op.method.to_ascii_uppercase().as_bytes()).unwrap_or(Method::GET);
            let operation = match compile_operation(spec, &op, &at) {
                Ok(operation) => operation,
                Err(more) => {
                    errors.extend(more);
                    continue;
                }
            };
            match paths.iter_mut().find(|p| p.template == op.path) {
                Some(entry) => entry.operations.push((method, operation)),
                None => match path_regex(op.path) {
                    Ok((regex, names)) => paths.push(PathEntry {
                        template: op.path.to_string(),
                        regex,
                        names,
                        operations: vec![(method, operation)],
                    }),
                    Err(e) => errors.push(format!("paths.{}: {e}", op.path)),
                },
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        paths.sort_by_key(|p| {
            let templated = p.template.split('/').filter(|s| s.contains('{')).count();
            (templated, std::cmp::Reverse(p.template.len()))
        });
        let set = RegexSet::new(paths.iter().map(|p| p.regex.as_str())).map_err(|e| vec![format!("paths: {e}")])?;
        Ok(Operations {
            base_path: spec.base_path.clone(),
            set,
            paths,
        })
    }

    /// The operation for a request to the service's `path`.
    pub fn find(&self, method: &Method, path: &str) -> Found<'_> {
        let Some(path) = strip_base(path, &self.base_path) else {
            return Found::UnknownPath;
        };
        let Some(index) = self.set.matches(path).iter().next() else {
            return Found::UnknownPath;
        };
        let entry = &self.paths[index];
        let found = entry
            .operations
            .iter()
            .find(|(m, _)| m == method || (method == Method::HEAD && *m == Method::GET));
        match found {
            Some((_, operation)) => {
                let params = match entry.regex.captures(path) {
                    Some(captures) => entry
                        .names
                        .iter()
                        .zip(captures.iter().skip(1))
                        .filter_map(|(name, value)| {
                            let value = percent_encoding::percent_decode_str(value?.as_str()).decode_utf8_lossy();
                            Some((name.clone(), value.into_owned()))
                        })
                        .collect(),
                    None => Vec::new(),
                };
                Found::Operation(operation, params)
            }
            None => Found::UnknownMethod(entry.operations.iter().map(|(m, _)| m.clone()).collect()),
        }
    }
}

impl Operation {
    /// Checks the parameters, and that a body is there when required and
    /// of a type the operation takes (`Err` is a 415 message).
    /// `has_body` is whether the request carries one, however it is framed.
    pub fn check_head(
        &self,
        request: &http::request::Parts,
        has_body: bool,
        path_params: &[(String, String)],
        found: &mut Vec<Json>,
    ) -> Result<(), String> {
        let query: Vec<(String, String)> = request
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        for param in &self.params {
            let values: Vec<String> = match param.location {
                Location::Path => path_params
                    .iter()
                    .filter(|(k, _)| *k == param.name)
                    .map(|(_, v)| v.clone())
                    .collect(),
                Location::Query => query
                    .iter()
                    .filter(|(k, _)| *k == param.name)
                    .map(|(_, v)| v.clone())
                    .collect(),
                Location::Header => request
                    .headers
                    .get_all(param.name.as_str())
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_string))
                    .collect(),
                Location::Cookie => cookies(&request.headers)
                    .filter(|(k, _)| *k == param.name)
                    .map(|(_, v)| v.to_string())
                    .collect(),
            };
            let pointer = format!("{}/{}", param.location.prefix(), escape_pointer(&param.name));
            if values.is_empty() {
                if param.required {
                    found.push(json!({ "pointer": pointer, "message": "is required" }));
                }
                continue;
            }
            if let (Some(schema), false) = (&param.schema, param.kind == Kind::Unread) {
                let split = param.location != Location::Query || !param.explode;
                let value = read(&param.kind, &values, split);
                violations(schema, &value, &pointer, found);
            }
        }
        let Some(body) = &self.body else { return Ok(()) };
        if !has_body {
            if body.required {
                found.push(json!({ "pointer": "/body", "message": "a request body is required" }));
            }
            return Ok(());
        }
        let mime = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        let accepted = body.types.iter().any(|t| {
            t == &mime
                || t == "*/*"
                || t.strip_suffix("/*")
                    .is_some_and(|major| mime.starts_with(&format!("{major}/")))
        });
        if accepted {
            Ok(())
        } else {
            Err(format!("the request body must be one of: {}", body.types.join(", ")))
        }
    }

    /// The schema of a JSON body, to check once the body is read.
    pub fn body_schema(&self) -> Option<&jsonschema::Validator> {
        self.body.as_ref().and_then(|b| b.json.as_ref())
    }
}

fn compile_operation(spec: &Spec, op: &crate::openapi::Operation<'_>, at: &str) -> Result<Operation, Vec<String>> {
    let mut errors = Vec::new();
    let id = op.operation.get("operationId").and_then(Json::as_str).map_or_else(
        || format!("{} {}", op.method.to_ascii_uppercase(), op.path),
        str::to_string,
    );
    // Path-level parameters, replaced by the operation's of the same name and place.
    let mut declared: Vec<(String, &Json)> = Vec::new();
    for (source, prefix) in [(op.item, format!("paths.{}", op.path)), (op.operation, at.to_string())] {
        let Some(list) = source.get("parameters").and_then(Json::as_array) else {
            continue;
        };
        for (i, param) in list.iter().enumerate() {
            let place = format!("{prefix}.parameters[{i}]");
            match spec.resolve(param) {
                Ok(param) => {
                    let key = |p: &Json| (p.get("name").cloned(), p.get("in").cloned());
                    declared.retain(|(_, p)| key(p) != key(param));
                    declared.push((place, param));
                }
                Err(e) => errors.push(format!("{place}: {e}")),
            }
        }
    }
    let mut params = Vec::new();
    for (place, param) in declared {
        match compile_param(spec, param) {
            Ok(param) => params.push(param),
            Err(e) => errors.push(format!("{place}: {e}")),
        }
    }
    let body = match op.operation.get("requestBody").map(|b| spec.resolve(b)) {
        None => None,
        Some(Err(e)) => {
            errors.push(format!("{at}.requestBody: {e}"));
            None
        }
        Some(Ok(body)) => {
            let content = body.get("content").and_then(Json::as_object);
            let types: Vec<String> = content
                .map(|c| c.keys().map(|k| k.to_ascii_lowercase()).collect())
                .unwrap_or_default();
            let json_schema = content.and_then(|c| {
                c.iter()
                    .find(|(mime, _)| crate::transform::BodyFormat::Json.is_mime(mime))
                    .and_then(|(_, media)| media.get("schema"))
            });
            let json = match json_schema.map(|s| spec.validator(s)) {
                Some(Ok(validator)) => Some(validator),
                Some(Err(e)) => {
                    errors.push(format!("{at}.requestBody: {e}"));
                    None
                }
                None => None,
            };
            Some(Body {
                required: body.get("required").and_then(Json::as_bool).unwrap_or(false),
                types,
                json,
            })
        }
    };
    if errors.is_empty() {
        Ok(Operation { id, params, body })
    } else {
        Err(errors)
    }
}

fn compile_param(spec: &Spec, param: &Json) -> Result<Param, String> {
    let name = param
        .get("name")
        .and_then(Json::as_str)
        .ok_or("a parameter needs a `name`")?
        .to_string();
    let location = match param.get("in").and_then(Json::as_str) {
        Some("path") => Location::Path,
        Some("query") => Location::Query,
        Some("header") => Location::Header,
        Some("cookie") => Location::Cookie,
        other => return Err(format!("`in` is {other:?}: use path, query, header or cookie")),
    };
    if location == Location::Header && http::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("{name:?} is not a header name"));
    }
    let schema = param.get("schema");
    let kind = match schema {
        Some(schema) => kind_of(spec, schema),
        None => Kind::Unread,
    };
    let style_is_form = param.get("style").and_then(Json::as_str).is_none_or(|s| s == "form");
    Ok(Param {
        name,
        location,
        required: location == Location::Path || param.get("required").and_then(Json::as_bool).unwrap_or(false),
        kind,
        explode: param.get("explode").and_then(Json::as_bool).unwrap_or(style_is_form),
        schema: schema.map(|s| spec.validator(s)).transpose()?,
    })
}

fn kind_of(spec: &Spec, schema: &Json) -> Kind {
    let Ok(schema) = spec.resolve(schema) else {
        return Kind::Unread;
    };
    let declared = match schema.get("type") {
        Some(Json::String(t)) => Some(t.as_str()),
        Some(Json::Array(types)) => types.iter().filter_map(Json::as_str).find(|t| *t != "null"),
        _ => None,
    };
    match declared {
        Some("integer") => Kind::Integer,
        Some("number") => Kind::Number,
        Some("boolean") => Kind::Boolean,
        Some("array") => Kind::Array(Box::new(
            schema.get("items").map_or(Kind::Text, |items| kind_of(spec, items)),
        )),
        Some("object") => Kind::Unread,
        _ => Kind::Text,
    }
}

/// A parameter's text as its schema's type; text that is not of the type
/// stays text, for the schema to say so.
fn read(kind: &Kind, values: &[String], split: bool) -> Json {
    match kind {
        Kind::Array(item) => {
            let items: Vec<Json> = if split {
                values
                    .iter()
                    .flat_map(|v| v.split(','))
                    .map(|v| read(item, &[v.trim().to_string()], false))
                    .collect()
            } else {
                values
                    .iter()
                    .map(|v| read(item, std::slice::from_ref(v), false))
                    .collect()
            };
            Json::Array(items)
        }
        _ => {
            let text = &values[0];
            let typed = match kind {
                Kind::Integer => text.parse::<i64>().ok().map(Json::from),
                Kind::Number => text.parse::<serde_json::Number>().ok().map(Json::Number),
                Kind::Boolean => text.parse::<bool>().ok().map(Json::Bool),
                _ => None,
            };
            typed.unwrap_or_else(|| Json::String(text.clone()))
        }
    }
}

/// `/users/{id}/photo.{ext}` as a regex, and its parameters' names in order.
fn path_regex(template: &str) -> Result<(Regex, Vec<String>), String> {
    let mut pattern = String::from("^");
    let mut names = Vec::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        pattern.push_str(&regex::escape(&rest[..open]));
        let close = rest[open..].find('}').ok_or("a `{` without its `}`")? + open;
        names.push(rest[open + 1..close].to_string());
        pattern.push_str("([^/]+)");
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return Err("a `}` without its `{`".into());
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    Regex::new(&pattern).map(|r| (r, names)).map_err(|e| e.to_string())
}

/// The path under the base path, segment-aware.
fn strip_base<'p>(path: &'p str, base: &str) -> Option<&'p str> {
    match crate::openapi::under(path, base)? {
        "" => Some("/"),
        rest => Some(rest),
    }
}

fn cookies(headers: &http::HeaderMap) -> impl Iterator<Item = (&str, &str)> {
    headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
}

/// RFC 6901: `~` and `/` in a pointer's token.
fn escape_pointer(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn operations(doc: Json) -> Operations {
        Operations::compile(&Spec::from_value(doc).unwrap()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    #[test]
    fn concrete_paths_match_before_templates_under_the_base_path() {
        let ops = operations(json!({
            "openapi": "3.1.0",
            "servers": [{"url": "/v1"}],
            "paths": {
                "/users/{id}": {"get": {"operationId": "getUser"}},
                "/users/me": {"get": {"operationId": "me"}},
                "/files/{name}.{ext}": {"put": {}}
            }
        }));
        let id = |method: Method, path: &str| match ops.find(&method, path) {
            Found::Operation(op, params) => format!("{} {params:?}", op.id),
            Found::UnknownPath => "unknown path".into(),
            Found::UnknownMethod(allow) => format!("allow {allow:?}"),
        };
        assert_eq!(id(Method::GET, "/v1/users/me"), "me []");
        assert_eq!(id(Method::GET, "/v1/users/a%20b"), "getUser [(\"id\", \"a b\")]");
        assert_eq!(id(Method::HEAD, "/v1/users/7"), "getUser [(\"id\", \"7\")]");
        assert_eq!(
            id(Method::PUT, "/v1/files/a.txt"),
            "PUT /files/{name}.{ext} [(\"name\", \"a\"), (\"ext\", \"txt\")]"
        );
        assert_eq!(id(Method::DELETE, "/v1/users/7"), "allow [GET]");
        assert_eq!(id(Method::GET, "/users/7"), "unknown path");
        assert_eq!(id(Method::GET, "/v1x/users/7"), "unknown path");
        assert_eq!(id(Method::GET, "/v1/users/7/x"), "unknown path");
    }

    #[test]
    fn parameters_are_read_as_their_types() {
        assert_eq!(read(&Kind::Integer, &["7".into()], false), json!(7));
        assert_eq!(read(&Kind::Integer, &["x".into()], false), json!("x"));
        assert_eq!(read(&Kind::Boolean, &["true".into()], false), json!(true));
        let ints = Kind::Array(Box::new(Kind::Integer));
        assert_eq!(read(&ints, &["1".into(), "2".into()], false), json!([1, 2]));
        assert_eq!(read(&ints, &["1, 2".into()], true), json!([1, 2]));
    }

    #[test]
    fn broken_documents_are_errors_with_their_place() {
        let errors = Operations::compile(
            &Spec::from_value(json!({
                "openapi": "3.0.0",
                "paths": {
                    "/a/{id": {"get": {}},
                    "/b": {"get": {"parameters": [{"name": "x", "in": "body"}, {"$ref": "#/nope"}]}},
                    "/c": {"post": {"requestBody": {"content": {"application/json": {"schema": {"type": 7}}}}}}
                }
            }))
            .unwrap(),
        )
        .err()
        .unwrap();
        let text = errors.join("\n");
        for needle in [
            "paths./a/{id: a `{` without its `}`",
            "paths./b.get.parameters[0]: `in` is Some(\"body\")",
            "paths./b.get.parameters[1]: #/nope points at nothing",
            "paths./c.post.requestBody: a schema is not valid",
        ] {
            assert!(text.contains(needle), "{needle}\n{text}");
        }
    }
}
