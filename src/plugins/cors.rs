//! `cors`: Cross-Origin Resource Sharing (the Fetch standard). Preflight
//! `OPTIONS` requests are answered by the gateway; other requests from an
//! allowed origin get their `Access-Control-*` headers on the response,
//! whatever answers it (upstream, plugin, or error). A disallowed origin gets
//! no CORS headers at all, and the browser keeps the response from the page.

use super::{Decision, Flow, Phase, PhaseFuture, Plugin, RequestContext, Setup, at_once};
use crate::body::ResponseBody;
use crate::config::units::Duration as ConfigDuration;
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_HEADERS,
    ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderValue, Method, Response, StatusCode};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// `https://app.example.com`, `https://*.example.com`, or `*`.
    origins: Vec<String>,
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    /// Request headers a page may send; default: whatever the preflight asks for.
    headers: Option<Vec<String>>,
    /// Response headers a page may read beyond the safelisted ones.
    #[serde(default)]
    expose_headers: Vec<String>,
    #[serde(default)]
    credentials: bool,
    #[serde(default = "default_max_age")]
    max_age: ConfigDuration,
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
        .map(String::from)
        .to_vec()
}

fn default_max_age() -> ConfigDuration {
    ConfigDuration::from_secs(3600)
}

enum OriginPattern {
    Any,
    Exact(String),
    /// `https://*.example.com`: scheme and the suffix after the star.
    Subdomains {
        scheme: String,
        suffix: String,
    },
}

pub struct Cors {
    origins: Vec<OriginPattern>,
    methods: Vec<Method>,
    allow_methods: HeaderValue,
    allow_headers: Option<HeaderValue>,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: HeaderValue,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let mut errors = Vec::new();
    let mut origins = Vec::new();
    for (i, origin) in config.origins.iter().enumerate() {
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        if origin == "*" {
            if config.credentials {
                errors.push(setup.error(
                    &format!("origins[{i}]"),
                    "`*` cannot be used with `credentials: true` (browsers refuse it): list the origins",
                ));
            }
            origins.push(OriginPattern::Any);
        } else if let Some((scheme, rest)) = origin.split_once("://*.") {
            origins.push(OriginPattern::Subdomains {
                scheme: scheme.to_string(),
                suffix: format!(".{rest}"),
            });
        } else if origin.contains("://") && !origin.contains('*') {
            origins.push(OriginPattern::Exact(origin));
        } else {
            errors.push(setup.error(
                &format!("origins[{i}]"),
                format!("{origin:?} is not an origin: write it like https://app.example.com or https://*.example.com"),
            ));
        }
    }
    if config.origins.is_empty() {
        errors.push(setup.error("origins", "list the origins allowed, like [https://app.example.com]"));
    }
    let mut methods = Vec::new();
    for (i, name) in config.methods.iter().enumerate() {
        match Method::from_bytes(name.as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => errors.push(setup.error(&format!("methods[{i}]"), format!("{name:?} is not a method"))),
        }
    }
    let list = |items: &[String]| HeaderValue::from_str(&items.join(", ")).ok();
    let allow_headers = config.headers.as_deref().map(list);
    if allow_headers.as_ref().is_some_and(Option::is_none) {
        errors.push(setup.error("headers", "header names must be visible ASCII"));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Arc::new(Cors {
        origins,
        allow_methods: list(&config.methods).unwrap_or(HeaderValue::from_static("GET")),
        methods,
        allow_headers: allow_headers.flatten(),
        expose: (!config.expose_headers.is_empty())
            .then(|| list(&config.expose_headers))
            .flatten(),
        credentials: config.credentials,
        max_age: HeaderValue::from(config.max_age.get().as_secs()),
    }))
}

/// Is this a CORS preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)?
pub fn is_preflight(request: &http::request::Parts) -> bool {
    request.method == Method::OPTIONS
        && request.headers.contains_key(ORIGIN)
        && request.headers.contains_key(ACCESS_CONTROL_REQUEST_METHOD)
}

impl Cors {
    fn allowed_origin<'r>(&self, request: &'r http::request::Parts) -> Option<&'r HeaderValue> {
        let origin = request.headers.get(ORIGIN)?;
        let text = origin.to_str().ok()?.to_ascii_lowercase();
        let allowed = self.origins.iter().any(|pattern| match pattern {
            OriginPattern::Any => true,
            OriginPattern::Exact(exact) => *exact == text,
            OriginPattern::Subdomains { scheme, suffix } => text
                .strip_prefix(scheme.as_str())
                .and_then(|rest| rest.strip_prefix("://"))
                .is_some_and(|host| host.ends_with(suffix.as_str()) && host.len() > suffix.len()),
        });
        allowed.then_some(origin)
    }

    /// `Access-Control-Allow-Origin`: `*` for any origin without credentials,
    /// else the origin itself (and then caches must vary on it).
    fn origin_headers(&self, origin: &HeaderValue) -> Vec<(http::HeaderName, HeaderValue)> {
        let any = self.origins.iter().any(|p| matches!(p, OriginPattern::Any));
        let mut headers = Vec::new();
        if any && !self.credentials {
            headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*")));
        } else {
            headers.push((ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone()));
            headers.push((VARY, HeaderValue::from_static("Origin")));
        }
        if self.credentials {
            headers.push((ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true")));
        }
        headers
    }

    fn preflight(&self, request: &http::request::Parts) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::empty());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let method_ok = request
            .headers
            .get(ACCESS_CONTROL_REQUEST_METHOD)
            .and_then(|m| Method::from_bytes(m.as_bytes()).ok())
            .is_some_and(|m| self.methods.contains(&m));
        let headers = response.headers_mut();
        headers.insert(
            VARY,
            HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
        );
        let Some(origin) = self.allowed_origin(request).filter(|_| method_ok) else {
            return response;
        };
        for (name, value) in self.origin_headers(origin) {
            if name != VARY {
                headers.insert(name, value);
            }
        }
        headers.insert(ACCESS_CONTROL_ALLOW_METHODS, self.allow_methods.clone());
        let requested = request.headers.get(ACCESS_CONTROL_REQUEST_HEADERS).cloned();
        if let Some(allowed) = self.allow_headers.clone().or(requested) {
            headers.insert(ACCESS_CONTROL_ALLOW_HEADERS, allowed);
        }
        headers.insert(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        response
    }
}

impl Plugin for Cors {
    fn name(&self) -> &'static str {
        "cors"
    }

    fn phase(&self) -> Phase {
        Phase::Access
    }

    /// A preflight is answered for the method it asks about.
    fn answers_for(&self, request: &http::request::Parts, method: &Method) -> bool {
        is_preflight(request)
            && request
                .headers
                .get(ACCESS_CONTROL_REQUEST_METHOD)
                .is_some_and(|asked| asked.as_bytes() == method.as_str().as_bytes())
    }

    fn on_request<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        if is_preflight(request) {
            let response = self.preflight(request);
            return at_once(Ok(Flow::Respond(Box::new(response))));
        }
        if let Some(origin) = self.allowed_origin(request) {
            ctx.response_headers.extend(self.origin_headers(origin));
            if let Some(expose) = &self.expose {
                ctx.response_headers
                    .push((ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone()));
            }
        }
        at_once(Ok(Flow::Continue))
    }

    fn explain(&self, request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        let origin = request.headers.get(ORIGIN).and_then(|o| o.to_str().ok());
        match (origin, self.allowed_origin(request), is_preflight(request)) {
            (None, _, _) => Decision::pass("no Origin: not a cross-origin request"),
            (Some(o), Some(_), true) => Decision::deny(
                StatusCode::NO_CONTENT,
                format!("preflight from {o} answered by the gateway"),
            ),
            (Some(o), Some(_), false) => Decision::pass(format!("origin {o} allowed: CORS headers added")),
            (Some(o), None, _) => Decision::pass(format!("origin {o} not allowed: no CORS headers")),
        }
    }
}
