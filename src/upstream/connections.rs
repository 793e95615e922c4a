//! Keep-alive HTTP/1.1 connections to one target.
//!
//! Each target keeps its idle connections in a small LIFO stack (the most
//! recently used connection is the one most likely still open and warm).
//! A connection goes back on the stack only when its response body ended
//! cleanly; one abandoned mid-response is closed by hyper. Expired or closed
//! connections are dropped as the stack is used, so it needs no sweeper task.

use crate::body::RequestBody;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Idle connections are closed after this long, below the common 60-120 s
/// server-side keep-alive, so Portico closes them first and rarely sends a
/// request on a connection the target is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Idle connections kept per target; more are closed when released.
const MAX_IDLE: usize = 512;

/// Why a request could not be exchanged with a target.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect failed: {0}")]
    Connect(#[source] io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("HTTP exchange failed: {0}")]
    Http(#[source] hyper::Error),
}

/// A failed [`send`]; `unsent` holds the request when it never left Portico
/// (the connection could not be made), so it may go to another target.
pub struct Failed {
    pub error: SendError,
    pub unsent: Option<Request<RequestBody>>,
}

impl From<SendError> for Failed {
    fn from(error: SendError) -> Failed {
        Failed { error, unsent: None }
    }
}

struct Idle {
    sender: SendRequest<RequestBody>,
    since: Instant,
}

#[derive(Default)]
pub struct Connections {
    idle: Mutex<VecDeque<Idle>>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").field("idle", &self.idle_count()).finish()
    }
}

/// A connection in use by one request; [`Lease::release`] returns it to the
/// target's idle stack once the response has been read whole.
pub struct Lease {
    sender: SendRequest<RequestBody>,
    pool: Arc<super::Target>,
}

impl Lease {
    pub fn release(self) {
        self.pool.connections.put(self.sender);
    }
}

impl Connections {
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    fn take(&self) -> Option<SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().ok()?;
        while let Some(entry) = idle.pop_back() {
            if !entry.sender.is_closed() && entry.since.elapsed() < IDLE_TIMEOUT {
                return Some(entry.sender);
            }
        }
        None
    }

    fn put(&self, sender: SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let Ok(mut idle) = self.idle.lock() else { return };
        // The oldest entries sit at the front: drop those that have expired or closed.
        while idle
            .front()
            .is_some_and(|e| e.sender.is_closed() || e.since.elapsed() >= IDLE_TIMEOUT)
        {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }
}

/// Sends `request` (origin-form URI, Host set) to `target`, on an idle
/// connection when one is usable, else on a new one.
pub async fn send(
    target: &Arc<super::Target>,
    mut request: Request<RequestBody>,
    connect_timeout: Duration,
) -> Result<(Response<Incoming>, Lease), Failed> {
    while let Some(mut sender) = target.connections.take() {
        // Right after the previous response, hyper may still be finishing
        // with the connection; `ready` waits for that, or fails if it closed.
        tracing::trace!(target = &*target.addr, "reusing an idle connection");
        if sender.ready().await.is_err() {
            continue;
        }
        match sender.try_send_request(request).await {
            Ok(response) => {
                return Ok((
                    response,
                    Lease {
                        sender,
                        pool: target.clone(),
                    },
                ))
            }
            Err(mut error) => match error.take_message() {
                // The connection closed before the request was written: the
                // request is untouched and safe to send on another connection.
                Some(unsent) => request = unsent,
                None => return Err(SendError::Http(error.into_error()).into()),
            },
        }
    }
    tracing::trace!(target = &*target.addr, "opening a connection");
    let mut sender = match connect_fresh(target, connect_timeout).await {
        Ok(sender) => sender,
        Err(error) => {
            return Err(Failed {
                error,
                unsent: Some(request),
            })
        }
    };
    let response = sender.send_request(request).await.map_err(SendError::Http)?;
    Ok((
        response,
        Lease {
            sender,
            pool: target.clone(),
        },
    ))
}

/// A new connection to `target`, outside the pool (requests use [`send`]).
pub(crate) async fn connect_fresh(
    target: &super::Target,
    timeout: Duration,
) -> Result<SendRequest<RequestBody>, SendError> {
    let connecting = async {
        match target.socket_addr {
            Some(addr) => TcpStream::connect(addr).await,
            None => TcpStream::connect(target.authority.as_str()).await,
        }
    };
    let stream = tokio::time::timeout(timeout, connecting)
        .await
        .map_err(|_| SendError::ConnectTimeout(timeout))?
        .map_err(SendError::Connect)?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await.map_err(SendError::Http)?;
    tokio::spawn(async move {
        // With upgrades: a WebSocket handshake hands the connection over.
        if let Err(error) = connection.with_upgrades().await {
            tracing::debug!(%error, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

/// The address to connect to, when the target is written as an IP address
/// (names are resolved at each new connection).
pub fn literal_addr(authority: &http::uri::Authority) -> Option<SocketAddr> {
    authority.as_str().parse().ok()
}
