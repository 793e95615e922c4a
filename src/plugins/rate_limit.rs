//! `rate_limit`: one or more limits per route, counted per key (consumer,
//! client IP, header, path parameter, route, or a combination), in this
//! process or across the cluster through Redis. Every response on the route
//! carries `RateLimit-Policy` and `RateLimit` (draft-ietf-httpapi-
//! ratelimit-headers); a refused request gets 429 with `Retry-After`.

use super::{Decision, Flow, Phase, PhaseFuture, Plugin, RequestContext, Setup, at_once, waiting};
use crate::config::units::Duration as ConfigDuration;
use crate::error::{ErrorKind, ProxyError};
use crate::ratelimit::calendar::Period;
use crate::ratelimit::local::LocalStore;
use crate::ratelimit::redis::RedisStore;
use crate::ratelimit::{Algorithm, Limit, Verdict, Verdicts};
use crate::telemetry::metrics::Metrics;
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::hash::Hasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

static RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
static RATELIMIT: HeaderName = HeaderName::from_static("ratelimit");

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    limits: Vec<LimitConfig>,
    #[serde(default = "default_by")]
    by: By,
    /// For `calendar` limits: where the day starts.
    #[serde(default = "default_timezone")]
    timezone: String,
    /// `local` (this process) or `redis` (`cluster.redis`, shared by every node).
    store: Option<StoreChoice>,
    /// When Redis cannot be reached: `allow` the request (and log) or `deny` it (503).
    #[serde(default)]
    on_store_error: OnError,
    #[serde(default = "default_redis_timeout")]
    redis_timeout: ConfigDuration,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
struct LimitConfig {
    requests: u64,
    per: ConfigDuration,
    #[serde(default)]
    algorithm: AlgorithmChoice,
    /// GCRA only: requests allowed at once (default: `requests`).
    burst: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum AlgorithmChoice {
    #[default]
    Gcra,
    SlidingWindow,
    Calendar,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum StoreChoice {
    Local,
    Redis,
}

#[derive(Debug, Default, Deserialize, Clone, Copy, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
enum OnError {
    #[default]
    Allow,
    Deny,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
enum By {
    One(String),
    Many(Vec<String>),
}

fn default_by() -> By {
    By::One("consumer".into())
}
fn default_timezone() -> String {
    "UTC".into()
}
fn default_redis_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_millis(250))
}

/// One part of a limit's key.
#[derive(Debug, Clone)]
pub enum KeyPart {
    Consumer,
    ClientIp,
    Route,
    Header(HeaderName),
    Param(String),
}

impl KeyPart {
    /// `consumer`, `client_ip`, `route`, `header:NAME`, `param:NAME`.
    pub fn parse(text: &str) -> Result<KeyPart, String> {
        match text.split_once(':') {
            None => match text {
                "consumer" => Ok(KeyPart::Consumer),
                "client_ip" => Ok(KeyPart::ClientIp),
                "route" => Ok(KeyPart::Route),
                _ => Err(format!(
                    "{text:?} is not a key: use consumer, client_ip, route, header:NAME or param:NAME"
                )),
            },
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(KeyPart::Header)
                .map_err(|_| format!("{name:?} is not a header name")),
            Some(("param", name)) if !name.is_empty() => Ok(KeyPart::Param(name.to_string())),
            _ => Err(format!("{text:?} is not a key: use header:NAME or param:NAME")),
        }
    }

    /// This part's value for a request. A missing consumer counts as
    /// `anonymous`; a missing header or parameter as the empty value, so all
    /// requests without it share one allowance.
    pub fn value<'r>(&self, request: &'r http::request::Parts, ctx: &'r RequestContext<'_>) -> Cow<'r, str> {
        match self {
            KeyPart::Consumer => Cow::Borrowed(ctx.identity.as_ref().map_or(crate::consumers::ANONYMOUS, |i| &i.name)),
            KeyPart::ClientIp => Cow::Owned(ctx.client.ip().to_string()),
            KeyPart::Route => Cow::Borrowed(ctx.route),
            KeyPart::Header(name) => {
                Cow::Borrowed(request.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or(""))
            }
            KeyPart::Param(name) => Cow::Borrowed(
                ctx.params
                    .iter()
                    .find(|(n, _)| &**n == name.as_str())
                    .map_or("", |(_, v)| v.as_str()),
            ),
        }
    }

    /// Feeds this part's value to a key's hash: what [`KeyPart::value`]
    /// says, without allocating for a client address (the key of most limits).
    pub fn feed(&self, feed: &mut impl FnMut(&[u8]), request: &http::request::Parts, ctx: &RequestContext<'_>) {
        match self {
            KeyPart::ClientIp => {
                let mut buffer = [0u8; crate::ip_text::MAX_LEN];
                feed(crate::ip_text::in_buffer(ctx.client.ip(), &mut buffer));
            }
            _ => feed(self.value(request, ctx).as_bytes()),
        }
    }
}

enum Store {
    Local(Arc<LocalStore>),
    Redis {
        store: Arc<RedisStore>,
        timeout: Duration,
        on_error: OnError,
    },
}

pub struct RateLimit {
    /// Where counts are kept apart: the route, or `global` for a global block.
    scope: String,
    limits: Vec<Limit>,
    by: Vec<KeyPart>,
    zone: jiff::tz::TimeZone,
    store: Store,
    policy: HeaderValue,
    metrics: Arc<Metrics>,
    last_error_log: AtomicU64,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let mut errors = Vec::new();
    if config.limits.is_empty() {
        errors.push(setup.error("limits", "list at least one limit, like [{ requests: 100, per: 1m }]"));
    }
    let mut limits = Vec::new();
    for (i, limit) in config.limits.iter().enumerate() {
        let at = format!("limits[{i}]");
        if limit.requests == 0 {
            errors.push(setup.error(
                &format!("{at}.requests"),
                "must be at least 1 (to refuse everything, use a respond route)",
            ));
            continue;
        }
        if limit.per.get() < Duration::from_millis(1) {
            errors.push(setup.error(&format!("{at}.per"), "must be at least 1ms"));
            continue;
        }
        if limit.burst.is_some() && limit.algorithm != AlgorithmChoice::Gcra {
            errors.push(setup.error(&format!("{at}.burst"), "`burst` applies to the gcra algorithm only"));
        }
        let algorithm = match limit.algorithm {
            AlgorithmChoice::Gcra => Algorithm::Gcra {
                burst: limit.burst.unwrap_or(limit.requests).max(1),
            },
            AlgorithmChoice::SlidingWindow => Algorithm::SlidingWindow,
            AlgorithmChoice::Calendar => match Period::from_duration(limit.per.get()) {
                Some(period) => Algorithm::Calendar(period),
                None => {
                    errors.push(setup.error(&format!("{at}.per"), "a calendar quota is per 1h, 1d, 1w or 1month"));
                    continue;
                }
            },
        };
        let name = match algorithm {
            Algorithm::Calendar(period) => format!("{}/{}", limit.requests, period.name()),
            _ => format!("{}/{}", limit.requests, humantime::format_duration(limit.per.get())),
        };
        limits.push(Limit {
            requests: limit.requests,
            per: limit.per.get(),
            algorithm,
            name,
        });
    }
    let texts = match &config.by {
        By::One(text) => vec![text.clone()],
        By::Many(texts) => texts.clone(),
    };
    let mut by = Vec::new();
    for text in &texts {
        match KeyPart::parse(text) {
            Ok(part) => by.push(part),
            Err(e) => errors.push(setup.error("by", e)),
        }
    }
    let zone = jiff::tz::TimeZone::get(&config.timezone)
        .map_err(|_| {
            errors.push(setup.error(
                "timezone",
                format!("{:?} is not a time zone, like UTC or Europe/Berlin", config.timezone),
            ))
        })
        .ok();
    let context = setup.context;
    let store = match (config.store, context.redis) {
        (Some(StoreChoice::Local), _) | (None, None) => Some(Store::Local(context.local_limits.clone())),
        (Some(StoreChoice::Redis) | None, Some(redis)) => Some(Store::Redis {
            store: redis.clone(),
            timeout: config.redis_timeout.get(),
            on_error: config.on_store_error,
        }),
        (Some(StoreChoice::Redis), None) => {
            errors.push(setup.error("store", "`store: redis` needs `cluster: { redis: redis://host:port }`"));
            None
        }
    };
    let policy = limits
        .iter()
        .map(|l| format!("\"{}\";q={};w={}", l.name, l.requests, l.per.as_secs().max(1)))
        .collect::<Vec<_>>()
        .join(", ");
    let policy = HeaderValue::from_str(&policy).ok();
    match (store, zone, policy) {
        (Some(store), Some(zone), Some(policy)) if errors.is_empty() => Ok(Arc::new(RateLimit {
            scope: setup.scope.to_string(),
            limits,
            by,
            zone,
            store,
            policy,
            metrics: context.metrics.clone(),
            last_error_log: AtomicU64::new(0),
        })),
        _ => Err(errors),
    }
}

fn now_ms() -> u64 {
    crate::clock::since_epoch().as_millis() as u64
}

impl RateLimit {
    /// The request's key as text, for `explain`: what the hashes are fed.
    fn key(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> String {
        let mut key = Vec::with_capacity(64);
        self.feed_key(&mut |bytes| key.extend_from_slice(bytes), request, ctx);
        String::from_utf8_lossy(&key).into_owned()
    }

    /// Feeds the request's key to a hash: the scope and each `by` part,
    /// each followed by 0x1f (which no header value, path parameter or
    /// consumer name holds).
    fn feed_key(&self, feed: &mut impl FnMut(&[u8]), request: &http::request::Parts, ctx: &RequestContext<'_>) {
        feed(self.scope.as_bytes());
        feed(b"\x1f");
        for part in &self.by {
            part.feed(feed, request, ctx);
            feed(b"\x1f");
        }
    }

    /// The local store's verdicts: counted at once, nothing to wait for.
    fn local_verdicts(&self, store: &LocalStore, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Verdicts {
        let mut key = store.key_hasher();
        self.feed_key(&mut |bytes| key.write(bytes), request, ctx);
        // Each limit's counter: the request's key and the limit's name.
        let hashed: smallvec::SmallVec<[(u64, &Limit); 4]> = self
            .limits
            .iter()
            .map(|limit| {
                let mut counter = key.clone();
                counter.write(limit.name.as_bytes());
                (counter.finish(), limit)
            })
            .collect();
        store.check(&hashed, now_ms(), &self.zone)
    }

    /// The Redis hash tag of the request's key: a SHA-256 (every node must
    /// find the same counters, so no per-process secret), 128 bits of it.
    /// Made before the Redis check's future, which then carries a string,
    /// not the hasher.
    fn redis_tag(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> String {
        let mut key = Sha256::new();
        self.feed_key(&mut |bytes| key.update(bytes), request, ctx);
        base16ct::lower::encode_string(&key.finalize()[..16])
    }

    /// Redis's verdicts, in one round trip.
    async fn redis_verdicts(&self, store: &RedisStore, timeout: Duration, tag: String) -> Result<Verdicts, String> {
        let now = now_ms();
        // One hash tag for the request's keys: they share a Redis Cluster slot.
        let checks: Vec<(String, &Limit, (u64, u64))> = self
            .limits
            .iter()
            .map(|limit| {
                let bounds = match limit.algorithm {
                    Algorithm::Calendar(period) => period.bounds(now, &self.zone),
                    _ => (0, 0),
                };
                (format!("portico:rl:{{{tag}}}:{}", limit.name), limit, bounds)
            })
            .collect();
        store.check(&checks, timeout).await.map(Verdicts::from_vec)
    }

    /// The request's fate by the verdicts: on, with the limits' state for
    /// the response, or 429.
    fn decide(&self, ctx: &mut RequestContext<'_>, verdicts: Result<Verdicts, String>) -> Result<Flow, ProxyError> {
        let verdicts = match verdicts {
            Ok(verdicts) => verdicts,
            Err(error) => return self.store_failed(ctx, &error),
        };
        ctx.response_headers
            .push((RATELIMIT_POLICY.clone(), self.policy.clone()));
        if let Some(state) = self.state_header(&verdicts) {
            ctx.response_headers.push((RATELIMIT.clone(), state));
        }
        match self.limits.iter().zip(&verdicts).find(|(_, v)| !v.allowed) {
            None => Ok(Flow::Continue),
            Some((limit, verdict)) => {
                let mut error = ProxyError::rejected(
                    ErrorKind::RateLimited,
                    "rate_limit",
                    "limit_exceeded",
                    format!(
                        "the limit of {} is used up; retry in {} s",
                        limit.name, verdict.reset_secs
                    ),
                );
                error.retry_after = Some(u32::try_from(verdict.reset_secs.max(1)).unwrap_or(u32::MAX));
                Err(error)
            }
        }
    }

    /// `RateLimit: "10/1s";r=3;t=1, ...` for what the verdicts say.
    fn state_header(&self, verdicts: &[Verdict]) -> Option<HeaderValue> {
        // Written on the stack and copied once into the header's own
        // allocation, of its exact size (a `String` handed over with room to
        // spare cost the header a second allocation); the numbers by itoa,
        // not the formatter (this runs on every request).
        let mut text = smallvec::SmallVec::<[u8; 128]>::new();
        let mut number = itoa::Buffer::new();
        for (limit, verdict) in self.limits.iter().zip(verdicts) {
            if !text.is_empty() {
                text.extend_from_slice(b", ");
            }
            text.push(b'"');
            text.extend_from_slice(limit.name.as_bytes());
            text.extend_from_slice(b"\";r=");
            text.extend_from_slice(number.format(verdict.remaining).as_bytes());
            text.extend_from_slice(b";t=");
            text.extend_from_slice(number.format(verdict.reset_secs).as_bytes());
        }
        HeaderValue::from_bytes(&text).ok()
    }

    fn store_failed(&self, ctx: &RequestContext<'_>, error: &str) -> Result<Flow, ProxyError> {
        self.metrics.rate_limit_store_error(ctx.route);
        let now = now_ms();
        // One warning per 10 seconds: a Redis outage must not flood the log.
        if now.saturating_sub(self.last_error_log.swap(now, Ordering::Relaxed)) > 10_000 {
            tracing::warn!(route = ctx.route, %error, "the rate-limit store cannot be reached");
        }
        let on_error = match &self.store {
            Store::Redis { on_error, .. } => *on_error,
            Store::Local(_) => OnError::Allow,
        };
        match on_error {
            OnError::Allow => Ok(Flow::Continue),
            OnError::Deny => {
                let mut error = ProxyError::rejected(
                    ErrorKind::LimitUnavailable,
                    "rate_limit",
                    "store_unavailable",
                    "rate limits cannot be checked now; try again shortly",
                );
                error.retry_after = Some(1);
                Err(error)
            }
        }
    }
}

impl Plugin for RateLimit {
    fn name(&self) -> &'static str {
        "rate_limit"
    }

    fn phase(&self) -> Phase {
        Phase::Limit
    }

    fn on_request<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        match &self.store {
            Store::Local(store) => at_once(self.decide(ctx, Ok(self.local_verdicts(store, request, ctx)))),
            Store::Redis { store, timeout, .. } => waiting(async move {
                let tag = self.redis_tag(request, ctx);
                let verdicts = self.redis_verdicts(store, *timeout, tag).await;
                self.decide(ctx, verdicts)
            }),
        }
    }

    fn explain(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        let limits: Vec<&str> = self.limits.iter().map(|l| l.name.as_str()).collect();
        let store = match self.store {
            Store::Local(_) => "local",
            Store::Redis { .. } => "redis",
        };
        let key = self.key(request, ctx);
        let shown: Vec<&str> = key.split('\u{1f}').skip(1).filter(|p| !p.is_empty()).collect();
        Decision::pass(format!(
            "{store}, {} by key {:?} (not charged by explain)",
            limits.join(" and "),
            shown.join("/")
        ))
    }
}
