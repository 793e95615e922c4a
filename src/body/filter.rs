//! Filters over a body as it streams. A plugin that changes or measures a
//! body chunk by chunk (compressing an answer, counting a request's
//! decompressed size) hands the core a [`BodyFilter`]; the core runs it over
//! the body's frames, never holding the whole body.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

pub type FilterError = Box<dyn std::error::Error + Send + Sync>;

/// Changes or measures a body one chunk at a time.
pub trait BodyFilter: Send + Sync {
    /// A chunk as it arrives: what goes on now (empty when it needs more).
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, FilterError>;

    /// Nothing more has arrived for now: what it holds back that should go
    /// anyway (a compressor's pending output), so that a body which trickles
    /// is not held up until its end.
    fn flush(&mut self) -> Result<Bytes, FilterError> {
        Ok(Bytes::new())
    }

    /// The body has ended: what is left to send.
    fn end(&mut self) -> Result<Bytes, FilterError>;

    /// Whether it passes every byte on as it came (it only measures): the
    /// body then keeps its length.
    fn keeps_bytes(&self) -> bool {
        false
    }
}

/// Why a request filter refused the client's body; the proxy answers each
/// with its own status (413, 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request body is larger than this route accepts")]
    TooLarge,
    #[error("the request body, decompressed, is larger than this route accepts")]
    DecompressedTooLarge,
    #[error("the request body does not decode as its Content-Encoding says")]
    Undecodable,
}

/// `inner` with `filter` run over its data. Trailers pass as they are,
/// after what the filter had left.
pub struct Filtered<B> {
    inner: B,
    filter: Box<dyn BodyFilter>,
    /// Trailers that arrived while the filter still had bytes to send.
    trailers: Option<http::HeaderMap>,
    /// Something went in since the last flush.
    unflushed: bool,
    ended: bool,
}

impl<B> Filtered<B> {
    pub fn new(inner: B, filter: Box<dyn BodyFilter>) -> Filtered<B> {
        Filtered {
            inner,
            filter,
            trailers: None,
            unflushed: false,
            ended: false,
        }
    }
}

impl<B> Filtered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    /// The next frame, with the inner body's errors as `B::Error` and the
    /// filter's as `E`.
    pub fn poll_filtered<E>(
        &mut self,
        cx: &mut Context<'_>,
        inner_error: impl Fn(B::Error) -> E,
        filter_error: impl Fn(FilterError) -> E,
    ) -> Poll<Option<Result<Frame<Bytes>, E>>> {
        loop {
            if self.ended {
                return Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))));
            }
            let frame = match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Pending if self.unflushed => {
                    self.unflushed = false;
                    match self.filter.flush() {
                        Ok(bytes) if bytes.is_empty() => return Poll::Pending,
                        Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                        Err(e) => return Poll::Ready(Some(Err(filter_error(e)))),
                    }
                }
                polled => ready!(polled),
            };
            let out = match frame {
                Some(Err(e)) => return Poll::Ready(Some(Err(inner_error(e)))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(chunk) => {
                        self.unflushed = true;
                        let out = self.filter.data(chunk);
                        // The last chunk of a body of known length: whoever reads
                        // it may stop polling here, so the filter ends with it
                        // (and a refusal at the end holds the chunk back).
                        if self.inner.is_end_stream() {
                            self.ended = true;
                            out.and_then(|data| {
                                let rest = self.filter.end()?;
                                Ok(match (data.is_empty(), rest.is_empty()) {
                                    (_, true) => data,
                                    (true, false) => rest,
                                    (false, false) => [data, rest].concat().into(),
                                })
                            })
                        } else {
                            out
                        }
                    }
                    Err(frame) => {
                        self.trailers = frame.into_trailers().ok();
                        self.ended = true;
                        self.filter.end()
                    }
                },
                None => {
                    self.ended = true;
                    self.filter.end()
                }
            };
            match out {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                Err(e) => return Poll::Ready(Some(Err(filter_error(e)))),
            }
        }
    }

    pub fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none()
    }

    pub fn size_hint(&self) -> SizeHint {
        if self.filter.keeps_bytes() {
            self.inner.size_hint()
        } else {
            SizeHint::new()
        }
    }
}

/// A request body: the client's errors pass as they are, the filter's
/// (a [`Refusal`]) as theirs.
impl<B> Body for Filtered<B>
where
    B: Body<Data = Bytes, Error = FilterError> + Unpin,
{
    type Data = Bytes;
    type Error = FilterError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, FilterError>>> {
        self.get_mut().poll_filtered(cx, |e| e, |e| e)
    }

    fn is_end_stream(&self) -> bool {
        Filtered::is_end_stream(self)
    }

    fn size_hint(&self) -> SizeHint {
        Filtered::size_hint(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    /// Upper-cases each chunk and adds `!` at the end.
    struct Shout;

    impl BodyFilter for Shout {
        fn data(&mut self, chunk: Bytes) -> Result<Bytes, FilterError> {
            Ok(chunk.to_ascii_uppercase().into())
        }
        fn end(&mut self) -> Result<Bytes, FilterError> {
            Ok(Bytes::from_static(b"!"))
        }
    }

    #[tokio::test]
    async fn a_filter_sees_every_chunk_and_the_end_and_trailers_follow() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-sum", http::HeaderValue::from_static("1"));
        let frames: Vec<Result<Frame<Bytes>, FilterError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"ab"))),
            Ok(Frame::data(Bytes::from_static(b"c"))),
            Ok(Frame::trailers(trailers)),
        ];
        let body = Filtered::new(StreamBody::new(futures_util::stream::iter(frames)), Box::new(Shout));
        let collected = body.collect().await.unwrap();
        assert_eq!(
            collected.trailers().map(|t| t["x-sum"].clone()),
            Some("1".parse().unwrap())
        );
        assert_eq!(collected.to_bytes(), "ABC!");
    }
}
