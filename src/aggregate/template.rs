//! Call templates: text with `{param}` (the route's path parameters, as
//! matched), `{call.field}` (another call's answer: `{user.account_id}`,
//! `{orders.items[*].id}`, or `{user}` for all of it) and the request values
//! of `crate::transform::template` (`${query.x}`, `${header.x}`,
//! `${jwt.sub}`, `${consumer.name}`, `${request_id}`, `${client_ip}`).
//!
//! A field the answer does not have, or a request value that is absent,
//! renders empty; several values (through `[*]`) are joined with commas.

use crate::context::RequestContext;
use crate::transform::path::JsonPath;
use crate::transform::template::Template;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde_json::Value;

/// What a value put into a path or query keeps unescaped: RFC 3986's unreserved.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

#[derive(Debug)]
enum Piece {
    Text(String),
    Param(String),
    /// A call's answer (by index), or a field of it.
    Answer(usize, Option<JsonPath>),
    Request(Template),
}

#[derive(Debug)]
pub struct CallTemplate {
    pieces: Vec<Piece>,
}

/// How substituted values are written.
#[derive(Clone, Copy, PartialEq)]
pub enum Escape {
    /// Percent-encoded, for paths and query strings (route parameters go in
    /// as they were matched, already a path's).
    Url,
    Raw,
}

impl CallTemplate {
    /// `params` are the route's parameters, `calls` the aggregate's call names.
    pub fn parse(text: &str, params: &[String], calls: &[&str]) -> Result<CallTemplate, String> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let dollar = open > 0 && rest.as_bytes()[open - 1] == b'$';
            let literal_end = if dollar { open - 1 } else { open };
            if literal_end > 0 {
                pieces.push(Piece::Text(rest[..literal_end].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|at| open + at)
                .ok_or_else(|| format!("{text:?}: a `{{` is not closed with `}}`"))?;
            let inside = &rest[open + 1..close];
            pieces.push(if dollar {
                Piece::Request(Template::parse(&format!("${{{inside}}}"), params)?)
            } else {
                reference(inside, params, calls)?
            });
            rest = &rest[close + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(CallTemplate { pieces })
    }

    /// The calls whose answers it needs.
    pub fn needs(&self) -> impl Iterator<Item = usize> + '_ {
        self.pieces.iter().filter_map(|piece| match piece {
            Piece::Answer(call, _) => Some(*call),
            _ => None,
        })
    }

    /// When the template is one reference and nothing else: the JSON value
    /// itself, for bodies (`"{user.id}"` stays a number).
    pub fn single_value(&self, answers: &[Option<Value>]) -> Option<Value> {
        match self.pieces.as_slice() {
            [Piece::Answer(call, path)] => {
                let answer = answers.get(*call)?.as_ref()?;
                Some(match path {
                    None => answer.clone(),
                    Some(path) => match path.values(answer).as_slice() {
                        [] => Value::Null,
                        [one] if path.arrays() == 0 => (*one).clone(),
                        many => Value::Array(many.iter().map(|v| (*v).clone()).collect()),
                    },
                })
            }
            _ => None,
        }
    }

    pub fn render(
        &self,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
        answers: &[Option<Value>],
        escape: Escape,
    ) -> String {
        let mut out = String::new();
        let push = |value: &str, out: &mut String| match escape {
            Escape::Url => out.extend(utf8_percent_encode(value, COMPONENT)),
            Escape::Raw => out.push_str(value),
        };
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Param(name) => {
                    let value = ctx.params.iter().find(|(n, _)| &**n == name.as_str());
                    let value = value.map_or("", |(_, v)| v.as_str());
                    match escape {
                        // A path segment as the client escaped it: decoded, then escaped
                        // as one component, so that `7&tenant=x` or `7%2F..` stays one value.
                        Escape::Url => push(
                            &percent_encoding::percent_decode_str(value).decode_utf8_lossy(),
                            &mut out,
                        ),
                        Escape::Raw => out.push_str(value),
                    }
                }
                Piece::Answer(call, path) => {
                    let Some(answer) = answers.get(*call).and_then(Option::as_ref) else {
                        continue;
                    };
                    let values = match path {
                        Some(path) => path.values(answer),
                        None => vec![answer],
                    };
                    let text: Vec<String> = values.into_iter().map(text_of).collect();
                    push(&text.join(","), &mut out);
                }
                Piece::Request(template) => push(&template.render(request, ctx), &mut out),
            }
        }
        out
    }
}

fn reference(inside: &str, params: &[String], calls: &[&str]) -> Result<Piece, String> {
    let (name, field) = match inside.split_once('.') {
        Some((name, field)) => (name, Some(field)),
        None => (inside, None),
    };
    if let Some(call) = calls.iter().position(|c| *c == name) {
        let path = field.map(JsonPath::parse).transpose()?;
        return Ok(Piece::Answer(call, path));
    }
    if field.is_none() && params.iter().any(|p| p == name) {
        return Ok(Piece::Param(name.to_string()));
    }
    Err(format!(
        "{{{inside}}} names neither a parameter of the route ({}) nor a call ({})",
        if params.is_empty() {
            "it captures none".to_string()
        } else {
            params.join(", ")
        },
        calls.join(", ")
    ))
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A call's JSON body: its strings are templates.
#[derive(Debug)]
pub enum BodyTemplate {
    Value(Value),
    Text(CallTemplate),
    Array(Vec<BodyTemplate>),
    Object(Vec<(String, BodyTemplate)>),
}

impl BodyTemplate {
    pub fn parse(value: &Value, params: &[String], calls: &[&str]) -> Result<BodyTemplate, String> {
        Ok(match value {
            Value::String(text) => BodyTemplate::Text(CallTemplate::parse(text, params, calls)?),
            Value::Array(items) => BodyTemplate::Array(
                items
                    .iter()
                    .map(|item| BodyTemplate::parse(item, params, calls))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(fields) => BodyTemplate::Object(
                fields
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), BodyTemplate::parse(v, params, calls)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => BodyTemplate::Value(other.clone()),
        })
    }

    pub fn needs(&self) -> Vec<usize> {
        match self {
            BodyTemplate::Value(_) => Vec::new(),
            BodyTemplate::Text(template) => template.needs().collect(),
            BodyTemplate::Array(items) => items.iter().flat_map(BodyTemplate::needs).collect(),
            BodyTemplate::Object(fields) => fields.iter().flat_map(|(_, v)| v.needs()).collect(),
        }
    }

    pub fn render(&self, request: &http::request::Parts, ctx: &RequestContext<'_>, answers: &[Option<Value>]) -> Value {
        match self {
            BodyTemplate::Value(value) => value.clone(),
            BodyTemplate::Text(template) => template
                .single_value(answers)
                .unwrap_or_else(|| Value::String(template.render(request, ctx, answers, Escape::Raw))),
            BodyTemplate::Array(items) => Value::Array(items.iter().map(|i| i.render(request, ctx, answers)).collect()),
            BodyTemplate::Object(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.clone(), v.render(request, ctx, answers)))
                    .collect(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_are_checked_and_rendered() {
        let params = vec!["user_id".to_string()];
        let calls = ["user", "orders"];
        let template = CallTemplate::parse(
            "/orders?account={user.account_id}&u={user_id}&q=${query.q}",
            &params,
            &calls,
        )
        .unwrap();
        assert_eq!(template.needs().collect::<Vec<_>>(), vec![0]);
        let (parts, _) = http::Request::get("/profile/7?q=a%20b").body(()).unwrap().into_parts();
        let params_list: crate::router::Params = vec![("user_id".into(), "7".to_string())];
        let id = http::HeaderValue::from_static("r1");
        let ctx = RequestContext::new(&id, "127.0.0.1:1".parse().unwrap(), "r", params_list, None);
        let answers = vec![Some(json!({"account_id": "a/1 b"})), None];
        assert_eq!(
            template.render(&parts, &ctx, &answers, Escape::Url),
            "/orders?account=a%2F1%20b&u=7&q=a%20b"
        );
        let many = CallTemplate::parse("{orders.items[*].id}", &params, &calls).unwrap();
        let answers = vec![None, Some(json!({"items": [{"id": 1}, {"id": 2}]}))];
        assert_eq!(many.render(&parts, &ctx, &answers, Escape::Raw), "1,2");
        assert_eq!(many.single_value(&answers), Some(json!([1, 2])));
        for (bad, why) in [
            ("/x/{nope}", "names neither"),
            ("/x/{user", "not closed"),
            ("/x/${path.other}", "captures no {other}"),
            ("/x/{user.a[0]}", "only [*]"),
        ] {
            let error = CallTemplate::parse(bad, &params, &calls).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
