//! A request head read off the wire, when it is one Portico's own HTTP/1.1
//! side serves: HTTP/1.1, its body (if any) framed by one `Content-Length`,
//! and none of the fields that change how the connection goes on
//! (`Upgrade`, `Expect`, `TE`, `Transfer-Encoding`), nor `CONNECT`. Anything
//! else, malformed heads included, is hyper's, which then answers it as it
//! always has.

use crate::upstream::http1::decimal_length;
use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, EXPECT, TE, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderName, HeaderValue, Method, Uri, Version};
use smallvec::SmallVec;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Fields read at most; a head with more is hyper's (which holds it to the
/// listener's limit).
const MAX_FIELDS: usize = 100;

/// Fields `forward::upstream_request` may add to a request's own.
const FORWARDING_FIELDS: usize = 8;

/// What the front of the buffer holds. Returned once a request, and moved
/// into the request at once: not worth a box.
#[allow(clippy::large_enum_variant)]
pub(super) enum Head {
    /// A request of ours, its head taken off the buffer, with its body's
    /// length. `close` when the client asked to close the connection after it.
    Ours {
        parts: http::request::Parts,
        length: u64,
        close: bool,
    },
    /// Not a whole head yet.
    Partial,
    /// A head hyper serves or refuses; the buffer is as it was.
    Theirs,
}

/// Where a field's name and value sit in the head.
#[derive(Clone)]
struct Field {
    name: Range<usize>,
    value: Range<usize>,
}

/// Reads a request head off the front of `buffer`.
pub(super) fn parse(buffer: &mut BytesMut) -> Head {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    // Filled only as far as the head goes (most have a few fields).
    let mut places: SmallVec<[Field; 24]> = SmallVec::new();
    // Parsed with the buffer borrowed: only places are kept, so that the
    // head can then be taken off the buffer and sliced without copies.
    let (length, method, target) = {
        let mut request = httparse::Request::new(&mut []);
        let length = match request.parse_with_uninit_headers(buffer, &mut fields) {
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) => return Head::Partial,
            Err(_) => return Head::Theirs,
        };
        let (Some(1), Some(method), Some(target)) = (request.version, request.method, request.path) else {
            return Head::Theirs;
        };
        let base = buffer.as_ptr() as usize;
        let place = |text: &[u8]| {
            let from = text.as_ptr() as usize - base;
            from..from + text.len()
        };
        places.extend(request.headers.iter().map(|parsed| Field {
            name: place(parsed.name.as_bytes()),
            value: place(parsed.value),
        }));
        (length, method.as_bytes(), place(target.as_bytes()))
    };
    let Ok(method) = Method::from_bytes(method) else {
        return Head::Theirs;
    };
    if method == Method::CONNECT {
        return Head::Theirs;
    }
    let head = buffer.split_to(length).freeze();
    match parts(&head, method, target, &places) {
        Some(ours) => ours,
        None => {
            // Put back as it came, for hyper to read.
            let mut whole = BytesMut::with_capacity(head.len() + buffer.len());
            whole.extend_from_slice(&head);
            whole.extend_from_slice(buffer);
            *buffer = whole;
            Head::Theirs
        }
    }
}

/// The request's head as `http` types, the text shared with `head`; `None`
/// when it is hyper's to serve.
fn parts(head: &Bytes, method: Method, target: Range<usize>, fields: &[Field]) -> Option<Head> {
    let uri = Uri::from_maybe_shared(head.slice(target)).ok()?;
    // Room for the fields the way upstream adds (`X-Forwarded-*`, `Via`,
    // `X-Request-Id`, the target's `Host`): a map that grows is rehashed.
    let mut headers = crate::header_maps::take(fields.len() + FORWARDING_FIELDS);
    let mut close = false;
    let mut length = None;
    for field in fields {
        let name = HeaderName::from_bytes(&head[field.name.clone()]).ok()?;
        let value = HeaderValue::from_maybe_shared(head.slice(field.value.clone())).ok()?;
        if name == TRANSFER_ENCODING || name == UPGRADE || name == EXPECT || name == TE {
            return None;
        }
        // One plain decimal length of at most 18 digits (more than any
        // body); any other (repeated, signed, a list, longer) is hyper's to
        // judge.
        if name == CONTENT_LENGTH {
            if length.is_some() || value.len() > 18 {
                return None;
            }
            length = Some(decimal_length(value.as_bytes())?);
        }
        if name == CONNECTION {
            close |= super::has_close_token(value.as_bytes());
        }
        headers.append(name, value);
    }
    let mut parts = http::Request::new(()).into_parts().0;
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Some(Head::Ours {
        parts,
        length: length.unwrap_or(0),
        close,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> (Head, BytesMut) {
        let mut buffer = BytesMut::from(text);
        (parse(&mut buffer), buffer)
    }

    #[test]
    fn a_bodyless_http11_request_is_ours_and_the_next_stays_buffered() {
        let (head, rest) = read("GET /a?b=1 HTTP/1.1\r\nHost: x\r\nX-Two: 1\r\nx-two: 2\r\n\r\nGET /next");
        let Head::Ours { parts, close, .. } = head else {
            panic!("not ours")
        };
        assert_eq!(
            (parts.method, parts.uri.to_string(), close),
            (Method::GET, "/a?b=1".into(), false)
        );
        assert_eq!(parts.headers.get_all("x-two").iter().count(), 2);
        assert_eq!(parts.headers["host"], "x");
        assert_eq!(&rest[..], b"GET /next");
        let (head, _) =
            read("DELETE /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(matches!(
            head,
            Head::Ours {
                close: true,
                length: 0,
                ..
            }
        ));
        let (head, rest) = read("POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc");
        assert!(matches!(
            head,
            Head::Ours {
                length: 3,
                close: false,
                ..
            }
        ));
        assert_eq!(&rest[..], b"abc", "the body stays for the connection to read");
    }

    #[test]
    fn chunked_bodies_odd_lengths_upgrades_expectations_and_other_versions_are_hyper_s_and_left_whole() {
        for text in [
            "POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3, 3\r\n\r\nabc",
            "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 9999999999999999999\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n",
            "GET /a HTTP/1.0\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /a HTTP/1.1\r\nHost : x\r\n\r\n",
        ] {
            let (head, rest) = read(text);
            assert!(matches!(head, Head::Theirs), "{text:?}");
            assert_eq!(&rest[..], text.as_bytes(), "{text:?}");
        }
        assert!(matches!(read("GET /a HTTP/1.1\r\nHost: x\r\n").0, Head::Partial));
    }
}
