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

/// At most this many pieces wait to be written behind the head: a chunk's
/// size line, its data, its CRLF and the last chunk.
const SLOTS: usize = 5;
/// The most one frame of the body queues.
const FRAME_SLOTS: usize = 4;
/// The largest piece copied in behind the head rather than queued.
pub const COPY_MAX: usize = 4096;

/// A message's bytes still to be written: the head, queued pieces (written
/// together, in one `writev` when they are ready together) and the body
/// they come from. A request on its way to a target; the server side
/// (`proxy::http1`) writes its answers with it too.
pub struct Outgoing<B> {
    /// The head not yet written. While nothing is queued behind it, a piece
    /// that fits the room left in its buffer (up to [`COPY_MAX`]) is copied
    /// in rather than queued: a small answer whose body is at hand leaves
    /// with its head in one `send`, which costs the kernel less than a
    /// `writev` of two pieces costs beyond the copy (bench/RESULTS.md).
    head: BytesMut,
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
    /// The head, then `body` (none: the message has no body to send). The
    /// capacity of `head`'s buffer beyond its length is the room for pieces
    /// copied in behind it; [`Outgoing::into_buffer`] gives the buffer back.
    pub fn new(head: BytesMut, body: Option<B>, framing: Framing) -> Outgoing<B> {
        let mut outgoing = Outgoing {
            head,
            queue: Default::default(),
            queued: 0,
            body: None,
            framing,
            trailers: true,
            started: false,
        };
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

    /// The buffer the head was written in, emptied, for the next message's
    /// head: its room is kept.
    pub fn into_buffer(self) -> BytesMut {
        let mut buffer = self.head;
        buffer.clear();
        buffer
    }

    fn push(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        let room = self.head.capacity() - self.head.len();
        if self.queued == 0 && bytes.len() <= room.min(COPY_MAX) {
            self.head.put_slice(&bytes);
        } else {
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
            if self.head.is_empty() && self.queued == 0 {
                if waiting_for_body {
                    return Poll::Pending;
                }
                if self.body.is_none() {
                    return Pin::new(stream).poll_flush(cx).map_err(Error::Io);
                }
                continue;
            }
            // One piece goes by `send`, not `writev`: the kernel's vectored
            // path costs some 180 ns more a call (bench/RESULTS.md).
            let polled = match (self.head.is_empty(), self.queued) {
                (false, 0) => Pin::new(&mut *stream).poll_write(cx, &self.head),
                (true, 1) => Pin::new(&mut *stream).poll_write(cx, &self.queue[0]),
                _ => {
                    let head = IoSlice::new(&self.head);
                    let slices: [IoSlice<'_>; SLOTS + 1] = std::array::from_fn(|i| match i {
                        0 => head,
                        _ => IoSlice::new(&self.queue[i - 1]),
                    });
                    let first = usize::from(self.head.is_empty());
                    Pin::new(&mut *stream).poll_write_vectored(cx, &slices[first..=self.queued])
                }
            };
            match polled {
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

    /// Drops the `written` bytes from the front of the head and the queue.
    fn advance(&mut self, mut written: usize) {
        let from_head = written.min(self.head.len());
        bytes::Buf::advance(&mut self.head, from_head);
        written -= from_head;
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

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::convert::Infallible;

    /// A socket that takes at most `per_call` bytes a write and records
    /// whether each write was vectored.
    struct Recorder {
        written: Vec<u8>,
        calls: Vec<&'static str>,
        per_call: usize,
    }

    impl Recorder {
        fn new(per_call: usize) -> Recorder {
            Recorder {
                written: Vec::new(),
                calls: Vec::new(),
                per_call,
            }
        }
    }

    impl AsyncWrite for Recorder {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            let n = buf.len().min(self.per_call);
            self.written.extend_from_slice(&buf[..n]);
            self.calls.push("send");
            Poll::Ready(Ok(n))
        }

        fn poll_write_vectored(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            bufs: &[IoSlice<'_>],
        ) -> Poll<std::io::Result<usize>> {
            let mut left = self.per_call;
            for buf in bufs {
                let n = buf.len().min(left);
                self.written.extend_from_slice(&buf[..n]);
                left -= n;
            }
            self.calls.push("writev");
            Poll::Ready(Ok(self.per_call - left))
        }

        fn is_write_vectored(&self) -> bool {
            true
        }

        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }

        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    /// A head in a buffer with `room` spare bytes behind it.
    fn head_with_room(room: usize) -> BytesMut {
        let mut head = BytesMut::with_capacity(64 + room);
        head.put_slice(b"HTTP/1.1 200 OK\r\ncontent-length: N\r\n\r\n");
        head
    }

    fn write_all<B>(mut outgoing: Outgoing<B>, socket: &mut Recorder) -> BytesMut
    where
        B: Body<Data = Bytes> + Unpin,
        B::Error: Into<super::super::BoxError>,
    {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        match outgoing.poll_write(socket, &mut cx) {
            Poll::Ready(Ok(())) => outgoing.into_buffer(),
            other => panic!("not written at once: {other:?}"),
        }
    }

    #[test]
    fn a_small_body_at_hand_leaves_with_its_head_in_one_send() {
        let head = head_with_room(4096);
        let expected = [&head[..], b"hello"].concat();
        let body = Full::new(Bytes::from_static(b"hello"));
        let mut socket = Recorder::new(usize::MAX);
        let buffer = write_all(Outgoing::new(head, Some(body), Framing::Length(5)), &mut socket);
        assert_eq!(socket.written, expected);
        assert_eq!(socket.calls, ["send"]);
        assert!(
            buffer.is_empty() && buffer.capacity() > 0,
            "the buffer comes back for the next head"
        );
    }

    #[test]
    fn a_body_without_room_or_over_the_copy_limit_is_written_beside_the_head() {
        let large = Bytes::from(vec![b'x'; COPY_MAX + 1]);
        for (room, body) in [(0, Bytes::from_static(b"hello")), (2 * COPY_MAX, large)] {
            let mut head = head_with_room(room);
            head = head.split(); // exactly its length: no room
            if room > 0 {
                head.reserve(room);
            }
            let expected = [&head[..], &body[..]].concat();
            let length = body.len() as u64;
            let mut socket = Recorder::new(usize::MAX);
            write_all(
                Outgoing::new(head, Some(Full::new(body)), Framing::Length(length)),
                &mut socket,
            );
            assert_eq!(socket.written, expected);
            assert_eq!(socket.calls, ["writev"], "room {room}");
        }
    }

    #[test]
    fn short_writes_keep_every_byte_in_order_chunked_or_not() {
        let frames = || {
            let frames: Vec<Result<http_body::Frame<Bytes>, Infallible>> = ["ab", "", "cdefghij", "k"]
                .into_iter()
                .map(|data| Ok(http_body::Frame::data(Bytes::from_static(data.as_bytes()))))
                .collect();
            StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync()
        };
        for per_call in [1, 3, 7, 1000] {
            let head = head_with_room(16);
            let mut expected = head.to_vec();
            expected.extend_from_slice(b"2\r\nab\r\n8\r\ncdefghij\r\n1\r\nk\r\n0\r\n\r\n");
            let mut socket = Recorder::new(per_call);
            write_all(Outgoing::new(head, Some(frames()), Framing::Chunked), &mut socket);
            assert_eq!(
                String::from_utf8_lossy(&socket.written),
                String::from_utf8_lossy(&expected),
                "{per_call}"
            );

            let head = head_with_room(4);
            let mut expected = head.to_vec();
            expected.extend_from_slice(b"abcdefghijk");
            let mut socket = Recorder::new(per_call);
            write_all(Outgoing::new(head, Some(frames()), Framing::Length(11)), &mut socket);
            assert_eq!(socket.written, expected, "{per_call}");
        }
    }
}
