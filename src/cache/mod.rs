//! Response caching, as RFC 9111 specifies a shared cache: what may be
//! stored, for how long it is fresh, when it must be revalidated (the
//! policy itself is `http-cache-semantics`'), and the gateway's part around
//! it: keys, variants (`Vary`), revalidation with conditional requests,
//! answering clients' own conditional requests, serving stale answers
//! (`stale-while-revalidate`, `stale-if-error`), coalescing concurrent
//! misses into one upstream request, invalidation by unsafe methods, and
//! the stores (`store`). The `cache` plugin configures it per route.
//!
//! This file is the way of a request: found and answered, or sent on;
//! `fill` is the way of the upstream's answer into the store.

pub mod entry;
mod fill;
mod flights;
mod headers;
mod key;
pub mod store;

use crate::around::Upstream;
use crate::body::ResponseBody;
use crate::context::RequestContext;
use crate::error::{ErrorKind, ProxyError};
use crate::telemetry::metrics::Metrics;
use crate::upstream::clone_head;
use bytes::Bytes;
use entry::{Entry, Slot};
use flights::{Flights, Joined};
use headers::{not_modified, Directives};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};
use http_cache_semantics::BeforeRequest;
use key::Key;
pub use key::{KeySettings, QueryKey};

use prometheus::IntCounter;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};
use store::Store;

pub struct Settings {
    /// Freshness for answers that give none.
    pub ttl: Option<Duration>,
    /// Use `ttl` whatever the answer says (unsafe for private data).
    pub force_ttl: bool,
    pub methods: Vec<Method>,
    /// Statuses stored on `ttl` alone; `None`: those RFC 9110 calls
    /// heuristically cacheable.
    pub statuses: Option<Vec<StatusCode>>,
    pub key: KeySettings,
    /// Honour clients' `Cache-Control` / `Pragma` (the RFC), or ignore them.
    pub honor_client: bool,
    /// `X-Cache` (or another name), or none.
    pub header: Option<HeaderName>,
    /// Larger answers stream through, not stored.
    pub max_body: u64,
    /// How long a miss waits for the same key's request already upstream.
    pub coalesce: Option<Duration>,
    /// Defaults for answers that do not say.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// Consumers' answers may be shared between them (`shared: true`):
    /// the config says they are the same for everyone.
    pub shared: bool,
}

pub struct Cache {
    pub settings: Settings,
    store: Store,
    flights: Flights,
    route: Arc<str>,
    metrics: Arc<Metrics>,
    /// The route's lookups by outcome, each series made at its first use
    /// (only the outcomes a route sees are exported).
    lookups: [OnceLock<IntCounter>; Outcome::COUNT],
}

/// How an answer was served, for `X-Cache` and the metrics.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Outcome {
    Hit,
    Miss,
    Stale,
    Revalidated,
    Bypass,
}

impl Outcome {
    /// How many there are, for `Cache::lookups`, indexed by `outcome as
    /// usize`: read from the last, so `Bypass` stays last.
    const COUNT: usize = Outcome::Bypass as usize + 1;

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale => "STALE",
            Outcome::Revalidated => "REVALIDATED",
            Outcome::Bypass => "BYPASS",
        }
    }

    /// Its `result` label in the metrics.
    fn label(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Miss => "miss",
            Outcome::Stale => "stale",
            Outcome::Revalidated => "revalidated",
            Outcome::Bypass => "bypass",
        }
    }
}

/// Request headers that never go into a stored policy (it may sit in a
/// shared Redis): their presence is kept, their values are not.
const SECRET_HEADERS: [&str; 3] = ["authorization", "cookie", "x-api-key"];

impl Cache {
    pub fn new(settings: Settings, store: Store, route: &str, metrics: Arc<Metrics>) -> Cache {
        Cache {
            settings,
            store,
            flights: Flights::default(),
            route: route.into(),
            metrics,
            lookups: Default::default(),
        }
    }

    /// Answers `request` from the cache, or through `fetch` (the upstream
    /// and the response plugins), storing what may be stored. Unsafe methods
    /// invalidate what is stored for their URL. A stale answer served under
    /// `stale-while-revalidate` comes with the `Refresh` to run afterwards.
    pub async fn serve(
        &self,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
        fetch: &mut dyn Upstream,
    ) -> Result<(Response<ResponseBody>, Option<Refresh>), ProxyError> {
        if !self.settings.methods.contains(&request.method) {
            let response = fetch.send(clone_head(request)).await?;
            if !request.method.is_safe() && (response.status().is_success() || response.status().is_redirection()) {
                self.invalidate(request, &response).await;
            }
            return Ok((self.mark(response, Outcome::Bypass), None));
        }
        let client = Directives::of(&request.headers, self.settings.honor_client);
        if client.no_store {
            return Ok((
                self.mark(fetch.send(upstream_head(request)).await?, Outcome::Bypass),
                None,
            ));
        }
        if !self.may_share(ctx) {
            // An authenticated consumer's answer, on a cache neither keyed by
            // consumer nor declared shared: neither served from nor stored.
            return Ok((
                self.mark(fetch.send(upstream_head(request)).await?, Outcome::Bypass),
                None,
            ));
        }
        // The route's own name, even for a global `cache` block: two routes
        // never serve each other's answers.
        let primary = key::primary(ctx.route, request, ctx, &self.settings.key);
        let now = crate::clock::system_now();
        let mut stored = self.find(&primary, request).await;
        if stored.is_none() && !client.only_if_cached {
            // One request per key goes upstream; the others wait for its answer.
            if let Joined::Lead(leader) = self.flights.join(primary, self.settings.coalesce).await {
                let response = self.fetch_and_store(fetch, request, ctx, &primary, None).await;
                drop(leader);
                return response.map(|(r, o)| (self.mark(r, o), None));
            }
            stored = self.find(&primary, request).await;
        }
        let Some((variant, entry)) = stored else {
            if client.only_if_cached {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamTimeout,
                    "only-if-cached, and nothing is cached",
                ));
            }
            let (response, outcome) = self.fetch_and_store(fetch, request, ctx, &primary, None).await?;
            return Ok((self.mark(response, outcome), None));
        };
        let (fresh, matches) = if client.any {
            // The client's own `max-age`, `min-fresh`, `max-stale` and the
            // like: the policy weighs them.
            match entry.policy.before_request(&self.policy_request(request), now) {
                BeforeRequest::Fresh(_) => (true, true),
                BeforeRequest::Stale { matches, .. } => (false, matches),
            }
        } else {
            // Nothing asked: fresh is the stored deadline, and the key (with
            // the variant's) is what makes a stored answer this request's.
            (entry.is_fresh(now), true)
        };
        if !matches {
            // Stored for another request (its Host, say): neither served nor
            // used to revalidate; the new answer takes its place.
            let (response, outcome) = self.fetch_and_store(fetch, request, ctx, &primary, None).await?;
            return Ok((self.mark(response, outcome), None));
        }
        if fresh && !client.no_cache {
            return Ok((self.answer(&entry, request, now, Outcome::Hit), None));
        }
        let staleness = entry.staleness(now).unwrap_or_default();
        let usable_stale = !entry.must_revalidate && !client.no_cache && !entry.is_fresh(now);
        if usable_stale && staleness <= entry.stale_while_revalidate {
            // Served now; refreshed for the next client.
            let refresh = Refresh {
                variant: variant.unwrap_or(primary),
                primary,
                entry: entry.clone(),
            };
            return Ok((self.answer(&entry, request, now, Outcome::Stale), Some(refresh)));
        }
        let serve_stale_on_error = usable_stale && staleness <= entry.stale_if_error;
        match self.fetch_and_store(fetch, request, ctx, &primary, Some(&entry)).await {
            Ok((response, _)) if serve_stale_on_error && response.status().is_server_error() => {
                Ok((self.answer(&entry, request, now, Outcome::Stale), None))
            }
            Err(_) if serve_stale_on_error => Ok((self.answer(&entry, request, now, Outcome::Stale), None)),
            Ok((response, outcome)) => Ok((self.mark(response, outcome), None)),
            Err(error) => Err(error),
        }
    }

    /// Whether this request's answer may be looked up and stored: a
    /// consumer's answer only in a cache keyed by consumer, or one the
    /// config declares the same for everyone (`shared: true`).
    fn may_share(&self, ctx: &RequestContext<'_>) -> bool {
        let identified = ctx.identity.as_ref().is_some_and(|identity| !identity.anonymous);
        !identified || self.settings.key.consumer || self.settings.shared
    }

    /// Revalidates an answer served stale (`stale-while-revalidate`), once
    /// at a time per answer, off the client's way.
    pub async fn refresh(
        &self,
        job: Refresh,
        request: &http::request::Parts,
        ctx: &RequestContext<'_>,
        fetch: &mut dyn Upstream,
    ) {
        let Some(_leader) = self.flights.try_lead(job.variant) else {
            return;
        };
        if let Err(error) = self
            .fetch_and_store(fetch, request, ctx, &job.primary, Some(&job.entry))
            .await
        {
            tracing::debug!(route = &*self.route, %error, "a background refresh failed; the stale answer stays");
        }
    }

    /// The stored answer for the request, and its variant's key when the
    /// answer varies (`None`: it is stored under the primary key).
    async fn find(&self, primary: &Key, request: &http::request::Parts) -> Option<(Option<Key>, Arc<Entry>)> {
        let slot = self.store.get(primary).await?;
        match &*slot {
            Slot::Answer(entry) => Some((None, entry.clone())),
            Slot::Varies(names) => {
                let variant = key::variant(primary, names, &request.headers);
                match &*self.store.get(&variant).await? {
                    Slot::Answer(entry) => Some((Some(variant), entry.clone())),
                    Slot::Varies(_) => None,
                }
            }
        }
    }

    /// A stored answer for the client: with its `Age`, or a 304 when the
    /// client's own conditions hold.
    fn answer(
        &self,
        entry: &Entry,
        request: &http::request::Parts,
        now: SystemTime,
        outcome: Outcome,
    ) -> Response<ResponseBody> {
        // Into a map this thread keeps (the client's writer gives it back),
        // with room for `Age` and the cache's mark: a clone of the stored
        // map is an allocation of its exact size, grown again at once.
        let mut headers = crate::header_maps::take(entry.headers.len() + 2);
        for (name, value) in &entry.headers {
            headers.append(name.clone(), value.clone());
        }
        headers.insert(header::AGE, HeaderValue::from(entry.age(now).as_secs()));
        let response = if entry.status == StatusCode::OK && not_modified(&request.headers, &headers) {
            for name in [header::CONTENT_LENGTH, header::CONTENT_TYPE, header::TRANSFER_ENCODING] {
                headers.remove(name);
            }
            let mut response = Response::new(ResponseBody::empty());
            *response.status_mut() = StatusCode::NOT_MODIFIED;
            *response.headers_mut() = headers;
            response
        } else {
            let body = if request.method == Method::HEAD {
                Bytes::new()
            } else {
                entry.body.clone()
            };
            let mut response = Response::new(ResponseBody::full(body));
            *response.status_mut() = entry.status;
            *response.headers_mut() = headers;
            response
        };
        self.mark(response, outcome)
    }

    fn mark(&self, mut response: Response<ResponseBody>, outcome: Outcome) -> Response<ResponseBody> {
        self.lookups[outcome as usize]
            .get_or_init(|| self.metrics.cache_lookups(&self.route, outcome.label()))
            .inc();
        if let Some(name) = &self.settings.header {
            response
                .headers_mut()
                .insert(name.clone(), HeaderValue::from_static(outcome.as_str()));
        }
        response
    }

    /// After an unsafe method succeeded: its URL, and the `Location` and
    /// `Content-Location` it names on the same host, are forgotten.
    async fn invalidate(&self, request: &http::request::Parts, response: &Response<ResponseBody>) {
        let url = key::url(request);
        self.store.invalidate_url(&url).await;
        let host = url.split('/').next().unwrap_or_default().to_string();
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(target) = response.headers().get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            let Ok(uri) = target.parse::<http::Uri>() else { continue };
            let same_host = uri.host().is_none_or(|h| h.eq_ignore_ascii_case(&host));
            if let (true, Some(path)) = (same_host, uri.path_and_query()) {
                self.store.invalidate_url(&format!("{host}{path}")).await;
            }
        }
    }
}

/// An answer served stale, to revalidate after (`Cache::refresh`).
pub struct Refresh {
    /// Where the answer is stored: its variant is found from there, by the
    /// `Vary` of the new answer.
    primary: Key,
    /// The variant it refreshes: one refresh per variant at a time.
    variant: Key,
    entry: Arc<Entry>,
}

/// The request as sent upstream to fill the cache: the client's own
/// conditions are the cache's to answer, so they do not go upstream.
fn upstream_head(request: &http::request::Parts) -> http::request::Parts {
    let mut head = clone_head(request);
    for name in [
        header::IF_NONE_MATCH,
        header::IF_MODIFIED_SINCE,
        header::IF_MATCH,
        header::IF_UNMODIFIED_SINCE,
        header::IF_RANGE,
    ] {
        head.headers.remove(name);
    }
    head
}

impl Cache {
    /// The request as the policy sees and keeps it: the query as the key
    /// reads it, secrets replaced by a mark, and the client's directives
    /// gone when they are ignored.
    fn policy_request(&self, request: &http::request::Parts) -> http::request::Parts {
        let mut head = clone_head(request);
        if let Some(uri) = key::keyed_uri(&request.uri, &self.settings.key.query) {
            head.uri = uri;
        }
        for name in SECRET_HEADERS {
            if head.headers.contains_key(name) {
                head.headers.insert(name, HeaderValue::from_static("[redacted]"));
            }
        }
        if !self.settings.honor_client {
            head.headers.remove(header::CACHE_CONTROL);
            head.headers.remove(header::PRAGMA);
        }
        head
    }
}
