//! `validate`: requests checked against JSON Schemas (draft 2020-12 unless
//! the schema says otherwise) before they reach the service: the JSON body,
//! and the query parameters, path parameters and headers as objects of
//! strings. An invalid request gets 400 problem+json listing every violation
//! with its JSON pointer (`/body/user/id`, `/query/limit`); a body that is
//! not JSON gets 415, one over `max_body` 413. (With `format`, the body is
//! checked in its JSON form.)
//!
//! With `openapi`, each request is also checked against its operation in an
//! OpenAPI document (`openapi.rs`).

mod openapi;

use super::{Decision, Flow, Needs, Phase, PhaseFuture, Plugin, RequestContext, Setup, at_once};
use crate::config::units::ByteSize;
use crate::error::{ErrorKind, ProxyError};
use openapi::{Found, Operations};
use serde::Deserialize;
use serde_json::{json, Map, Value as Json};
use serde_yaml_ng::Value;
use std::sync::Arc;

/// Violations listed in one answer, at most.
const MAX_VIOLATIONS: usize = 20;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// The body's schema, inline.
    body: Option<Json>,
    /// The body's schema, from a JSON or YAML file.
    body_file: Option<String>,
    query: Option<Json>,
    path: Option<Json>,
    headers: Option<Json>,
    #[serde(default = "default_max_body")]
    max_body: ByteSize,
    /// The answer's body schema: to catch a service breaking its contract.
    response: Option<Json>,
    /// What an answer that fails its schema gets: `log` (logged and counted,
    /// passed on) or `reject` (replaced with a 502).
    #[serde(default)]
    on_invalid_response: OnInvalid,
    /// An OpenAPI 3.0 or 3.1 document (JSON or YAML) whose operations the
    /// requests are checked against.
    openapi: Option<String>,
    /// What a request for an operation the document does not have gets:
    /// `allow` (passed on unchecked) or `reject` (404, or 405 with `Allow`).
    #[serde(default)]
    unknown_operations: UnknownOperations,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum UnknownOperations {
    #[default]
    Allow,
    Reject,
}

struct Api {
    /// Always `Ok` (a failed compile fails the build); shared as cached.
    compiled: Arc<Result<Compiled, Vec<String>>>,
    reject_unknown: bool,
}

impl Api {
    fn compiled(&self) -> Option<&Compiled> {
        self.compiled.as_ref().as_ref().ok()
    }
}

/// A document and its operations, compiled once for every route naming it.
struct Compiled {
    spec: Arc<crate::openapi::Spec>,
    operations: Operations,
}

fn compile_api(file: &str) -> Result<Compiled, Vec<String>> {
    let spec = crate::openapi::Spec::load(file).map_err(|e| vec![e])?;
    let operations = Operations::compile(&spec)
        .map_err(|found| found.into_iter().map(|e| format!("{file}: {e}")).collect::<Vec<_>>())?;
    Ok(Compiled {
        spec: Arc::new(spec),
        operations,
    })
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum OnInvalid {
    #[default]
    Log,
    Reject,
}

fn default_max_body() -> ByteSize {
    ByteSize(1024 * 1024)
}

pub struct Validate {
    body: Option<jsonschema::Validator>,
    query: Option<jsonschema::Validator>,
    path: Option<jsonschema::Validator>,
    headers: Option<jsonschema::Validator>,
    max_body: u64,
    response: Option<jsonschema::Validator>,
    on_invalid_response: OnInvalid,
    api: Option<Api>,
    metrics: Arc<crate::telemetry::metrics::Metrics>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let mut errors = Vec::new();
    let mut compile = |field: &str, schema: Option<Json>| {
        schema.and_then(|schema| {
            jsonschema::validator_for(&schema)
                .map_err(|e| errors.push(setup.error(field, format!("not a valid JSON Schema: {e}"))))
                .ok()
        })
    };
    let body_schema = match (&config.body, &config.body_file) {
        (Some(_), Some(_)) => {
            return Err(vec![setup.error(
                "body_file",
                "give the body's schema inline (`body`) or as a file, not both",
            )])
        }
        (Some(schema), None) => Some(schema.clone()),
        (None, Some(file)) => match read_schema(file) {
            Ok(schema) => Some(schema),
            Err(e) => return Err(vec![setup.error("body_file", e)]),
        },
        (None, None) => None,
    };
    let api = match &config.openapi {
        None => None,
        Some(file) => {
            let compiled = setup
                .context
                .this_build
                .get_or_insert(&format!("validate.openapi:{file}"), || compile_api(file));
            match &*compiled {
                Ok(_) => Some(Api {
                    compiled: compiled.clone(),
                    reject_unknown: config.unknown_operations == UnknownOperations::Reject,
                }),
                Err(found) => return Err(found.iter().map(|e| setup.error("openapi", e.clone())).collect()),
            }
        }
    };
    let plugin = Validate {
        body: compile("body", body_schema),
        query: compile("query", config.query),
        path: compile("path", config.path),
        headers: compile("headers", config.headers),
        max_body: config.max_body.get(),
        response: compile("response", config.response),
        on_invalid_response: config.on_invalid_response,
        api,
        metrics: setup.context.metrics.clone(),
    };
    if plugin.body.is_none()
        && plugin.query.is_none()
        && plugin.path.is_none()
        && plugin.headers.is_none()
        && plugin.response.is_none()
        && plugin.api.is_none()
        && errors.is_empty()
    {
        errors.push(setup.error(
            "",
            "give at least one schema: body, body_file, query, path, headers, response or openapi",
        ));
    }
    if errors.is_empty() {
        Ok(Arc::new(plugin))
    } else {
        Err(errors)
    }
}

/// A schema file, JSON or YAML (YAML is a superset of JSON).
fn read_schema(path: &str) -> Result<Json, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    serde_yaml_ng::from_str(&text).map_err(|e| format!("{path} is not JSON or YAML: {e}"))
}

/// Every violation of `instance`, as `{ pointer, message }`, under `prefix`.
pub(crate) fn violations(validator: &jsonschema::Validator, instance: &Json, prefix: &str, out: &mut Vec<Json>) {
    for error in validator
        .iter_errors(instance)
        .take(MAX_VIOLATIONS.saturating_sub(out.len()))
    {
        out.push(json!({
            "pointer": format!("{prefix}{}", error.instance_path()),
            "message": error.to_string(),
        }));
    }
}

fn invalid(found: Vec<Json>) -> ProxyError {
    let count = found.len();
    let mut error = ProxyError::rejected(
        ErrorKind::BadRequest,
        "validate",
        "invalid_request",
        format!(
            "the request does not match its schema ({count} violation{})",
            if count == 1 { "" } else { "s" }
        ),
    );
    error.extra = Some(json!({ "errors": found }));
    error
}

impl Validate {
    /// The request's operation in the OpenAPI document, if it has one.
    fn operation<'s>(&'s self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Option<Found<'s>> {
        let api = self.api.as_ref()?;
        let path = ctx.upstream_path.as_deref().unwrap_or(request.uri.path());
        let operations = &api.compiled()?.operations;
        Some(operations.find(&request.method, path))
    }

    /// Checks the head (against the schemas and the request's operation);
    /// `Err` when the request cannot go on whatever its violations.
    fn check_head(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Result<Vec<Json>, ProxyError> {
        let mut found = Vec::new();
        let reject_unknown = self.api.as_ref().is_some_and(|a| a.reject_unknown);
        match self.operation(request, ctx) {
            Some(Found::Operation(operation, params)) => {
                if let Err(message) = operation.check_head(request, ctx.facts.has_body, &params, &mut found) {
                    return Err(ProxyError::rejected(
                        ErrorKind::UnsupportedMediaType,
                        "validate",
                        "wrong_content_type",
                        message,
                    ));
                }
            }
            Some(Found::UnknownPath) if reject_unknown => {
                return Err(ProxyError::rejected(
                    ErrorKind::NotFound,
                    "validate",
                    "unknown_operation",
                    "the API has no such path",
                ));
            }
            Some(Found::UnknownMethod(allow)) if reject_unknown => {
                let list = allow.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
                let mut error = ProxyError::rejected(
                    ErrorKind::MethodNotAllowed,
                    "validate",
                    "unknown_operation",
                    format!("the API has no {} operation here; it has: {list}", request.method),
                );
                error.allow = http::HeaderValue::from_str(&list).ok();
                return Err(error);
            }
            _ => {}
        }
        if let Some(schema) = &self.query {
            let query: Map<String, Json> = request
                .uri
                .query()
                .map(|q| {
                    form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .map(|(k, v)| (k, Json::String(v)))
                        .collect()
                })
                .unwrap_or_default();
            violations(schema, &Json::Object(query), "/query", &mut found);
        }
        if let Some(schema) = &self.path {
            let params: Map<String, Json> = ctx
                .params
                .iter()
                .map(|(k, v)| (k.to_string(), Json::String(v.clone())))
                .collect();
            violations(schema, &Json::Object(params), "/path", &mut found);
        }
        if let Some(schema) = &self.headers {
            let headers: Map<String, Json> = request
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.to_string(), Json::String(v.to_str().ok()?.to_string()))))
                .collect();
            violations(schema, &Json::Object(headers), "/headers", &mut found);
        }
        Ok(found)
    }
}

impl Plugin for Validate {
    fn name(&self) -> &'static str {
        "validate"
    }

    fn phase(&self) -> Phase {
        Phase::Validate
    }

    fn on_request<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        let result = match self.check_head(request, ctx) {
            Ok(found) if found.is_empty() => Ok(Flow::Continue),
            Ok(found) => Err(invalid(found)),
            Err(error) => Err(error),
        };
        at_once(result)
    }

    fn needs(&self) -> Needs {
        Needs {
            request_body: (self.body.is_some() || self.api.is_some()).then_some(self.max_body),
            // A body with a schema must be JSON (or what `format` converts from).
            requires_request_body: self.body.is_some(),
            response_body: self.response.as_ref().map(|_| self.max_body),
            only_watches_responses: self.on_invalid_response == OnInvalid::Log,
            api_spec: self.api.as_ref().and_then(Api::compiled).map(|c| c.spec.clone()),
            ..Needs::default()
        }
    }

    fn transform_request_body(
        &self,
        body: &mut Json,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
    ) -> Result<bool, ProxyError> {
        let mut found = Vec::new();
        if let Some(schema) = &self.body {
            violations(schema, body, "/body", &mut found);
        }
        if let Some(Found::Operation(operation, _)) = self.operation(request, ctx) {
            if let Some(schema) = operation.body_schema() {
                violations(schema, body, "/body", &mut found);
            }
        }
        if found.is_empty() {
            Ok(false)
        } else {
            Err(invalid(found))
        }
    }

    fn transform_response_body(&self, body: &mut Json, ctx: &RequestContext<'_>) -> Result<bool, ProxyError> {
        let Some(schema) = &self.response else { return Ok(false) };
        let mut found = Vec::new();
        violations(schema, body, "/response", &mut found);
        if found.is_empty() {
            return Ok(false);
        }
        self.metrics.response_violation(ctx.route);
        tracing::warn!(route = ctx.route, violations = %Json::Array(found), "the upstream's answer does not match its schema");
        match self.on_invalid_response {
            OnInvalid::Log => Ok(false),
            OnInvalid::Reject => Err(ProxyError::new(
                ErrorKind::UpstreamBroken,
                "the service's answer does not match its schema",
            )),
        }
    }

    fn explain(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        let operation = match self.operation(request, ctx) {
            Some(Found::Operation(operation, _)) => format!("operation {}: ", operation.id),
            Some(_) => "not an operation of the API: ".into(),
            None => String::new(),
        };
        match self.check_head(request, ctx) {
            Ok(found) if found.is_empty() => Decision::pass(format!(
                "{operation}{}",
                if self.needs().request_body.is_some() {
                    "parameters valid; the body is checked when sent"
                } else {
                    "valid"
                }
            )),
            Ok(found) => Decision::deny(
                http::StatusCode::BAD_REQUEST,
                format!(
                    "{operation}{} violation(s), first: {} {}",
                    found.len(),
                    found[0]["pointer"],
                    found[0]["message"]
                ),
            ),
            Err(error) => Decision::deny(error.kind.status(), error.detail.to_string()),
        }
    }
}
