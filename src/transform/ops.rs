//! The operations of `request_transform` and `response_transform`, compiled:
//! on headers and query parameters (`add` appends, `set` replaces,
//! `remove`, `rename`) and on JSON bodies (`rename`, `remove`, `set`, `add`
//! sets only what is absent, `allow` keeps only the fields listed). They run
//! in that order: rename, remove, set, add, allow.

use super::path::JsonPath;
use super::template::Template;
use crate::context::RequestContext;
use http::{HeaderName, HeaderValue};
use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::Value;

/// `headers:` or `query:` as written.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FieldOpsConfig {
    #[serde(default)]
    pub add: IndexMap<String, String>,
    #[serde(default)]
    pub set: IndexMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    rename: IndexMap<String, String>,
}

/// `json:` as written.
#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonOpsConfig {
    #[serde(default)]
    rename: IndexMap<String, String>,
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    set: IndexMap<String, serde_json::Value>,
    #[serde(default)]
    add: IndexMap<String, serde_json::Value>,
    allow: Option<Vec<String>>,
}

pub struct HeaderOps {
    rename: Vec<(HeaderName, HeaderName)>,
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderTemplate)>,
    add: Vec<(HeaderName, HeaderTemplate)>,
}

/// The values of a block's `set` or `add`, rendered for one request: on the
/// stack for the few a block has.
type Rendered = smallvec::SmallVec<[Option<HeaderValue>; 4]>;

/// A header value's template, and the value itself when the template has no
/// placeholder: made once, not rendered, checked and copied on each request.
struct HeaderTemplate {
    template: Template,
    literal: Option<HeaderValue>,
}

impl HeaderTemplate {
    fn new(template: Template) -> HeaderTemplate {
        let literal = template.literal().and_then(|text| HeaderValue::from_str(&text).ok());
        HeaderTemplate { template, literal }
    }

    /// The value for this request; `None` when the rendered text cannot be
    /// a header value.
    fn render(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Option<HeaderValue> {
        match &self.literal {
            Some(value) => Some(value.clone()),
            None => HeaderValue::from_str(&self.template.render(request, ctx)).ok(),
        }
    }
}

pub struct QueryOps {
    rename: Vec<(String, String)>,
    remove: Vec<String>,
    set: Vec<(String, Template)>,
    add: Vec<(String, Template)>,
}

/// A value to write into a body: JSON as given, with templates in its strings.
enum JsonValue {
    Fixed(Value),
    Template(Template),
}

pub struct JsonOps {
    rename: Vec<(JsonPath, JsonPath)>,
    remove: Vec<JsonPath>,
    set: Vec<(JsonPath, JsonValue)>,
    add: Vec<(JsonPath, JsonValue)>,
    allow: Option<Vec<JsonPath>>,
}

type Errors = Vec<(String, String)>;

fn header_name(field: &str, name: &str, errors: &mut Errors) -> Option<HeaderName> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| errors.push((field.to_string(), format!("{name:?} is not a header name"))))
        .ok()
}

fn template(field: &str, text: &str, params: &[String], errors: &mut Errors) -> Option<Template> {
    Template::parse(text, params)
        .map_err(|e| errors.push((field.to_string(), e)))
        .ok()
}

impl HeaderOps {
    /// Errors are `(field relative to the block, message)`.
    pub fn compile(config: &FieldOpsConfig, params: &[String], errors: &mut Errors) -> HeaderOps {
        let pairs =
            |op: &str, map: &IndexMap<String, String>, errors: &mut Errors| -> Vec<(HeaderName, HeaderTemplate)> {
                map.iter()
                    .filter_map(|(name, value)| {
                        let field = format!("headers.{op}.{name}");
                        Some((
                            header_name(&field, name, errors)?,
                            HeaderTemplate::new(template(&field, value, params, errors)?),
                        ))
                    })
                    .collect()
            };
        HeaderOps {
            rename: config
                .rename
                .iter()
                .filter_map(|(from, to)| {
                    let field = format!("headers.rename.{from}");
                    Some((header_name(&field, from, errors)?, header_name(&field, to, errors)?))
                })
                .collect(),
            remove: config
                .remove
                .iter()
                .enumerate()
                .filter_map(|(i, name)| header_name(&format!("headers.remove[{i}]"), name, errors))
                .collect(),
            set: pairs("set", &config.set, errors),
            add: pairs("add", &config.add, errors),
        }
    }

    /// Applies to a request's own headers: values are rendered from the
    /// request as it arrived, before any of them changes.
    pub fn apply_to_request(&self, request: &mut http::request::Parts, ctx: &RequestContext<'_>) {
        let (set, add) = self.render(request, ctx);
        let mut headers = std::mem::take(&mut request.headers);
        self.write(&mut headers, set, add);
        request.headers = headers;
    }

    /// Applies to response headers; values see the request's context only.
    pub fn apply_to_response(&self, headers: &mut http::HeaderMap, ctx: &RequestContext<'_>) {
        let empty = http::Request::new(()).into_parts().0;
        let (set, add) = self.render(&empty, ctx);
        self.write(headers, set, add);
    }

    fn render(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> (Rendered, Rendered) {
        (
            self.set.iter().map(|(_, t)| t.render(request, ctx)).collect(),
            self.add.iter().map(|(_, t)| t.render(request, ctx)).collect(),
        )
    }

    fn write(&self, headers: &mut http::HeaderMap, set: Rendered, add: Rendered) {
        for (from, to) in &self.rename {
            let values: Vec<HeaderValue> = headers.get_all(from).iter().cloned().collect();
            headers.remove(from);
            for value in values {
                headers.append(to, value);
            }
        }
        for name in &self.remove {
            headers.remove(name);
        }
        for ((name, _), value) in self.set.iter().zip(set) {
            // `set` replaces: a value that cannot be a header (a claim with a
            // newline, say) leaves none, never the client's own.
            match value {
                Some(value) => headers.insert(name, value),
                None => headers.remove(name),
            };
        }
        for ((name, _), value) in self.add.iter().zip(add) {
            if let Some(value) = value {
                headers.append(name, value);
            }
        }
    }
}

/// `what: 2 renamed, 1 removed` for the operations that are not empty.
fn describe(what: &str, counts: [(&str, usize); 5]) -> Option<String> {
    let parts: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(op, n)| format!("{n} {op}"))
        .collect();
    (!parts.is_empty()).then(|| format!("{what}: {}", parts.join(", ")))
}

impl HeaderOps {
    pub fn describe(&self) -> Option<String> {
        describe(
            "headers",
            [
                ("renamed", self.rename.len()),
                ("removed", self.remove.len()),
                ("set", self.set.len()),
                ("added", self.add.len()),
                ("", 0),
            ],
        )
    }
}

impl QueryOps {
    pub fn describe(&self) -> Option<String> {
        describe(
            "query",
            [
                ("renamed", self.rename.len()),
                ("removed", self.remove.len()),
                ("set", self.set.len()),
                ("added", self.add.len()),
                ("", 0),
            ],
        )
    }

    pub fn compile(config: &FieldOpsConfig, params: &[String], errors: &mut Errors) -> QueryOps {
        let pairs = |op: &str, map: &IndexMap<String, String>, errors: &mut Errors| -> Vec<(String, Template)> {
            map.iter()
                .filter_map(|(name, value)| {
                    Some((
                        name.clone(),
                        template(&format!("query.{op}.{name}"), value, params, errors)?,
                    ))
                })
                .collect()
        };
        QueryOps {
            rename: config.rename.iter().map(|(a, b)| (a.clone(), b.clone())).collect(),
            remove: config.remove.clone(),
            set: pairs("set", &config.set, errors),
            add: pairs("add", &config.add, errors),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rename.is_empty() && self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Rewrites the request's query string.
    pub fn apply(&self, request: &mut http::request::Parts, ctx: &RequestContext<'_>) {
        let mut pairs: Vec<(String, String)> = request
            .uri
            .query()
            .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        for (from, to) in &self.rename {
            for pair in pairs.iter_mut().filter(|(k, _)| k == from) {
                pair.0 = to.clone();
            }
        }
        pairs.retain(|(k, _)| !self.remove.contains(k));
        for (name, value) in &self.set {
            let value = value.render(request, ctx);
            pairs.retain(|(k, _)| k != name);
            pairs.push((name.clone(), value));
        }
        for (name, value) in &self.add {
            pairs.push((name.clone(), value.render(request, ctx)));
        }
        let query: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&pairs)
            .finish();
        let path_and_query = if query.is_empty() {
            request.uri.path().to_string()
        } else {
            format!("{}?{query}", request.uri.path())
        };
        let mut parts = request.uri.clone().into_parts();
        parts.path_and_query = path_and_query.parse().ok();
        if let Ok(uri) = http::Uri::from_parts(parts) {
            request.uri = uri;
        }
    }
}

impl JsonOps {
    pub fn compile(config: &JsonOpsConfig, params: &[String], errors: &mut Errors) -> JsonOps {
        let path = |field: String, text: &str, errors: &mut Errors| {
            JsonPath::parse(text).map_err(|e| errors.push((field, e))).ok()
        };
        let value = |field: &str, value: &Value, errors: &mut Errors| match value {
            Value::String(text) => {
                let parsed = template(field, text, params, errors)?;
                Some(if parsed.is_literal() {
                    JsonValue::Fixed(value.clone())
                } else {
                    JsonValue::Template(parsed)
                })
            }
            other => Some(JsonValue::Fixed(other.clone())),
        };
        let mut rename = Vec::new();
        for (from, to) in &config.rename {
            let field = format!("json.rename.{from}");
            if let (Some(a), Some(b)) = (path(field.clone(), from, errors), path(field.clone(), to, errors)) {
                if a.arrays() != b.arrays() {
                    errors.push((field, "both paths must have as many [*]".into()));
                } else {
                    rename.push((a, b));
                }
            }
        }
        let pairs = |op: &str, map: &IndexMap<String, Value>, errors: &mut Errors| {
            map.iter()
                .filter_map(|(p, v)| {
                    let field = format!("json.{op}.{p}");
                    Some((path(field.clone(), p, errors)?, value(&field, v, errors)?))
                })
                .collect()
        };
        JsonOps {
            rename,
            remove: config
                .remove
                .iter()
                .enumerate()
                .filter_map(|(i, p)| path(format!("json.remove[{i}]"), p, errors))
                .collect(),
            set: pairs("set", &config.set, errors),
            add: pairs("add", &config.add, errors),
            allow: config.allow.as_ref().map(|list| {
                list.iter()
                    .enumerate()
                    .filter_map(|(i, p)| path(format!("json.allow[{i}]"), p, errors))
                    .collect()
            }),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.rename.is_empty()
            && self.remove.is_empty()
            && self.set.is_empty()
            && self.add.is_empty()
            && self.allow.is_none()
    }

    pub fn describe(&self) -> Option<String> {
        describe(
            "json",
            [
                ("renamed", self.rename.len()),
                ("removed", self.remove.len()),
                ("set", self.set.len()),
                ("added", self.add.len()),
                ("kept (allow)", self.allow.as_ref().map_or(0, Vec::len)),
            ],
        )
    }

    pub fn apply(&self, body: &mut Value, request: Option<&http::request::Parts>, ctx: &RequestContext<'_>) {
        for (from, to) in &self.rename {
            let mut values = from.take(body).into_iter();
            to.put(body, &mut || values.next(), false);
        }
        for path in &self.remove {
            path.take(body);
        }
        let empty = http::Request::new(()).into_parts().0;
        let request = request.unwrap_or(&empty);
        let render = |v: &JsonValue| match v {
            JsonValue::Fixed(value) => value.clone(),
            JsonValue::Template(t) => Value::String(t.render(request, ctx)),
        };
        for (path, value) in &self.set {
            let rendered = render(value);
            path.put(body, &mut || Some(rendered.clone()), false);
        }
        for (path, value) in &self.add {
            let rendered = render(value);
            path.put(body, &mut || Some(rendered.clone()), true);
        }
        if let Some(allow) = &self.allow {
            *body = JsonPath::keep_only(body, allow);
        }
    }
}
