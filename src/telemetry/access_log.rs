//! One access-log line per request, written when its response is done.

use http::{HeaderValue, Method};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// The `tracing` target of access-log events; the subscriber sends it to stdout as JSON.
pub const TARGET: &str = "access";

/// What is known of a request by the time its response starts.
#[derive(Debug)]
pub struct Entry {
    pub started: Instant,
    pub request_id: HeaderValue,
    pub client: SocketAddr,
    pub method: Method,
    /// Path only: query strings often carry tokens and never reach the log.
    pub path: String,
    pub route: Option<Arc<str>>,
    pub upstream: Option<Arc<str>>,
    pub target: Option<Arc<str>>,
    pub status: u16,
    pub bytes_in: Option<Arc<AtomicU64>>,
    pub upstream_latency: Option<Duration>,
    pub error: Option<&'static str>,
}

impl Entry {
    pub fn emit(&self, bytes_out: u64) {
        let total = self.started.elapsed();
        tracing::info!(
            target: TARGET,
            request_id = self.request_id.to_str().unwrap_or_default(),
            client = %self.client,
            method = self.method.as_str(),
            path = self.path.as_str(),
            route = self.route.as_deref(),
            upstream = self.upstream.as_deref(),
            target = self.target.as_deref(),
            status = self.status,
            bytes_in = self.bytes_in.as_ref().map_or(0, |n| n.load(Ordering::Relaxed)),
            bytes_out,
            duration_ms = millis(total),
            upstream_ms = self.upstream_latency.map(millis),
            error = self.error,
        );
    }
}

/// Milliseconds with microsecond precision (`1.494`, not `1.4936839999999998`).
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}
