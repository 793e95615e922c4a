//! Value templates: text with `${header.NAME}`, `${query.NAME}`,
//! `${path.PARAM}`, `${consumer.name}`, `${jwt.CLAIM}`, `${request_id}` and
//! `${client_ip}` filled from the request. A path parameter the route does
//! not capture is a config error; anything else that is absent from a
//! request renders as the empty string.

use crate::context::RequestContext;
use http::HeaderName;

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Header(HeaderName),
    Query(String),
    Path(String),
    Consumer,
    Claim(String),
    RequestId,
    ClientIp,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

impl Template {
    /// Parses `text`; `params` are the route's path parameters.
    pub fn parse(text: &str, params: &[String]) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            if at > 0 {
                parts.push(Part::Text(rest[..at].to_string()));
            }
            let after = &rest[at + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("{text:?}: a `${{` is not closed with `}}`"))?;
            parts.push(placeholder(&after[..end], params)?);
            rest = &after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template { parts })
    }

    /// Whether it is plain text (no placeholder).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }

    /// Its text, when it is plain text.
    pub fn literal(&self) -> Option<String> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(piece) => text.push_str(piece),
                _ => return None,
            }
        }
        Some(text)
    }

    pub fn render(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Header(name) => {
                    out.push_str(request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or(""))
                }
                Part::Query(name) => {
                    let value = request.uri.query().and_then(|q| {
                        form_urlencoded::parse(q.as_bytes())
                            .find(|(k, _)| k == name)
                            .map(|(_, v)| v.into_owned())
                    });
                    out.push_str(value.as_deref().unwrap_or(""));
                }
                Part::Path(name) => {
                    let value = ctx
                        .params
                        .iter()
                        .find(|(n, _)| &**n == name.as_str())
                        .map(|(_, v)| v.as_str());
                    out.push_str(value.unwrap_or(""));
                }
                Part::Consumer => out.push_str(ctx.identity.as_ref().map_or("", |i| &i.name)),
                Part::Claim(claim) => {
                    let value = ctx
                        .identity
                        .as_ref()
                        .and_then(|i| i.claims.as_ref())
                        .and_then(|c| c.get(claim));
                    match value {
                        Some(serde_json::Value::String(text)) => out.push_str(text),
                        Some(other) => out.push_str(&other.to_string()),
                        None => {}
                    }
                }
                Part::RequestId => out.push_str(ctx.request_id.to_str().unwrap_or("")),
                Part::ClientIp => out.push_str(&ctx.client.ip().to_string()),
            }
        }
        out
    }
}

fn placeholder(name: &str, params: &[String]) -> Result<Part, String> {
    let known =
        "${header.NAME}, ${query.NAME}, ${path.PARAM}, ${consumer.name}, ${jwt.CLAIM}, ${request_id} or ${client_ip}";
    match name.split_once('.') {
        Some(("header", header)) => HeaderName::from_bytes(header.as_bytes())
            .map(Part::Header)
            .map_err(|_| format!("${{{name}}}: {header:?} is not a header name")),
        Some(("query", key)) if !key.is_empty() => Ok(Part::Query(key.to_string())),
        Some(("path", param)) => {
            if params.iter().any(|p| p == param) {
                Ok(Part::Path(param.to_string()))
            } else {
                Err(format!(
                    "${{{name}}}: the route captures no {{{param}}}{}",
                    if params.is_empty() {
                        String::new()
                    } else {
                        format!(" (it captures {})", params.join(", "))
                    }
                ))
            }
        }
        Some(("consumer", "name")) => Ok(Part::Consumer),
        Some(("jwt", claim)) if !claim.is_empty() => Ok(Part::Claim(claim.to_string())),
        None if name == "request_id" => Ok(Part::RequestId),
        None if name == "client_ip" => Ok(Part::ClientIp),
        _ => Err(format!("${{{name}}} is not a template value: use {known}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_checked_when_the_config_is_read() {
        let params = vec!["id".to_string()];
        assert!(Template::parse("user-${path.id}-${header.x-tenant}", &params).is_ok());
        assert!(Template::parse("plain", &params).unwrap().is_literal());
        for (bad, why) in [
            ("${path.user}", "captures no {user}"),
            ("${nope}", "not a template value"),
            ("${header.a b}", "not a header name"),
            ("${request_id", "not closed"),
        ] {
            let error = Template::parse(bad, &params).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
    }
}
