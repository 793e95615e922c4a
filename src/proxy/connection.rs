//! What one client connection's requests share: the listener it came in on,
//! the peer, the running config, and the connection's own state.

use crate::gateway::{Gateway, ListenerSettings};
use crate::proxy::client_timeouts::ActiveRequests;
use arc_swap::ArcSwap;
use http::HeaderValue;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// What one client connection's requests share.
pub struct Connection {
    /// Counted against the listener's connection caps while it lives.
    pub admitted: super::admission::Admitted,
    pub gateway: Arc<ArcSwap<Gateway>>,
    pub listener: Arc<ListenerSettings>,
    pub peer: SocketAddr,
    /// `peer`'s IP, formatted once for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    pub active: Arc<ActiveRequests>,
    /// Set while the listener drains: HTTP/1 responses then close the connection.
    pub draining: Arc<AtomicBool>,
    /// The certificate the client presented and the listener verified (mTLS).
    pub client_certificate: Option<Arc<super::tls::ClientCertificate>>,
    /// `Alt-Svc` announcing the listener's HTTP/3, on its TCP connections.
    pub alt_svc: Option<HeaderValue>,
}

/// What a listener's new connections are served with; replaced on reload.
pub(crate) struct ListenerState {
    pub(crate) settings: Arc<ListenerSettings>,
    pub(crate) builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
    /// The same settings, HTTP/2 only: for TLS connections that chose h2 by ALPN.
    pub(crate) h2_builder: Arc<hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>>,
}

/// Counts a client connection in the open-connections gauge while it lives.
pub(crate) struct OpenConnection(prometheus::IntGauge);

impl OpenConnection {
    pub(crate) fn new(metrics: &crate::telemetry::metrics::Metrics) -> OpenConnection {
        metrics.client_connections.inc();
        OpenConnection(metrics.client_connections.clone())
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
