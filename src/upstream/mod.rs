//! Upstream pools: named sets of targets, how one is picked, and the
//! keep-alive connections that reach each target.

pub mod balance;
pub mod connections;

pub use balance::{Balancer, HashOn, PickContext};
pub use connections::{Lease, SendError};

use connections::Connections;
use http::uri::Authority;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// The Host header requests carry unless the route preserves the client's.
    pub host_header: HeaderValue,
    pub weight: u32,
    in_flight: AtomicUsize,
    connections: Connections,
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
            connections: Connections::default(),
        })
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request as in flight until the guard is dropped.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }
}

/// A request in flight to a target; dropping it ends the count.
#[derive(Debug)]
pub struct InFlight(Arc<Target>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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
}

/// A named pool: targets and the balancer that picks among them.
#[derive(Debug)]
pub struct UpstreamPool {
    pub name: Arc<str>,
    /// Targets that take traffic.
    primaries: Vec<Arc<Target>>,
    /// `backup: true` targets: kept apart until health checking can tell
    /// that every primary is down (see README).
    pub backups: Vec<Arc<Target>>,
    balancer: Balancer,
    pub timeouts: Timeouts,
}

impl UpstreamPool {
    pub fn new(
        name: &str,
        primaries: Vec<Arc<Target>>,
        backups: Vec<Arc<Target>>,
        balancer: Balancer,
        timeouts: Timeouts,
    ) -> UpstreamPool {
        UpstreamPool {
            name: name.into(),
            primaries,
            backups,
            balancer,
            timeouts,
        }
    }

    /// The target for this request, or `None` when the pool has none to offer.
    pub fn pick(&self, ctx: &PickContext<'_>) -> Option<&Arc<Target>> {
        if self.primaries.is_empty() {
            return None;
        }
        let index = self.balancer.pick(&self.primaries, ctx);
        self.primaries.get(index)
    }
}
