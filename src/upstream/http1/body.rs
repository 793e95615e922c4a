//! The answer's body, read from the connection as the client's side asks for
//! it: by its length, chunk by chunk (with its trailers), or until the target
//! closes. Once read whole, the connection can be taken back for reuse.

use super::head::{Framing, MAX_HEAD};
use super::{Connection, Error, Stream, Upgraded};
use bytes::{Buf, Bytes};
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use sync_wrapper::SyncWrapper;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of the body are still to come.
    Length(u64),
    ChunkSize,
    /// This many bytes of the current chunk are still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    UntilClose,
    Upgrade,
    Done,
}

/// The rest of a request body still being sent when its answer came.
pub(super) trait Sending: Send {
    fn poll_send(&mut self, stream: &mut Stream, cx: &mut Context<'_>) -> Poll<Result<(), Error>>;
}

impl<B> Sending for super::encode::Outgoing<B>
where
    B: http_body::Body<Data = Bytes> + Unpin + Send,
    B::Error: Into<super::BoxError>,
{
    fn poll_send(&mut self, stream: &mut Stream, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        self.poll_write(stream, cx)
    }
}

pub struct Body {
    /// Gone once the body failed (the connection is closed with it).
    connection: Option<Box<Connection>>,
    state: State,
    keep_alive: bool,
    /// Only ever used through `&mut`, so the body is `Sync` though a
    /// client's body is not.
    sending: Option<SyncWrapper<Box<dyn Sending>>>,
}

impl Body {
    pub(super) fn new(
        connection: Box<Connection>,
        framing: Framing,
        keep_alive: bool,
        sending: Option<Box<dyn Sending>>,
    ) -> Body {
        let state = match framing {
            Framing::Length(0) => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
            Framing::Upgrade => State::Upgrade,
        };
        Body {
            connection: Some(connection),
            state,
            keep_alive,
            sending: sending.map(SyncWrapper::new),
        }
    }

    /// The connection, once the body has been read whole and the target
    /// left it fit for another request: open, the request sent whole, and
    /// nothing sent beyond the answer.
    pub fn take_connection(&mut self) -> Option<Box<Connection>> {
        let reusable = self.state == State::Done
            && self.keep_alive
            && self.sending.is_none()
            && self.connection.as_ref().is_some_and(|c| c.read.is_empty());
        match reusable {
            true => self.connection.take(),
            false => None,
        }
    }

    /// After a `101`: the connection, with whatever the target already sent
    /// past its head.
    pub fn upgraded(&mut self) -> Option<Upgraded> {
        if self.state != State::Upgrade {
            return None;
        }
        self.state = State::Done;
        let Connection { stream, read, .. } = *self.connection.take()?;
        Some(Upgraded::new(stream, read.freeze()))
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.connection = None;
        self.state = State::Done;
        Poll::Ready(Some(Err(error)))
    }
}

/// How long the rest of a request body is still sent once its answer was
/// read whole (see [`Body`]'s `Drop`).
const FINISH_SENDING: Duration = Duration::from_secs(30);

impl Drop for Body {
    /// The answer came, and was read whole, before the request body was sent
    /// whole: the rest is still sent, on a task of its own, so that the client
    /// can finish its request as it would if the answer had come last (an
    /// HTTP/3 client otherwise sees its stream stopped). The connection is
    /// closed afterwards.
    fn drop(&mut self) {
        if self.state != State::Done {
            return;
        }
        let (Some(mut sending), Some(mut connection)) = (self.sending.take(), self.connection.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(async move {
            let rest = std::future::poll_fn(|cx| sending.get_mut().poll_send(&mut connection.stream, cx));
            let _ = tokio::time::timeout(FINISH_SENDING, rest).await;
        });
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            // The rest of an early-answered request goes out as the answer is read.
            if let Some(sending) = this.sending.as_mut() {
                match sending.get_mut().poll_send(&mut connection.stream, cx) {
                    Poll::Ready(Ok(())) => this.sending = None,
                    Poll::Ready(Err(_)) => {
                        this.sending = None;
                        this.keep_alive = false;
                    }
                    Poll::Pending => {}
                }
            }
            let read = &mut connection.read;
            match this.state {
                State::Done | State::Upgrade => return Poll::Ready(None),
                State::Length(left) | State::ChunkData(left) if !read.is_empty() => {
                    let take = left.min(read.len() as u64);
                    let data = read.split_to(take as usize).freeze();
                    this.state = match (this.state, left - take) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), rest) => State::Length(rest),
                        (_, 0) => State::ChunkEnd,
                        (_, rest) => State::ChunkData(rest),
                    };
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                State::UntilClose if !read.is_empty() => {
                    return Poll::Ready(Some(Ok(Frame::data(read.split().freeze()))));
                }
                State::ChunkSize => match httparse::parse_chunk_size(read) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        read.advance(used);
                        this.state = match size {
                            0 => State::Trailers,
                            size => State::ChunkData(size),
                        };
                        continue;
                    }
                    // A size line longer than this is not one.
                    Ok(httparse::Status::Partial) if read.len() > 1024 => return this.fail(Error::BadChunk),
                    Ok(httparse::Status::Partial) => {}
                    Err(_) => return this.fail(Error::BadChunk),
                },
                State::ChunkEnd if read.len() >= 2 => match read.starts_with(b"\r\n") {
                    true => {
                        read.advance(2);
                        this.state = State::ChunkSize;
                        continue;
                    }
                    false => return this.fail(Error::BadChunk),
                },
                State::Trailers => match trailers(read) {
                    Ok(Some(trailers)) => {
                        this.state = State::Done;
                        return match trailers.is_empty() {
                            true => Poll::Ready(None),
                            false => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                        };
                    }
                    Ok(None) => {}
                    Err(error) => return this.fail(error),
                },
                State::Length(_) | State::ChunkData(_) | State::ChunkEnd | State::UntilClose => {}
            }
            match connection.poll_fill(cx) {
                Poll::Ready(Ok(0)) if this.state == State::UntilClose => {
                    this.state = State::Done;
                    this.keep_alive = false;
                    return Poll::Ready(None);
                }
                Poll::Ready(Ok(0)) => return this.fail(Error::ClosedMidBody),
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(error)) => return this.fail(Error::Io(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Upgrade)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(left) => SizeHint::with_exact(left),
            State::Done | State::Upgrade => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The trailer section after the last chunk, removed from `read`; `None`
/// while it is incomplete.
fn trailers(read: &mut bytes::BytesMut) -> Result<Option<HeaderMap>, Error> {
    let mut fields = [httparse::EMPTY_HEADER; 32];
    match httparse::parse_headers(read, &mut fields) {
        Ok(httparse::Status::Complete((used, _))) if used > MAX_HEAD => Err(Error::HeadTooLarge),
        Ok(httparse::Status::Complete((used, fields))) => {
            let mut trailers = HeaderMap::with_capacity(fields.len());
            for field in fields.iter() {
                let name = HeaderName::from_bytes(field.name.as_bytes()).map_err(|_| Error::BadChunk)?;
                let value = HeaderValue::from_bytes(field.value).map_err(|_| Error::BadChunk)?;
                trailers.append(name, value);
            }
            read.advance(used);
            Ok(Some(trailers))
        }
        Ok(httparse::Status::Partial) if read.len() > MAX_HEAD => Err(Error::HeadTooLarge),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Error::BadChunk),
    }
}
