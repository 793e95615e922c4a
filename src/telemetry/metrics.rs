//! Prometheus metrics, served by the admin API at `GET /metrics`.
//!
//! One [`Metrics`] lives as long as the process's gateway and outlives
//! reloads, so counters keep counting across them. Labels are config names
//! (routes, upstreams, targets), never raw paths, so cardinality is bounded by
//! the config. The request path holds per-route and per-upstream handles
//! resolved when the config is compiled: counting a request is an atomic add
//! and a few plain ones to the worker's own slot of its route's series
//! (`route_series`), with no label lookup and no lock.

use super::route_series::{Exported, RouteCells, RouteSeries};
use prometheus::{exponential_buckets, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};
use std::sync::{Arc, OnceLock};

/// The route label of requests that matched no route.
pub const NO_ROUTE: &str = "(none)";

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    /// Request and upstream durations, bytes either way.
    route_series: Arc<RouteSeries>,
    pub client_connections: IntGauge,
    pub target_healthy: IntGaugeVec,
    pub target_in_flight: IntGaugeVec,
    pub breaker_state: IntGaugeVec,
    ejections: IntCounterVec,
    retries: IntCounterVec,
    rejections: IntCounterVec,
    cache: IntCounterVec,
    limit_store_errors: IntCounterVec,
    response_violations: IntCounterVec,
    reloads: IntCounterVec,
    config_info: IntGaugeVec,
    upgrades: UpgradeMetrics,
    waf_matches: IntCounterVec,
    listener_refusals: IntCounterVec,
    /// The dashboard's series and request tail, kept across reloads like the counters.
    pub live: std::sync::Arc<super::live::Live>,
    unmatched: OnceLock<std::sync::Arc<RouteMetrics>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Latency buckets from 0.5ms to about 33s.
fn latency_buckets() -> Vec<f64> {
    exponential_buckets(0.0005, 2.0, 17).unwrap_or_default()
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new_custom(Some("portico".into()), None).unwrap_or_default();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable(e));
            let _ = registry.register(Box::new(vec.clone()));
            vec
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let vec = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable(e));
            let _ = registry.register(Box::new(vec.clone()));
            vec
        };
        let route_series = Arc::new(RouteSeries::new(latency_buckets()).unwrap_or_else(|e| unreachable(e)));
        let _ = registry.register(Box::new(Exported(route_series.clone())));
        let client_connections =
            IntGauge::new("client_connections", "Client connections open now.").unwrap_or_else(|e| unreachable(e));
        let _ = registry.register(Box::new(client_connections.clone()));
        Metrics {
            requests: counter(
                "requests_total",
                "Requests answered, by route, method and status class.",
                &["route", "method", "status"],
            ),
            route_series,
            client_connections,
            target_healthy: gauge(
                "upstream_target_healthy",
                "1 when the target takes traffic (not failing checks, not ejected), else 0.",
                &["upstream", "target"],
            ),
            target_in_flight: gauge(
                "upstream_target_in_flight",
                "Requests in flight to the target.",
                &["upstream", "target"],
            ),
            breaker_state: gauge(
                "circuit_breaker_state",
                "0 closed, 1 open, 2 half-open; target \"\" is the upstream-wide breaker.",
                &["upstream", "target"],
            ),
            ejections: counter(
                "upstream_ejections_total",
                "Targets ejected by passive health checks.",
                &["upstream", "target"],
            ),
            retries: counter(
                "upstream_retries_total",
                "Requests sent again after a failed attempt.",
                &["upstream"],
            ),
            rejections: counter(
                "rejections_total",
                "Requests refused by a plugin (authentication, rate limits, ...), by reason.",
                &["route", "plugin", "reason"],
            ),
            cache: counter("cache_requests_total", "Cache lookups by result.", &["route", "result"]),
            limit_store_errors: counter(
                "rate_limit_store_errors_total",
                "Rate-limit checks the store (Redis) could not answer.",
                &["route"],
            ),
            response_violations: counter(
                "response_schema_violations_total",
                "Upstream answers that did not match their `validate.response` schema.",
                &["route"],
            ),
            reloads: counter("config_reloads_total", "Config reloads by result.", &["result"]),
            config_info: gauge("config_info", "The running config's hash (always 1).", &["hash"]),
            waf_matches: counter(
                "waf_matches_total",
                "WAF rule matches, by rule and what was done with the request: block, detect (over the threshold in detect mode) or pass (under it).",
                &["route", "rule", "action"],
            ),
            live: std::sync::Arc::default(),
            listener_refusals: counter(
                "listener_refusals_total",
                "Connections and requests a listener refused before routing, by reason: max_connections, max_connections_per_ip, connection_rate_per_ip, request_rate_per_ip, uri_too_long, headers_too_large, request_timeout (a body too slow), ambiguous_framing.",
                &["listener", "reason"],
            ),
            upgrades: UpgradeMetrics {
                open: gauge(
                    "upgraded_connections",
                    "Upgraded (WebSocket) connections open now.",
                    &["route"],
                ),
                ended: counter(
                    "upgraded_connections_total",
                    "Upgraded (WebSocket) connections ended, by how: closed, idle_timeout or error.",
                    &["route", "end"],
                ),
                bytes: counter(
                    "upgraded_bytes_total",
                    "Bytes relayed on upgraded connections, by direction: client_to_upstream or upstream_to_client.",
                    &["route", "direction"],
                ),
            },
            registry,
            unmatched: OnceLock::new(),
        }
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        let families = self.registry.gather();
        if let Err(error) = prometheus::TextEncoder::new().encode_utf8(&families, &mut text) {
            tracing::error!(%error, "metrics could not be encoded");
        }
        text
    }

    /// Requests answered so far by route, and how many of them were 4xx and
    /// 5xx, from `portico_requests_total`.
    pub fn route_totals(&self) -> std::collections::BTreeMap<String, RouteTotals> {
        let mut totals = std::collections::BTreeMap::<String, RouteTotals>::new();
        for family in prometheus::core::Collector::collect(&self.requests) {
            for metric in family.get_metric() {
                let label = |name: &str| {
                    metric
                        .get_label()
                        .iter()
                        .find(|l| l.name() == name)
                        .map(|l| l.value().to_string())
                        .unwrap_or_default()
                };
                let count = metric.get_counter().get_value() as u64;
                let entry = totals.entry(label("route")).or_default();
                entry.requests += count;
                match label("status").as_str() {
                    "4xx" => entry.client_errors += count,
                    "5xx" => entry.server_errors += count,
                    _ => {}
                }
            }
        }
        totals
    }

    /// Handles for one route's metrics.
    pub fn route(&self, name: &str, upstream: Option<&str>) -> RouteMetrics {
        RouteMetrics {
            name: name.to_string(),
            upstream: upstream.map(str::to_string),
            requests: self.requests.clone(),
            route_series: self.route_series.clone(),
            series: OnceLock::new(),
            upgrades: self.upgrades.clone(),
        }
    }

    /// Requests that matched no route share these.
    pub fn unmatched(&self) -> std::sync::Arc<RouteMetrics> {
        self.unmatched
            .get_or_init(|| std::sync::Arc::new(self.route(NO_ROUTE, None)))
            .clone()
    }

    pub fn pool(&self, upstream: &str) -> PoolMetrics {
        PoolMetrics {
            upstream: upstream.to_string(),
            retries: self.retries.with_label_values(&[upstream]),
            ejections: self.ejections.clone(),
        }
    }

    /// A plugin refused a request (`plugin` and `reason` are fixed strings).
    pub fn rejected(&self, route: &str, plugin: &str, reason: &str) {
        self.rejections.with_label_values(&[route, plugin, reason]).inc();
    }

    /// A listener refused a connection or a request before routing it.
    pub fn listener_refused(&self, listener: &str, reason: &str) {
        self.listener_refusals.with_label_values(&[listener, reason]).inc();
    }

    /// A WAF rule matched a request of `route`.
    pub fn waf_match(&self, route: &str, rule: u32, action: &str) {
        self.waf_matches
            .with_label_values(&[route, &rule.to_string(), action])
            .inc();
    }

    pub fn rate_limit_store_error(&self, route: &str) {
        self.limit_store_errors.with_label_values(&[route]).inc();
    }

    pub fn response_violation(&self, route: &str) {
        self.response_violations.with_label_values(&[route]).inc();
    }

    /// The series counting a route's cache lookups with this result.
    pub fn cache_lookups(&self, route: &str, result: &str) -> IntCounter {
        self.cache.with_label_values(&[route, result])
    }

    pub fn reloaded(&self, ok: bool) {
        self.reloads
            .with_label_values(&[if ok { "success" } else { "failure" }])
            .inc();
    }

    /// Shows `hash` as the running config's.
    pub fn set_config_hash(&self, hash: &str) {
        self.config_info.reset();
        self.config_info.with_label_values(&[hash]).set(1);
    }
}

/// Metric definitions are constants; an error building one is a bug in this file.
fn unreachable(error: prometheus::Error) -> ! {
    panic!("invalid metric definition: {error}")
}

/// Method label values: the standard methods, and `other` for the rest, so
/// that a client cannot grow the label set by inventing methods.
const METHODS: [&str; 10] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE", "other",
];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// A route's requests so far, for the dashboard.
#[derive(Debug, Default, serde::Serialize)]
pub struct RouteTotals {
    pub requests: u64,
    pub client_errors: u64,
    pub server_errors: u64,
}

/// One route's metric handles.
pub struct RouteMetrics {
    name: String,
    upstream: Option<String>,
    requests: IntCounterVec,
    route_series: Arc<RouteSeries>,
    /// Made at the route's first request: a route that sees none exports
    /// nothing and costs a few pointers, which keeps a table of thousands of
    /// routes small.
    series: OnceLock<Box<Series>>,
    upgrades: UpgradeMetrics,
}

/// One route's series.
struct Series {
    /// Filled on first use, so that only the series a route sees are exported.
    by_method_and_class: [[OnceLock<IntCounter>; 5]; 10],
    cells: Arc<RouteCells>,
}

/// Upgraded connections' series; a route's are made when it has its first,
/// so routes without WebSocket export none.
#[derive(Clone)]
struct UpgradeMetrics {
    open: IntGaugeVec,
    ended: IntCounterVec,
    bytes: IntCounterVec,
}

/// How an upgraded connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpgradeEnd {
    /// Either side closed it.
    Closed,
    /// Nothing was sent either way for the idle timeout.
    IdleTimeout,
    Error,
}

/// An upgraded connection counted as open until dropped.
pub struct OpenUpgrade(IntGauge);

impl Drop for OpenUpgrade {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl std::fmt::Debug for RouteMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMetrics").field("name", &self.name).finish()
    }
}

impl RouteMetrics {
    fn series(&self) -> &Series {
        self.series.get_or_init(|| {
            Box::new(Series {
                by_method_and_class: Default::default(),
                cells: self.route_series.of(&self.name, self.upstream.as_deref()),
            })
        })
    }

    /// Counts a finished request.
    pub fn request(&self, method: &http::Method, status: u16, seconds: f64, bytes_in: u64, bytes_out: u64) {
        let method = METHODS
            .iter()
            .position(|m| *m == method.as_str())
            .unwrap_or(METHODS.len() - 1);
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        let series = self.series();
        series.by_method_and_class[method][class]
            .get_or_init(|| {
                self.requests
                    .with_label_values(&[&self.name, METHODS[method], CLASSES[class]])
            })
            .inc();
        series.cells.request(seconds, bytes_in, bytes_out);
    }

    /// An upgraded connection opened on this route.
    pub fn upgrade_opened(&self) -> OpenUpgrade {
        let gauge = self.upgrades.open.with_label_values(&[&self.name]);
        gauge.inc();
        OpenUpgrade(gauge)
    }

    /// An upgraded connection ended, with the bytes each side sent.
    pub fn upgrade_closed(&self, end: UpgradeEnd, from_client: u64, from_upstream: u64) {
        let end = match end {
            UpgradeEnd::Closed => "closed",
            UpgradeEnd::IdleTimeout => "idle_timeout",
            UpgradeEnd::Error => "error",
        };
        self.upgrades.ended.with_label_values(&[&self.name, end]).inc();
        let bytes = &self.upgrades.bytes;
        bytes
            .with_label_values(&[&self.name, "client_to_upstream"])
            .inc_by(from_client);
        bytes
            .with_label_values(&[&self.name, "upstream_to_client"])
            .inc_by(from_upstream);
    }

    /// Time an upstream took to answer one attempt.
    pub fn upstream_latency(&self, seconds: f64) {
        if self.upstream.is_some() {
            self.series().cells.upstream_latency(seconds);
        }
    }
}

/// One upstream's metric handles.
#[derive(Clone)]
pub struct PoolMetrics {
    upstream: String,
    pub retries: IntCounter,
    ejections: IntCounterVec,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics").field("upstream", &self.upstream).finish()
    }
}

impl PoolMetrics {
    pub fn ejected(&self, target: &str) {
        self.ejections.with_label_values(&[&self.upstream, target]).inc();
    }
}
