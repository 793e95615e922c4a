//! A stored response: what was answered, and the RFC 9111 policy that
//! says when it may be reused (`http-cache-semantics`).

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_cache_semantics::CachePolicy;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub policy: CachePolicy,
    #[serde(with = "http_serde::status_code")]
    pub status: StatusCode,
    /// The headers as answered (the policy may hold a changed copy).
    #[serde(with = "http_serde::header_map")]
    pub headers: HeaderMap,
    pub body: Bytes,
    /// `host/path?query`, for invalidation by URL and purges by prefix.
    pub url: String,
    /// From `Surrogate-Key` / `Cache-Tag`, for purges by key.
    pub tags: Vec<String>,
    /// `stale-while-revalidate` and `stale-if-error`, from the response or
    /// the route's defaults.
    pub stale_while_revalidate: Duration,
    pub stale_if_error: Duration,
    /// `must-revalidate` / `proxy-revalidate` / `no-cache`: never used stale.
    pub must_revalidate: bool,
    /// Its freshness lifetime, read from the policy when stored.
    pub lifetime: Duration,
    /// When its age was zero (its `Age` and the time since it was
    /// requested taken back from when it was stored): its age and freshness
    /// then cost a subtraction, not a reading of the policy's headers.
    /// Last, so that an entry written by an older Portico fails to decode
    /// (a miss) instead of decoding wrong.
    pub born: SystemTime,
}

/// What the primary key holds: the answer, or, for answers with `Vary`,
/// the names of the request headers that pick the variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Slot {
    Answer(Arc<Entry>),
    Varies(Vec<String>),
}

impl Entry {
    /// Bytes it holds, roughly: what the memory store's bound counts.
    pub fn weight(&self) -> u32 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 32).sum();
        u32::try_from(self.body.len() + 2 * headers + self.url.len() + 512).unwrap_or(u32::MAX)
    }

    /// How long after it stops being fresh it may still be of use: served
    /// stale, or revalidated with its validators.
    pub fn keep_for(&self, now: SystemTime) -> Duration {
        let revalidate = if super::headers::has_validators(&self.headers) {
            Duration::from_secs(600)
        } else {
            Duration::ZERO
        };
        self.time_to_live(now) + self.stale_while_revalidate.max(self.stale_if_error).max(revalidate)
    }

    /// Its `Age` (RFC 9111 section 4.2.3), as the policy counts it.
    pub fn age(&self, now: SystemTime) -> Duration {
        now.duration_since(self.born).unwrap_or_default()
    }

    /// Fresh for a request that asks nothing of its own (RFC 9111
    /// section 4.2): what `CachePolicy::before_request` answers then.
    pub fn is_fresh(&self, now: SystemTime) -> bool {
        self.age(now) < self.lifetime
    }

    /// How long it stays fresh.
    pub fn time_to_live(&self, now: SystemTime) -> Duration {
        self.lifetime.saturating_sub(self.age(now))
    }

    /// How long it has been stale, `None` while fresh.
    pub fn staleness(&self, now: SystemTime) -> Option<Duration> {
        (!self.is_fresh(now)).then(|| self.age(now) - self.lifetime)
    }
}
