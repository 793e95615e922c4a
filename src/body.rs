//! The bodies that cross the proxy: the client's request body on its way
//! upstream, and the response body on its way back. Both stream frame by frame;
//! neither is ever collected in memory.

use crate::proxy::client_timeouts::RequestActive;
use crate::telemetry::access_log::Entry;
use crate::upstream::{InFlight, Lease};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Why a body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("client request body failed: {0}")]
    Client(#[source] hyper::Error),
    #[error("upstream response body failed: {0}")]
    Upstream(#[source] hyper::Error),
    #[error("upstream sent nothing for {0:?} in the middle of the response body")]
    UpstreamIdle(Duration),
}

/// The client's request body on its way upstream: streamed with a size limit
/// and a byte count, or, when it may have to be sent again, buffered.
pub struct RequestBody {
    inner: Option<Incoming>,
    limit: Option<u64>,
    received: Option<Arc<AtomicU64>>,
    /// A buffered body, sent in one frame.
    buffered: Option<Bytes>,
}

impl RequestBody {
    pub fn new(inner: Incoming, limit: Option<u64>, received: Arc<AtomicU64>) -> RequestBody {
        RequestBody {
            inner: Some(inner),
            limit,
            received: Some(received),
            buffered: None,
        }
    }

    pub fn empty() -> RequestBody {
        RequestBody {
            inner: None,
            limit: None,
            received: None,
            buffered: None,
        }
    }

    pub fn buffered(bytes: Bytes) -> RequestBody {
        RequestBody {
            buffered: (!bytes.is_empty()).then_some(bytes),
            ..RequestBody::empty()
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(self.buffered.take().map(|bytes| Ok(Frame::data(bytes))));
        };
        let frame = ready!(Pin::new(inner).poll_frame(cx));
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(e)) => return Poll::Ready(Some(Err(BodyError::Client(e)))),
            None => return Poll::Ready(None),
        };
        if let (Some(data), Some(received)) = (frame.data_ref(), &self.received) {
            let total = received.fetch_add(data.len() as u64, Ordering::Relaxed) + data.len() as u64;
            if let Some(limit) = self.limit.filter(|limit| total > *limit) {
                self.inner = None;
                return Poll::Ready(Some(Err(BodyError::TooLarge { limit })));
            }
        }
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        self.buffered.is_none() && self.inner.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.inner, &self.buffered) {
            (Some(inner), _) => inner.size_hint(),
            (None, Some(bytes)) => SizeHint::with_exact(bytes.len() as u64),
            (None, None) => SizeHint::with_exact(0),
        }
    }
}

/// A response on its way to the client: a fixed body made by Portico, or an
/// upstream's body streamed through. When it is done (sent, failed, or dropped
/// because the client left) it writes the request's access-log line.
pub struct ResponseBody {
    kind: Kind,
    sent: u64,
    log: Option<Box<Entry>>,
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
}

struct UpstreamBody {
    inner: Incoming,
    /// Longest pause allowed between two frames of the body.
    idle: Duration,
    /// Armed lazily: most bodies arrive with their head and never wait.
    timer: Option<Pin<Box<Sleep>>>,
    progressed: bool,
    /// Keeps the target's in-flight count until the body is done.
    _in_flight: InFlight,
    /// The connection, returned to its target's pool when the body ends cleanly.
    lease: Option<Lease>,
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

    pub fn upstream(inner: Incoming, idle: Duration, in_flight: InFlight, lease: Lease) -> ResponseBody {
        let mut body = UpstreamBody {
            inner,
            idle,
            timer: None,
            progressed: false,
            _in_flight: in_flight,
            lease: Some(lease),
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

    /// Attaches the access-log entry written when the body is done.
    pub fn set_log(&mut self, entry: Box<Entry>) {
        self.log = Some(entry);
    }

    /// Keeps the connection's request count up until the body is done.
    pub fn hold(&mut self, active: RequestActive, holds: Vec<Box<dyn Send + Sync>>) {
        self._active = Some(active);
        self._holds = holds;
    }

    fn finish(&mut self, error: Option<&'static str>) {
        if let Some(mut entry) = self.log.take() {
            if error.is_some() {
                entry.error = error;
            }
            entry.finish(self.sent);
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
        };
        self.finish(unfinished.then_some("client_disconnected"));
    }
}

impl UpstreamBody {
    /// Returns the connection for reuse once the whole body has been read.
    fn release_if_done(&mut self) {
        if self.inner.is_end_stream() {
            if let Some(lease) = self.lease.take() {
                lease.release();
            }
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
        };
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                this.sent += frame.data_ref().map_or(0, |d| d.len() as u64);
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "response body cut short");
                this.finish(Some(match e {
                    BodyError::UpstreamIdle(_) => "upstream_body_timeout",
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
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream(body) => body.inner.size_hint(),
            Kind::Prefixed(prefix, rest) => {
                let ahead = prefix.as_ref().map_or(0, |b| b.len() as u64);
                let hint = rest.size_hint();
                let mut total = SizeHint::new();
                total.set_lower(hint.lower() + ahead);
                if let Some(upper) = hint.upper() {
                    total.set_upper(upper + ahead);
                }
                total
            }
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
