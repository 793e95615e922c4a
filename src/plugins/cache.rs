//! `cache`: response caching on a route (or every route), as an RFC 9111
//! shared cache. The cache itself is `crate::cache`; this module reads the
//! block, picks the store, and stands the cache around the upstream call
//! (`Needs::around_upstream`), where the core hands it the request.

use super::{Needs, Phase, Plugin, RequestContext, Setup};
use crate::around::{Answered, AroundUpstream, BoxFuture, Later, Upstream};
use crate::cache::store::{MemoryStore, Store};
use crate::cache::{Cache, KeySettings, QueryKey, Refresh, Settings};
use crate::error::ProxyError;
use crate::config::units::{ByteSize, Duration as ConfigDuration};
use http::{HeaderName, Method, StatusCode};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Freshness for answers that give none.
    ttl: Option<ConfigDuration>,
    /// Use `ttl` whatever the answer says: unsafe for private data.
    #[serde(default)]
    force_ttl: bool,
    #[serde(default = "default_methods")]
    methods: Vec<String>,
    /// Statuses stored (on `ttl` when they give no freshness); default:
    /// the RFC's (200, 203, 204, 300, 301, 308, 404, 405, 410, 414, 501,
    /// and others when the answer gives its freshness).
    statuses: Option<Vec<u16>>,
    #[serde(default)]
    key: KeyConfig,
    /// `honor` (the RFC) or `ignore` clients' `Cache-Control` and `Pragma`.
    #[serde(default)]
    client_directives: ClientDirectives,
    /// The header saying HIT, MISS, STALE, REVALIDATED or BYPASS; null: none.
    #[serde(default = "default_header")]
    header: Option<String>,
    /// Larger answers stream through, not stored.
    #[serde(default = "default_max_body")]
    max_body: ByteSize,
    /// Concurrent misses for one key send one request upstream; the others
    /// wait for it this long at most. `0s` turns coalescing off.
    #[serde(default = "default_coalesce")]
    coalesce: ConfigDuration,
    /// For answers that do not say.
    stale_while_revalidate: Option<ConfigDuration>,
    stale_if_error: Option<ConfigDuration>,
    /// `memory` or `redis` (`cluster.redis`); default: redis when set.
    store: Option<StoreKind>,
    /// Answers to authenticated consumers are the same for everyone: store
    /// and share them without keying by consumer. Without it (and without
    /// `key.consumer`), an authenticated request is never cached.
    #[serde(default)]
    shared: bool,
    /// The memory store's bound, for every route together (default 64 MiB):
    /// set it in one block, the global one say. A new bound starts an empty store.
    memory: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct KeyConfig {
    #[serde(default)]
    query: QueryMode,
    /// Only these query parameters count (sorted).
    query_params: Option<Vec<String>>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    consumer: bool,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum QueryMode {
    #[default]
    All,
    Sorted,
    Ignore,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum ClientDirectives {
    #[default]
    Honor,
    Ignore,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum StoreKind {
    Memory,
    Redis,
}

fn default_methods() -> Vec<String> {
    vec!["GET".into(), "HEAD".into()]
}

fn default_header() -> Option<String> {
    Some("X-Cache".into())
}

fn default_max_body() -> ByteSize {
    ByteSize(1024 * 1024)
}

fn default_coalesce() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

const DEFAULT_MEMORY: u64 = 64 * 1024 * 1024;

/// The process's memory store, kept across reloads; a new bound makes a new one.
#[derive(Default)]
pub struct MemoryStores {
    current: Mutex<Option<Arc<MemoryStore>>>,
}

impl MemoryStores {
    /// The store, with `bound` if given (a block that gives none takes the
    /// store as it is).
    fn with_bound(&self, bound: Option<u64>) -> Arc<MemoryStore> {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        match (&*current, bound) {
            (Some(store), None) => store.clone(),
            (Some(store), Some(bound)) if store.bound() == bound => store.clone(),
            (_, bound) => {
                let bound = bound.unwrap_or(DEFAULT_MEMORY);
                let store = Arc::new(MemoryStore::new(bound));
                *current = Some(store.clone());
                store
            }
        }
    }

    /// The store in use, for purges.
    pub fn current(&self) -> Option<Arc<MemoryStore>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// Where the memory stores are kept in the plugins' shared state.
pub const MEMORY_STORES: &str = "cache.memory";

pub struct CachePlugin {
    cache: Arc<Cache>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let mut errors = Vec::new();
    let mut methods = Vec::new();
    for (i, method) in config.methods.iter().enumerate() {
        match Method::from_bytes(method.to_ascii_uppercase().as_bytes()) {
            Ok(m) if m.is_safe() && m != Method::OPTIONS && m != Method::TRACE => methods.push(m),
            Ok(_) => errors.push(setup.error(&format!("methods[{i}]"), "only GET and HEAD answers can be cached")),
            Err(_) => errors.push(setup.error(&format!("methods[{i}]"), "not an HTTP method")),
        }
    }
    let statuses = config.statuses.as_ref().map(|list| {
        list.iter()
            .filter_map(|code| match StatusCode::from_u16(*code) {
                Ok(status) if (200..600).contains(code) => Some(status),
                _ => {
                    errors.push(setup.error("statuses", format!("{code} is not a final status")));
                    None
                }
            })
            .collect()
    });
    let mut headers = Vec::new();
    for (i, name) in config.key.headers.iter().enumerate() {
        match HeaderName::from_bytes(name.as_bytes()) {
            Ok(name) => headers.push(name),
            Err(_) => errors.push(setup.error(&format!("key.headers[{i}]"), "not a header name")),
        }
    }
    let header = match config.header.as_deref().map(|h| HeaderName::from_bytes(h.as_bytes())) {
        Some(Ok(name)) => Some(name),
        Some(Err(_)) => {
            errors.push(setup.error("header", "not a header name"));
            None
        }
        None => None,
    };
    if config.shared && config.key.consumer {
        errors.push(setup.error(
            "shared",
            "answers keyed by consumer are each consumer's own: drop `shared` or `key.consumer`",
        ));
    }
    if config.force_ttl && config.ttl.is_none() {
        errors.push(setup.error("force_ttl", "forces `ttl`: set it"));
    }
    let redis = setup.context.redis;
    let store = match (config.store, redis) {
        (Some(StoreKind::Redis), None) => {
            errors.push(setup.error("store", "redis needs `cluster.redis` set"));
            None
        }
        (Some(StoreKind::Memory), _) | (None, None) => Some(Store::Memory(
            setup
                .context
                .shared
                .get_or_insert(MEMORY_STORES, MemoryStores::default)
                .with_bound(config.memory.map(ByteSize::get)),
        )),
        (_, Some(redis)) => Some(Store::Redis(redis.clone())),
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(store) = store else { return Err(errors) };
    let query = match (&config.key.query_params, config.key.query) {
        (Some(names), _) => QueryKey::Only(names.clone()),
        (None, QueryMode::All) => QueryKey::All,
        (None, QueryMode::Sorted) => QueryKey::Sorted,
        (None, QueryMode::Ignore) => QueryKey::Ignore,
    };
    let settings = Settings {
        ttl: config.ttl.map(|t| t.get()),
        force_ttl: config.force_ttl,
        methods,
        statuses,
        key: KeySettings {
            query,
            headers,
            consumer: config.key.consumer,
        },
        honor_client: config.client_directives == ClientDirectives::Honor,
        header,
        max_body: config.max_body.get(),
        coalesce: Some(config.coalesce.get()).filter(|d| !d.is_zero()),
        stale_while_revalidate: config.stale_while_revalidate.map_or(Duration::ZERO, |d| d.get()),
        stale_if_error: config.stale_if_error.map_or(Duration::ZERO, |d| d.get()),
        shared: config.shared,
    };
    Ok(Arc::new(CachePlugin {
        cache: Arc::new(Cache::new(settings, store, setup.scope, setup.context.metrics.clone())),
    }))
}

impl Plugin for CachePlugin {
    fn name(&self) -> &'static str {
        "cache"
    }

    fn phase(&self) -> Phase {
        Phase::Cache
    }

    fn needs(&self) -> Needs {
        Needs {
            around_upstream: Some(Arc::new(AroundCache(self.cache.clone()))),
            ..Needs::default()
        }
    }

    fn explain(&self, request: &http::request::Parts, _ctx: &super::RequestContext<'_>) -> super::Decision {
        super::Decision::pass(if self.cache.settings.methods.contains(&request.method) {
            "looked up in the cache; a miss goes upstream and is stored if it may be"
        } else {
            "not a cached method: goes upstream; an unsafe method invalidates the URL"
        })
    }
}

/// The cache around the upstream call: an answer from the store, or the
/// upstream's answer stored on its way; a stale answer served is refreshed
/// afterwards.
struct AroundCache(Arc<Cache>);

impl AroundUpstream for AroundCache {
    fn serve<'a>(
        &'a self,
        request: &'a http::request::Parts,
        ctx: &'a RequestContext<'_>,
        upstream: &'a mut dyn Upstream,
    ) -> BoxFuture<'a, Result<Answered, ProxyError>> {
        Box::pin(async move {
            let (response, refresh) = self.0.serve(request, ctx, upstream).await?;
            let later = refresh.map(|job| {
                Box::new(Refreshing {
                    cache: self.0.clone(),
                    job,
                }) as Box<dyn Later>
            });
            Ok((response, later))
        })
    }
}

/// A stale answer's refresh, run after it was served.
struct Refreshing {
    cache: Arc<Cache>,
    job: Refresh,
}

impl Later for Refreshing {
    fn run<'a>(
        self: Box<Self>,
        request: &'a http::request::Parts,
        ctx: &'a RequestContext<'_>,
        upstream: &'a mut dyn Upstream,
    ) -> BoxFuture<'a, ()> {
        Box::pin(async move { self.cache.refresh(self.job, request, ctx, upstream).await })
    }
}

