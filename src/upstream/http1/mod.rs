//! Portico's own HTTP/1.1 client for its upstream connections.
//!
//! A request is written and its answer read in the request's own task, on a
//! connection it holds for the exchange: no task per connection and no
//! channel between it and the request, so a proxied request costs one task
//! and no cross-task wake-ups (Pingora works the same way). Parsing is
//! `httparse`'s; the framing rules are RFC 9112's, applied strictly so that
//! an answer can never be read as two or two as one:
//!
//! - [`encode`]: the request head, and the body framed by its length or chunked;
//! - [`head`]: the answer's head, and how its body is framed;
//! - [`body`]: the answer's body, read as the client's side asks for it; once
//!   read whole, the connection goes back to its pool;
//! - [`upgraded`]: the connection after a `101`, for WebSocket.

mod body;
mod encode;
mod head;
mod stream;
mod upgraded;

pub use body::Body;
pub use encode::{Framing, Outgoing, COPY_MAX};
pub use head::decimal_length;
pub use stream::Stream;
pub use upgraded::Upgraded;

use bytes::{Bytes, BytesMut};
use http::{Method, Request, Response};
use std::future::poll_fn;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::{Instant, Sleep};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Reads are made into this much free space at least.
const READ_SIZE: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection failed: {0}")]
    Io(#[source] io::Error),
    #[error("the upstream closed the connection before answering")]
    ClosedBeforeAnswer,
    #[error("the upstream closed the connection in the middle of the body")]
    ClosedMidBody,
    #[error(
        "the response head is larger than {} bytes or has more than {} fields",
        head::MAX_HEAD,
        head::MAX_FIELDS
    )]
    HeadTooLarge,
    #[error("the response head is malformed: {0}")]
    MalformedHead(&'static str),
    #[error("the response's Content-Length is invalid or conflicting")]
    BadLength,
    #[error("the response's chunked body is malformed")]
    BadChunk,
    #[error("the request body failed: {0}")]
    RequestBody(#[source] BoxError),
    #[error("the request body does not match its Content-Length")]
    RequestLength,
    #[error("the upstream did not answer by the deadline")]
    TimedOut,
}

/// One connection to a target, idle or lent to one request at a time. Boxed
/// once when made, so that lending it moves a pointer.
pub struct Connection {
    stream: Stream,
    /// Bytes read and not yet used: part of an answer's head or body.
    read: BytesMut,
    /// Reused for each request's head.
    write: BytesMut,
    /// The deadline for each answer's head, made with the connection's first
    /// deadline and moved for each later one. Moving a registered timer later
    /// is one compare-and-swap; a new timer each request was an insertion
    /// into tokio's timer wheel and a removal from it.
    head_timer: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    pub fn new(stream: Stream) -> Box<Connection> {
        Box::new(Connection {
            stream,
            read: BytesMut::new(),
            write: BytesMut::new(),
            head_timer: None,
        })
    }

    /// Whether an idle connection can carry another request: the target has
    /// neither closed it nor sent anything unasked. Never waits, and costs
    /// no system call when nothing has arrived since the last read.
    pub fn is_reusable(&mut self) -> bool {
        if !self.read.is_empty() {
            return false;
        }
        let mut byte = [0u8; 1];
        let mut buf = ReadBuf::new(&mut byte);
        let mut cx = Context::from_waker(Waker::noop());
        Pin::new(&mut self.stream).poll_read(&mut cx, &mut buf).is_pending()
    }

    /// Lets go of the waker of the request that last waited for the head
    /// timer, so that an idle connection holds no finished task's memory
    /// and the timer's firing wakes no one.
    pub fn park(&mut self) {
        if let Some(timer) = self.head_timer.as_mut() {
            let _ = timer.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        }
    }

    /// Reads more of the answer into `read`.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.read.capacity() - self.read.len() < READ_SIZE / 4 {
            self.read.reserve(READ_SIZE);
        }
        tokio_util::io::poll_read_buf(Pin::new(&mut self.stream), cx, &mut self.read)
    }

    /// Sends `request` (origin-form, its Host set) and reads the answer's
    /// head. The body is read from the returned response's [`Body`], which
    /// holds the connection until it is done. An answer that comes before
    /// the request body was sent whole (a 413, say) is returned as soon as it
    /// comes, and the rest of the request body is sent alongside its body.
    /// With a `deadline`, a head that has not come by then is
    /// [`Error::TimedOut`].
    pub async fn send<B>(
        mut self: Box<Self>,
        request: Request<B>,
        deadline: Option<Instant>,
    ) -> Result<Response<Body>, Error>
    where
        B: http_body::Body<Data = Bytes> + Unpin + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = request.into_parts();
        let bodiless = parts.method == Method::HEAD;
        let upgrade = parts.headers.contains_key(http::header::UPGRADE);
        let framing = encode::head(&mut self.write, &mut parts, body.size_hint());
        // Written: the next head read on this thread takes the map.
        crate::header_maps::give(std::mem::take(&mut parts.headers));
        let mut outgoing = Some(encode::Outgoing::new(
            std::mem::take(&mut self.write),
            Some(body),
            framing,
        ));
        match (deadline, &mut self.head_timer) {
            (None, _) => {}
            (Some(deadline), Some(timer)) => timer.as_mut().reset(deadline),
            (Some(deadline), timer @ None) => *timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
        // A failed write still leaves the answer to read: a target that
        // refuses a request often answers and closes before reading it all.
        let mut write_failed: Option<io::Error> = None;
        let answer = poll_fn(|cx| loop {
            if let Some(sending) = outgoing.as_mut() {
                match sending.poll_write(&mut self.stream, cx) {
                    Poll::Ready(Ok(())) => {
                        if let Some(sent) = outgoing.take() {
                            self.write = sent.into_buffer();
                        }
                    }
                    Poll::Ready(Err(Error::Io(error))) => {
                        write_failed = Some(error);
                        outgoing = None;
                    }
                    Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                    Poll::Pending => {}
                }
            }
            if let Some(answer) = head::parse(&mut self.read, bodiless, upgrade)? {
                return Poll::Ready(Ok(answer));
            }
            match self.poll_fill(cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(match write_failed.take() {
                        Some(error) => Error::Io(error),
                        None => Error::ClosedBeforeAnswer,
                    }))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return Poll::Ready(Err(Error::Io(error))),
                Poll::Pending => {
                    let timer = self.head_timer.as_mut().filter(|_| deadline.is_some());
                    if timer.is_some_and(|timer| timer.as_mut().poll(cx).is_ready()) {
                        return Poll::Ready(Err(Error::TimedOut));
                    }
                    return Poll::Pending;
                }
            }
        })
        .await?;
        let keep_alive = answer.keep_alive && write_failed.is_none();
        let sending = outgoing.map(|rest| Box::new(rest) as Box<dyn body::Sending>);
        let body = Body::new(self, answer.framing, keep_alive, sending);
        Ok(Response::from_parts(answer.parts, body))
    }
}
