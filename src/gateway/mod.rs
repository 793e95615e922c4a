//! The compiled config: what the proxy serves from. Immutable once built; a
//! reload builds a new one and swaps it in atomically.

use crate::config::model::ConfigFile;
use crate::plugins::PluginChain;
use crate::router::{Lookup, RequestHead, RouteTable};
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::{Metrics, RouteMetrics};
use crate::telemetry::traces::Traces;
use crate::upstream::UpstreamPool;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use indexmap::IndexMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub mod forward;
pub mod routes;
pub use forward::Forward;

#[derive(Debug)]
pub struct Gateway {
    pub routes: RouteTable<Route>,
    pub upstreams: IndexMap<String, Arc<UpstreamPool>>,
    /// `None` when the access log is off.
    pub access_log: Option<Arc<AccessLog>>,
    pub metrics: Arc<Metrics>,
    /// Metrics of requests no route matched.
    pub unmatched: Arc<RouteMetrics>,
    /// The file model this was compiled from: shown (redacted) by the admin
    /// API, and compared with the next config to carry unchanged parts over.
    pub source: ConfigFile,
    /// A hash of the config text, to tell which config a node runs.
    pub hash: String,
    /// `None` without a `tracing` block.
    pub traces: Option<Arc<Traces>>,
    /// The dashboard's live view; `None` without an admin API.
    pub live: Option<Arc<crate::telemetry::live::Live>>,
    /// Every header Portico sets for upstreams to trust (identity, claims,
    /// client certificates), from every plugin of every route: removed from
    /// each client request, on every route, before routing.
    pub trusted_headers: Arc<crate::proxy::forward::NameSet>,
    /// The listeners' settings, for `explain` to ask as one of them would.
    pub listeners: Arc<[ListenerSettings]>,
}

impl Gateway {
    /// The route for a canonical request: what `serve` routes and `explain`
    /// explains. A request whose method the path lacks goes to the route of
    /// another method when a plugin there answers it on that method's behalf
    /// (a CORS preflight); otherwise it is a 405 with the path's methods.
    pub fn route(&self, head: &RequestHead<'_>, request: &http::request::Parts) -> Lookup<'_, Route> {
        match self.routes.find(head) {
            Lookup::MethodNotAllowed { allow } => {
                for method in &allow {
                    let as_method = RequestHead { method, ..*head };
                    if let Lookup::Found { route, params } = self.routes.find(&as_method) {
                        if route.plugins.answers_for(request, method) {
                            return Lookup::Found { route, params };
                        }
                    }
                }
                Lookup::MethodNotAllowed { allow }
            }
            found_or_not => found_or_not,
        }
    }
}

impl Route {
    /// The upstream's name, when the route proxies.
    pub fn upstream(&self) -> Option<&str> {
        match &self.action {
            Action::Proxy(forward) => Some(&forward.pool.name),
            Action::Respond(_) | Action::Aggregate(_) => None,
        }
    }
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub metrics: Arc<RouteMetrics>,
    pub action: Action,
    pub plugins: PluginChain,
    /// `max_request_body` on the route, in place of the listener's.
    pub max_request_body: Option<u64>,
}

impl Route {
    /// The request body limit on this route: its own, or else the listener's.
    pub fn body_limit(&self, listener: &ListenerSettings) -> Option<u64> {
        self.max_request_body.or(listener.max_request_body)
    }
}

#[derive(Debug)]
pub enum Action {
    Proxy(Forward),
    Respond(FixedResponse),
    Aggregate(crate::aggregate::Aggregate),
}

#[derive(Debug)]
pub struct FixedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A listener's settings, fixed when it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerSettings {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_request_body: Option<u64>,
    pub max_uri_bytes: usize,
    /// How slowly a request body may arrive.
    pub pace: crate::body::pace::Pace,
    /// Connection caps and per-IP rates.
    pub admission: crate::proxy::admission::AdmissionLimits,
    pub http2_max_streams: u32,
    /// HTTPS, when set.
    pub tls: Option<Arc<crate::proxy::tls::TlsSettings>>,
    /// `Strict-Transport-Security`, made once.
    pub hsts: Option<http::HeaderValue>,
    /// Redirect every request to HTTPS on this port.
    pub redirect_https: Option<u16>,
    /// How request paths are made canonical.
    pub path: crate::router::PathPolicy,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl ListenerSettings {
    /// Whether `peer` is one of the listener's trusted proxies (an IPv4
    /// peer on a dual-stack socket counts by its IPv4 address).
    pub fn trusts(&self, peer: std::net::IpAddr) -> bool {
        !self.trusted_proxies.is_empty() && {
            let peer = peer.to_canonical();
            self.trusted_proxies.iter().any(|net| net.contains(&peer))
        }
    }
}

/// The admin API's listener.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminSettings {
    pub addr: SocketAddr,
    pub token: Arc<str>,
}

/// Everything a config file compiles to.
#[derive(Debug)]
pub struct Compiled {
    pub gateway: Gateway,
    pub listeners: Vec<ListenerSettings>,
    pub admin: Option<AdminSettings>,
    pub drain: Drain,
}

/// How listeners close: on shutdown, and when a reload removes them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Drain {
    /// In-flight requests may run this long; then connections are cut.
    pub timeout: Duration,
    /// Keep-alive connections are told to close for this long before idle
    /// ones are closed.
    pub close_idle_after: Duration,
}
