//! The pooled HTTP client that carries requests to targets.

use crate::body::RequestBody;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use std::time::Duration;

pub type HttpClient = Client<HttpConnector, RequestBody>;

/// Idle keep-alive connections to a target are closed after this long, below
/// the common 60-120 s server-side keep-alive, so Portico closes them first and
/// rarely sends a request on a connection the target is closing.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

pub fn build_client(connect_timeout: Duration) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_keepalive(Some(Duration::from_secs(60)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector)
}
