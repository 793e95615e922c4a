//! Who may connect, and how often: a listener's connection caps and per-IP
//! rates, checked when a connection is accepted, before a byte of it is read,
//! and the per-IP request rate, checked before a request is routed.
//!
//! Counts live as long as the listener (a reload that keeps the listener
//! keeps them); the limits are read from its current settings.

use std::collections::hash_map::{Entry, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// A listener's admission limits, from `limits`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct AdmissionLimits {
    pub max_connections: Option<usize>,
    pub max_connections_per_ip: Option<usize>,
    pub connection_rate_per_ip: Option<Rate>,
    pub request_rate_per_ip: Option<Rate>,
}

impl AdmissionLimits {
    fn per_ip(&self) -> bool {
        self.max_connections_per_ip.is_some()
            || self.connection_rate_per_ip.is_some()
            || self.request_rate_per_ip.is_some()
    }
}

/// `count` events every `per`, in bursts of up to `count`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

/// Why a connection was refused, as the metrics and the log say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    MaxConnections,
    MaxConnectionsPerIp,
    ConnectionRatePerIp,
}

impl Refusal {
    pub fn reason(self) -> &'static str {
        match self {
            Refusal::MaxConnections => "max_connections",
            Refusal::MaxConnectionsPerIp => "max_connections_per_ip",
            Refusal::ConnectionRatePerIp => "connection_rate_per_ip",
        }
    }
}

/// Sharded so that accepting and closing connections from different
/// addresses do not wait on one lock.
const SHARDS: usize = 16;
/// A shard this full drops the addresses it no longer needs to remember.
const SWEEP_AT: usize = 4096;

pub struct Admission {
    open: AtomicUsize,
    hasher: RandomState,
    clients: [Mutex<HashMap<IpAddr, Arc<Client>>>; SHARDS],
}

/// One client address: its open connections and its rate buckets.
#[derive(Debug, Default)]
struct Client {
    connections: AtomicUsize,
    accepts: Mutex<Bucket>,
    requests: Mutex<Bucket>,
}

/// A token bucket; `None` until first used, which is a full bucket.
#[derive(Debug, Default)]
struct Bucket(Option<(f64, Instant)>);

impl Bucket {
    /// Takes one token, or says how long until one is there.
    fn take(&mut self, rate: Rate, now: Instant) -> Result<(), Duration> {
        let capacity = f64::from(rate.count.max(1));
        let per_token = rate.per.as_secs_f64() / capacity;
        let tokens = match self.0 {
            None => capacity,
            Some((tokens, at)) => (tokens + now.saturating_duration_since(at).as_secs_f64() / per_token).min(capacity),
        };
        if tokens >= 1.0 {
            self.0 = Some((tokens - 1.0, now));
            Ok(())
        } else {
            self.0 = Some((tokens, now));
            Err(Duration::from_secs_f64((1.0 - tokens) * per_token))
        }
    }

    /// True once the bucket would be full again: nothing is left to remember.
    fn refilled(&self, rate: Option<Rate>, now: Instant) -> bool {
        match (self.0, rate) {
            (Some((_, at)), Some(rate)) => now.saturating_duration_since(at) >= rate.per,
            _ => true,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; counts are still whole.
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Default for Admission {
    fn default() -> Self {
        Admission {
            open: AtomicUsize::new(0),
            hasher: RandomState::new(),
            clients: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl Admission {
    /// Admits a connection from `peer` to the listener `name` under its
    /// `limits`, or logs and counts why not. The connection counts until the
    /// returned guard is dropped.
    pub fn admit(
        self: &Arc<Self>,
        peer: std::net::SocketAddr,
        name: &str,
        limits: &AdmissionLimits,
        metrics: &crate::telemetry::metrics::Metrics,
    ) -> Result<Admitted, Refusal> {
        self.admit_ip(peer.ip(), limits).inspect_err(|refusal| {
            tracing::debug!(listener = name, %peer, reason = refusal.reason(), "connection refused");
            metrics.listener_refused(name, refusal.reason());
        })
    }

    fn admit_ip(self: &Arc<Self>, ip: IpAddr, limits: &AdmissionLimits) -> Result<Admitted, Refusal> {
        let open = self.open.fetch_add(1, Ordering::Relaxed) + 1;
        let mut admitted = Admitted {
            admission: self.clone(),
            client: None,
        };
        if limits.max_connections.is_some_and(|most| open > most) {
            return Err(Refusal::MaxConnections);
        }
        if !limits.per_ip() {
            return Ok(admitted);
        }
        let client = self.client(ip, limits);
        let connections = client.connections.fetch_add(1, Ordering::Relaxed) + 1;
        admitted.client = Some(client.clone());
        if limits.max_connections_per_ip.is_some_and(|most| connections > most) {
            return Err(Refusal::MaxConnectionsPerIp);
        }
        if let Some(rate) = limits.connection_rate_per_ip {
            if lock(&client.accepts).take(rate, Instant::now()).is_err() {
                return Err(Refusal::ConnectionRatePerIp);
            }
        }
        Ok(admitted)
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    fn client(&self, ip: IpAddr, limits: &AdmissionLimits) -> Arc<Client> {
        let shard = &self.clients[self.hasher.hash_one(ip) as usize % SHARDS];
        let mut clients = lock(shard);
        if clients.len() >= SWEEP_AT && !clients.contains_key(&ip) {
            let now = Instant::now();
            clients.retain(|_, client| {
                client.connections.load(Ordering::Relaxed) > 0
                    || !lock(&client.accepts).refilled(limits.connection_rate_per_ip, now)
                    || !lock(&client.requests).refilled(limits.request_rate_per_ip, now)
            });
        }
        match clients.entry(ip) {
            Entry::Occupied(entry) => entry.get().clone(),
            Entry::Vacant(entry) => entry.insert(Arc::default()).clone(),
        }
    }
}

/// An admitted connection, counted while it lives.
pub struct Admitted {
    admission: Arc<Admission>,
    client: Option<Arc<Client>>,
}

impl Admitted {
    /// Counts one request against the client's request rate: `Err` holds
    /// how long until the next would be allowed.
    pub fn request(&self, limits: &AdmissionLimits) -> Result<(), Duration> {
        match (limits.request_rate_per_ip, &self.client) {
            (Some(rate), Some(client)) => lock(&client.requests).take(rate, Instant::now()),
            _ => Ok(()),
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(client) = &self.client {
            client.connections.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn connections_are_capped_overall_and_per_ip_and_freed_on_drop() {
        let admission = Arc::new(Admission::default());
        let limits = AdmissionLimits {
            max_connections: Some(3),
            max_connections_per_ip: Some(2),
            ..AdmissionLimits::default()
        };
        let a1 = admission.admit_ip(ip(1), &limits).expect("first");
        let a2 = admission
            .admit_ip(ip(1), &limits)
            .expect("second from the same address");
        assert_eq!(
            admission.admit_ip(ip(1), &limits).err(),
            Some(Refusal::MaxConnectionsPerIp)
        );
        let b1 = admission.admit_ip(ip(2), &limits).expect("another address");
        assert_eq!(admission.admit_ip(ip(3), &limits).err(), Some(Refusal::MaxConnections));
        assert_eq!(admission.open(), 3, "refused connections are not counted");
        drop(a1);
        let _a3 = admission.admit_ip(ip(1), &limits).expect("a slot freed");
        drop((a2, b1));
        assert_eq!(admission.open(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn rates_refill_over_time() {
        let admission = Arc::new(Admission::default());
        let rate = Rate {
            count: 2,
            per: Duration::from_secs(1),
        };
        let limits = AdmissionLimits {
            connection_rate_per_ip: Some(rate),
            request_rate_per_ip: Some(rate),
            ..AdmissionLimits::default()
        };
        let first = admission.admit_ip(ip(1), &limits).expect("burst 1");
        let _second = admission.admit_ip(ip(1), &limits).expect("burst 2");
        assert_eq!(
            admission.admit_ip(ip(1), &limits).err(),
            Some(Refusal::ConnectionRatePerIp)
        );
        let _other = admission
            .admit_ip(ip(2), &limits)
            .expect("addresses have their own buckets");
        tokio::time::advance(Duration::from_millis(500)).await;
        let _third = admission.admit_ip(ip(1), &limits).expect("half a second refills one");

        assert_eq!(first.request(&limits), Ok(()));
        assert_eq!(first.request(&limits), Ok(()));
        let wait = first.request(&limits).expect_err("the third request in a burst of two");
        assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
    }

    #[test]
    fn without_per_ip_limits_no_address_is_remembered() {
        let admission = Arc::new(Admission::default());
        let admitted = admission
            .admit_ip(ip(1), &AdmissionLimits::default())
            .expect("no limits");
        assert!(admitted.client.is_none());
        assert!(admission.clients.iter().all(|shard| lock(shard).is_empty()));
    }
}
