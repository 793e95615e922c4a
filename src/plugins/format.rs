//! `format`: XML services offered as JSON APIs, and the other way round.
//! `request: json_to_xml` converts what clients send, `response:
//! xml_to_json` what the service answers, by the mapping documented in
//! `crate::transform::xml`. The conversion itself runs in the plugin chain,
//! around the JSON transforms and validation, which see JSON either way.

use super::{Decision, Flow, Needs, Phase, PhaseFuture, Plugin, RequestContext, Setup, at_once};
use crate::config::units::ByteSize;
use crate::transform::xml::XmlOptions;
use crate::transform::{BodyFormat, Conversion};
use http::HeaderValue;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    request: Option<Direction>,
    response: Option<Direction>,
    #[serde(default)]
    xml: XmlConfig,
    /// Bodies are converted whole up to this size: over it, a request is a
    /// 413 and an answer a 502.
    #[serde(default = "default_max_body")]
    max_body: ByteSize,
}

#[derive(Debug, Deserialize, Clone, Copy, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Direction {
    JsonToXml,
    XmlToJson,
}

impl Direction {
    fn formats(self) -> (BodyFormat, BodyFormat) {
        match self {
            Direction::JsonToXml => (BodyFormat::Json, BodyFormat::Xml),
            Direction::XmlToJson => (BodyFormat::Xml, BodyFormat::Json),
        }
    }
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct XmlConfig {
    /// The root element, implied in the JSON (its content is the JSON).
    root: Option<String>,
    /// Elements that are arrays even when they occur once.
    #[serde(default)]
    arrays: Vec<String>,
    /// Read `true`, `false` and numbers as JSON ones, not strings.
    #[serde(default)]
    infer_types: bool,
    /// What XML bodies are sent as (`text/xml; charset=utf-8` for SOAP 1.1).
    content_type: Option<String>,
}

fn default_max_body() -> ByteSize {
    ByteSize(1024 * 1024)
}

pub struct Format {
    request: Option<Arc<Conversion>>,
    response: Option<Arc<Conversion>>,
    max_body: u64,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let mut errors = Vec::new();
    if config.request.is_none() && config.response.is_none() {
        errors.push(setup.error(
            "",
            "say what to convert: `request: json_to_xml | xml_to_json` and/or `response: xml_to_json | json_to_xml`",
        ));
    }
    if let Some(root) = &config.xml.root {
        if let Err(e) = crate::transform::xml::check_name(root, "the root") {
            errors.push(setup.error("xml.root", e));
        }
    }
    let xml_type = match config.xml.content_type.as_deref().map(HeaderValue::from_str) {
        Some(Ok(value)) => Some(value),
        Some(Err(_)) => {
            errors.push(setup.error("xml.content_type", "not a valid header value"));
            None
        }
        None => None,
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let conversion = |direction: Direction| {
        let (from, to) = direction.formats();
        let content_type = if to == BodyFormat::Xml { xml_type.clone() } else { None };
        Arc::new(Conversion::new(from, to, xml_options(&config.xml), content_type))
    };
    Ok(Arc::new(Format {
        request: config.request.map(conversion),
        response: config.response.map(conversion),
        max_body: config.max_body.get(),
    }))
}

fn xml_options(config: &XmlConfig) -> XmlOptions {
    XmlOptions {
        root: config.root.clone(),
        arrays: config.arrays.iter().cloned().collect(),
        infer_types: config.infer_types,
    }
}

impl Plugin for Format {
    fn name(&self) -> &'static str {
        "format"
    }

    fn phase(&self) -> Phase {
        Phase::TransformRequest
    }

    /// The service is asked for what Portico converts from: a client that
    /// accepts JSON gets it, from a service that writes XML.
    fn on_request<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        _ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        if let Some(response) = &self.response {
            if request.headers.contains_key(http::header::ACCEPT) {
                let accept = match response.from {
                    BodyFormat::Json => "application/json",
                    BodyFormat::Xml => "application/xml, text/xml",
                };
                request
                    .headers
                    .insert(http::header::ACCEPT, HeaderValue::from_static(accept));
            }
        }
        at_once(Ok(Flow::Continue))
    }

    fn needs(&self) -> Needs {
        Needs {
            request_body: self.request.as_ref().map(|_| self.max_body),
            requires_request_body: self.request.is_some(),
            request_conversion: self.request.clone(),
            response_body: self.response.as_ref().map(|_| self.max_body),
            response_conversion: self.response.clone(),
            ..Needs::default()
        }
    }

    fn explain(&self, _request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        let describe = |side: &str, conversion: &Option<Arc<Conversion>>| {
            conversion
                .as_ref()
                .map(|c| format!("{side} {} → {}", c.from.name(), c.to.name()))
        };
        let parts: Vec<String> = [describe("request", &self.request), describe("response", &self.response)]
            .into_iter()
            .flatten()
            .collect();
        Decision::pass(parts.join("; "))
    }
}
