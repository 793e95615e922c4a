//! The bodies that cross the proxy: the client's request body on its way
//! upstream, and the response body on its way back. Both stream frame by frame;
//! neither is ever collected in memory.

pub mod filter;
pub mod pace;

use crate::proxy::client_timeouts::RequestActive;
use crate::proxy::grpc_web::{Encoder, Mode, TextDecoder};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client's request body, from whichever protocol brought it: hyper's
/// (HTTP/1.1 and HTTP/2), or another boxed (HTTP/3).
pub enum Inbound {
    Hyper(Incoming),
    /// hyper's, held to the listener's pace.
    Paced(pace::Paced<Incoming>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Inbound {
    /// The body, failing with [`pace::TooSlow`] if the client sends it
    /// slower than `pace`. An empty body is left as it is.
    pub fn paced(self, pace: pace::Pace) -> Inbound {
        if self.is_end_stream() {
            return self;
        }
        match self {
            Inbound::Hyper(body) => Inbound::Paced(pace::Paced::new(body, pace)),
            Inbound::Boxed(body) => Inbound::Boxed(UnsyncBoxBody::new(pace::Paced::new(body, pace))),
            paced @ Inbound::Paced(_) => paced,
        }
    }

    /// Reads ahead up to `limit` bytes: what was read, whether it is the
    /// whole body, and the body again, whole, for the way upstream.
    pub async fn read_ahead(mut self, limit: u64) -> Result<(Bytes, bool, Inbound), BodyError> {
        // A body in one frame (the usual small one) is kept as it came, not copied.
        let mut first = Bytes::new();
        let mut more = bytes::BytesMut::new();
        let mut trailers = None;
        let complete = loop {
            if (first.len() + more.len()) as u64 >= limit {
                break self.is_end_stream();
            }
            match std::future::poll_fn(|cx| Pin::new(&mut self).poll_frame(cx)).await {
                None => break true,
                Some(Err(e)) => return Err(BodyError::Client(e)),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if first.is_empty() && more.is_empty() => first = data,
                    Ok(data) => {
                        if more.is_empty() {
                            more.extend_from_slice(&std::mem::take(&mut first));
                        }
                        more.extend_from_slice(&data);
                    }
                    Err(frame) => trailers = frame.into_trailers().ok(),
                },
            }
        };
        let ahead = if more.is_empty() { first } else { more.freeze() };
        let again = Prefixed {
            prefix: (!ahead.is_empty()).then(|| ahead.clone()),
            trailers,
            rest: (!complete).then_some(self),
        };
        Ok((ahead, complete, Inbound::Boxed(UnsyncBoxBody::new(again))))
    }
}

/// What was read ahead, then the rest of the body.
struct Prefixed {
    prefix: Option<Bytes>,
    /// Trailers read ahead with a complete body.
    trailers: Option<http::HeaderMap>,
    rest: Option<Inbound>,
}

impl Body for Prefixed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(prefix) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match self.rest.as_mut() {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.trailers.is_none() && self.rest.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        let ahead = self.prefix.as_ref().map_or(0, |b| b.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(ahead),
            Some(rest) => after(ahead, rest.size_hint()),
        }
    }
}

/// The size of `ahead` bytes followed by a body of size `rest`.
fn after(ahead: u64, rest: SizeHint) -> SizeHint {
    let mut total = SizeHint::new();
    total.set_lower(rest.lower() + ahead);
    if let Some(upper) = rest.upper() {
        total.set_upper(upper + ahead);
    }
    total
}

impl From<Incoming> for Inbound {
    fn from(body: Incoming) -> Inbound {
        Inbound::Hyper(body)
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Inbound::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Inbound::Paced(body) => Pin::new(body).poll_frame(cx),
            Inbound::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Hyper(body) => body.is_end_stream(),
            Inbound::Paced(body) => body.is_end_stream(),
            Inbound::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::Hyper(body) => body.size_hint(),
            Inbound::Paced(body) => body.size_hint(),
            Inbound::Boxed(body) => body.size_hint(),
        }
    }
}

/// Why a body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("client request body failed: {0}")]
    Client(#[source] BoxError),
    #[error("upstream response body failed: {0}")]
    Upstream(#[source] hyper::Error),
    #[error("upstream sent nothing for {0:?} in the middle of the response body")]
    UpstreamIdle(Duration),
    #[error("the request body is not base64 (gRPC-Web text): {0}")]
    NotBase64(#[source] base64::DecodeError),
    #[error("a response body filter failed: {0}")]
    Filter(#[source] filter::FilterError),
}

/// How far the client's request body got: bytes received, and why it
/// stopped early if it did. Shared with the exchange, which must know a
/// failure was the client's even when the upstream connection reports it
/// only as a reset stream (HTTP/2).
#[derive(Debug, Default)]
pub struct BodyProgress {
    received: AtomicU64,
    /// A [`Fault`] as u8; 0 while none.
    fault: AtomicU8,
}

/// Why a client's body stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    TooLarge = 1,
    Unreadable = 2,
    NotBase64 = 3,
    TooSlow = 4,
    /// A plugin's filter refused it ([`filter::Refusal`]).
    Refused = 5,
    RefusedDecompressed = 6,
    Undecodable = 7,
}

impl BodyProgress {
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    pub fn fault(&self) -> Option<Fault> {
        match self.fault.load(Ordering::Relaxed) {
            1 => Some(Fault::TooLarge),
            2 => Some(Fault::Unreadable),
            3 => Some(Fault::NotBase64),
            4 => Some(Fault::TooSlow),
            5 => Some(Fault::Refused),
            6 => Some(Fault::RefusedDecompressed),
            7 => Some(Fault::Undecodable),
            _ => None,
        }
    }

    fn fail(&self, error: &BodyError) {
        if let Some(fault) = Fault::of(error) {
            self.fault.store(fault as u8, Ordering::Relaxed);
        }
    }
}

impl Fault {
    /// The client's part in a body error, if it was the client's.
    pub fn of(error: &BodyError) -> Option<Fault> {
        match error {
            BodyError::TooLarge { .. } => Some(Fault::TooLarge),
            BodyError::Client(e) if e.is::<pace::TooSlow>() => Some(Fault::TooSlow),
            BodyError::Client(e) => Some(match e.downcast_ref::<filter::Refusal>() {
                Some(filter::Refusal::TooLarge) => Fault::Refused,
                Some(filter::Refusal::DecompressedTooLarge) => Fault::RefusedDecompressed,
                Some(filter::Refusal::Undecodable) => Fault::Undecodable,
                None => Fault::Unreadable,
            }),
            BodyError::NotBase64(_) => Some(Fault::NotBase64),
            BodyError::Upstream(_) | BodyError::UpstreamIdle(_) | BodyError::Filter(_) => None,
        }
    }
}

/// The client's request body on its way upstream: streamed with a size limit
/// and a byte count, or, when it may have to be sent again, buffered.
pub struct RequestBody {
    inner: Option<Inbound>,
    limit: Option<u64>,
    received: Option<Arc<BodyProgress>>,
    /// A buffered body, sent in one frame.
    buffered: Option<Bytes>,
    /// gRPC-Web text: the client's base64 decoded on the way.
    text: Option<Box<TextDecoder>>,
}

impl RequestBody {
    pub fn new(inner: Inbound, limit: Option<u64>, received: Arc<BodyProgress>) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            limit,
            received: Some(received),
            buffered: None,
            text: None,
        }
    }

    /// Decodes the client's body from base64 (gRPC-Web text) when `text`.
    pub fn decoding_base64(mut self, text: bool) -> RequestBody {
        if text {
            self.text = Some(Box::default());
        }
        self
    }

    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            limit: None,
            received: None,
            buffered: None,
            text: None,
        }
    }

    pub fn buffered(bytes: Bytes) -> RequestBody {
        RequestBody {
            buffered: (!bytes.is_empty()).then_some(bytes),
            ..RequestBody::empty()
        }
    }
}

impl RequestBody {
    fn next_frame(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(self.buffered.take().map(|bytes| Ok(Frame::data(bytes))));
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(BodyError::Client(e)))),
            None => {
                return Poll::Ready(match self.text.as_ref().map(|text| text.finish()) {
                    Some(Err(e)) => Some(Err(BodyError::NotBase64(e))),
                    _ => None,
                })
            }
        };
        if let (Some(data), Some(progress)) = (frame.data_ref(), &self.received) {
            let total = progress.received.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            if let Some(limit) = self.limit.filter(|limit| total > *limit) {
                self.inner = None;
                return Poll::Ready(Some(Err(BodyError::TooLarge { limit })));
            }
        }
        if let (Some(text), Some(data)) = (self.text.as_mut(), frame.data_ref()) {
            return Poll::Ready(Some(text.decode(data).map(Frame::data).map_err(BodyError::NotBase64)));
        }
        Poll::Ready(Some(Ok(frame)))
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let polled = self.as_mut().next_frame(cx);
        if let (Poll::Ready(Some(Err(error))), Some(progress)) = (&polled, &self.received) {
            progress.fail(error);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, &self.buffered) {
            // Decoded, it is about 3/4 of what arrives: its length is unknown.
            (Some(_), _) if self.text.is_some() => SizeHint::new(),
            (Some(inner), _) => inner.size_hint(),
            (None, Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

/// What a response body reports to when it is done (sent, failed, or
/// dropped because the client left): the request's access-log entry. A trait,
/// so that bodies know nothing of logs, metrics or traces.
pub trait OnDone: Send + Sync {
    /// `error` is set when the body did not end cleanly.
    fn done(&mut self, bytes_out: u64, error: Option<&'static str>);
}

/// What an upstream body holds of its target until it is done: the target's
/// in-flight count, and the connection to give back once the body has been
/// read whole. A trait, so that bodies know nothing of pools.
pub trait UpstreamHold: Send + Sync {
    /// The body has been read whole: the connection may be reused. Called
    /// at most once.
    fn release(&mut self);
}

/// A response on its way to the client: a fixed body made by Portico, or an
/// upstream's body streamed through. When it is done (sent, failed, or dropped
/// because the client left) it writes the request's access-log line.
pub struct ResponseBody {
    kind: Kind,
    sent: u64,
    log: Option<Box<dyn OnDone>>,
    /// Keeps the client connection counted as busy until the body is done.
    _active: Option<RequestActive>,
    /// What plugins keep until the body has been sent (concurrency permits).
    _holds: Vec<Box<dyn Send + Sync>>,
}

enum Kind {
    Full(Option<Bytes>),
    Upstream(UpstreamBody),
    /// What was read ahead (to check it whole, until it proved too large),
    /// then the rest of the body.
    Prefixed(Option<Bytes>, Box<ResponseBody>),
    /// A gRPC answer told as gRPC-Web: trailers as the last message.
    GrpcWeb(Box<ResponseBody>, Box<Encoder>),
    /// Changed as it streams by a plugin's filter (compression).
    Filtered(Box<filter::Filtered<ResponseBody>>),
}

struct UpstreamBody {
    inner: Incoming,
    /// Longest pause allowed between two frames of the body.
    idle: Duration,
    /// Armed lazily: most bodies arrive with their head and never wait.
    timer: Option<Pin<Box<Sleep>>>,
    progressed: bool,
    /// The target's in-flight count and the connection, given back to its
    /// pool when the body ends cleanly.
    hold: Box<dyn UpstreamHold>,
    released: bool,
}

impl ResponseBody {
    pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
        let bytes = bytes.into();
        let kind = Kind::Full((!bytes.is_empty()).then_some(bytes));
        ResponseBody {
            kind,
            sent: 0,
            log: None,
            _active: None,
            _holds: Vec::new(),
        }
    }

    pub fn empty() -> ResponseBody {
        ResponseBody::full(Bytes::new())
    }

    pub fn upstream(inner: Incoming, idle: Duration, hold: Box<dyn UpstreamHold>) -> ResponseBody {
        let mut body = UpstreamBody {
            inner,
            idle,
            timer: None,
            progressed: false,
            hold,
            released: false,
        };
        body.release_if_done();
        let kind = Kind::Upstream(body);
        ResponseBody {
            kind,
            sent: 0,
            log: None,
            _active: None,
            _holds: Vec::new(),
        }
    }

    /// `prefix` read from `rest` already, sent first.
    pub fn prefixed(prefix: Bytes, rest: ResponseBody) -> ResponseBody {
        ResponseBody {
            kind: Kind::Prefixed(Some(prefix), Box::new(rest)),
            sent: 0,
            log: None,
            _active: None,
            _holds: Vec::new(),
        }
    }

    /// `inner`, a gRPC answer, as gRPC-Web.
    pub fn grpc_web(inner: ResponseBody, mode: Mode) -> ResponseBody {
        ResponseBody {
            kind: Kind::GrpcWeb(Box::new(inner), Box::new(Encoder::new(mode))),
            sent: 0,
            log: None,
            _active: None,
            _holds: Vec::new(),
        }
    }

    /// `inner` with a plugin's `filter` run over it as it streams.
    pub fn filtered(inner: ResponseBody, filter: Box<dyn filter::BodyFilter>) -> ResponseBody {
        ResponseBody {
            kind: Kind::Filtered(Box::new(filter::Filtered::new(inner, filter))),
            sent: 0,
            log: None,
            _active: None,
            _holds: Vec::new(),
        }
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
        self.finish(unfinished.then_some("client_disconnected"));
    }
}

impl UpstreamBody {
    /// Returns the connection for reuse once the whole body has been read.
    fn release_if_done(&mut self) {
        if self.inner.is_end_stream() && !self.released {
            self.released = true;
            self.hold.release();
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
                this.finish(Some(match e {
                    BodyError::UpstreamIdle(_) => "upstream_body_timeout",
                    BodyError::Filter(_) => "response_filter_failed",
                    _ => "upstream_body_failed",
                }));
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_buffered_body_yields_its_bytes_once_and_ends() {
        let body = RequestBody::buffered(Bytes::from_static(b"abc"));
        assert!(!body.is_end_stream());
        assert_eq!(body.size_hint().exact(), Some(3));
        let collected = body.collect().await.unwrap().to_bytes();
        assert_eq!(collected, "abc");
    }
}
