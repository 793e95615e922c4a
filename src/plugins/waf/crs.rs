//! `waf` with `engine: crs`: the OWASP Core Rule Set run by libmodsecurity
//! (`crate::waf::crs`). The whole request, head and the start of the body,
//! is evaluated once the body has been read ahead; CRS's own anomaly
//! scoring decides, with Portico's `paranoia`, `threshold`, `mode`,
//! `allowed_methods` and rule exclusions set as CRS's variables.

use super::{blocked, CrsConfig, Mode};
use crate::error::ProxyError;
use crate::plugins::{Decision, Needs, Phase, Plugin, RequestContext, Setup};
use crate::telemetry::metrics::Metrics;
use crate::waf::crs::{rule_of, Crs, Request};
use std::fmt::Write as _;
use std::sync::Arc;

pub(super) struct Settings {
    pub crs: CrsConfig,
    pub mode: Mode,
    pub paranoia: u8,
    pub threshold: u32,
    pub allowed_methods: Vec<http::Method>,
    pub excluded_rules: Vec<u32>,
    pub max_body: u64,
}

pub(super) struct CrsWaf {
    crs: Crs,
    mode: Mode,
    max_body: u64,
    metrics: Arc<Metrics>,
}

pub(super) fn build(settings: Settings, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, crate::plugins::BuildErrors> {
    for (field, path) in [("crs.setup", &settings.crs.setup), ("crs.rules", &settings.crs.rules)] {
        if !std::path::Path::new(path).exists() {
            return Err(vec![setup.error(
                field,
                format!(
                    "{path:?} does not exist: install Debian's modsecurity-crs, or point to the Core Rule Set's files"
                ),
            )]);
        }
    }
    let crs = Crs::load(&directives(&settings)).map_err(|e| vec![setup.error("crs", e)])?;
    Ok(Arc::new(CrsWaf {
        crs,
        mode: settings.mode,
        max_body: settings.max_body,
        metrics: setup.context.metrics.clone(),
    }))
}

/// The ModSecurity configuration: the engine's settings, Portico's choices
/// as CRS's variables (before its setup file, which leaves them alone when
/// set), the setup, the rules, then the exclusions.
fn directives(settings: &Settings) -> String {
    let engine = match settings.mode {
        Mode::Block => "On",
        Mode::Detect => "DetectionOnly",
    };
    let methods: Vec<&str> = settings.allowed_methods.iter().map(http::Method::as_str).collect();
    let mut text = format!(
        "SecRuleEngine {engine}\n\
         SecRequestBodyAccess On\n\
         SecRequestBodyLimit {limit}\n\
         SecRequestBodyLimitAction ProcessPartial\n\
         SecAction \"id:900000,phase:1,nolog,pass,t:none,setvar:tx.paranoia_level={paranoia}\"\n\
         SecAction \"id:900110,phase:1,nolog,pass,t:none,setvar:tx.inbound_anomaly_score_threshold={threshold}\"\n\
         SecAction \"id:900200,phase:1,nolog,pass,t:none,setvar:'tx.allowed_methods={methods}'\"\n\
         Include {setup}\n\
         Include {rules}/*.conf\n",
        limit = settings.max_body.max(1),
        paranoia = settings.paranoia,
        threshold = settings.threshold,
        methods = methods.join(" "),
        setup = settings.crs.setup,
        rules = settings.crs.rules.trim_end_matches('/'),
    );
    for id in &settings.excluded_rules {
        let _ = writeln!(text, "SecRuleRemoveById {id}");
    }
    text
}

impl CrsWaf {
    fn evaluate(&self, parts: &http::request::Parts, body: &[u8], ctx: &RequestContext<'_>) -> Result<(), ProxyError> {
        let uri = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let version = match parts.version {
            http::Version::HTTP_10 => "1.0",
            http::Version::HTTP_2 => "2.0",
            http::Version::HTTP_3 => "3.0",
            _ => "1.1",
        };
        let outcome = self.crs.evaluate(&Request {
            client: ctx.client,
            method: parts.method.as_str(),
            uri,
            version,
            headers: &parts.headers,
            body,
        });
        let action = match (outcome.intervention, self.mode) {
            (Some(_), _) => "block",
            (None, Mode::Detect) if !outcome.messages.is_empty() => "detect",
            (None, _) => "pass",
        };
        let incident = ctx.request_id.to_str().unwrap_or_default();
        for (id, message) in outcome.messages.iter().filter_map(|m| rule_of(m)) {
            self.metrics.waf_match(ctx.route, id, action);
            tracing::warn!(
                incident,
                route = ctx.route,
                rule = id,
                action,
                engine = "crs",
                "{message}"
            );
        }
        match outcome.intervention {
            Some(_) => Err(blocked(incident)),
            None => Ok(()),
        }
    }
}

impl Plugin for CrsWaf {
    fn name(&self) -> &'static str {
        "waf"
    }

    fn phase(&self) -> Phase {
        Phase::Access
    }

    // No `on_request`: everything is evaluated with the body, which CRS reads
    // with the head (`inspect_request_body`).
    fn needs(&self) -> Needs {
        Needs {
            body_inspection: Some(self.max_body),
            ..Needs::default()
        }
    }

    fn inspect_request_body(
        &self,
        body: &[u8],
        _complete: bool,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
    ) -> Result<(), ProxyError> {
        self.evaluate(request, body, ctx)
    }

    fn explain(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        match self.evaluate(request, &[], ctx) {
            Ok(()) => Decision::pass("the Core Rule Set passes the request head"),
            Err(_) => Decision::deny(http::StatusCode::FORBIDDEN, "the Core Rule Set blocks the request head"),
        }
    }
}
