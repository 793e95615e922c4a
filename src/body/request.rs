//! The client's request body on its way upstream: whichever protocol
//! brought it, read ahead for plugins that inspect it, held to a size limit
//! and counted, buffered when it may be sent again.

use super::{after, pace, BodyError, BodyProgress, BoxError};
use crate::proxy::grpc_web::TextDecoder;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::Incoming;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

/// A client's request body, from whichever protocol brought it: read off
/// the connection (Portico's own HTTP/1.1 side, or hyper's for the rest of
/// HTTP/1.1 and for HTTP/2), or another boxed (HTTP/3, a filtered body).
pub enum Inbound {
    /// None at all.
    Empty,
    Wire(Wire),
    /// Held to the listener's pace. Boxed: only a request with a body has
    /// one, and inline it made every request 88 bytes larger to move.
    Paced(Box<pace::Paced<Wire>>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

/// A body as a connection reads it.
pub enum Wire {
    Hyper(Incoming),
    Http1(crate::proxy::http1::RequestBody),
}

impl Body for Wire {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Wire::Hyper(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Wire::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Wire::Hyper(body) => body.is_end_stream(),
            Wire::Http1(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Wire::Hyper(body) => body.size_hint(),
            Wire::Http1(body) => body.size_hint(),
        }
    }
}

impl Inbound {
    /// The body, failing with [`pace::TooSlow`] if the client sends it
    /// slower than `pace`. An empty body is left as it is.
    pub fn paced(self, pace: pace::Pace) -> Inbound {
        if self.is_end_stream() {
            return self;
        }
        match self {
            Inbound::Wire(body) => Inbound::Paced(Box::new(pace::Paced::new(body, pace))),
            Inbound::Boxed(body) => Inbound::Boxed(UnsyncBoxBody::new(pace::Paced::new(body, pace))),
            other @ (Inbound::Paced(_) | Inbound::Empty) => other,
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

impl From<Incoming> for Inbound {
    fn from(body: Incoming) -> Inbound {
        Inbound::Wire(Wire::Hyper(body))
    }
}

impl Body for Inbound {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Inbound::Empty => Poll::Ready(None),
            Inbound::Wire(body) => Pin::new(body).poll_frame(cx),
            Inbound::Paced(body) => Pin::new(body).poll_frame(cx),
            Inbound::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Inbound::Empty => true,
            Inbound::Wire(body) => body.is_end_stream(),
            Inbound::Paced(body) => body.is_end_stream(),
            Inbound::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Inbound::Empty => SizeHint::with_exact(0),
            Inbound::Wire(body) => body.size_hint(),
            Inbound::Paced(body) => body.size_hint(),
            Inbound::Boxed(body) => body.size_hint(),
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
