//! Listeners: accept connections, serve HTTP/1.1 and HTTP/2 (prior knowledge)
//! on them, and drain on shutdown.

use super::client_timeouts::{ActiveRequests, ClientTimeouts};
use super::handler::{handle, Connection};
use crate::gateway::{Compiled, Gateway, ListenerSettings};
use crate::upstream::{discovery, health_check};
use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A running gateway: its listeners, and the config they serve from.
pub struct Server {
    gateway: Arc<ArcSwap<Gateway>>,
    /// Each listener's name and address as configured (port 0 unresolved).
    configured: Vec<(Arc<str>, SocketAddr)>,
    addrs: Vec<(Arc<str>, SocketAddr)>,
    stop_accepting: watch::Sender<bool>,
    acceptors: Vec<JoinHandle<()>>,
    connections: Arc<GracefulShutdown>,
    drain_timeout: Duration,
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
        health_check::start(compiled.gateway.upstreams.values());
        discovery::start(compiled.gateway.upstreams.values());
        let gateway = Arc::new(ArcSwap::from_pointee(compiled.gateway));
        let (stop_accepting, stopped) = watch::channel(false);
        let connections = Arc::new(GracefulShutdown::new());
        let configured = compiled.listeners.iter().map(|l| (l.name.clone(), l.addr)).collect();
        let mut addrs = Vec::new();
        let mut acceptors = Vec::new();
        for settings in compiled.listeners {
            let listener = bind(settings.addr).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("listener {:?} cannot bind {}: {e}", &*settings.name, settings.addr),
                )
            })?;
            let local = listener.local_addr()?;
            addrs.push((settings.name.clone(), local));
            tracing::info!(listener = &*settings.name, addr = %local, "listening");
            let acceptor = Acceptor {
                builder: Arc::new(http_builder(&settings)),
                settings: Arc::new(settings),
                gateway: gateway.clone(),
                connections: connections.clone(),
            };
            acceptors.push(tokio::spawn(acceptor.run(listener, stopped.clone())));
        }
        Ok(Server {
            gateway,
            configured,
            addrs,
            stop_accepting,
            acceptors,
            connections,
            drain_timeout: compiled.drain_timeout,
        })
    }

    /// The bound address of each listener, by name (port 0 resolved).
    pub fn addrs(&self) -> &[(Arc<str>, SocketAddr)] {
        &self.addrs
    }

    /// The listeners as the config that started the server wrote them.
    pub fn configured_listeners(&self) -> &[(Arc<str>, SocketAddr)] {
        &self.configured
    }

    /// Serves new requests from `gateway`; requests already routed finish on the old one.
    pub fn swap(&self, gateway: Gateway) {
        // The old pools' probes end on their own once the old config is dropped.
        health_check::start(gateway.upstreams.values());
        discovery::start(gateway.upstreams.values());
        self.gateway.store(Arc::new(gateway));
    }

    /// Stops accepting, lets in-flight requests finish within the drain
    /// deadline, then closes what is left.
    pub async fn shutdown(self) -> Drained {
        let _ = self.stop_accepting.send(true);
        for acceptor in self.acceptors {
            let _ = acceptor.await;
        }
        let connections = match Arc::try_unwrap(self.connections) {
            Ok(connections) => connections,
            Err(_) => return Drained::TimedOut { open: 0 },
        };
        let open = connections.count();
        match tokio::time::timeout(self.drain_timeout, connections.shutdown()).await {
            Ok(()) => Drained::Clean,
            Err(_) => Drained::TimedOut { open },
        }
    }
}

fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    // Lets a restarted gateway bind while old connections sit in TIME_WAIT.
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    TcpListener::from_std(socket.into())
}

/// hyper's own limits sit above the listener's, so that Portico's checks
/// answer first with a problem+json 431; hyper's bare 431 remains the
/// backstop for heads too big to parse at all. The HTTP/1 head timeout is
/// Portico's (see `client_timeouts`), so hyper gets no HTTP/1 timer.
fn http_builder(settings: &ListenerSettings) -> auto::Builder<TokioExecutor> {
    const HEADROOM: usize = 16 * 1024;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size((settings.max_header_bytes + HEADROOM).max(8192))
        .max_headers(settings.max_headers + 64)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(settings.max_header_bytes + HEADROOM).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    builder
}

struct Acceptor {
    builder: Arc<auto::Builder<TokioExecutor>>,
    settings: Arc<ListenerSettings>,
    gateway: Arc<ArcSwap<Gateway>>,
    connections: Arc<GracefulShutdown>,
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
                    tracing::error!(listener = &*self.settings.name, %error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn serve(&self, stream: TcpStream, peer: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let active = Arc::new(ActiveRequests::default());
        let settings = &self.settings;
        let io = TokioIo::new(ClientTimeouts::new(
            stream,
            active.clone(),
            settings.idle_timeout,
            settings.header_read_timeout,
        ));
        let conn = Arc::new(Connection {
            gateway: self.gateway.clone(),
            listener: self.settings.clone(),
            peer,
            peer_ip: super::forward::client_ip_header(peer.ip()),
            active,
        });
        let builder = self.builder.clone();
        let watcher = self.connections.watcher();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(conn.clone(), request));
            let connection = builder.serve_connection(io, service);
            if let Err(error) = watcher.watch(connection).await {
                tracing::debug!(%peer, %error, "client connection ended with an error");
            }
        });
    }
}
