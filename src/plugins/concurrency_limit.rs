//! `concurrency_limit`: at most `max` requests in flight per key (route,
//! upstream, consumer, client IP, header), counted until the response body
//! has been sent. Requests over the limit wait in a bounded queue for up to
//! `queue_timeout`, then get 503 with `Retry-After`.
//!
//! The counters live as long as the gateway, not the config: a reload does
//! not forget the requests in flight.

use super::rate_limit::KeyPart;
use super::{Decision, Flow, Phase, PhaseFuture, Plugin, RequestContext, Setup, waiting};
use crate::config::units::Duration as ConfigDuration;
use crate::error::{ErrorKind, ProxyError};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Semaphore;

/// Distinct keys tracked before idle ones are dropped.
const KEY_LIMIT: usize = 100_000;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    max: usize,
    /// `route` (default), `upstream`, `consumer`, `client_ip`, `header:NAME`.
    #[serde(default = "default_by")]
    by: String,
    /// Requests that may wait for a slot; 0 refuses at once.
    #[serde(default)]
    queue: usize,
    #[serde(default = "default_queue_timeout")]
    queue_timeout: ConfigDuration,
}

fn default_by() -> String {
    "route".into()
}
fn default_queue_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(1)
}

/// The in-flight counters of one `concurrency_limit` block, by key.
#[derive(Default)]
pub struct Slots {
    /// Keyed by a hash of the key: a client-chosen key (a header) costs 8
    /// bytes here however long it is.
    by_key: Mutex<HashMap<u64, Arc<KeySlots>>>,
    /// SipHash-1-3 with this process's random key, kept with the counters:
    /// a client cannot choose a key whose slots are another client's, as
    /// it could solve a fast hash's mixing for.
    keys: RandomState,
}

struct KeySlots {
    semaphore: Arc<Semaphore>,
    waiting: AtomicUsize,
}

enum By {
    Upstream,
    Part(KeyPart),
}

pub struct ConcurrencyLimit {
    max: usize,
    queue: usize,
    queue_timeout: Duration,
    by: By,
    slots: Arc<Slots>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    if config.max == 0 {
        return Err(vec![setup.error("max", "must be at least 1")]);
    }
    let by = match config.by.as_str() {
        "upstream" => By::Upstream,
        other => By::Part(KeyPart::parse(other).map_err(|e| vec![setup.error("by", e)])?),
    };
    // Shared by every route a global block applies to, and kept across reloads.
    let key = format!(
        "concurrency_limit/{}/{}/{}/{}",
        setup.scope, setup.at, config.by, config.max
    );
    let slots = setup.context.shared.get_or_insert(&key, Slots::default);
    Ok(Arc::new(ConcurrencyLimit {
        max: config.max,
        queue: config.queue,
        queue_timeout: config.queue_timeout.get(),
        by,
        slots,
    }))
}

impl ConcurrencyLimit {
    fn key(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> u64 {
        let mut key = self.slots.keys.build_hasher();
        match &self.by {
            By::Upstream => key.write(ctx.upstream.unwrap_or("").as_bytes()),
            By::Part(part) => part.feed(&mut |bytes| key.write(bytes), request, ctx),
        }
        key.finish()
    }

    fn slots_for(&self, key: u64) -> Arc<KeySlots> {
        let mut by_key = self.slots.by_key.lock().unwrap_or_else(|p| p.into_inner());
        if by_key.len() >= KEY_LIMIT && !by_key.contains_key(&key) {
            let max = self.max;
            by_key.retain(|_, s| s.semaphore.available_permits() < max || s.waiting.load(Ordering::Relaxed) > 0);
        }
        by_key
            .entry(key)
            .or_insert_with(|| {
                Arc::new(KeySlots {
                    semaphore: Arc::new(Semaphore::new(self.max)),
                    waiting: AtomicUsize::new(0),
                })
            })
            .clone()
    }
}

fn busy(detail: String) -> ProxyError {
    let mut error = ProxyError::rejected(
        ErrorKind::LimitUnavailable,
        "concurrency_limit",
        "too_many_in_flight",
        detail,
    );
    error.retry_after = Some(1);
    error
}

impl Plugin for ConcurrencyLimit {
    fn name(&self) -> &'static str {
        "concurrency_limit"
    }

    fn phase(&self) -> Phase {
        Phase::Limit
    }

    fn on_request<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        waiting(async move {
            let slots = self.slots_for(self.key(request, ctx));
            let permit = match slots.semaphore.clone().try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    if slots.waiting.fetch_add(1, Ordering::Relaxed) >= self.queue {
                        slots.waiting.fetch_sub(1, Ordering::Relaxed);
                        return Err(busy(format!("{} requests are in flight already", self.max)));
                    }
                    let waited =
                        tokio::time::timeout(self.queue_timeout, slots.semaphore.clone().acquire_owned()).await;
                    slots.waiting.fetch_sub(1, Ordering::Relaxed);
                    match waited {
                        Ok(Ok(permit)) => permit,
                        _ => return Err(busy(format!("no slot freed within {:?}", self.queue_timeout))),
                    }
                }
            };
            // Released when the response body has been sent (or the request fails).
            ctx.holds.push(Box::new(permit));
            Ok(Flow::Continue)
        })
    }

    fn explain(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        let slots = self.slots_for(self.key(request, ctx));
        let in_flight = self.max - slots.semaphore.available_permits();
        Decision::pass(format!("{in_flight} of {} in flight, queue {}", self.max, self.queue))
    }
}
