//! One access-log line per request, written when its response is done.
//!
//! Lines are serialised straight into the batched stdout buffer rather than
//! through a `tracing` event: the schema is fixed, and a generic event
//! formatter cost more CPU per line than proxying a small request does
//! (bench/RESULTS.md). Portico's diagnostics still go through `tracing`.

use super::buffered_stdout::BufferedStdout;
use http::{HeaderValue, Method};
use serde::Serialize;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

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

/// The JSON line, field by field.
#[derive(Serialize)]
struct Line<'a> {
    #[serde(serialize_with = "rfc3339")]
    timestamp: SystemTime,
    request_id: &'a str,
    #[serde(serialize_with = "display")]
    client: SocketAddr,
    method: &'a str,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<&'a str>,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
}

impl Entry {
    pub fn emit(&self, bytes_out: u64) {
        let Some(stdout) = BufferedStdout::get() else { return };
        let line = Line {
            timestamp: SystemTime::now(),
            request_id: self.request_id.to_str().unwrap_or_default(),
            client: self.client,
            method: self.method.as_str(),
            path: &self.path,
            route: self.route.as_deref(),
            upstream: self.upstream.as_deref(),
            target: self.target.as_deref(),
            status: self.status,
            bytes_in: self.bytes_in.as_ref().map_or(0, |n| n.load(Ordering::Relaxed)),
            bytes_out,
            duration_ms: millis(self.started.elapsed()),
            upstream_ms: self.upstream_latency.map(millis),
            error: self.error,
        };
        stdout.write_line(|buffer| serde_json::to_writer(buffer, &line).is_ok());
    }
}

/// Milliseconds with microsecond precision (`1.494`, not `1.4936839999999998`).
fn millis(duration: Duration) -> f64 {
    duration.as_micros() as f64 / 1000.0
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_micros(*time))
}

fn display<S: serde::Serializer, T: std::fmt::Display>(value: &T, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}
