//! A route's plugins, in phase order: built from the config's blocks (a
//! route's replacing the global one of the same name), their needs put
//! together once, and each phase run over them: request, authentication,
//! body checks and changes, response, and `explain`.

use super::*;
use crate::body::filter::Filtered;
use crate::body::{Inbound, ResponseBody};
use crate::error::{ErrorKind, ProxyError};
use crate::transform::{BodyFormat, Conversion};
use http::{HeaderValue, Response};
use http_body_util::combinators::UnsyncBoxBody;
use indexmap::IndexMap;
use serde_yaml_ng::Value;
use std::sync::Arc;

/// The plugins that apply to one route, in phase order.
#[derive(Clone, Default)]
pub struct PluginChain {
    pub(super) plugins: Vec<Arc<dyn Plugin>>,
    /// What the chain's plugins need, put together once when it is built:
    /// the proxy asks on every request.
    pub(super) needs: ChainNeeds,
}

/// The needs of a chain's plugins, together.
#[derive(Default, Clone)]
pub(super) struct ChainNeeds {
    /// The smallest request-body cap of the plugins that read bodies.
    request_body: Option<u64>,
    /// The plugin for which a request body must be readable.
    body_required_by: Option<&'static str>,
    response_body: Option<u64>,
    /// An answer too large to read is an error, not passed on unread.
    must_read_responses: bool,
    /// The largest read-ahead of the plugins that inspect bodies.
    body_inspection: Option<u64>,
    request_conversion: Option<Arc<Conversion>>,
    response_conversion: Option<Arc<Conversion>>,
    api_specs: Vec<Arc<crate::openapi::Spec>>,
    around_upstream: Option<Arc<dyn crate::around::AroundUpstream>>,
}

impl ChainNeeds {
    fn of(plugins: &[Arc<dyn Plugin>]) -> ChainNeeds {
        let mut chain = ChainNeeds::default();
        for plugin in plugins {
            let needs = plugin.needs();
            chain.request_body = min_of(chain.request_body, needs.request_body);
            if needs.requires_request_body && chain.body_required_by.is_none() {
                chain.body_required_by = Some(plugin.name());
            }
            chain.response_body = min_of(chain.response_body, needs.response_body);
            chain.must_read_responses |= needs.response_body.is_some() && !needs.only_watches_responses;
            chain.body_inspection = chain.body_inspection.max(needs.body_inspection);
            // A chain has one of each plugin, and only `format` converts.
            chain.request_conversion = chain.request_conversion.or(needs.request_conversion);
            chain.response_conversion = chain.response_conversion.or(needs.response_conversion);
            chain.api_specs.extend(needs.api_spec);
            chain.around_upstream = chain.around_upstream.or(needs.around_upstream);
        }
        chain
    }
}

/// The smaller of two optional caps.
fn min_of(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

impl std::fmt::Debug for PluginChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.plugins.iter().map(|p| p.name())).finish()
    }
}

impl PluginChain {
    /// Merges global and route plugin configs (a route's block replaces the
    /// global one of the same name) and builds each from `registry`. Errors are
    /// `(path, message)`, the path relative to the config root.
    pub fn build(
        registry: &[PluginFactory],
        global: &IndexMap<String, Value>,
        route: &IndexMap<String, Value>,
        route_path: &str,
        route_name: &str,
        route_params: &[String],
        context: &BuildContext<'_>,
    ) -> Result<PluginChain, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut plugins = Vec::new();
        let global_only = global.iter().filter(|(name, _)| !route.contains_key(*name));
        let entries = global_only
            .map(|(name, config)| (format!("plugins.{name}"), "global", &[][..], name, config))
            .chain(route.iter().map(|(name, config)| {
                (
                    format!("{route_path}.plugins.{name}"),
                    route_name,
                    route_params,
                    name,
                    config,
                )
            }));
        for (path, scope, params, name, config) in entries {
            match registry.iter().find(|factory| factory.name == name) {
                Some(factory) => match (factory.build)(
                    config,
                    &Setup {
                        at: &path,
                        scope,
                        params,
                        context,
                    },
                ) {
                    Ok(plugin) => plugins.push(plugin),
                    Err(more) => errors.extend(more),
                },
                None => errors.push((path, unknown_plugin(registry, name))),
            }
        }
        // Stable: plugins of one phase keep config order (global first).
        plugins.sort_by_key(|plugin| plugin.phase());
        let authenticates = plugins.iter().any(|p| p.phase() == Phase::Authenticate);
        for plugin in plugins.iter().filter(|p| p.phase() == Phase::Authorize) {
            if !authenticates {
                errors.push((
                    format!("{route_path}.plugins.{}", plugin.name()),
                    "authorizes who the request is, but no authentication plugin on this route says so: add key_auth, basic_auth or jwt".into(),
                ));
            }
        }
        if errors.is_empty() {
            let needs = ChainNeeds::of(&plugins);
            Ok(PluginChain { plugins, needs })
        } else {
            Err(errors)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.plugins.is_empty()
    }

    /// What one of the route's plugins does around the upstream call, if any.
    pub fn around_upstream(&self) -> Option<&Arc<dyn crate::around::AroundUpstream>> {
        self.needs.around_upstream.as_ref()
    }

    /// The OpenAPI documents of the route's plugins.
    pub fn api_specs(&self) -> impl Iterator<Item = &Arc<crate::openapi::Spec>> {
        self.needs.api_specs.iter()
    }

    /// The headers the route's plugins set for upstreams to trust.
    pub fn trusted_headers(&self) -> impl Iterator<Item = &http::HeaderName> {
        self.plugins.iter().flat_map(|p| p.trusted_headers())
    }

    /// Whether a plugin answers `request` on behalf of `method` (see
    /// [`Plugin::answers_for`]).
    pub fn answers_for(&self, request: &http::request::Parts, method: &http::Method) -> bool {
        self.plugins.iter().any(|p| p.answers_for(request, method))
    }

    /// How to take the request body: `Some(cap)` to read it whole (up to the
    /// smallest cap) for the plugins that check or change it, `None` to
    /// stream it untouched. A body a plugin requires, in another format than
    /// it reads, is a 415.
    /// `has_body` is the client's framing (`ClientFacts::has_body`), never
    /// the headers alone: an HTTP/2 body needs no `Content-Length`.
    pub fn request_body_cap(&self, headers: &http::HeaderMap, has_body: bool) -> Result<Option<u64>, ProxyError> {
        let Some(cap) = self.needs.request_body else {
            return Ok(None);
        };
        let format = self
            .needs
            .request_conversion
            .as_ref()
            .map_or(BodyFormat::Json, |c| c.from);
        if format.is_in(headers) {
            return Ok(Some(cap));
        }
        match self.needs.body_required_by {
            Some(plugin) if has_body => Err(ProxyError::rejected(
                ErrorKind::UnsupportedMediaType,
                plugin,
                "wrong_content_type",
                format!(
                    "the request body must be {} (Content-Type: {})",
                    format.name(),
                    format.content_type()
                ),
            )),
            _ => Ok(None),
        }
    }

    /// `Some((cap, must))` when the answer is to be read whole for the
    /// plugins that check or change it; `must` unless they only watch (an
    /// answer too large to watch then goes on unread). Answers in another
    /// format pass untouched.
    pub fn response_body_cap(&self, headers: &http::HeaderMap) -> Option<(u64, bool)> {
        let cap = self.needs.response_body?;
        let format = self
            .needs
            .response_conversion
            .as_ref()
            .map_or(BodyFormat::Json, |c| c.from);
        format.is_in(headers).then_some((cap, self.needs.must_read_responses))
    }

    /// How much of a request body the route's plugins inspect, if any do.
    pub fn body_inspection_limit(&self) -> Option<u64> {
        self.needs.body_inspection
    }

    /// Gives the start of the body to the plugins that inspect bodies.
    pub fn inspect_request_body(
        &self,
        body: &[u8],
        complete: bool,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
    ) -> Result<(), ProxyError> {
        for plugin in &self.plugins {
            plugin.inspect_request_body(body, complete, request, ctx)?;
        }
        Ok(())
    }

    /// Reads a request body once (JSON, or what `format` converts from),
    /// lets each plugin check or change it, and writes it out again, with
    /// its new `Content-Type` when converted. Malformed input is a 400.
    pub fn transform_request_body(
        &self,
        body: bytes::Bytes,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
    ) -> Result<(bytes::Bytes, Option<HeaderValue>), ProxyError> {
        let side = (ErrorKind::BadRequest, "the request body");
        through_json(self.needs.request_conversion.as_deref(), body, side, |json| {
            let mut changed = false;
            for plugin in &self.plugins {
                changed |= plugin.transform_request_body(json, request, ctx)?;
            }
            Ok(changed)
        })
    }

    /// As for requests, in reverse plugin order; what the service sent that
    /// cannot be read or converted is a 502.
    pub fn transform_response_body(
        &self,
        body: bytes::Bytes,
        ctx: &RequestContext<'_>,
    ) -> Result<(bytes::Bytes, Option<HeaderValue>), ProxyError> {
        let side = (ErrorKind::UpstreamBroken, "the upstream's answer");
        through_json(self.needs.response_conversion.as_deref(), body, side, |json| {
            let mut changed = false;
            for plugin in self.plugins.iter().rev() {
                changed |= plugin.transform_response_body(json, ctx)?;
            }
            Ok(changed)
        })
    }

    /// Starts the plugins' background work.
    pub fn start(&self) {
        for plugin in &self.plugins {
            plugin.start();
        }
    }

    /// Runs the request phases in order; the first `Respond` ends the chain.
    pub async fn on_request(
        &self,
        request: &mut http::request::Parts,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Flow, ProxyError> {
        let mut authenticated = false;
        for plugin in &self.plugins {
            if plugin.phase() == Phase::Authenticate {
                if !authenticated {
                    self.authenticate(request, ctx).await?;
                    authenticated = true;
                }
                continue;
            }
            if let Flow::Respond(response) = plugin.on_request(request, ctx).await? {
                return Ok(Flow::Respond(response));
            }
        }
        Ok(Flow::Continue)
    }

    /// The authenticate phase: each method in turn until one authenticates.
    /// Credentials that fail are a 401 (or 503 when they cannot be checked)
    /// unless another method authenticates; no credentials at all are a 401
    /// naming every method, or `anonymous` where a method allows it.
    async fn authenticate(
        &self,
        request: &mut http::request::Parts,
        ctx: &mut RequestContext<'_>,
    ) -> Result<(), ProxyError> {
        let methods = self.plugins.iter().filter(|p| p.phase() == Phase::Authenticate);
        let mut failure: Option<ProxyError> = None;
        for method in methods.clone() {
            match method.authenticate(request, ctx).await {
                Auth::Authenticated(identity) => {
                    identity.write_headers(&mut request.headers);
                    ctx.identity = Some(identity);
                    return Ok(());
                }
                Auth::NoCredentials => {}
                Auth::Failed(error) => {
                    // A 401 says more than a 503 of another method.
                    if failure.as_ref().is_none_or(|f| f.kind != ErrorKind::Unauthorized) {
                        failure = Some(error);
                    }
                }
            }
        }
        if let Some(failure) = failure {
            return Err(failure);
        }
        if methods.clone().any(|m| m.allows_anonymous()) {
            let identity = Identity::anonymous();
            identity.write_headers(&mut request.headers);
            ctx.identity = Some(identity);
            return Ok(());
        }
        let names: Vec<&str> = methods.clone().map(|m| m.name()).collect();
        let mut error = ProxyError::rejected(
            ErrorKind::Unauthorized,
            names.first().copied().unwrap_or("auth"),
            "missing",
            format!("credentials are required: {}", names.join(" or ")),
        );
        let challenges: Vec<String> = methods
            .filter_map(|m| m.challenge())
            .filter_map(|c| c.to_str().ok().map(str::to_string))
            .collect();
        error.challenge = HeaderValue::from_str(&challenges.join(", ")).ok();
        Err(error)
    }

    /// Each plugin's decision, in the order they run, up to the first that
    /// would answer the request itself.
    /// The authenticate phase is explained as it runs: every method is
    /// asked, and the request goes on as the first identity found (or as
    /// `anonymous`), whatever the other methods say.
    pub fn explain(
        &self,
        request: &http::request::Parts,
        ctx: &mut RequestContext<'_>,
    ) -> Vec<(&'static str, Phase, Decision)> {
        let mut decisions = Vec::new();
        let mut authenticated = false;
        for plugin in &self.plugins {
            if plugin.phase() == Phase::Authenticate {
                if authenticated {
                    continue;
                }
                authenticated = true;
                if !self.explain_authentication(request, ctx, &mut decisions) {
                    break;
                }
                continue;
            }
            let decision = plugin.explain(request, ctx);
            let denies = decision.denies.is_some();
            decisions.push((plugin.name(), plugin.phase(), decision));
            if denies {
                break;
            }
        }
        decisions
    }

    /// Explains the authenticate phase; false when it would refuse the request.
    fn explain_authentication(
        &self,
        request: &http::request::Parts,
        ctx: &mut RequestContext<'_>,
        decisions: &mut Vec<(&'static str, Phase, Decision)>,
    ) -> bool {
        let methods: Vec<&Arc<dyn Plugin>> = self
            .plugins
            .iter()
            .filter(|p| p.phase() == Phase::Authenticate)
            .collect();
        let first = decisions.len();
        let mut identity = None;
        for method in &methods {
            decisions.push((method.name(), Phase::Authenticate, method.explain(request, ctx)));
            if identity.is_none() {
                identity = method.identify(request);
            }
        }
        if identity.is_none() && decisions[first..].iter().any(|(_, _, d)| d.denies.is_some()) {
            return false;
        }
        let identity = match identity {
            Some(identity) => identity,
            None if methods.iter().any(|m| m.allows_anonymous()) => Identity::anonymous(),
            None => {
                let names: Vec<&str> = methods.iter().map(|m| m.name()).collect();
                decisions.push((
                    "authentication",
                    Phase::Authenticate,
                    Decision::deny(
                        http::StatusCode::UNAUTHORIZED,
                        format!("credentials are required: {}", names.join(" or ")),
                    ),
                ));
                return false;
            }
        };
        // Failed credentials of one method do not matter once another authenticates.
        for (_, _, decision) in &mut decisions[first..] {
            if decision.denies.take().is_some() {
                decision.detail.push_str(" (another method authenticates)");
            }
        }
        decisions.push((
            "authentication",
            Phase::Authenticate,
            Decision::pass(format!("goes on as {:?}", &*identity.name)),
        ));
        ctx.identity = Some(identity);
        true
    }

    pub fn on_response(&self, response: &mut http::response::Parts, ctx: &RequestContext<'_>) {
        for plugin in self.plugins.iter().rev() {
            plugin.on_response(response, ctx);
        }
    }

    /// The response phases, on the way back: the head's hooks, then the
    /// body read whole for the plugins that check or change it (an answer
    /// too large to read goes on unchanged when they only watch it), then
    /// the filters plugins run over the body as it streams.
    pub async fn respond(
        &self,
        response: Response<ResponseBody>,
        ctx: &RequestContext<'_>,
    ) -> Result<Response<ResponseBody>, ProxyError> {
        if self.is_empty() {
            return Ok(response);
        }
        let (mut parts, body) = response.into_parts();
        self.on_response(&mut parts, ctx);
        let mut body = match self.response_body_cap(&parts.headers) {
            Some((cap, must)) => match crate::transform::read_response(body, cap, must).await? {
                crate::transform::ReadAnswer::Whole(bytes) => {
                    let (changed, content_type) = self.transform_response_body(bytes, ctx)?;
                    if let Some(content_type) = content_type {
                        parts.headers.insert(http::header::CONTENT_TYPE, content_type);
                    }
                    parts
                        .headers
                        .insert(http::header::CONTENT_LENGTH, HeaderValue::from(changed.len()));
                    parts.headers.remove(http::header::TRANSFER_ENCODING);
                    ResponseBody::full(changed)
                }
                crate::transform::ReadAnswer::TooLarge(body) => {
                    tracing::debug!(
                        route = ctx.route,
                        cap,
                        "the answer is too large to check; passed on unchecked"
                    );
                    body
                }
            },
            None => body,
        };
        for plugin in self.plugins.iter().rev() {
            if let Some(filter) = plugin.response_body_filter(&mut parts, ctx) {
                body = ResponseBody::filtered(body, filter);
            }
        }
        Ok(Response::from_parts(parts, body))
    }

    /// The client's body with the filters plugins run over it as it streams
    /// (size limits); a plugin may refuse the request from its head alone.
    pub fn filter_request_body(
        &self,
        mut body: Inbound,
        request: &http::request::Parts,
        ctx: &mut RequestContext<'_>,
    ) -> Result<Inbound, ProxyError> {
        if !ctx.facts.has_body {
            return Ok(body);
        }
        for plugin in &self.plugins {
            if let Some(filter) = plugin.request_body_filter(request, ctx)? {
                body = Inbound::Boxed(UnsyncBoxBody::new(Filtered::new(body, filter)));
            }
        }
        Ok(body)
    }
}

/// Decodes a body (JSON, or what `conversion` reads), lets `apply` check or
/// change it, and writes it out again: converted, or as JSON when changed,
/// or else as it came. `side` is the error's kind and what the body is.
fn through_json(
    conversion: Option<&Conversion>,
    body: bytes::Bytes,
    (kind, what): (ErrorKind, &str),
    apply: impl FnOnce(&mut serde_json::Value) -> Result<bool, ProxyError>,
) -> Result<(bytes::Bytes, Option<HeaderValue>), ProxyError> {
    let fail = |detail: String| ProxyError::new(kind, format!("{what} {detail}"));
    let mut json = match conversion {
        Some(conversion) => conversion
            .decode(&body)
            .map_err(|e| fail(format!("is unreadable: {e}")))?,
        None => crate::transform::parse_json(&body).map_err(|e| fail(format!("is {e}")))?,
    };
    let changed = apply(&mut json)?;
    match conversion {
        // No body, and none made: nothing to convert.
        Some(_) if body.is_empty() && json.is_null() => Ok((body, None)),
        Some(conversion) => {
            let out = conversion
                .encode(&json, &body)
                .map_err(|e| fail(format!("has no {} form: {e}", conversion.to.name())))?;
            Ok((out, Some(conversion.content_type.clone())))
        }
        None if changed => Ok((serde_json::to_vec(&json).unwrap_or_default().into(), None)),
        // A body only checked goes on as it came.
        None => Ok((body, None)),
    }
}

fn unknown_plugin(registry: &[PluginFactory], name: &str) -> String {
    if registry.is_empty() {
        return format!("unknown plugin {name:?}: this build of Portico has no plugins yet");
    }
    let names: Vec<&str> = registry.iter().map(|f| f.name).collect();
    format!(
        "unknown plugin {name:?}{}; available: {}",
        crate::config::error::suggestion(name, names.iter().copied()),
        names.join(", ")
    )
}
