//! The response body on its way to the client: made by Portico, or an
//! upstream's streamed through (read ahead, turned into gRPC-Web, or run
//! through a plugin's filter), writing the access-log line when it is done.

use super::{after, filter, BodyError};
use crate::proxy::client_timeouts::RequestActive;
use crate::proxy::grpc_web::{Encoder, Mode};
use crate::upstream::{http1, Incoming};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// What a response body reports to when it is done (sent, failed, or
/// dropped because the client left): the request's access-log entry. A trait,
/// so that bodies know nothing of logs, metrics or traces.
pub trait OnDone: Send + Sync {
    /// `error` is set when the body did not end cleanly.
    fn done(&mut self, bytes_out: u64, error: Option<&'static str>);

    /// The answer was replaced, before any of it went out, by one of
    /// `status` (the server's own 502 for an upstream body that broke at once).
    fn replaced_by(&mut self, _status: u16) {}
}

/// What an upstream body holds of its target until it is done: the target's
/// in-flight count, and the connection to give back once the body has been
/// read whole. A trait, so that bodies know nothing of pools.
pub trait UpstreamHold: Send + Sync {
    /// The body has been read whole: the connection may be reused (an
    /// HTTP/1.1 connection is handed back, if it is fit for reuse). Called at
    /// most once.
    fn release(&mut self, connection: Option<Box<http1::Connection>>);
}

/// A response on its way to the client: a fixed body made by Portico, or an
/// upstream's body streamed through. When it is done (sent, failed, or dropped
/// because the client left) it writes the request's access-log line.
pub struct ResponseBody {
    kind: Kind,
    sent: u64,
    log: Option<Box<dyn OnDone>>,
    /// Why the body failed, once it has: told to the log when the body is
    /// dropped (a server may first replace the answer, see `answered_instead`).
    failure: Option<&'static str>,
    /// Keeps the client connection counted as busy until the body is done.
    _active: Option<RequestActive>,
    /// What plugins keep until the body has been sent (concurrency permits).
    _holds: Vec<Box<dyn Send + Sync>>,
}

enum Kind {
    Full(Option<Bytes>),
    /// Boxed with what it holds (one allocation, where the hold was one of
    /// its own): inline, it made every response 88 bytes larger, and a
    /// response is moved through each layer of the request's future.
    Upstream(Box<UpstreamBody>),
    /// What was read ahead (to check it whole, until it proved too large),
    /// then the rest of the body.
    Prefixed(Option<Bytes>, Box<ResponseBody>),
    /// A gRPC answer told as gRPC-Web: trailers as the last message.
    GrpcWeb(Box<ResponseBody>, Box<Encoder>),
    /// Changed as it streams by a plugin's filter (compression).
    Filtered(Box<filter::Filtered<ResponseBody>>),
}

struct UpstreamBody<H: ?Sized = dyn UpstreamHold> {
    inner: Incoming,
    /// Longest pause allowed between two frames of the body.
    idle: Duration,
    /// Armed lazily: most bodies arrive with their head and never wait.
    timer: Option<Pin<Box<Sleep>>>,
    progressed: bool,
    released: bool,
    /// The target's in-flight count and the connection, given back to its
    /// pool when the body ends cleanly. Last: the one field of unknown size.
    hold: H,
}

impl ResponseBody {
    /// A body of `kind`, not yet logged or holding anything.
    fn of(kind: Kind) -> ResponseBody {
        ResponseBody {
            kind,
            sent: 0,
            log: None,
            failure: None,
            _active: None,
            _holds: Vec::new(),
        }
    }

    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let bytes = bytes.into();
        ResponseBody::of(Kind::Full((!bytes.is_empty()).then_some(bytes)))
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::full(Bytes::new())
    }

    pub fn upstream(inner: Incoming, idle: Duration, hold: impl UpstreamHold + 'static) -> ResponseBody {
        let mut body: Box<UpstreamBody> = Box::new(UpstreamBody {
            inner,
            idle,
            timer: None,
            progressed: false,
            released: false,
            hold,
        });
        body.release_if_done();
        ResponseBody::of(Kind::Upstream(body))
    }

    /// `prefix` read from `rest` already, sent first.
    pub fn prefixed(prefix: Bytes, rest: ResponseBody) -> ResponseBody {
        ResponseBody::of(Kind::Prefixed(Some(prefix), Box::new(rest)))
    }

    /// `inner`, a gRPC answer, as gRPC-Web.
    pub fn grpc_web(inner: ResponseBody, mode: Mode) -> ResponseBody {
        ResponseBody::of(Kind::GrpcWeb(Box::new(inner), Box::new(Encoder::new(mode))))
    }

    /// `inner` with a plugin's `filter` run over it as it streams.
    pub fn filtered(inner: ResponseBody, filter: Box<dyn filter::BodyFilter>) -> ResponseBody {
        ResponseBody::of(Kind::Filtered(Box::new(filter::Filtered::new(inner, filter))))
    }

    /// Attaches the access-log entry written when the body is done.
    pub fn set_log(&mut self, entry: Box<dyn OnDone>) {
        self.log = Some(entry);
    }

    /// Keeps the connection's request count up until the body is done.
    pub fn hold(&mut self, active: RequestActive, holds: Vec<Box<dyn Send + Sync>>) {
        self._active = Some(active);
        self._holds = holds;
    }

    /// The answer this body belongs to was replaced by one of `status`
    /// before any of it was sent: its log line and metrics say so.
    pub fn answered_instead(&mut self, status: http::StatusCode) {
        if let Some(log) = self.log.as_mut() {
            log.replaced_by(status.as_u16());
        }
    }

    fn finish(&mut self, error: Option<&'static str>) {
        if let Some(mut entry) = self.log.take() {
            entry.done(self.sent, error);
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        let unfinished = match &mut self.kind {
            // hyper drops a fixed body unread for HEAD, 204 and 304: its being
            // left does not mean the client left.
            Kind::Full(_) => false,
            Kind::Upstream(body) => {
                body.release_if_done();
                !body.inner.is_end_stream()
            }
            Kind::Prefixed(prefix, rest) => prefix.is_some() || !rest.is_end_stream(),
            Kind::GrpcWeb(inner, _) => !inner.is_end_stream(),
            Kind::Filtered(body) => !body.is_end_stream(),
        };
        let error = self.failure.or(unfinished.then_some("client_disconnected"));
        self.finish(error);
    }
}

impl UpstreamBody {
    /// Returns the connection for reuse once the whole body has been read.
    fn release_if_done(&mut self) {
        if self.inner.is_end_stream() && !self.released {
            self.released = true;
            self.hold.release(self.inner.take_connection());
        }
    }

    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<BodyError> {
        let deadline = Instant::now() + self.idle;
        match &mut self.timer {
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            Some(timer) if self.progressed => timer.as_mut().reset(deadline),
            Some(_) => {}
        }
        self.progressed = false;
        match self.timer.as_mut().map(|t| t.as_mut().poll(cx)) {
            Some(Poll::Ready(())) => Poll::Ready(BodyError::UpstreamIdle(self.idle)),
            _ => Poll::Pending,
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream(body) => match Pin::new(&mut body.inner).poll_frame(cx) {
                Poll::Ready(frame) => {
                    body.progressed = true;
                    // hyper stops polling once a body says it has ended, so
                    // the check follows every frame, not only the final `None`.
                    body.release_if_done();
                    Poll::Ready(frame.map(|r| r.map_err(BodyError::Upstream)))
                }
                Poll::Pending => body.poll_idle(cx).map(|e| Some(Err(e))),
            },
            Kind::Prefixed(prefix, rest) => match prefix.take() {
                Some(bytes) => Poll::Ready(Some(Ok(Frame::data(bytes)))),
                None => Pin::new(&mut **rest).poll_frame(cx),
            },
            Kind::GrpcWeb(inner, encoder) => match Pin::new(&mut **inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => Poll::Ready(Some(Ok(Frame::data(encoder.data(data))))),
                    Err(frame) => {
                        let trailers = frame.into_trailers().unwrap_or_default();
                        Poll::Ready(Some(Ok(Frame::data(encoder.trailers(&trailers)))))
                    }
                },
                Poll::Ready(None) => Poll::Ready(encoder.finish().map(|rest| Ok(Frame::data(rest)))),
                other => other,
            },
            Kind::Filtered(body) => body.poll_filtered(cx, |e| e, BodyError::Filter),
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "response body cut short");
                this.failure = Some(match e {
                    BodyError::UpstreamIdle(_) => "upstream_body_timeout",
                    BodyError::Filter(_) => "response_filter_failed",
                    _ => "upstream_body_failed",
                });
            }
            Poll::Ready(None) => this.finish(None),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream(body) => body.inner.is_end_stream(),
            Kind::Prefixed(prefix, rest) => prefix.is_none() && rest.is_end_stream(),
            // Its end may still add base64 to send.
            Kind::GrpcWeb(..) => false,
            Kind::Filtered(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.inner.size_hint(),
            Kind::Prefixed(prefix, rest) => after(prefix.as_ref().map_or(0, |b| b.len() as u64), rest.size_hint()),
            Kind::GrpcWeb(..) => SizeHint::new(),
            Kind::Filtered(body) => body.size_hint(),
        }
    }
}
