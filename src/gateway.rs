//! The compiled config: what the proxy serves from. Immutable once built; a
//! reload builds a new one and swaps it in atomically.

use crate::plugins::PluginChain;
use crate::proxy::rewrite::Rewrite;
use crate::router::RouteTable;
use crate::upstream::{RetryPolicy, Timeouts, UpstreamPool};
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use indexmap::IndexMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug)]
pub struct Gateway {
    pub routes: RouteTable<Route>,
    pub upstreams: IndexMap<String, Arc<UpstreamPool>>,
    pub access_log: bool,
}

#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub action: Action,
    pub plugins: PluginChain,
}

#[derive(Debug)]
pub enum Action {
    Proxy(Forward),
    Respond(FixedResponse),
}

/// How a route sends requests to its upstream.
#[derive(Debug)]
pub struct Forward {
    pub pool: Arc<UpstreamPool>,
    /// The pool's timeouts with the route's overrides applied.
    pub timeouts: Timeouts,
    /// The whole exchange up to the response head, retries included.
    pub request_timeout: Option<Duration>,
    /// The route's retry policy, or else the pool's.
    pub retry: Option<RetryPolicy>,
    pub rewrite: Rewrite,
    pub preserve_host: bool,
}

#[derive(Debug)]
pub struct FixedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A listener's settings, fixed when it starts.
#[derive(Debug, Clone)]
pub struct ListenerSettings {
    pub name: Arc<str>,
    pub addr: SocketAddr,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub max_request_body: Option<u64>,
}

/// Everything a config file compiles to.
#[derive(Debug)]
pub struct Compiled {
    pub gateway: Gateway,
    pub listeners: Vec<ListenerSettings>,
    pub drain_timeout: Duration,
}
