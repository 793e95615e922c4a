//! Portico's own HTTP/1.1 server side, for the requests nearly every client
//! sends: HTTP/1.1, with no body or one of declared length. The
//! connection's task reads the head, runs the request's session in place
//! (feeding it the body as it asks), and writes the answer (its head and the
//! body's first bytes in one write), watching the socket meanwhile so that
//! a client that leaves cancels its upstream request.
//!
//! Against hyper's server side this saves its dispatcher's hand-offs, and a
//! new 8 KiB read buffer each request (hyper's read buffer was still shared
//! with the last request's head when it read again). From the first request
//! that is not of that kind (a chunked body, an upgrade, `Expect`, `TE`,
//! HTTP/1.0, HTTP/2 prior knowledge, a malformed head) hyper serves the rest
//! of the connection, the bytes read so far handed to it first, so those are
//! answered exactly as before.
//!
//! - [`request`]: whether a head is ours, and its `http` form;
//! - [`body`]: the request body, handed from the connection to the session;
//! - [`response`]: the answer's head, framed as hyper frames it.

mod body;
mod request;
mod response;

pub use body::RequestBody;

use super::connection::Connection;
use super::request_id::X_REQUEST_ID;
use super::session::handle;
use crate::body::{Inbound, ResponseBody, Wire};
use crate::error::{ErrorKind, ProxyError};
use crate::upstream::http1::{Framing, Outgoing};
use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Method, Request, StatusCode};
use http_body::Body;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use request::Head;
use response::BodyLength;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads are made into this much free space at least.
const READ_SIZE: usize = 8 * 1024;
/// Bytes of later requests read while one is served; past this the socket
/// is left unread until the answer is written.
const PIPELINED_AT_MOST: usize = 64 * 1024;

/// How a connection is served: the listener's limits, hyper for what is not
/// ours, and the flag that asks it to finish.
pub(super) struct Serving {
    pub(super) conn: Arc<Connection>,
    pub(super) hyper: Arc<auto::Builder<TokioExecutor>>,
    /// A head longer than this is hyper's to refuse.
    pub(super) max_head: usize,
    /// Set when the listener drains: the connection closes after the answer
    /// in progress, or at once when idle.
    pub(super) closing: Arc<AtomicBool>,
}

/// What `graceful::Tracked` calls to have the connection finish: it raises
/// the flag, which the connection reads each time it is woken.
pub(super) fn close_when_told<C>(serving: &Serving) -> impl FnOnce(Pin<&mut C>) {
    let closing = serving.closing.clone();
    move |_| closing.store(true, Ordering::Relaxed)
}

/// Serves the connection until the client or the gateway closes it.
pub(super) async fn serve<I>(mut io: I, serving: Serving) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut read = BytesMut::with_capacity(READ_SIZE);
    let mut out = BytesMut::new();
    loop {
        let (parts, length, close) = loop {
            if !read.is_empty() {
                match request::parse(&mut read) {
                    Head::Ours { parts, length, close } => break (parts, length, close),
                    Head::Partial if read.len() <= serving.max_head => {}
                    Head::Partial | Head::Theirs => return hyper_serves(io, read.freeze(), &serving).await,
                }
            }
            let filled = poll_fn(|cx| {
                if read.is_empty() && serving.closing.load(Ordering::Relaxed) {
                    return Poll::Ready(Ok(0));
                }
                fill(&mut io, &mut read, cx)
            })
            .await;
            if !matches!(filled, Ok(1..)) {
                // The client closed (or timed out) between requests.
                let _ = io.shutdown().await;
                return Ok(());
            }
        };
        let to_head_request = parts.method == Method::HEAD;
        let (body, mut feed) = match length {
            0 => (Inbound::Empty, None),
            _ => {
                let (body, feed) = body::channel(length, &mut read);
                (Inbound::Wire(Wire::Http1(body)), Some(feed))
            }
        };
        let mut session = pin!(handle(serving.conn.clone(), Request::from_parts(parts, body)));
        let answered = alongside(&mut io, &mut read, &mut feed, |_, cx| {
            session.as_mut().poll(cx).map(|answered| match answered {
                Ok(response) => response,
                Err(never) => match never {},
            })
        })
        .await;
        // A client that leaves drops the session, which cancels its upstream
        // request.
        let Some(response) = answered else { return Ok(()) };
        // A body still coming when the answer is ready (a refusal that did
        // not read it) would have to be read through before the next head:
        // the connection closes after the answer instead, as hyper's does.
        let body_on_wire = feed.as_ref().is_some_and(|feed| feed.unread() > read.len() as u64);
        let keep_alive = !close && !body_on_wire && !serving.closing.load(Ordering::Relaxed);
        let (parts, body) = response.into_parts();
        let length = match (body.is_end_stream(), body.size_hint().exact()) {
            (true, _) => BodyLength::Empty,
            (false, Some(length)) => BodyLength::Known(length),
            (false, None) => BodyLength::Unknown,
        };
        let written = response::head(&mut out, &parts, to_head_request, length, keep_alive);
        // A body the answer cannot carry (HEAD, 204, 304) is not read.
        let body = match written.framing {
            Framing::Length(0) => None,
            _ => Some(body),
        };
        let mut outgoing = Outgoing::new(std::mem::take(&mut out), body, written.framing);
        outgoing.drop_trailers();
        // The answer may go out while the upstream still reads the body (an
        // early answer): the body is fed meanwhile.
        let sent = alongside(&mut io, &mut read, &mut feed, |io, cx| outgoing.poll_write(io, cx)).await;
        if let Some(Err(_)) = sent {
            if let Some(body) = outgoing.unsent_body() {
                let request_id = parts
                    .headers
                    .get(&X_REQUEST_ID)
                    .cloned()
                    .unwrap_or(HeaderValue::from_static(""));
                answer_broken(&mut io, &mut out, body, &request_id, to_head_request).await;
                return Ok(());
            }
        }
        if !matches!(sent, Some(Ok(()))) || written.close {
            let _ = io.shutdown().await;
            return Ok(());
        }
        out = outgoing.into_buffer();
        // What the session left of its body is not the next request.
        if let Some(feed) = feed.as_mut() {
            feed.discard_buffered(&mut read);
        }
        // Written: the next answer read on this thread takes the map.
        crate::header_maps::give(parts.headers);
    }
}

/// The answer's body failed before any of it was written (an upstream's
/// malformed or cut first chunk, read with its head): the client gets a 502
/// problem of Portico's own, and the connection closes, rather than a
/// connection closed with no answer. The log line says 502 too.
async fn answer_broken<I>(
    io: &mut I,
    out: &mut BytesMut,
    mut broken: ResponseBody,
    request_id: &HeaderValue,
    to_head_request: bool,
) where
    I: AsyncWrite + Unpin,
{
    broken.answered_instead(StatusCode::BAD_GATEWAY);
    drop(broken);
    let problem = ProxyError::new(
        ErrorKind::UpstreamBroken,
        "the upstream's answer broke off before any of it could be sent",
    )
    .to_response(request_id);
    let (mut parts, body) = problem.into_parts();
    parts.headers.insert(&X_REQUEST_ID, request_id.clone());
    let length = body.size_hint().exact().map_or(BodyLength::Unknown, BodyLength::Known);
    let written = response::head(out, &parts, to_head_request, length, false);
    let body = (written.framing != Framing::Length(0)).then_some(body);
    let mut outgoing = Outgoing::new(std::mem::take(out), body, written.framing);
    outgoing.drop_trailers();
    let _ = poll_fn(|cx| outgoing.poll_write(io, cx)).await;
    let _ = io.shutdown().await;
}

/// Runs `step` (the session, then the writing of its answer) to its end,
/// meanwhile feeding the request body to whoever asks for it and watching
/// the client: `None` when the client left first.
async fn alongside<I, T>(
    io: &mut I,
    read: &mut BytesMut,
    feed: &mut Option<body::Feed>,
    mut step: impl FnMut(&mut I, &mut Context<'_>) -> Poll<T>,
) -> Option<T>
where
    I: AsyncRead + Unpin,
{
    poll_fn(|cx| loop {
        if let Poll::Ready(done) = step(io, cx) {
            return Poll::Ready(Some(done));
        }
        // The body handed over: the session is polled again at once.
        if feed
            .as_mut()
            .is_some_and(|feed| feed.poll_feed(io, read, cx).is_ready())
        {
            continue;
        }
        return watch(io, read, cx).map(|()| None);
    })
    .await
}

/// Whether a `Connection` value names `close` among its options.
fn has_close_token(value: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|token| token.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Reads into `read`, with room made first.
fn fill<I: AsyncRead + Unpin>(io: &mut I, read: &mut BytesMut, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
    if read.capacity() - read.len() < READ_SIZE / 8 {
        read.reserve(READ_SIZE);
    }
    tokio_util::io::poll_read_buf(Pin::new(io), cx, read)
}

/// Watches the client while its request is served: later requests' bytes
/// are kept, and `Ready` says it has closed the connection (or it failed).
fn watch<I: AsyncRead + Unpin>(io: &mut I, read: &mut BytesMut, cx: &mut Context<'_>) -> Poll<()> {
    while read.len() < PIPELINED_AT_MOST {
        match fill(io, read, cx) {
            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(_)) => {}
            Poll::Pending => return Poll::Pending,
        }
    }
    Poll::Pending
}

/// hyper serves the rest of the connection, from the bytes read so far.
async fn hyper_serves<I>(io: I, read: Bytes, serving: &Serving) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let conn = serving.conn.clone();
    let service = hyper::service::service_fn(move |request| super::session::from_hyper(&conn, request));
    let io = TokioIo::new(Rewound { read, io });
    let mut connection = pin!(serving.hyper.serve_connection_with_upgrades(io, service));
    let mut told = false;
    poll_fn(|cx| {
        if !told && serving.closing.load(Ordering::Relaxed) {
            told = true;
            connection.as_mut().graceful_shutdown();
        }
        connection.as_mut().poll(cx)
    })
    .await
}

/// A stream whose first bytes were read already.
struct Rewound<I> {
    read: Bytes,
    io: I,
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewound<I> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.read.is_empty() {
            let n = self.read.len().min(buf.remaining());
            buf.put_slice(&self.read.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewound<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
