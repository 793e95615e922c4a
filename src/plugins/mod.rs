//! Plugins: one module each, placed in the request's way by phase.
//!
//! A plugin is built once from its config by its factory and then shared by
//! every request of the routes it applies to. It holds immutable state (and
//! whatever it must share, such as counters); per-request state lives in the
//! [`RequestContext`].
//!
//! To add a plugin: write `plugins/NAME.rs` with a type implementing [`Plugin`]
//! and a `build` function, then add one line to the `registry!` list below.
//! A route's plugins run as one [`PluginChain`] (`chain.rs`).

pub use crate::body::filter::{BodyFilter, FilterError, Refusal};
use crate::body::ResponseBody;
use crate::consumers::{Consumers, Identity};
pub use crate::context::{ClientFacts, RequestContext};
use crate::error::ProxyError;
use crate::ratelimit::local::LocalStore;
use crate::ratelimit::redis::RedisStore;
use crate::telemetry::metrics::Metrics;
use crate::transform::Conversion;
use http::{HeaderValue, Response};
use serde_yaml_ng::Value;
use std::future::Future;
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
    /// The response cache: it stands around the upstream call
    /// (`Needs::around_upstream`), answering from what it keeps.
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

/// What a phase of a plugin decides: at once, as most plugins do, with no
/// allocation ([`at_once`]), or after waiting, in a boxed future ([`waiting`]:
/// Redis, an introspection call, a body read).
pub type PhaseFuture<'a> = Decided<'a, Result<Flow, ProxyError>>;
pub type AuthFuture<'a> = Decided<'a, Auth>;
pub type Decided<'a, T> =
    futures_util::future::Either<futures_util::future::Ready<T>, futures_util::future::BoxFuture<'a, T>>;

/// A decision made without waiting.
pub fn at_once<'a, T>(decision: T) -> Decided<'a, T> {
    futures_util::future::Either::Left(futures_util::future::ready(decision))
}

/// A decision that waits on something.
pub fn waiting<'a, T>(decision: impl Future<Output = T> + Send + 'a) -> Decided<'a, T> {
    futures_util::future::Either::Right(Box::pin(decision))
}

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
        at_once(Auth::NoCredentials)
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
        at_once(Ok(Flow::Continue))
    }

    /// Called with the response head before it goes to the client.
    fn on_response(&self, _response: &mut http::response::Parts, _ctx: &RequestContext<'_>) {}

    /// A filter over the client's body as it streams (counting its size,
    /// decompressed or not), chosen once the head has been through the
    /// request phases; `Err` refuses the request from its head alone (with
    /// `ctx.response_headers` to say what it would take). Asked only of
    /// requests that have a body.
    fn request_body_filter(
        &self,
        _request: &http::request::Parts,
        _ctx: &mut RequestContext<'_>,
    ) -> Result<Option<Box<dyn BodyFilter>>, ProxyError> {
        Ok(None)
    }

    /// A filter over the answer's body as it streams (compression), asked
    /// after `on_response` and after any whole-body change; the plugin sets
    /// the head to match (`Content-Encoding`, no `Content-Length`).
    fn response_body_filter(
        &self,
        _response: &mut http::response::Parts,
        _ctx: &RequestContext<'_>,
    ) -> Option<Box<dyn BodyFilter>> {
        None
    }

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

/// The JSON Schema of a plugin's config block, from its config type.
pub type SchemaFn = fn(&mut schemars::SchemaGenerator) -> schemars::Schema;

pub struct PluginFactory {
    pub name: &'static str,
    pub build: BuildFn,
    pub schema: SchemaFn,
}

mod chain;
pub use chain::PluginChain;

/// The plugins' shared HTTP(S) client (JWKS, introspection); not a plugin.
pub mod fetch;

/// Declares each plugin module and its factories, in one list: a plugin is
/// its file and one line here, `module: "config_name" => build_fn(ConfigType)`.
/// The config type is what its block is read as, and gives its schema.
macro_rules! registry {
    ($($module:ident: $($name:literal => $build:ident($config:ty)),+;)*) => {
        $(pub mod $module;)*

        /// Every plugin Portico knows, one line each.
        pub const REGISTRY: &[PluginFactory] = &[
            $($(PluginFactory {
                name: $name,
                build: $module::$build,
                schema: |generator| generator.subschema_for::<$config>(),
            },)+)*
        ];
    };
}

registry! {
    ip_restriction: "ip_restriction" => build(ip_restriction::Config);
    waf: "waf" => build(waf::Config);
    cors: "cors" => build(cors::Config);
    key_auth: "key_auth" => build(key_auth::Config);
    basic_auth: "basic_auth" => build(basic_auth::Config);
    jwt: "jwt" => build(jwt::Config);
    introspection: "oauth2_introspection" => build(introspection::Config);
    mtls: "mtls" => build(mtls::Config);
    acl: "acl" => build_acl(acl::AclConfig), "scopes" => build_scopes(Vec<String>);
    rate_limit: "rate_limit" => build(rate_limit::Config);
    concurrency_limit: "concurrency_limit" => build(concurrency_limit::Config);
    request_size: "request_size" => build(request_size::Config);
    validate: "validate" => build(validate::Config);
    transform: "request_transform" => build_request(transform::RequestConfig),
        "response_transform" => build_response(transform::ResponseConfig);
    format: "format" => build(format::Config);
    cache: "cache" => build(cache::Config);
    compression: "compression" => build(compression::Config);
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
    /// What it does around the upstream call (a response cache): the core
    /// gives it the request and the call, and it gives back the answer.
    pub around_upstream: Option<Arc<dyn crate::around::AroundUpstream>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Params;
    use indexmap::IndexMap;
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
            at_once(Ok(flow))
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
        let mut ctx = RequestContext::new(&id, ([127, 0, 0, 1], 1).into(), "r", params, None);
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
