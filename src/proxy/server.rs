//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (prior knowledge)
//! on them, and drain on shutdown.

use super::admission::{Admission, Refusal};
use super::client_timeouts::{ActiveRequests, ClientTimeouts};
use super::connection::{Connection, ListenerState, OpenConnection};
use super::graceful::Connections;
use super::http1;
use super::session::from_hyper;
use crate::control::upgrade;
use crate::gateway::{Compiled, Drain, Gateway, ListenerSettings};
use crate::telemetry::metrics::Metrics;
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running gateway: its listeners, and the config they serve from.
pub struct Server {
    gateway: Arc<ArcSwap<Gateway>>,
    listeners: Mutex<Vec<RunningListener>>,
    drain: Mutex<Drain>,
}

/// One bound listener.
struct RunningListener {
    /// As configured (port 0 unresolved): a reload that keeps the address
    /// keeps the socket.
    configured: SocketAddr,
    local: SocketAddr,
    state: Arc<ArcSwap<ListenerState>>,
    stop: watch::Sender<bool>,
    acceptor: JoinHandle<()>,
    connections: Arc<Connections>,
    /// The listening socket's descriptor, to hand to a new binary on upgrade.
    fd: OwnedFd,
    /// Set when the listener closes: responses then ask clients to close.
    draining: Arc<AtomicBool>,
    /// HTTP/3, on the same port over UDP, when the listener's TLS asks for it.
    quic: Option<quinn::Endpoint>,
}

/// How a shutdown ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight request finished.
    Clean,
    /// The drain deadline passed with connections still open; they were cut.
    TimedOut { open: usize },
}

impl Server {
    /// Binds every listener and starts serving. Fails if an address cannot be bound.
    pub async fn start(compiled: Compiled) -> io::Result<Server> {
        start_background(&compiled.gateway);
        let metrics = compiled.gateway.metrics.clone();
        let gateway = Arc::new(ArcSwap::from_pointee(compiled.gateway));
        let mut listeners = Vec::new();
        for settings in compiled.listeners {
            listeners.push(RunningListener::start(settings, &gateway, &metrics)?);
        }
        Ok(Server {
            gateway,
            listeners: Mutex::new(listeners),
            drain: Mutex::new(compiled.drain),
        })
    }

    /// The bound address of each listener, by name (port 0 resolved).
    pub fn addrs(&self) -> Vec<(Arc<str>, SocketAddr)> {
        self.lock_listeners()
            .iter()
            .map(|l| (l.state.load().settings.name.clone(), l.local))
            .collect()
    }

    /// The config serving new requests now.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateway.load_full()
    }

    /// Serves new requests from `compiled`: listeners at a new address are
    /// bound first (a failure changes nothing), then the config is swapped in,
    /// then listeners no longer configured stop accepting and their
    /// connections are drained. Requests already routed finish on the old
    /// config; open connections serve their next request from the new one.
    pub fn apply(&self, compiled: Compiled) -> io::Result<()> {
        let metrics = compiled.gateway.metrics.clone();
        let mut listeners = self.lock_listeners();
        let mut added = Vec::new();
        for settings in &compiled.listeners {
            if !listeners.iter().any(|l| l.configured == settings.addr) {
                added.push(RunningListener::start(settings.clone(), &self.gateway, &metrics)?);
            }
        }
        for pool in compiled.gateway.upstreams.values() {
            pool.reset_targets();
        }
        start_background(&compiled.gateway);
        // Pools left out of the new config stop their probes on their own,
        // once the old config is dropped.
        self.gateway.store(Arc::new(compiled.gateway));
        let drain = compiled.drain;
        if let Ok(mut current) = self.drain.lock() {
            *current = drain;
        }
        let mut kept = Vec::new();
        for listener in listeners.drain(..) {
            match compiled.listeners.iter().find(|s| s.addr == listener.configured) {
                Some(settings) => {
                    if *listener.state.load().settings != *settings {
                        listener.state.store(Arc::new(ListenerState::new(settings.clone())));
                        // New certificates for HTTP/3 too (whether it is on is
                        // read when the listener starts).
                        if let (Some(endpoint), Some(quic)) =
                            (&listener.quic, settings.tls.as_ref().and_then(|t| t.quic.clone()))
                        {
                            endpoint.set_server_config(Some(quic));
                        }
                    }
                    kept.push(listener);
                }
                None => {
                    tracing::info!(addr = %listener.local, "listener removed: draining its connections");
                    tokio::spawn(listener.close(drain));
                }
            }
        }
        kept.extend(added);
        *listeners = kept;
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish within the drain
    /// deadline, then closes what is left.
    pub async fn shutdown(&self) -> Drained {
        let listeners: Vec<_> = self.lock_listeners().drain(..).collect();
        let drain = self.drain.lock().map(|d| *d).unwrap_or_default();
        let mut open = 0;
        let mut closing = tokio::task::JoinSet::new();
        for listener in listeners {
            closing.spawn(listener.close(drain));
        }
        while let Some(result) = closing.join_next().await {
            if let Ok(Drained::TimedOut { open: left }) = result {
                open += left;
            }
        }
        if open == 0 {
            Drained::Clean
        } else {
            Drained::TimedOut { open }
        }
    }

    /// Each listener's configured address and a duplicate of its socket,
    /// for a binary upgrade.
    pub fn sockets(&self) -> io::Result<Vec<(String, OwnedFd)>> {
        self.lock_listeners()
            .iter()
            .map(|l| Ok((l.configured.to_string(), l.fd.try_clone()?)))
            .collect()
    }

    fn lock_listeners(&self) -> std::sync::MutexGuard<'_, Vec<RunningListener>> {
        // A poisoned lock only means a panic elsewhere; the list is still whole.
        self.listeners.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ListenerState {
    fn new(settings: ListenerSettings) -> ListenerState {
        ListenerState {
            builder: Arc::new(http_builder(&settings)),
            h2_builder: Arc::new(http_builder(&settings).http2_only()),
            settings: Arc::new(settings),
        }
    }
}

impl RunningListener {
    fn start(
        settings: ListenerSettings,
        gateway: &Arc<ArcSwap<Gateway>>,
        metrics: &Arc<Metrics>,
    ) -> io::Result<RunningListener> {
        let configured = settings.addr;
        let socket = bind(configured).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("listener {:?} cannot bind {configured}: {e}", &*settings.name),
            )
        })?;
        let local = socket.local_addr()?;
        let fd = upgrade::duplicate(&socket)?;
        tracing::info!(listener = &*settings.name, addr = %local, "listening");
        let quic_config = settings.tls.as_ref().and_then(|tls| tls.quic.clone());
        let name = settings.name.clone();
        let state = Arc::new(ArcSwap::from_pointee(ListenerState::new(settings)));
        let connections = Arc::new(Connections::default());
        let (stop, stopped) = watch::channel(false);
        let draining = Arc::new(AtomicBool::new(false));
        // Counts outlive reloads: they are of the socket, not of a config.
        let admission = Arc::new(Admission::default());
        let quic = match quic_config {
            None => None,
            Some(config) => {
                let serving = super::http3::Serving {
                    gateway: gateway.clone(),
                    listener: state.clone(),
                    draining: draining.clone(),
                    admission: admission.clone(),
                };
                let endpoint = super::http3::start(local, config, serving).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("listener {:?} cannot bind {local} over UDP for HTTP/3: {e}", &*name),
                    )
                })?;
                tracing::info!(listener = &*name, addr = %local, "listening for HTTP/3");
                Some(endpoint)
            }
        };
        let acceptor = Acceptor {
            alt_svc: quic.as_ref().and_then(|_| super::http3::alt_svc(local.port())),
            draining: draining.clone(),
            state: state.clone(),
            gateway: gateway.clone(),
            connections: connections.clone(),
            metrics: metrics.clone(),
            admission,
        };
        Ok(RunningListener {
            configured,
            local,
            state,
            stop,
            acceptor: tokio::spawn(acceptor.run(socket, stopped)),
            connections,
            fd,
            draining,
            quic,
        })
    }

    /// Stops accepting, then lets open connections finish what they are doing
    /// within the drain timeout.
    ///
    /// HTTP/1.1 has no way to tell a client "this connection closes now"
    /// before its next request is already on the way, so connections are
    /// first asked to close (each response carries `Connection: close`, as
    /// Envoy does while draining) and only those still idle after
    /// `close_idle_after` are closed outright. HTTP/2 connections get GOAWAY,
    /// which says which streams were taken.
    async fn close(self, drain: Drain) -> Drained {
        // The socket closes with its last descriptor: this one, then the acceptor's.
        drop(self.fd);
        let _ = self.stop.send(true);
        let quic = self.quic;
        if let Some(endpoint) = &quic {
            // No new QUIC connections; open ones are closed after the drain.
            endpoint.set_server_config(None);
        }
        let _ = self.acceptor.await;
        self.draining.store(true, Ordering::Relaxed);
        let connections = self.connections;
        let deadline = tokio::time::Instant::now() + drain.timeout;
        let asked_until = tokio::time::Instant::now() + drain.close_idle_after;
        while connections.count() > 0 && tokio::time::Instant::now() < asked_until {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let open = connections.count();
        let drained = match tokio::time::timeout_at(deadline, connections.shutdown()).await {
            Ok(()) => Drained::Clean,
            Err(_) => Drained::TimedOut { open },
        };
        if let Some(endpoint) = quic {
            endpoint.close(0u32.into(), b"closing");
        }
        drained
    }
}

/// Starts the background work of a config about to serve: health checks,
/// discovery, plugins' key fetching. Parts carried over from the running
/// config are running already and are not started twice.
fn start_background(gateway: &Gateway) {
    for pool in gateway.upstreams.values() {
        pool.start_background();
    }
    for (_, route) in gateway.routes.iter() {
        route.plugins.start();
    }
}

/// The socket a predecessor passed for this address, or a new one.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    if let Some(inherited) = upgrade::take(&addr.to_string(), addr) {
        inherited.set_nonblocking(true)?;
        return TcpListener::from_std(inherited);
    }
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    // Lets a restarted gateway bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// hyper's own limits sit above the listener's by this much.
const HEADROOM: usize = 16 * 1024;

/// The longest head hyper reads; Portico's own HTTP/1.1 side leaves a longer
/// one to hyper, to be refused the same way.
fn hyper_max_head(settings: &ListenerSettings) -> usize {
    (settings.max_header_bytes + HEADROOM).max(8192)
}

/// hyper's own limits sit above the listener's, so that Portico's checks
/// answer first with a problem+json 431; hyper's bare 431 remains the
/// backstop for heads too big to parse at all. The HTTP/1 head timeout is
/// Portico's (see `client_timeouts`), so hyper gets no HTTP/1 timer.
fn http_builder(settings: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(hyper_max_head(settings))
        .max_headers(settings.max_headers + 64)
        .keep_alive(true)
        // Head and body copied into one buffer and written with one plain
        // write, rather than gathered by writev from their own buffers:
        // bench/ab.py +4-6% requests/s on /small, /16k unchanged. The buffer
        // is bounded by max_buf_size, so a streamed body still waits for the
        // client (tests/gateway/streaming.rs).
        .writev(false);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes + HEADROOM).unwrap_or(u32::MAX))
        .max_concurrent_streams(settings.http2_max_streams)
        // RFC 8441: WebSocket over HTTP/2 streams.
        .enable_connect_protocol()
        // Rapid reset (CVE-2023-44487): streams a client opens and resets
        // before they are served, and errors it provokes, are bounded; past
        // that the connection is closed.
        .max_pending_accept_reset_streams(Some(32))
        .max_local_error_reset_streams(Some(256));
    builder
}

struct Acceptor {
    alt_svc: Option<http::HeaderValue>,
    draining: Arc<AtomicBool>,
    state: Arc<ArcSwap<ListenerState>>,
    gateway: Arc<ArcSwap<Gateway>>,
    connections: Arc<Connections>,
    metrics: Arc<Metrics>,
    admission: Arc<Admission>,
}

impl Acceptor {
    async fn run(self, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.wait_for(|stop| *stop) => return,
            };
            match accepted {
                Ok((stream, peer)) => self.serve(stream, peer),
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::error!(listener = &*self.state.load().settings.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        let state = self.state.load();
        let settings = &state.settings;
        let admitted = match self
            .admission
            .admit(peer, &settings.name, &settings.admission, &self.metrics)
        {
            Ok(admitted) => admitted,
            Err(refusal) => {
                if settings.tls.is_none() {
                    // A plain HTTP client hears why; a TLS one cannot without a handshake.
                    let _ = stream.try_write(&refusal_response(refusal));
                }
                return;
            }
        };
        let _ = stream.set_nodelay(true);
        let active = Arc::new(ActiveRequests::default());
        let mut conn = Connection {
            admitted,
            gateway: self.gateway.clone(),
            listener: settings.clone(),
            peer,
            peer_ip: super::forward::client_ip_header(peer.ip()),
            active: active.clone(),
            draining: self.draining.clone(),
            client_certificate: None,
            alt_svc: self.alt_svc.clone(),
        };
        let (builder, h2_builder) = (state.builder.clone(), state.h2_builder.clone());
        let max_head = hyper_max_head(settings);
        let tracked = self.connections.track();
        let open = OpenConnection::new(&self.metrics);
        let tls = settings.tls.clone();
        let (idle, header_read) = (settings.idle_timeout, settings.header_read_timeout);
        tokio::spawn(async move {
            let closing = Arc::new(AtomicBool::new(false));
            let served = match tls {
                None => {
                    let serving = http1::Serving {
                        conn: Arc::new(conn),
                        hyper: builder,
                        max_head,
                        closing,
                    };
                    let io = ClientTimeouts::new(stream, active, idle, header_read);
                    let close = http1::close_when_told(&serving);
                    tracked.serve(http1::serve(io, serving), close).await
                }
                Some(tls) => {
                    // The handshake gets the time a request head gets.
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
                    let socket = super::tls_socket::TlsSocket(stream);
                    let stream = match tokio::time::timeout(header_read, acceptor.accept(socket)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(error)) => {
                            tracing::debug!(%peer, %error, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    conn.client_certificate = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|chain| chain.first())
                        .and_then(|der| super::tls::ClientCertificate::of(der))
                        .map(Arc::new);
                    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                    let conn = Arc::new(conn);
                    let io = ClientTimeouts::new(stream, active, idle, header_read);
                    if h2 {
                        let service = service_fn(move |request| Box::pin(from_hyper(&conn, request)));
                        tracked
                            .serve(h2_builder.serve_connection(TokioIo::new(io), service), |c| {
                                c.graceful_shutdown()
                            })
                            .await
                    } else {
                        let serving = http1::Serving {
                            conn,
                            hyper: builder,
                            max_head,
                            closing,
                        };
                        let close = http1::close_when_told(&serving);
                        tracked.serve(http1::serve(io, serving), close).await
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%peer, %error, "client connection ended with an error");
            }
            drop(open);
        });
    }
}

/// The answer a plain HTTP client gets when its connection is refused at
/// accept, before any of its request was read.
fn refusal_response(refusal: Refusal) -> Vec<u8> {
    let (status, detail) = match refusal {
        Refusal::MaxConnections => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "the gateway has too many connections",
        ),
        Refusal::MaxConnectionsPerIp => (
            http::StatusCode::TOO_MANY_REQUESTS,
            "too many connections from your address",
        ),
        Refusal::ConnectionRatePerIp => (
            http::StatusCode::TOO_MANY_REQUESTS,
            "too many new connections from your address",
        ),
    };
    let body = crate::error::problem_document(status, detail, serde_json::json!({}));
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
