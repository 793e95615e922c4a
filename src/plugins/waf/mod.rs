//! `waf`: the web application firewall on a route or globally. The engine
//! (`crate::waf`) scores the request; at `threshold` it is refused with a
//! 403 that names an incident (the request id), never the payload. In
//! `mode: detect` the matches are logged and counted only.

use super::{Decision, Flow, Needs, Phase, PhaseFuture, Plugin, RequestContext, Setup, at_once};
use crate::error::{ErrorKind, ProxyError};
use crate::telemetry::metrics::Metrics;
use crate::waf::{rules::RULES, Engine, Exclusion, Verdict};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::sync::Arc;

#[cfg(feature = "crs")]
mod crs;

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Mode {
    #[default]
    Block,
    Detect,
}

/// Which rules run: Portico's own (always built), or the OWASP Core Rule
/// Set through libmodsecurity (the `crs` cargo feature).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum EngineKind {
    #[default]
    Builtin,
    Crs,
}

/// Where the Core Rule Set is, for `engine: crs` (Debian's paths by default).
#[cfg_attr(not(feature = "crs"), allow(dead_code))]
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CrsConfig {
    #[serde(default = "default_crs_setup")]
    pub(crate) setup: String,
    /// A directory whose `*.conf` files are loaded in name order.
    #[serde(default = "default_crs_rules")]
    pub(crate) rules: String,
}

impl Default for CrsConfig {
    fn default() -> Self {
        CrsConfig {
            setup: default_crs_setup(),
            rules: default_crs_rules(),
        }
    }
}

fn default_crs_setup() -> String {
    "/etc/modsecurity/crs/crs-setup.conf".into()
}

fn default_crs_rules() -> String {
    "/usr/share/modsecurity-crs/rules".into()
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default)]
    engine: EngineKind,
    #[serde(default)]
    crs: Option<CrsConfig>,
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
    /// How much of a request body is inspected; the rest streams on unread.
    #[serde(default = "default_max_body")]
    max_body: crate::config::units::ByteSize,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
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

fn default_max_body() -> crate::config::units::ByteSize {
    crate::config::units::ByteSize(128 * 1024)
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
    max_body: u64,
    metrics: Arc<Metrics>,
}

/// The score the request head reached, for the body's rules to add to.
#[derive(Debug, Clone, Copy)]
struct HeadScore(u32);

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
    if config.engine == EngineKind::Crs {
        if !errors.is_empty() {
            return Err(errors);
        }
        return crs_engine(config, methods, setup);
    }
    if config.crs.is_some() {
        return Err(vec![setup.error("crs", "`crs` settings need `engine: crs`")]);
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
        max_body: config.max_body.0,
        metrics: setup.context.metrics.clone(),
    }))
}

/// The Core Rule Set engine, in a build with it.
#[cfg(feature = "crs")]
fn crs_engine(
    config: Config,
    methods: Vec<http::Method>,
    setup: &Setup<'_>,
) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    if let Some(at) = config
        .exclude
        .iter()
        .position(|e| !e.locations.is_empty() || e.rules.is_empty())
    {
        return Err(vec![setup.error(
            &format!("exclude[{at}]"),
            "with engine: crs, exclude whole rules by id; exclude by location in CRS's own exclusion rules (REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf)",
        )]);
    }
    let settings = crs::Settings {
        crs: config.crs.unwrap_or_default(),
        mode: config.mode,
        paranoia: config.paranoia,
        threshold: config.threshold,
        allowed_methods: methods,
        excluded_rules: config.exclude.iter().flat_map(|e| e.rules.iter().copied()).collect(),
        max_body: config.max_body.0,
    };
    crs::build(settings, setup)
}

/// Without the `crs` feature, `engine: crs` says how to get it.
#[cfg(not(feature = "crs"))]
fn crs_engine(_: Config, _: Vec<http::Method>, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    Err(vec![setup.error(
        "engine",
        "this build has no Core Rule Set engine: build Portico with `cargo build --release --features crs` (it needs Debian's libmodsecurity-dev and modsecurity-crs), or use engine: builtin",
    )])
}

fn valid_location(location: &str) -> bool {
    match location.split_once(':') {
        None => matches!(location, "path" | "query_name" | "request"),
        Some(("query" | "cookie" | "body", name)) => !name.is_empty(),
        Some(("header", name)) => matches!(name, "referer" | "user-agent"),
        _ => false,
    }
}

/// What is done with a request that matched rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Under the threshold.
    Pass,
    Block,
    /// Over the threshold, in detect mode.
    Detect,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Block => "block",
            Action::Detect => "detect",
        }
    }
}

impl Waf {
    fn action(&self, score: u32) -> Action {
        match (score >= self.threshold, self.mode) {
            (false, _) => Action::Pass,
            (true, Mode::Block) => Action::Block,
            (true, Mode::Detect) => Action::Detect,
        }
    }

    /// Logs and counts the matches, and refuses the request when `score`
    /// (the request's whole, with what was found before) reaches the threshold.
    fn decide(&self, verdict: &Verdict, score: u32, ctx: &RequestContext<'_>) -> Result<(), ProxyError> {
        if verdict.matches.is_empty() {
            return Ok(());
        }
        let action = self.action(score);
        let incident = ctx.request_id.to_str().unwrap_or_default();
        for found in &verdict.matches {
            self.metrics.waf_match(ctx.route, found.rule.id, action.as_str());
            tracing::warn!(
                incident,
                route = ctx.route,
                rule = found.rule.id,
                location = %found.location,
                sample = %found.sample,
                score,
                action = action.as_str(),
                "{}",
                found.rule.message
            );
        }
        if action != Action::Block {
            return Ok(());
        }
        Err(blocked(incident))
    }
}

/// The 403 a blocked request gets: an incident id (the request id) to quote,
/// never what matched.
pub(super) fn blocked(incident: &str) -> ProxyError {
    let mut error = ProxyError::rejected(
        ErrorKind::Forbidden,
        "waf",
        "anomaly_score",
        "the request was refused by the web application firewall; quote the incident id to have it looked at",
    );
    error.extra = Some(serde_json::json!({ "incident": incident }));
    error
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
        let verdict = self.engine.inspect(request, ctx.facts.has_body);
        // Most heads score nothing; the body's check reads a missing score as 0.
        if verdict.score > 0 {
            ctx.notes.insert(HeadScore(verdict.score));
        }
        let result = self.decide(&verdict, verdict.score, ctx).map(|()| Flow::Continue);
        at_once(result)
    }

    fn needs(&self) -> Needs {
        Needs {
            body_inspection: Some(self.max_body),
            ..Needs::default()
        }
    }

    fn inspect_request_body(
        &self,
        body: &[u8],
        complete: bool,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
    ) -> Result<(), ProxyError> {
        let content_type = request
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok());
        let mut verdict = Verdict::default();
        self.engine.inspect_body(content_type, body, complete, &mut verdict);
        let before = ctx.notes.get::<HeadScore>().map_or(0, |s| s.0);
        self.decide(&verdict, before + verdict.score, ctx)
    }

    fn explain(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        let verdict = self.engine.inspect(request, ctx.facts.has_body);
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
        match self.action(verdict.score) {
            Action::Block => Decision::deny(http::StatusCode::FORBIDDEN, detail),
            Action::Pass | Action::Detect => Decision::pass(detail),
        }
    }
}
