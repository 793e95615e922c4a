//! A response's head written for an HTTP/1.1 client, and how its body is
//! framed: as hyper frames a server's answers, so that a client cannot tell
//! which of the two served it.

use crate::upstream::http1::Framing;
use bytes::{BufMut, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRAILER, TRANSFER_ENCODING};
use http::StatusCode;
use std::cell::RefCell;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the response goes out.
pub(super) struct Written {
    pub(super) framing: Framing,
    /// Whether the connection closes after it.
    pub(super) close: bool,
}

/// What is known of the body when the head is written.
pub(super) enum BodyLength {
    /// None at all (the body has ended already).
    Empty,
    Known(u64),
    Unknown,
}

/// Writes the head of `response` into `out`, in one pass over its fields.
/// `keep_alive` is false when the client or the gateway wants the
/// connection closed after it; the head then says `Connection: close`.
pub(super) fn head(
    out: &mut BytesMut,
    response: &http::response::Parts,
    to_head_request: bool,
    body: BodyLength,
    keep_alive: bool,
) -> Written {
    let status = response.status;
    // RFC 9110 section 6.4.1: these never have content, and HEAD's answer
    // describes the GET's without it.
    let no_content =
        status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    let may_chunk = !no_content && !to_head_request;

    // Room behind the head for a small body, which the writer copies in
    // when it is at hand, so that the two leave in one `send`.
    let room = match body {
        BodyLength::Known(length) if may_chunk => usize::try_from(length)
            .ok()
            .filter(|length| *length <= crate::upstream::http1::COPY_MAX)
            .unwrap_or(0),
        _ => 0,
    };
    out.reserve(96 + response.headers.len() * 40 + room);
    if status == StatusCode::OK {
        out.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put_slice(b"HTTP/1.1 ");
        out.put_slice(status.as_str().as_bytes());
        out.put_u8(b' ');
        // A reason must be written: many parsers expect one.
        out.put_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
        out.put_slice(b"\r\n");
    }
    // The framing fields are Portico's to write, after the others.
    let (mut declared, mut says_close, mut wrote_date) = (None, false, false);
    for (name, value) in &response.headers {
        if name == CONTENT_LENGTH {
            declared = value.to_str().ok().and_then(|v| v.parse::<u64>().ok());
            continue;
        }
        if name == TRANSFER_ENCODING || name == TRAILER && !may_chunk {
            continue;
        }
        if name == CONNECTION {
            says_close |= super::has_close_token(value.as_bytes());
        }
        wrote_date |= name == DATE;
        out.put_slice(name.as_str().as_bytes());
        out.put_slice(b": ");
        out.put_slice(value.as_bytes());
        out.put_slice(b"\r\n");
    }
    if !keep_alive && !says_close {
        out.put_slice(b"connection: close\r\n");
    }
    // The body's own length wins over a declared one; a declared one
    // frames a body of unknown length.
    let framing = match body {
        BodyLength::Empty => Framing::Length(0),
        BodyLength::Known(length) => Framing::Length(length),
        BodyLength::Unknown => match declared {
            Some(length) => Framing::Length(length),
            None if may_chunk => Framing::Chunked,
            None => Framing::Length(0),
        },
    };
    match framing {
        Framing::Chunked => out.put_slice(b"transfer-encoding: chunked\r\n"),
        // A HEAD answer tells the GET's length when it has one to tell.
        Framing::Length(0) if to_head_request => {
            if let Some(length) = declared {
                put_length(out, length);
            }
        }
        Framing::Length(length) if !no_content => put_length(out, length),
        Framing::Length(_) => {}
    }
    if !wrote_date {
        out.put_slice(b"date: ");
        DATE_TEXT.with(|cached| out.put_slice(cached.borrow_mut().now()));
        out.put_slice(b"\r\n");
    }
    out.put_slice(b"\r\n");
    Written {
        framing: if no_content || to_head_request {
            Framing::Length(0)
        } else {
            framing
        },
        close: !keep_alive || says_close,
    }
}

fn put_length(out: &mut BytesMut, length: u64) {
    out.put_slice(b"content-length: ");
    out.put_slice(itoa::Buffer::new().format(length).as_bytes());
    out.put_slice(b"\r\n");
}

thread_local! {
    static DATE_TEXT: RefCell<DateText> = const { RefCell::new(DateText { second: u64::MAX, text: [0; 29] }) };
}

/// The `Date` value, formatted once a second per thread.
struct DateText {
    second: u64,
    text: [u8; 29],
}

impl DateText {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            let formatted = httpdate::fmt_http_date(now);
            if formatted.len() == self.text.len() {
                self.text.copy_from_slice(formatted.as_bytes());
                self.second = second;
            }
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(
        status: u16,
        headers: &[(&str, &str)],
        head_request: bool,
        body: BodyLength,
        keep_alive: bool,
    ) -> (String, Written) {
        let mut builder = http::Response::builder().status(status);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let parts = builder.body(()).unwrap().into_parts().0;
        let mut out = BytesMut::new();
        let written = head(&mut out, &parts, head_request, body, keep_alive);
        (String::from_utf8(out.to_vec()).unwrap(), written)
    }

    #[test]
    fn heads_are_framed_as_hyper_frames_them() {
        let (text, w) = written(
            200,
            &[("content-type", "text/plain")],
            false,
            BodyLength::Known(5),
            true,
        );
        assert!(
            text.starts_with("HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 5\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with(" GMT\r\n\r\n"), "{text}");
        assert!(matches!(w.framing, Framing::Length(5)) && !w.close);

        let (text, w) = written(404, &[("content-length", "9")], false, BodyLength::Unknown, true);
        assert!(
            text.starts_with("HTTP/1.1 404 Not Found\r\ncontent-length: 9\r\n"),
            "{text}"
        );
        assert!(matches!(w.framing, Framing::Length(9)));

        let (text, w) = written(200, &[("date", "x")], false, BodyLength::Unknown, false);
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: x\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert!(matches!(w.framing, Framing::Chunked) && w.close);

        let (text, _) = written(200, &[("date", "x")], false, BodyLength::Empty, true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 0\r\n\r\n");

        // HEAD: the GET's length if declared, and no body whatever the body says.
        let (text, w) = written(
            200,
            &[("date", "x"), ("content-length", "42")],
            true,
            BodyLength::Empty,
            true,
        );
        assert_eq!(text, "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 42\r\n\r\n");
        assert!(matches!(w.framing, Framing::Length(0)));
        let (text, w) = written(200, &[("date", "x")], true, BodyLength::Unknown, true);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ndate: x\r\n\r\n");
        assert!(matches!(w.framing, Framing::Length(0)));

        // 204 and 304 have neither a length nor a body.
        let (text, w) = written(
            204,
            &[("date", "x"), ("content-length", "0")],
            false,
            BodyLength::Empty,
            true,
        );
        assert_eq!(text, "HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n");
        assert!(matches!(w.framing, Framing::Length(0)));
        let (text, _) = written(
            304,
            &[("date", "x"), ("etag", "\"a\"")],
            false,
            BodyLength::Known(3),
            true,
        );
        assert_eq!(text, "HTTP/1.1 304 Not Modified\r\ndate: x\r\netag: \"a\"\r\n\r\n");

        // An upstream's own `Connection: close` closes after the answer.
        let (_, w) = written(200, &[("connection", "close")], false, BodyLength::Empty, true);
        assert!(w.close);
    }
}
