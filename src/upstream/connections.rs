//! Connections to one target: keep-alive HTTP/1.1 connections, or one
//! shared HTTP/2 connection that carries every request at once.
//!
//! For HTTP/1.1, each target keeps its idle connections in a small LIFO stack (the most
//! recently used connection is the one most likely still open and warm).
//! A connection goes back on the stack only when its response body ended
//! cleanly; one abandoned mid-response is closed with it. Expired or closed
//! connections are dropped as the stack is used, so it needs no sweeper task,
//! and an idle connection needs no task either.

use super::http1::Connection;
use super::transport::{to_http2, SendError, Sender};
use super::Incoming;
use crate::body::RequestBody;
use crate::config::model::UpstreamProtocol;
use futures_util::future::Either;
use futures_util::FutureExt;
use http::uri::Scheme;
use http::{Request, Response};
use hyper::client::conn::http2;
use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Idle connections are closed after this long, below the common 60-120 s
/// server-side keep-alive, so Portico closes them first and rarely sends a
/// request on a connection the target is closing.
const IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// Idle connections kept per target; more are closed when released.
const MAX_IDLE: usize = 512;

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
    connection: Box<Connection>,
    since: Instant,
}

#[derive(Default)]
pub struct Connections {
    idle: Mutex<VecDeque<Idle>>,
    /// HTTP/2: the connection every request shares, while it is open.
    shared: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Held while an HTTP/2 connection is being made.
    connecting: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").field("idle", &self.idle_count()).finish()
    }
}

/// A request's claim on its target's connections, made only by [`send`]:
/// [`Lease::release`] puts the HTTP/1.1 connection its answer's body hands
/// back on the target's idle stack (an HTTP/2 connection is never taken
/// from the others). It holds no reference to the target: whoever holds it
/// holds the target already (`Checkout`, with the attempt's in-flight count).
pub struct Lease(());

impl Lease {
    fn new() -> Lease {
        Lease(())
    }

    /// Gives `connection` back to `target`, the one the answer came from.
    pub fn release(self, target: &super::Target, connection: Option<Box<Connection>>) {
        if let Some(connection) = connection {
            target.connections.put(connection);
        }
    }
}

impl Connections {
    pub fn idle_count(&self) -> usize {
        self.idle.lock().map_or(0, |idle| idle.len())
    }

    /// The shared HTTP/2 connection, unless it closed.
    fn shared(&self) -> Option<http2::SendRequest<RequestBody>> {
        let mut shared = self.shared.lock().ok()?;
        match &*shared {
            Some(sender) if !sender.is_closed() => Some(sender.clone()),
            Some(_) => {
                *shared = None;
                None
            }
            None => None,
        }
    }

    /// Makes a new HTTP/2 connection the shared one.
    fn share(&self, sender: http2::SendRequest<RequestBody>) {
        if let Ok(mut shared) = self.shared.lock() {
            *shared = Some(sender);
        }
    }

    /// The most recently used idle connection that is still open. Closed
    /// ones are dropped outside the lock.
    fn take(&self) -> Option<Box<Connection>> {
        loop {
            let mut entry = self.idle.lock().ok()?.pop_back()?;
            if entry.since.elapsed() < IDLE_TIMEOUT && entry.connection.is_reusable() {
                return Some(entry.connection);
            }
        }
    }

    fn put(&self, mut connection: Box<Connection>) {
        connection.park();
        let Ok(mut idle) = self.idle.lock() else { return };
        // The oldest entries sit at the front: drop those that have expired.
        let now = Instant::now();
        while idle.front().is_some_and(|e| now - e.since >= IDLE_TIMEOUT) {
            idle.pop_front();
        }
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { connection, since: now });
        }
    }
}

/// The answer's head did not come by the attempt's deadline.
pub struct TimedOut;

/// Sends `request` (origin-form URI, Host set) to `target`: over HTTP/1.1
/// on an idle connection when one is usable, else on a new one; over
/// HTTP/2 on the target's shared connection, made when there is none.
/// [`TimedOut`] when the answer's head has not come by `deadline`.
///
/// Not an `async fn` of its own: the protocol's future is returned as it
/// is, so that the request (416 bytes) is not moved through one more layer.
pub fn send<'a>(
    target: &'a Arc<super::Target>,
    request: Request<RequestBody>,
    connect_timeout: Duration,
    deadline: Instant,
) -> impl Future<Output = Result<Result<(Response<Incoming>, Lease), Failed>, TimedOut>> + 'a {
    match &target.transport.protocol {
        UpstreamProtocol::Http1 => Either::Left(send_http1(target, request, connect_timeout, deadline)),
        _ => Either::Right(
            tokio::time::timeout_at(deadline, send_http2(target, request, connect_timeout))
                .map(|answer| answer.map_err(|_| TimedOut)),
        ),
    }
}

async fn send_http1(
    target: &Arc<super::Target>,
    request: Request<RequestBody>,
    connect_timeout: Duration,
    deadline: Instant,
) -> Result<Result<(Response<Incoming>, Lease), Failed>, TimedOut> {
    let connection = match target.connections.take() {
        Some(connection) => connection,
        None => {
            tracing::trace!(target = &*target.addr, "opening a connection");
            let connecting = target.transport.connect(target, connect_timeout);
            match tokio::time::timeout_at(deadline, connecting)
                .await
                .map_err(|_| TimedOut)?
            {
                Ok(Sender::Http1(connection)) => connection,
                Ok(Sender::Http2(..)) => return Ok(Err(wrong_protocol(request))),
                Err(error) => {
                    return Ok(Err(Failed {
                        error,
                        unsent: Some(request),
                    }))
                }
            }
        }
    };
    // The connection's own timer bounds the head: no timer made per request.
    match connection.send(request, Some(deadline)).await {
        Ok(response) => Ok(Ok((response.map(Incoming::Http1), Lease::new()))),
        Err(super::http1::Error::TimedOut) => Err(TimedOut),
        Err(error) => Ok(Err(SendError::Http1(error).into())),
    }
}

async fn send_http2(
    target: &Arc<super::Target>,
    mut request: Request<RequestBody>,
    connect_timeout: Duration,
) -> Result<(Response<Incoming>, Lease), Failed> {
    if request.headers().contains_key(http::header::UPGRADE) {
        return Err(Failed::from(SendError::Protocol(
            "upgrades (WebSocket) need an upstream with `protocol: http1`",
        )));
    }
    let scheme = match target.transport.protocol {
        UpstreamProtocol::Http2 => Scheme::HTTPS,
        _ => Scheme::HTTP,
    };
    to_http2(&mut request, scheme.clone(), Some(&target.authority));
    if let Some(mut sender) = target.connections.shared() {
        if sender.ready().await.is_ok() {
            match sender.try_send_request(request).await {
                Ok(response) => return Ok((response.map(Incoming::Http2), Lease::new())),
                Err(mut error) => match error.take_message() {
                    // Refused before it was sent (the connection is going
                    // away): it goes on a new connection.
                    Some(unsent) => request = unsent,
                    None => return Err(SendError::Http(error.into_error()).into()),
                },
            }
        }
    }
    // One connection is made at a time: requests that find none wait for
    // it rather than each opening their own.
    let connecting = target.connections.connecting.lock().await;
    if let Some(mut sender) = target.connections.shared() {
        drop(connecting);
        if sender.ready().await.is_ok() {
            let response = sender.send_request(request).await.map_err(SendError::Http)?;
            return Ok((response.map(Incoming::Http2), Lease::new()));
        }
        return Err(Failed {
            error: SendError::Protocol("the target's HTTP/2 connection closed"),
            unsent: Some(request),
        });
    }
    tracing::trace!(target = &*target.addr, "opening an HTTP/2 connection");
    let mut sender = match target.transport.connect(target, connect_timeout).await {
        Ok(Sender::Http2(sender, _)) => sender,
        Ok(Sender::Http1(_)) => return Err(wrong_protocol(request)),
        Err(error) => {
            return Err(Failed {
                error,
                unsent: Some(request),
            })
        }
    };
    target.connections.share(sender.clone());
    drop(connecting);
    let response = sender.send_request(request).await.map_err(SendError::Http)?;
    Ok((response.map(Incoming::Http2), Lease::new()))
}

/// The transport made a connection of the other protocol: cannot happen,
/// as both follow `transport.protocol`; answered as an error, not a panic.
fn wrong_protocol(request: Request<RequestBody>) -> Failed {
    Failed {
        error: SendError::Protocol("the connection made is not of the upstream's protocol"),
        unsent: Some(request),
    }
}

/// The address to connect to, when the target is written as an IP address
/// (names are resolved at each new connection).
pub fn literal_addr(authority: &http::uri::Authority) -> Option<SocketAddr> {
    authority.as_str().parse().ok()
}
