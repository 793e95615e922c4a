//! `request_transform` and `response_transform`: headers, query parameters
//! (requests), JSON bodies and statuses (responses), with value templates.
//! The operations themselves live in `crate::transform`.

use super::{Decision, Flow, Needs, Phase, PhaseFuture, Plugin, RequestContext, Setup, at_once};
use crate::config::units::ByteSize;
use crate::transform::ops::{FieldOpsConfig, HeaderOps, JsonOps, JsonOpsConfig, QueryOps};
use http::StatusCode;
use indexmap::IndexMap;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::sync::Arc;

fn default_max_body() -> ByteSize {
    ByteSize(1024 * 1024)
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RequestConfig {
    #[serde(default)]
    headers: FieldOpsConfig,
    #[serde(default)]
    query: FieldOpsConfig,
    #[serde(default)]
    json: JsonOpsConfig,
    /// Bodies that must change are read whole up to this size; larger is 413.
    #[serde(default = "default_max_body")]
    max_body: ByteSize,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResponseConfig {
    #[serde(default)]
    headers: FieldOpsConfig,
    #[serde(default)]
    json: JsonOpsConfig,
    /// Statuses to answer instead: `{ 404: 200 }`.
    #[serde(default)]
    status: IndexMap<u16, u16>,
    /// Larger answers that must change are a 502 (never passed on unchanged).
    #[serde(default = "default_max_body")]
    max_body: ByteSize,
}

pub struct RequestTransform {
    headers: HeaderOps,
    query: QueryOps,
    json: JsonOps,
    max_body: u64,
}

pub struct ResponseTransform {
    headers: HeaderOps,
    json: JsonOps,
    status: Vec<(StatusCode, StatusCode)>,
    max_body: u64,
}

fn relative(setup: &Setup<'_>, errors: Vec<(String, String)>) -> super::BuildErrors {
    errors
        .into_iter()
        .map(|(field, message)| setup.error(&field, message))
        .collect()
}

pub fn build_request(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: RequestConfig = setup.parse(value)?;
    let mut errors = Vec::new();
    let plugin = RequestTransform {
        headers: HeaderOps::compile(&config.headers, setup.params, &mut errors),
        query: QueryOps::compile(&config.query, setup.params, &mut errors),
        json: JsonOps::compile(&config.json, setup.params, &mut errors),
        max_body: config.max_body.get(),
    };
    if errors.is_empty() {
        Ok(Arc::new(plugin))
    } else {
        Err(relative(setup, errors))
    }
}

pub fn build_response(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: ResponseConfig = setup.parse(value)?;
    let mut errors = Vec::new();
    // Responses have no request headers or query to read from.
    let check_sources = |config: &FieldOpsConfig, errors: &mut Vec<(String, String)>| {
        for (op, map) in [("set", &config.set), ("add", &config.add)] {
            for (name, value) in map {
                if value.contains("${header.") || value.contains("${query.") {
                    errors.push((
                        format!("headers.{op}.{name}"),
                        "response values cannot use ${header.*} or ${query.*}; use ${path.*}, ${consumer.name}, ${jwt.*}, ${request_id} or ${client_ip}".into(),
                    ));
                }
            }
        }
    };
    check_sources(&config.headers, &mut errors);
    let mut status = Vec::new();
    for (from, to) in &config.status {
        match (StatusCode::from_u16(*from), StatusCode::from_u16(*to)) {
            (Ok(a), Ok(b)) if (200..600).contains(to) => status.push((a, b)),
            _ => errors.push((
                format!("status.{from}"),
                "statuses are from 100 to 599 (and answers from 200)".into(),
            )),
        }
    }
    let plugin = ResponseTransform {
        headers: HeaderOps::compile(&config.headers, setup.params, &mut errors),
        json: JsonOps::compile(&config.json, setup.params, &mut errors),
        status,
        max_body: config.max_body.get(),
    };
    if errors.is_empty() {
        Ok(Arc::new(plugin))
    } else {
        Err(relative(setup, errors))
    }
}

impl Plugin for RequestTransform {
    fn name(&self) -> &'static str {
        "request_transform"
    }

    fn phase(&self) -> Phase {
        Phase::TransformRequest
    }

    fn on_request<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        self.headers.apply_to_request(request, ctx);
        if !self.query.is_empty() {
            self.query.apply(request, ctx);
        }
        at_once(Ok(Flow::Continue))
    }

    fn needs(&self) -> Needs {
        Needs {
            request_body: (!self.json.is_empty()).then_some(self.max_body),
            ..Needs::default()
        }
    }

    fn explain(&self, _request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        let parts: Vec<String> = [self.headers.describe(), self.query.describe(), self.json.describe()]
            .into_iter()
            .flatten()
            .collect();
        Decision::pass(if parts.is_empty() {
            "nothing to change".to_string()
        } else {
            parts.join("; ")
        })
    }

    fn transform_request_body(
        &self,
        body: &mut serde_json::Value,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
    ) -> Result<bool, crate::error::ProxyError> {
        self.json.apply(body, Some(request), ctx);
        Ok(true)
    }
}

impl Plugin for ResponseTransform {
    fn name(&self) -> &'static str {
        "response_transform"
    }

    fn phase(&self) -> Phase {
        Phase::TransformResponse
    }

    fn on_response(&self, response: &mut http::response::Parts, ctx: &RequestContext<'_>) {
        if let Some((_, to)) = self.status.iter().find(|(from, _)| *from == response.status) {
            response.status = *to;
        }
        self.headers.apply_to_response(&mut response.headers, ctx);
    }

    fn needs(&self) -> Needs {
        Needs {
            response_body: (!self.json.is_empty()).then_some(self.max_body),
            ..Needs::default()
        }
    }

    fn explain(&self, _request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        let mapped = (!self.status.is_empty()).then(|| {
            let pairs: Vec<String> = self
                .status
                .iter()
                .map(|(a, b)| format!("{} → {}", a.as_u16(), b.as_u16()))
                .collect();
            format!("status: {}", pairs.join(", "))
        });
        let parts: Vec<String> = [self.headers.describe(), self.json.describe(), mapped]
            .into_iter()
            .flatten()
            .collect();
        Decision::pass(format!(
            "on the answer: {}",
            if parts.is_empty() {
                "nothing".to_string()
            } else {
                parts.join("; ")
            }
        ))
    }

    fn transform_response_body(
        &self,
        body: &mut serde_json::Value,
        ctx: &RequestContext<'_>,
    ) -> Result<bool, crate::error::ProxyError> {
        self.json.apply(body, None, ctx);
        Ok(true)
    }
}
