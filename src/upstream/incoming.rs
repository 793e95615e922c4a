//! An upstream's answer body: read by Portico's own HTTP/1.1 client in the
//! request's task, or from hyper's HTTP/2 connection.

use super::http1::{self, BoxError};
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub enum Incoming {
    Http1(http1::Body),
    Http2(hyper::body::Incoming),
}

impl Incoming {
    /// The HTTP/1.1 connection, once the body has been read whole and the
    /// connection can carry another request.
    pub fn take_connection(&mut self) -> Option<Box<http1::Connection>> {
        match self {
            Incoming::Http1(body) => body.take_connection(),
            Incoming::Http2(_) => None,
        }
    }

    /// The connection after a `101` (HTTP/1.1 only: HTTP/2 upstreams do not upgrade).
    pub fn upgraded(&mut self) -> Option<http1::Upgraded> {
        match self {
            Incoming::Http1(body) => body.upgraded(),
            Incoming::Http2(_) => None,
        }
    }
}

impl Body for Incoming {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Incoming::Http1(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
            Incoming::Http2(body) => Pin::new(body).poll_frame(cx).map_err(Into::into),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Incoming::Http1(body) => body.is_end_stream(),
            Incoming::Http2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Incoming::Http1(body) => body.size_hint(),
            Incoming::Http2(body) => body.size_hint(),
        }
    }
}
