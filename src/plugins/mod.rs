//! Plugins: one module each, placed in the request's way by phase.
//!
//! A plugin is built once from its config by its factory and then shared by
//! every request of the routes it applies to. It holds immutable state (and
//! whatever it must share, such as counters); per-request state lives in the
//! [`RequestContext`].
//!
//! To add a plugin: write `plugins/NAME.rs` with a type implementing [`Plugin`]
//! and a `build` function, then add one line to the `registry!` list below.

use crate::body::ResponseBody;
use crate::consumers::{Consumers, Identity};
pub use crate::context::{ClientFacts, RequestContext};
use crate::error::{ErrorKind, ProxyError};
use crate::ratelimit::local::LocalStore;
use crate::ratelimit::redis::RedisStore;
use crate::telemetry::metrics::Metrics;
use crate::transform::{BodyFormat, Conversion};
use http::{HeaderValue, Response};
use indexmap::IndexMap;
use serde_yaml_ng::Value;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Where in the request's way a plugin runs. Phases run in this order;
/// the order of plugins in the config does not matter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// IP rules, WAF, CORS preflight.
    Access,
    /// Who is calling: keys, Basic, JWT, introspection, mTLS.
    Authenticate,
    /// May they: ACLs, scopes.
    Authorize,
    /// Rate, quota, concurrency.
    Limit,
    /// Request validation.
    Validate,
    /// The response cache: answers from it skip the rest (`Plugin::cache`).
    Cache,
    /// Rewrite the request before it goes upstream.
    TransformRequest,
    /// Rewrite the answer before it goes to the client (`on_response`).
    TransformResponse,
}

/// What a request phase decides.
pub enum Flow {
    /// Go on to the next plugin, then upstream.
    Continue,
    /// Answer now; the upstream is not called. Boxed: `Continue` is the
    /// common case and should stay small.
    Respond(Box<Response<ResponseBody>>),
}

/// State plugins keep for as long as the gateway runs, across reloads,
/// by a key each plugin chooses (its scope, place and settings).
#[derive(Default)]
pub struct PluginState {
    entries: std::sync::Mutex<std::collections::HashMap<String, Arc<dyn std::any::Any + Send + Sync>>>,
}

impl PluginState {
    /// The state under `key`, made by `make` the first time.
    pub fn get_or_insert<T: Send + Sync + 'static>(&self, key: &str, make: impl FnOnce() -> T) -> Arc<T> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(found) = entries.get(key).and_then(|e| e.clone().downcast::<T>().ok()) {
            return found;
        }
        let made = Arc::new(make());
        entries.insert(key.to_string(), made.clone());
        made
    }
}

pub type PhaseFuture<'a> = Pin<Box<dyn Future<Output = Result<Flow, ProxyError>> + Send + 'a>>;
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Auth> + Send + 'a>>;

/// What an authentication method makes of a request.
pub enum Auth {
    Authenticated(Identity),
    /// The request carries no credentials of this kind: another method may
    /// have them, or the route may let it in as `anonymous`.
    NoCredentials,
    /// Credentials of this kind that do not check out (401), or that cannot
    /// be checked now (503).
    Failed(ProxyError),
}

/// What a plugin needs from the config beyond its own block.
pub struct BuildContext<'a> {
    pub consumers: &'a Arc<Consumers>,
    pub metrics: &'a Arc<Metrics>,
    /// Rate-limit state kept in this process; lives as long as the gateway.
    pub local_limits: &'a Arc<LocalStore>,
    /// `cluster.redis`, when set.
    pub redis: Option<&'a Arc<RedisStore>>,
    /// State kept across reloads.
    pub shared: &'a Arc<PluginState>,
    /// State of this build only: what the plugins of several routes share,
    /// such as an OpenAPI document read and compiled once.
    pub this_build: &'a PluginState,
}

/// Where a plugin's block is, and what else it may use.
pub struct Setup<'a> {
    /// The block's path in the config (`routes[2].plugins.key_auth`), for errors.
    pub at: &'a str,
    /// The route's name, or `global` for a block from the global `plugins`:
    /// what keeps state (counters) apart.
    pub scope: &'a str,
    /// The route's path parameters (none for a global block).
    pub params: &'a [String],
    pub context: &'a BuildContext<'a>,
}

/// Errors of a plugin block: `(path, message)`, the path from the config root.
pub type BuildErrors = Vec<(String, String)>;

impl Setup<'_> {
    /// Reads the block as `T` (unknown keys refused, with did-you-mean).
    pub fn parse<T: serde::de::DeserializeOwned>(&self, value: &Value) -> Result<T, BuildErrors> {
        crate::config::load::block(value.clone(), self.at).map_err(|e| vec![e])
    }

    /// An error at `field` of the block (`""` for the block itself).
    pub fn error(&self, field: &str, message: impl Into<String>) -> (String, String) {
        let at = if field.is_empty() {
            self.at.to_string()
        } else {
            format!("{}.{field}", self.at)
        };
        (at, message.into())
    }
}

/// A plugin. Every hook has a no-op default: implement the one your phase needs.
pub trait Plugin: Send + Sync + 'static {
    /// The name it is configured under (`rate_limit`).
    fn name(&self) -> &'static str;

    /// The one place it takes in the chain.
    fn phase(&self) -> Phase;

    /// Whether it answers `request` on behalf of `method`, a method the
    /// request's path has where the request's own method has none: the
    /// request is then routed as `method` (a CORS preflight, `OPTIONS`,
    /// reaches the route of the method it asks about).
    fn answers_for(&self, _request: &http::request::Parts, _method: &http::Method) -> bool {
        false
    }

    /// Starts what the plugin does in the background (fetching keys), once
    /// the config it belongs to serves. Called on every config swap; a
    /// plugin starts once.
    fn start(&self) {}

    /// For `Phase::Authenticate` plugins: who sent the request. Methods on
    /// one route are tried in turn and the first that authenticates wins.
    fn authenticate<'a>(
        &'a self,
        _request: &'a mut http::request::Parts,
        _ctx: &'a RequestContext<'_>,
    ) -> AuthFuture<'a> {
        Box::pin(std::future::ready(Auth::NoCredentials))
    }

    /// For `explain`: who the request would authenticate as, without side
    /// effects (no hash checked on the blocking pool, nothing fetched).
    fn identify(&self, _request: &http::request::Parts) -> Option<Identity> {
        None
    }

    /// An authentication method's `WWW-Authenticate` challenge.
    fn challenge(&self) -> Option<HeaderValue> {
        None
    }

    /// Whether requests without credentials go on as the `anonymous` consumer.
    fn allows_anonymous(&self) -> bool {
        false
    }

    /// Request headers this plugin sets for upstreams to trust; a client's
    /// own are removed from every request on every route, before routing
    /// (`Gateway::trusted_headers`).
    fn trusted_headers(&self) -> &[http::HeaderName] {
        &[]
    }

    /// Called with the request head before it goes upstream.
    fn on_request<'a>(
        &'a self,
        _request: &'a mut http::request::Parts,
        _ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        Box::pin(std::future::ready(Ok(Flow::Continue)))
    }

    /// Called with the response head before it goes to the client.
    fn on_response(&self, _response: &mut http::response::Parts, _ctx: &RequestContext<'_>) {}

    /// What it needs from the core, declared once when it is built (see
    /// [`Needs`]); the chain reads it then, never per request.
    fn needs(&self) -> Needs {
        Needs::default()
    }

    /// Looks at the start of the body (`complete` when it is all of it;
    /// empty, and complete, when the request has none).
    fn inspect_request_body(
        &self,
        _body: &[u8],
        _complete: bool,
        _request: &http::request::Parts,
        _ctx: &RequestContext<'_>,
    ) -> Result<(), ProxyError> {
        Ok(())
    }

    /// Checks or changes the body; `Ok(true)` when it changed it.
    fn transform_request_body(
        &self,
        _body: &mut serde_json::Value,
        _request: &http::request::Parts,
        _ctx: &RequestContext<'_>,
    ) -> Result<bool, ProxyError> {
        Ok(false)
    }

    /// Checks or changes the answer's body; `Ok(true)` when it changed it.
    fn transform_response_body(
        &self,
        _body: &mut serde_json::Value,
        _ctx: &RequestContext<'_>,
    ) -> Result<bool, ProxyError> {
        Ok(false)
    }

    /// What it would decide for this request, for `portico explain`: no
    /// side effects (nothing counted, nothing fetched), and said the way an
    /// operator debugging a config wants to read it ("signature ok, exp in
    /// 13 min"; "100/1m by consumer, 37 left").
    fn explain(&self, _request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        Decision::pass("runs (this plugin gives no details)")
    }
}

/// A plugin's answer to `explain`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Decision {
    pub detail: String,
    /// The status it would answer with instead of letting the request on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub denies: Option<u16>,
}

impl Decision {
    pub fn pass(detail: impl Into<String>) -> Decision {
        Decision {
            detail: detail.into(),
            denies: None,
        }
    }

    pub fn deny(status: http::StatusCode, detail: impl Into<String>) -> Decision {
        Decision {
            detail: detail.into(),
            denies: Some(status.as_u16()),
        }
    }
}

/// Builds a plugin from its config block; each error names its place.
pub type BuildFn = fn(&Value, &Setup<'_>) -> Result<Arc<dyn Plugin>, BuildErrors>;

pub struct PluginFactory {
    pub name: &'static str,
    pub build: BuildFn,
}

/// The plugins' shared HTTP(S) client (JWKS, introspection); not a plugin.
pub mod fetch;

/// Declares each plugin module and its factories, in one list: a plugin is
/// its file and one line here, `module: "config_name" => build_fn`.
macro_rules! registry {
    ($($module:ident: $($name:literal => $build:ident),+;)*) => {
        $(pub mod $module;)*

        /// Every plugin Portico knows, one line each.
        pub const REGISTRY: &[PluginFactory] = &[
            $($(PluginFactory { name: $name, build: $module::$build },)+)*
        ];
    };
}

registry! {
    ip_restriction: "ip_restriction" => build;
    waf: "waf" => build;
    cors: "cors" => build;
    key_auth: "key_auth" => build;
    basic_auth: "basic_auth" => build;
    jwt: "jwt" => build;
    introspection: "oauth2_introspection" => build;
    mtls: "mtls" => build;
    acl: "acl" => build_acl, "scopes" => build_scopes;
    rate_limit: "rate_limit" => build;
    concurrency_limit: "concurrency_limit" => build;
    validate: "validate" => build;
    transform: "request_transform" => build_request, "response_transform" => build_response;
    format: "format" => build;
    cache: "cache" => build;
}

/// The plugins that apply to one route, in phase order.
#[derive(Clone, Default)]
pub struct PluginChain {
    plugins: Vec<Arc<dyn Plugin>>,
    /// What the chain's plugins need, put together once when it is built:
    /// the proxy asks on every request.
    needs: ChainNeeds,
}

/// What a plugin needs from the core beyond its phase hooks, declared in one
/// value when it is built. Each field is one thing the core does for the
/// plugins that ask: none of them names a plugin.
#[derive(Default, Clone)]
pub struct Needs {
    /// Reads JSON request bodies whole, up to this many bytes (over: 413),
    /// for [`Plugin::transform_request_body`].
    pub request_body: Option<u64>,
    /// A request body in another format than it reads is a 415, where
    /// otherwise it would stream past untouched.
    pub requires_request_body: bool,
    /// Reads JSON response bodies whole, up to this many bytes (over: 502),
    /// for [`Plugin::transform_response_body`].
    pub response_body: Option<u64>,
    /// It only watches the answers it reads (logs, counts, never changes or
    /// refuses them): one too large to read then goes on unread.
    pub only_watches_responses: bool,
    /// Up to this many bytes of the request body are read ahead and given to
    /// [`Plugin::inspect_request_body`]; the body then goes on whole.
    pub body_inspection: Option<u64>,
    /// The conversion it asks of request bodies (`format`): the plugins that
    /// read them see JSON either way.
    pub request_conversion: Option<Arc<Conversion>>,
    /// The conversion it asks of response bodies.
    pub response_conversion: Option<Arc<Conversion>>,
    /// The OpenAPI document it validates against, for the API docs.
    pub api_spec: Option<Arc<crate::openapi::Spec>>,
    /// The response cache the proxy asks before going upstream.
    pub cache: Option<Arc<crate::cache::Cache>>,
}

/// The needs of a chain's plugins, together.
#[derive(Default, Clone)]
struct ChainNeeds {
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
    cache: Option<Arc<crate::cache::Cache>>,
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
            chain.cache = chain.cache.or(needs.cache);
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

    /// The route's response cache, if it has one.
    pub fn cache(&self) -> Option<&Arc<crate::cache::Cache>> {
        self.needs.cache.as_ref()
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
        error.challenge = HeaderValue::from_str(&challenges.join(", ")).ok().map(Box::new);
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
    /// body read whole for the plugins that check or change it. An answer too
    /// large to read goes on unchanged when they only watch it.
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
        let body = match self.response_body_cap(&parts.headers) {
            Some((cap, must)) => {
                let bytes = match crate::transform::read_response(body, cap, must).await? {
                    crate::transform::ReadAnswer::Whole(bytes) => bytes,
                    crate::transform::ReadAnswer::TooLarge(body) => {
                        tracing::debug!(
                            route = ctx.route,
                            cap,
                            "the answer is too large to check; passed on unchecked"
                        );
                        return Ok(Response::from_parts(parts, body));
                    }
                };
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
            None => body,
        };
        Ok(Response::from_parts(parts, body))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Params;
    use std::sync::Mutex;

    /// Records the order it ran in; answers 403 when configured to.
    struct Probe {
        phase: Phase,
        deny: bool,
        log: Arc<Mutex<Vec<Phase>>>,
    }

    impl Plugin for Probe {
        fn name(&self) -> &'static str {
            "probe"
        }
        fn phase(&self) -> Phase {
            self.phase
        }
        fn on_request<'a>(
            &'a self,
            _request: &'a mut http::request::Parts,
            _ctx: &'a mut RequestContext<'_>,
        ) -> PhaseFuture<'a> {
            self.log.lock().unwrap().push(self.phase);
            let flow = if self.deny {
                let mut response = Response::new(ResponseBody::empty());
                *response.status_mut() = http::StatusCode::FORBIDDEN;
                Flow::Respond(Box::new(response))
            } else {
                Flow::Continue
            };
            Box::pin(std::future::ready(Ok(flow)))
        }
        fn explain(&self, _request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
            if self.deny {
                Decision::deny(http::StatusCode::FORBIDDEN, "denied")
            } else {
                Decision::pass("passes")
            }
        }
    }

    #[tokio::test]
    async fn phases_run_in_order_and_respond_stops_the_chain() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let probe = |phase, deny| {
            Arc::new(Probe {
                phase,
                deny,
                log: log.clone(),
            }) as Arc<dyn Plugin>
        };
        let mut plugins = vec![
            probe(Phase::TransformRequest, false),
            probe(Phase::Limit, true),
            probe(Phase::Access, false),
        ];
        plugins.sort_by_key(|p| p.phase());
        let chain = PluginChain {
            plugins,
            ..PluginChain::default()
        };
        let (mut parts, _) = http::Request::new(()).into_parts();
        let id = HeaderValue::from_static("r1");
        let params = Params::new();
        let mut ctx = RequestContext::new(&id, ([127, 0, 0, 1], 1).into(), "r", &params, None);
        let flow = chain.on_request(&mut parts, &mut ctx).await.unwrap();
        assert!(matches!(flow, Flow::Respond(r) if r.status() == 403));
        assert_eq!(*log.lock().unwrap(), vec![Phase::Access, Phase::Limit]);

        // `explain` says the same without running anything.
        let decisions = chain.explain(&parts, &mut ctx);
        let phases: Vec<Phase> = decisions.iter().map(|(_, phase, _)| *phase).collect();
        assert_eq!(phases, vec![Phase::Access, Phase::Limit]);
        assert_eq!(decisions[1].2.denies, Some(403));
        assert_eq!(log.lock().unwrap().len(), 2, "explain ran no phase");
    }

    #[test]
    fn unknown_plugins_are_named_with_their_place() {
        let mut route = IndexMap::new();
        route.insert("rate_limt".to_string(), Value::Null);
        let consumers = Arc::new(Consumers::default());
        let metrics = Arc::new(Metrics::new());
        let local_limits = Arc::new(LocalStore::new(16));
        let context = BuildContext {
            consumers: &consumers,
            metrics: &metrics,
            local_limits: &local_limits,
            redis: None,
            shared: &Arc::new(PluginState::default()),
            this_build: &PluginState::default(),
        };
        let errors =
            PluginChain::build(REGISTRY, &IndexMap::new(), &route, "routes[3]", "r", &[], &context).unwrap_err();
        assert_eq!(errors[0].0, "routes[3].plugins.rate_limt");
        assert!(errors[0].1.contains("unknown plugin"));
    }
}
