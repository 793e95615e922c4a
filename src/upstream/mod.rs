//! Upstream pools: named sets of targets, how one is picked, and the
//! keep-alive connections that reach each target.

pub mod balance;
pub mod breaker;
pub mod compile;
pub mod connections;
pub mod discovery;
pub mod health;
pub mod health_check;
pub mod http1;
mod incoming;
pub mod retry;
pub mod transport;
mod window;

pub use balance::{Balancer, HashOn, PickContext};
pub use breaker::{BreakerPolicy, CircuitBreaker};
pub use connections::Lease;
pub use health::{Health, Outcome, PassivePolicy};
pub use health_check::ActiveCheck;
pub use incoming::Incoming;
pub use retry::{RetryBudget, RetryPolicy};
pub use transport::SendError;
pub use transport::Transport;

use crate::config::model::Balance;
use crate::telemetry::metrics::PoolMetrics;
use arc_swap::ArcSwap;
use connections::Connections;
use http::uri::Authority;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// One `host:port` in a pool.
#[derive(Debug)]
pub struct Target {
    /// As written in the config; names the target in logs.
    pub addr: Arc<str>,
    pub authority: Authority,
    /// Connect here directly when the target is an IP address.
    socket_addr: Option<SocketAddr>,
    /// The pool's protocol and TLS.
    transport: Arc<Transport>,
    /// The Host header requests carry unless the route preserves the client's.
    pub host_header: HeaderValue,
    pub weight: u32,
    in_flight: AtomicUsize,
    connections: Connections,
    pub health: Health,
    /// The target's own breaker, when the upstream has `circuit_breaker`.
    pub breaker: Option<CircuitBreaker>,
    /// Response-time estimate for `balance: ewma`.
    pub latency: balance::PeakEwma,
    /// Time to the response head, averaged over the last requests (an
    /// exponential average, 1/8 weight for each new one), in µs; 0 before any.
    recent_latency: std::sync::atomic::AtomicU64,
}

impl Target {
    pub fn new(addr: &str, weight: u32) -> Result<Target, String> {
        let authority = parse_target(addr)?;
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|_| format!("target {addr:?} is not a valid host"))?;
        Ok(Target {
            addr: addr.into(),
            socket_addr: connections::literal_addr(&authority),
            authority,
            host_header,
            weight: weight.max(1),
            in_flight: AtomicUsize::new(0),
            transport: Arc::default(),
            connections: Connections::default(),
            health: Health::default(),
            breaker: None,
            latency: balance::PeakEwma::default(),
            recent_latency: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Folds one response time into [`Target::recent_latency`]. A race with
    /// another request loses one sample, which an average can spare.
    fn record_latency(&self, latency: std::time::Duration) {
        use std::sync::atomic::Ordering;
        let sample = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX).max(1);
        let before = self.recent_latency.load(Ordering::Relaxed);
        let next = if before == 0 {
            sample
        } else {
            before - before / 8 + sample / 8
        };
        self.recent_latency.store(next.max(1), Ordering::Relaxed);
    }

    /// The recent average time to a response head, if any response came yet.
    pub fn recent_latency(&self) -> Option<std::time::Duration> {
        match self.recent_latency.load(std::sync::atomic::Ordering::Relaxed) {
            0 => None,
            micros => Some(std::time::Duration::from_micros(micros)),
        }
    }

    /// Connects to the target with the pool's protocol and TLS.
    pub fn with_transport(mut self, transport: Arc<Transport>) -> Target {
        self.transport = transport;
        self
    }

    /// Gives the target a breaker of its own.
    pub fn with_breaker(mut self, policy: Option<BreakerPolicy>) -> Target {
        self.breaker = policy.map(CircuitBreaker::new);
        self
    }

    /// May the target take this request? In half-open, this uses up a probe.
    fn admits(&self, upstream: &str) -> bool {
        if !self.health.available() {
            return false;
        }
        match self.breaker.as_ref().map(CircuitBreaker::allow) {
            None | Some(Ok(None)) => true,
            Some(Ok(Some(change))) => {
                breaker_log(upstream, Some(&self.addr), change);
                true
            }
            Some(Err(_)) => false,
        }
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// A request in flight to a target, counted until the guard is dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Target>);

impl InFlight {
    /// Counts a request as in flight to `target`, which it keeps (the
    /// picked target, without another reference count).
    pub fn to(target: Arc<Target>) -> InFlight {
        target.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(target)
    }

    pub fn target(&self) -> &Arc<Target> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request head without its body or extensions, to send again.
pub fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = http::Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

/// What an upstream response body holds of its target until it is done:
/// the in-flight count, and the connection, given back for reuse once the
/// body has been read whole.
pub struct Checkout {
    in_flight: InFlight,
    lease: Option<Lease>,
}

impl Checkout {
    /// `lease` is the answer's, from the attempt `in_flight` counts.
    pub fn new(in_flight: InFlight, lease: Lease) -> Checkout {
        Checkout {
            in_flight,
            lease: Some(lease),
        }
    }
}

impl crate::body::UpstreamHold for Checkout {
    fn release(&mut self, connection: Option<Box<http1::Connection>>) {
        if let Some(lease) = self.lease.take() {
            lease.release(self.in_flight.target(), connection);
        }
    }
}

/// Checks a target address: `host:port` with a port, no scheme or path.
pub fn parse_target(addr: &str) -> Result<Authority, String> {
    let fix = "write it as host:port, like 127.0.0.1:9001 or users.internal:8080";
    if addr.contains("://") || addr.contains('/') {
        return Err(format!("target {addr:?} has a scheme or path: {fix}"));
    }
    let authority: Authority = addr
        .parse()
        .map_err(|_| format!("target {addr:?} is not an address: {fix}"))?;
    if authority.port_u16().is_none() || authority.as_str().contains('@') {
        return Err(format!("target {addr:?} has no port: {fix}"));
    }
    Ok(authority)
}

/// Timeouts for requests to a pool, after route overrides are applied.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub connect: Duration,
    pub response: Duration,
    /// An upgraded (WebSocket) connection with no byte either way this long is closed.
    pub websocket_idle: Duration,
}

/// What a pool does when targets fail: health checks and retries.
#[derive(Debug, Default)]
pub struct Resilience {
    pub passive: Option<PassivePolicy>,
    pub active_check: Option<ActiveCheck>,
    pub retry: Option<RetryPolicy>,
    pub breaker: Option<BreakerPolicy>,
}

/// A target as configured or discovered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub addr: String,
    pub weight: u32,
    pub backup: bool,
}

/// The targets a pool has now, and the balancer built for them. Replaced
/// whole, off the hot path, when discovery changes the targets.
#[derive(Debug)]
struct TargetSet {
    /// Targets that take traffic while available.
    primaries: Vec<Arc<Target>>,
    /// `backup: true` targets: used only when no primary is available.
    backups: Vec<Arc<Target>>,
    balancer: Balancer,
}

/// A named pool: targets, the balancer that picks among them, and what it
/// does when they fail.
#[derive(Debug)]
pub struct UpstreamPool {
    pub name: Arc<str>,
    set: ArcSwap<TargetSet>,
    balance: Balance,
    hash_on: Option<HashOn>,
    pub timeouts: Timeouts,
    pub transport: Arc<Transport>,
    pub passive: Option<PassivePolicy>,
    pub active_check: Option<ActiveCheck>,
    /// The pool's retry policy; a route may replace it.
    pub retry: Option<RetryPolicy>,
    pub retry_budget: RetryBudget,
    /// The upstream-wide breaker; each target may have its own too.
    pub breaker: Option<CircuitBreaker>,
    breaker_policy: Option<BreakerPolicy>,
    /// Where targets come from when they are not listed in the config.
    pub discovery: Option<discovery::Discovery>,
    pub metrics: PoolMetrics,
    /// The targets the config lists (none with discovery).
    configured: Vec<TargetSpec>,
    /// Set once the pool's probes and discovery run, so that a pool carried
    /// over a reload is not given a second set.
    background_started: AtomicBool,
}

impl UpstreamPool {
    pub fn new(
        name: &str,
        (balance, hash_on): (Balance, Option<HashOn>),
        (timeouts, transport): (Timeouts, Arc<Transport>),
        resilience: Resilience,
        discovery: Option<discovery::Discovery>,
        metrics: PoolMetrics,
    ) -> UpstreamPool {
        UpstreamPool {
            name: name.into(),
            set: ArcSwap::from_pointee(TargetSet {
                primaries: Vec::new(),
                backups: Vec::new(),
                balancer: Balancer::new(balance, &[], hash_on.clone()),
            }),
            balance,
            hash_on,
            timeouts,
            transport,
            passive: resilience.passive,
            active_check: resilience.active_check,
            retry: resilience.retry,
            retry_budget: RetryBudget::default(),
            breaker: resilience.breaker.map(CircuitBreaker::new),
            breaker_policy: resilience.breaker,
            discovery,
            metrics,
            configured: Vec::new(),
            background_started: AtomicBool::new(false),
        }
    }

    /// Starts the pool's active health checks and discovery, once in its life.
    pub fn start_background(self: &Arc<Self>) {
        if self.background_started.swap(true, Ordering::Relaxed) {
            return;
        }
        health_check::start(self);
        discovery::start(self);
    }

    /// Takes over the targets of the pool this one replaces on a reload, so
    /// that [`UpstreamPool::set_targets`] keeps the state (health, latency,
    /// connections) of those it lists again. Not when the breaker policy or
    /// the transport changed: each target is built with them.
    pub fn inherit_targets(&self, old: &UpstreamPool) {
        if self.breaker_policy == old.breaker_policy && self.transport == old.transport {
            let set = old.set.load();
            self.set.store(Arc::new(TargetSet {
                primaries: set.primaries.clone(),
                backups: set.backups.clone(),
                balancer: Balancer::new(self.balance, &set.primaries, self.hash_on.clone()),
            }));
        }
    }

    /// Sets the targets the config lists.
    pub fn configure_targets(&mut self, specs: Vec<TargetSpec>) -> Result<(), String> {
        self.set_targets(&specs)?;
        self.configured = specs;
        Ok(())
    }

    /// Goes back to the configured targets, dropping any the admin API set;
    /// a pool whose targets are discovered keeps them.
    pub fn reset_targets(&self) {
        if self.discovery.is_none() {
            // These were accepted when the config was compiled.
            let _ = self.set_targets(&self.configured);
        }
    }

    /// Replaces the targets. A target that stays (same address) keeps its
    /// health, breaker and connections; one that goes finishes the requests
    /// it has in flight.
    pub fn set_targets(&self, specs: &[TargetSpec]) -> Result<(), String> {
        let current = self.all_targets();
        let mut primaries = Vec::new();
        let mut backups = Vec::new();
        for spec in specs {
            let target = match current
                .iter()
                .find(|t| *t.addr == *spec.addr && t.weight == spec.weight.max(1))
            {
                Some(kept) => kept.clone(),
                None => Arc::new(
                    Target::new(&spec.addr, spec.weight)?
                        .with_transport(self.transport.clone())
                        .with_breaker(self.breaker_policy),
                ),
            };
            if spec.backup {
                backups.push(target);
            } else {
                primaries.push(target);
            }
        }
        let balancer = Balancer::new(self.balance, &primaries, self.hash_on.clone());
        self.set.store(Arc::new(TargetSet {
            primaries,
            backups,
            balancer,
        }));
        Ok(())
    }

    pub fn balance(&self) -> Balance {
        self.balance
    }

    /// The primaries and the backups, as they are now.
    pub fn targets(&self) -> (Vec<Arc<Target>>, Vec<Arc<Target>>) {
        let set = self.set.load();
        (set.primaries.clone(), set.backups.clone())
    }

    /// Primaries, then backups, as they are now.
    pub fn all_targets(&self) -> Vec<Arc<Target>> {
        let set = self.set.load();
        set.primaries.iter().chain(&set.backups).cloned().collect()
    }

    /// The target for this request: the balancer's choice if it is available
    /// and not in `tried`, else the next primary that is, else a backup.
    /// `None` when nothing can take the request.
    pub fn pick(&self, ctx: &PickContext<'_>, tried: &[Arc<Target>]) -> Option<Arc<Target>> {
        self.choose(ctx, |t| {
            !tried.iter().any(|x| Arc::ptr_eq(x, t)) && t.admits(&self.name)
        })
    }

    /// The target [`UpstreamPool::pick`] would choose, without using up a
    /// half-open breaker's probe: for `explain`. Round robin and the random
    /// balancers answer differently per request; this is one of their answers.
    pub fn preview(&self, ctx: &PickContext<'_>) -> Option<Arc<Target>> {
        self.choose(ctx, |t| {
            t.health.available() && t.breaker.as_ref().is_none_or(|b| b.state() != breaker::State::Open)
        })
    }

    fn choose(&self, ctx: &PickContext<'_>, usable: impl Fn(&Arc<Target>) -> bool) -> Option<Arc<Target>> {
        let set = self.set.load();
        let usable = |t: &&Arc<Target>| usable(t);
        let primaries = &set.primaries;
        if !primaries.is_empty() {
            let first = set.balancer.pick(primaries, ctx);
            // Walking on from the balancer's choice keeps the spread even
            // when some targets are out.
            let mut walk = (0..primaries.len()).map(|k| &primaries[(first + k) % primaries.len()]);
            if let Some(target) = walk.find(usable) {
                return Some(target.clone());
            }
        }
        let backups = &set.backups;
        let start = fastrand::usize(..backups.len().max(1));
        (0..backups.len())
            .map(|k| &backups[(start + k) % backups.len()])
            .find(usable)
            .cloned()
    }

    /// Records a response head's time to arrive: for the dashboard, and for
    /// `balance: ewma`.
    pub fn observe_latency(&self, target: &Target, latency: std::time::Duration) {
        target.record_latency(latency);
        if self.balance == Balance::Ewma {
            target.latency.observe(latency);
        }
    }

    /// May a request go to this upstream at all? `Err` is the wait before
    /// it may, while the upstream's breaker is open.
    pub fn admit(&self) -> Result<(), std::time::Duration> {
        match self.breaker.as_ref().map(CircuitBreaker::allow) {
            None | Some(Ok(None)) => Ok(()),
            Some(Ok(Some(change))) => {
                breaker_log(&self.name, None, change);
                Ok(())
            }
            Some(Err(wait)) => Err(wait),
        }
    }

    /// Records what a request said of a target: passive health and breakers.
    pub fn record(&self, target: &Target, outcome: Outcome) {
        for (breaker, which) in [(&self.breaker, None), (&target.breaker, Some(&target.addr))] {
            if let Some(change) = breaker.as_ref().and_then(|b| b.record(outcome)) {
                breaker_log(&self.name, which, change);
            }
        }
        if let Some(length) = target.health.record(outcome, self.passive.as_ref()) {
            self.metrics.ejected(&target.addr);
            tracing::warn!(upstream = &*self.name, target = &*target.addr, ejected_for = ?length, "target ejected after consecutive failures");
        }
    }
}

fn breaker_log(upstream: &str, target: Option<&Arc<str>>, change: breaker::Change) {
    let target = target.map(|t| &**t);
    match change {
        breaker::Change::Opened => tracing::warn!(upstream, target, "circuit breaker opened"),
        breaker::Change::HalfOpened => tracing::info!(upstream, target, "circuit breaker half-open: probing"),
        breaker::Change::Closed => tracing::info!(upstream, target, "circuit breaker closed"),
    }
}
