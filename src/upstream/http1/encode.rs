//! The request on its way to the target: its head written as HTTP/1.1, and
//! its body framed by a length when one is known, else chunked.

use super::Error;
use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderValue, Method};
use http_body::Body;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;

/// Writes `head` into `out` (a buffer the connection reuses) and says how
/// the body that follows is framed. The framing headers are Portico's: the
/// client's own were hop-by-hop and are gone, and a length the body knows
/// exactly (a buffered or transformed body) wins over a declared one.
pub(super) fn head(out: &mut BytesMut, head: &mut http::request::Parts, hint: http_body::SizeHint) -> Framing {
    let headers = &mut head.headers;
    headers.remove(TRANSFER_ENCODING);
    let framing = match hint.exact() {
        Some(0) if !carries_content(&head.method) && !headers.contains_key(CONTENT_LENGTH) => Framing::Length(0),
        Some(length) => {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(length));
            Framing::Length(length)
        }
        None => match declared_length(headers) {
            Some(length) => Framing::Length(length),
            None => {
                headers.remove(CONTENT_LENGTH);
                headers.insert(TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
                Framing::Chunked
            }
        },
    };
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    out.reserve(64 + target.len() + headers.len() * 32);
    out.put_slice(head.method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    write_fields(out, headers);
    out.put_slice(b"\r\n");
    framing
}

fn write_fields(out: &mut BytesMut, headers: &HeaderMap) {
    for (name, value) in headers {
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
}

/// Methods whose requests have content by definition: an empty body is
/// sent as `Content-Length: 0`, as browsers and nginx do.
fn carries_content(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// This many bytes are still to be sent.
    Length(u64),
    Chunked,
}

/// At most this many pieces wait to be written: a head, then a chunk's size
/// line, its data, its CRLF and the last chunk.
const SLOTS: usize = 6;
/// The most one frame of the body queues.
const FRAME_SLOTS: usize = 4;

/// A message's bytes still to be written: queued pieces (written together,
/// in one `writev` when they are ready together) and the body they come
/// from. A request on its way to a target; the server side
/// (`proxy::http1`) writes its answers with it too.
pub struct Outgoing<B> {
    queue: [Bytes; SLOTS],
    queued: usize,
    body: Option<B>,
    framing: Framing,
    /// Whether a chunked body's trailers are sent; a client that did not
    /// ask for them (`TE: trailers`) gets none, as hyper does.
    trailers: bool,
    /// Some of the message has been written.
    started: bool,
}

impl<B> Outgoing<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<super::BoxError>,
{
    /// The head, then `body` (none: the message has no body to send).
    pub fn new(head: Bytes, body: Option<B>, framing: Framing) -> Outgoing<B> {
        let mut outgoing = Outgoing {
            queue: Default::default(),
            queued: 0,
            body: None,
            framing,
            trailers: true,
            started: false,
        };
        outgoing.push(head);
        match body {
            Some(body) if !body.is_end_stream() => outgoing.body = Some(body),
            _ if framing == Framing::Chunked => outgoing.push(Bytes::from_static(b"0\r\n\r\n")),
            _ => {}
        }
        outgoing
    }

    /// The body, when none of the message has been written: a server whose
    /// answer's body failed at once may still answer otherwise.
    pub fn unsent_body(&mut self) -> Option<B> {
        if self.started {
            return None;
        }
        self.body.take()
    }

    /// Ends a chunked body without the trailers it may have. In place, not
    /// a builder's `self`: the message is a few hundred bytes to move.
    pub fn drop_trailers(&mut self) {
        self.trailers = false;
    }

    fn push(&mut self, bytes: Bytes) {
        if !bytes.is_empty() {
            self.queue[self.queued] = bytes;
            self.queued += 1;
        }
    }

    /// Writes what is queued and then the body, until all is written
    /// (`Ready(Ok)`), the socket or the body must be waited for (`Pending`),
    /// or either failed. A failing body, or one longer or shorter than its
    /// length, is `RequestBody` or `RequestLength`, named for the way
    /// upstream; the server side only asks whether the answer went out whole.
    pub fn poll_write<S: AsyncWrite + Unpin>(
        &mut self,
        stream: &mut S,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), Error>> {
        loop {
            // Take what the body has ready first, so that the head and a
            // body already at hand leave in one write.
            let mut waiting_for_body = false;
            while self.queued + FRAME_SLOTS <= SLOTS {
                let Some(body) = self.body.as_mut() else { break };
                match Pin::new(body).poll_frame(cx) {
                    Poll::Ready(frame) => self.take(frame)?,
                    Poll::Pending => {
                        waiting_for_body = true;
                        break;
                    }
                }
            }
            if self.queued == 0 {
                if waiting_for_body {
                    return Poll::Pending;
                }
                if self.body.is_none() {
                    return Pin::new(stream).poll_flush(cx).map_err(Error::Io);
                }
                continue;
            }
            let slices: [IoSlice<'_>; SLOTS] = std::array::from_fn(|i| IoSlice::new(&self.queue[i]));
            match Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..self.queued]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(Error::Io(std::io::ErrorKind::WriteZero.into()))),
                Poll::Ready(Ok(written)) => {
                    self.started = true;
                    self.advance(written);
                }
                Poll::Ready(Err(error)) => return Poll::Ready(Err(Error::Io(error))),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Queues one frame of the body, framed; the body ends on `None`.
    fn take(&mut self, frame: Option<Result<http_body::Frame<Bytes>, B::Error>>) -> Result<(), Error> {
        let frame = match frame {
            Some(Ok(frame)) => frame,
            Some(Err(error)) => return Err(Error::RequestBody(error.into())),
            None => return self.end(None),
        };
        match frame.into_data() {
            Ok(data) => match &mut self.framing {
                // An empty chunk would end the body: skipped.
                Framing::Chunked if data.is_empty() => {}
                Framing::Chunked => {
                    self.push(Bytes::from(format!("{:x}\r\n", data.len())));
                    self.push(data);
                    self.push(Bytes::from_static(b"\r\n"));
                }
                Framing::Length(left) => {
                    *left = left.checked_sub(data.len() as u64).ok_or(Error::RequestLength)?;
                    self.push(data);
                }
            },
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    return self.end(Some(trailers));
                }
            }
        }
        if self.body.as_ref().is_some_and(|b| b.is_end_stream()) {
            return self.end(None);
        }
        Ok(())
    }

    /// The body has ended: a chunked one says so (with its trailers; a
    /// length-framed one has nowhere to put them), a length-framed one must
    /// have sent exactly its length.
    fn end(&mut self, trailers: Option<HeaderMap>) -> Result<(), Error> {
        self.body = None;
        match self.framing {
            Framing::Chunked => {
                let mut last = BytesMut::from(&b"0\r\n"[..]);
                if let Some(trailers) = trailers.filter(|_| self.trailers) {
                    write_fields(&mut last, &trailers);
                }
                last.put_slice(b"\r\n");
                self.push(last.freeze());
                Ok(())
            }
            Framing::Length(0) => Ok(()),
            Framing::Length(_) => Err(Error::RequestLength),
        }
    }

    /// Drops the `written` bytes from the front of the queue.
    fn advance(&mut self, mut written: usize) {
        let mut done = 0;
        while done < self.queued && written >= self.queue[done].len() {
            written -= self.queue[done].len();
            done += 1;
        }
        if done < self.queued {
            bytes::Buf::advance(&mut self.queue[done], written);
        }
        self.queue.rotate_left(done);
        self.queued -= done;
        for slot in &mut self.queue[self.queued..] {
            *slot = Bytes::new();
        }
    }
}
