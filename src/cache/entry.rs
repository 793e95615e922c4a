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

/// An answer's freshness lifetime and the time its age was zero, read
/// from its policy when it is stored.
///
/// An answer with nothing left to live (`no-cache`, `max-age=0`, or one
/// that arrived already stale by its `Age` or `Date`) gets a lifetime of
/// zero: stale from birth, whatever the clock reads next. Taking its age as
/// its lifetime instead would make it fresh again to a clock read a moment
/// earlier (two clocks read in turn, or a paused test clock), and a
/// `no-cache` answer would be served unrevalidated. Its staleness is then
/// counted from birth, which can only refuse a stale use, never allow one.
pub fn lifetime_and_birth(policy: &CachePolicy, now: SystemTime) -> (Duration, SystemTime) {
    let age = policy.age(now);
    let born = now.checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
    let time_to_live = policy.time_to_live(now);
    if time_to_live.is_zero() {
        (Duration::ZERO, born)
    } else {
        (time_to_live.saturating_add(age), born)
    }
}

/// What the primary key holds: the answer, or, for answers with `Vary`,
/// the names of the request headers that pick the variant.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Slot {
    Answer(Arc<Entry>),
    Varies(Vec<String>),
}

impl Entry {
    /// Bytes it holds, roughly: what the memory store's bound counts. The
    /// headers twice (here and in the policy), each field with its place
    /// in a header map (bucket and index, 64 bytes); 2 KiB for the rest (the
    /// policy's request, the entry, the store's own bookkeeping): a 5-byte
    /// answer with four fields measured about 3 KiB of the process's memory.
    pub fn weight(&self) -> u32 {
        let headers: usize = self.headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 64).sum();
        u32::try_from(self.body.len() + 2 * headers + self.url.len() + 2048).unwrap_or(u32::MAX)
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_cache_semantics::CacheOptions;

    fn policy(response: &[(&str, &str)], at: SystemTime) -> CachePolicy {
        let request = http::Request::get("http://example.test/")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let mut builder = http::Response::builder();
        for (name, value) in response {
            builder = builder.header(*name, *value);
        }
        let response = builder.body(()).unwrap().into_parts().0;
        CachePolicy::new_options(&request, &response, at, CacheOptions::default())
    }

    fn entry(policy: CachePolicy, now: SystemTime) -> Entry {
        let (lifetime, born) = lifetime_and_birth(&policy, now);
        Entry {
            policy,
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            url: String::new(),
            tags: Vec::new(),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::ZERO,
            must_revalidate: false,
            lifetime,
            born,
        }
    }

    #[test]
    fn an_answer_with_no_time_to_live_is_stale_even_to_an_earlier_clock_reading() {
        let now = SystemTime::now();
        let earlier = now - Duration::from_nanos(1);
        // `Age: 1`: the answer arrives a second old.
        for cache_control in ["no-cache", "max-age=0", "max-age=1"] {
            let stored = entry(policy(&[("cache-control", cache_control), ("age", "1")], now), now);
            assert!(!stored.is_fresh(now), "{cache_control}");
            assert!(
                !stored.is_fresh(earlier),
                "{cache_control}: fresh to a clock read a moment earlier"
            );
            assert!(stored
                .staleness(now)
                .is_some_and(|stale| stale >= Duration::from_secs(1)));
        }
        let stored = entry(policy(&[("cache-control", "max-age=60"), ("age", "1")], now), now);
        assert!(stored.is_fresh(now) && stored.is_fresh(earlier));
        let left = stored.time_to_live(now);
        assert!(
            left > Duration::from_secs(58) && left <= Duration::from_secs(59),
            "{left:?}"
        );
    }
}
