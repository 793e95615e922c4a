//! `waf`: the web application firewall on a route or globally. The engine
//! (`crate::waf`) scores the request; at `threshold` it is refused with a
//! 403 that names an incident (the request id), never the payload. In
//! `mode: detect` the matches are logged and counted only.

use super::{Decision, Flow, Phase, PhaseFuture, Plugin, RequestContext, Setup};
use crate::error::{ErrorKind, ProxyError};
use crate::telemetry::metrics::Metrics;
use crate::waf::{rules::RULES, Engine, Exclusion, Verdict};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::sync::Arc;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Mode {
    #[default]
    Block,
    Detect,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    mode: Mode,
    /// 1 (default) to 4: higher runs more rules, with more false positives.
    #[serde(default = "default_paranoia")]
    paranoia: u8,
    /// The anomaly score that blocks (a critical match scores 5).
    #[serde(default = "default_threshold")]
    threshold: u32,
    #[serde(default = "default_methods")]
    allowed_methods: Vec<String>,
    #[serde(default)]
    exclude: Vec<ExcludeConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExcludeConfig {
    #[serde(default)]
    rules: Vec<u32>,
    #[serde(default)]
    locations: Vec<String>,
}

fn default_paranoia() -> u8 {
    1
}

fn default_threshold() -> u32 {
    5
}

fn default_methods() -> Vec<String> {
    ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
        .map(String::from)
        .to_vec()
}

pub struct Waf {
    engine: Engine,
    mode: Mode,
    threshold: u32,
    metrics: Arc<Metrics>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let mut errors = Vec::new();
    if !(1..=4).contains(&config.paranoia) {
        errors.push(setup.error("paranoia", "paranoia levels are 1 (default) to 4"));
    }
    if config.threshold == 0 {
        errors.push(setup.error(
            "threshold",
            "a threshold of 0 blocks everything: use 5 (one critical match) or more",
        ));
    }
    let mut methods = Vec::new();
    for (i, method) in config.allowed_methods.iter().enumerate() {
        match http::Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
            Ok(method) => methods.push(method),
            Err(_) => errors.push(setup.error(&format!("allowed_methods[{i}]"), format!("{method:?} is not a method"))),
        }
    }
    let mut exclusions = Vec::new();
    for (i, exclude) in config.exclude.iter().enumerate() {
        let at = format!("exclude[{i}]");
        if exclude.rules.is_empty() && exclude.locations.is_empty() {
            errors.push(setup.error(&at, "name `rules`, `locations`, or both"));
        }
        for (j, id) in exclude.rules.iter().enumerate() {
            if !RULES.iter().any(|r| r.id == *id) {
                errors.push(setup.error(&format!("{at}.rules[{j}]"), format!("there is no rule {id}")));
            }
        }
        for (j, location) in exclude.locations.iter().enumerate() {
            if !valid_location(location) {
                errors.push(setup.error(
                    &format!("{at}.locations[{j}]"),
                    format!("{location:?} is not a location: path, query_name, query:NAME, cookie:NAME, body:NAME, header:referer, header:user-agent, request (NAME may end in *)"),
                ));
            }
        }
        exclusions.push(Exclusion {
            rules: exclude.rules.clone(),
            locations: exclude.locations.clone(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let engine = Engine::new(config.paranoia, methods, exclusions).map_err(|e| vec![setup.error("", e)])?;
    Ok(Arc::new(Waf {
        engine,
        mode: config.mode,
        threshold: config.threshold,
        metrics: setup.context.metrics.clone(),
    }))
}

fn valid_location(location: &str) -> bool {
    match location.split_once(':') {
        None => matches!(location, "path" | "query_name" | "request"),
        Some(("query" | "cookie" | "body", name)) => !name.is_empty(),
        Some(("header", name)) => matches!(name, "referer" | "user-agent"),
        _ => false,
    }
}

impl Waf {
    fn action(&self, verdict: &Verdict) -> &'static str {
        match (verdict.score >= self.threshold, self.mode) {
            (false, _) => "pass",
            (true, Mode::Block) => "block",
            (true, Mode::Detect) => "detect",
        }
    }
}

impl Plugin for Waf {
    fn name(&self) -> &'static str {
        "waf"
    }

    fn phase(&self) -> Phase {
        Phase::Access
    }

    fn on_request<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        let verdict = self.engine.inspect(request);
        if verdict.matches.is_empty() {
            return Box::pin(std::future::ready(Ok(Flow::Continue)));
        }
        let action = self.action(&verdict);
        let incident = ctx.request_id.to_str().unwrap_or_default();
        for found in &verdict.matches {
            self.metrics.waf_match(ctx.route, found.rule.id, action);
            tracing::warn!(
                incident,
                route = ctx.route,
                rule = found.rule.id,
                location = %found.location,
                sample = %found.sample,
                score = verdict.score,
                action,
                "{}",
                found.rule.message
            );
        }
        let result = match action {
            "block" => {
                let mut error = ProxyError::rejected(
                    ErrorKind::Forbidden,
                    "waf",
                    "anomaly_score",
                    "the request was refused by the web application firewall; quote the incident id to have it looked at",
                );
                error.extra = Some(Box::new(serde_json::json!({ "incident": incident })));
                Err(error)
            }
            _ => Ok(Flow::Continue),
        };
        Box::pin(std::future::ready(result))
    }

    fn explain(&self, request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        let verdict = self.engine.inspect(request);
        let rules: Vec<String> = verdict
            .matches
            .iter()
            .map(|m| format!("{} at {}", m.rule.id, m.location))
            .collect();
        let detail = format!(
            "anomaly score {} of {} ({})",
            verdict.score,
            self.threshold,
            rules.join(", ")
        );
        match self.action(&verdict) {
            "block" => Decision::deny(http::StatusCode::FORBIDDEN, detail),
            _ => Decision::pass(detail),
        }
    }
}
