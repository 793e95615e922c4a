//! The answer's head: parsed by `httparse`, and how its body is framed
//! (RFC 9112 §6.3), decided once here.

use super::Error;
use bytes::BytesMut;
use http::header::{CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

/// Larger heads are refused (nginx's `proxy_buffer_size` is 4-8 KiB; large
/// cookies fit here with room to spare).
pub(super) const MAX_HEAD: usize = 64 * 1024;
pub(super) const MAX_FIELDS: usize = 100;

/// How the answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
    /// A `101`: no body; the connection now carries another protocol.
    Upgrade,
}

pub(super) struct Answer {
    pub parts: http::response::Parts,
    pub framing: Framing,
    /// The target keeps the connection open after this answer.
    pub keep_alive: bool,
}

/// Parses the answer's head from the front of `read` and removes it, or
/// `None` while it is incomplete. Interim answers (`100 Continue`, `103`) are
/// read past. `bodiless`: the request was a HEAD. `upgrade`: it asked for
/// one, so a `101` is its answer.
pub(super) fn parse(read: &mut BytesMut, bodiless: bool, upgrade: bool) -> Result<Option<Answer>, Error> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut response = httparse::Response::new(&mut fields);
        let length = match response.parse(read) {
            Ok(httparse::Status::Complete(length)) if length > MAX_HEAD => return Err(Error::HeadTooLarge),
            Ok(httparse::Status::Complete(length)) => length,
            Ok(httparse::Status::Partial) if read.len() > MAX_HEAD => return Err(Error::HeadTooLarge),
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(Error::HeadTooLarge),
            Err(_) => return Err(Error::MalformedHead("not an HTTP/1.x status line and fields")),
        };
        let status = StatusCode::from_u16(response.code.unwrap_or(0))
            .map_err(|_| Error::MalformedHead("the status is not a number from 100 to 999"))?;
        let version = match response.version {
            Some(0) => Version::HTTP_10,
            _ => Version::HTTP_11,
        };
        // Where each field sits in the head, so its value can share the
        // head's bytes (on the stack: the head is at most 64 KiB).
        let base = read.as_ptr() as usize;
        let mut spans = [[0u32; 4]; MAX_FIELDS];
        let count = response.headers.len();
        for (span, field) in spans.iter_mut().zip(response.headers.iter()) {
            let name = (field.name.as_ptr() as usize - base) as u32;
            let value = (field.value.as_ptr() as usize - base) as u32;
            *span = [
                name,
                name + field.name.len() as u32,
                value,
                value + field.value.len() as u32,
            ];
        }
        let head = read.split_to(length).freeze();
        if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
            continue;
        }
        // With room for the two fields the proxy adds (`Via`, the request id).
        let mut headers = crate::header_maps::take(count + 2);
        let mut framing_fields = FramingFields::default();
        for &[name, name_end, value, value_end] in &spans[..count] {
            let name = HeaderName::from_bytes(&head[name as usize..name_end as usize])
                .map_err(|_| Error::MalformedHead("a field name is invalid"))?;
            let value = HeaderValue::from_maybe_shared(head.slice(value as usize..value_end as usize))
                .map_err(|_| Error::MalformedHead("a field value is invalid"))?;
            if framing_fields.note(&name, &value) == Field::OnlyThisHop {
                continue;
            }
            headers.append(name, value);
        }
        let (framing, keep_alive) = framing(status, version, &framing_fields, &mut headers, bodiless, upgrade)?;
        let (mut parts, ()) = http::Response::new(()).into_parts();
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(Answer {
            parts,
            framing,
            keep_alive,
        }));
    }
}

/// What the framing fields say, noted as the map is built, so that
/// framing is decided without looking each of them up again.
#[derive(Default)]
struct FramingFields {
    /// `Connection` names `close`.
    close: bool,
    /// `Connection` names `keep-alive` (what keeps an HTTP/1.0 one open).
    keep_alive: bool,
    /// There is a `Transfer-Encoding`.
    transfer_encoding: bool,
    /// The last coding of the last `Transfer-Encoding` is `chunked`.
    chunked_last: bool,
    /// The one length every `Content-Length` says.
    length: Option<u64>,
    /// A `Content-Length` is not a number, or disagrees with another.
    bad_length: bool,
}

/// Whether a field goes into the answer's map.
#[derive(PartialEq)]
enum Field {
    Kept,
    /// `Connection: keep-alive` (or `close`) and `Keep-Alive`: they say how
    /// this connection goes on, noted here, and the exchange would strip
    /// them as hop-by-hop at once; most answers carry one, so not adding
    /// it saves an insert and a removal. A `Connection` naming anything
    /// else (`upgrade`, a field) is kept for the exchange to act on.
    OnlyThisHop,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Field {
        if *name == CONNECTION {
            let mut only_this_hop = true;
            for token in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let close = token.eq_ignore_ascii_case(b"close");
                let keep_alive = token.eq_ignore_ascii_case(b"keep-alive");
                self.close |= close;
                self.keep_alive |= keep_alive;
                only_this_hop &= close || keep_alive;
            }
            if only_this_hop {
                return Field::OnlyThisHop;
            }
        } else if name.as_str() == "keep-alive" {
            return Field::OnlyThisHop;
        } else if *name == TRANSFER_ENCODING {
            self.transfer_encoding = true;
            self.chunked_last = value
                .to_str()
                .ok()
                .and_then(|value| value.rsplit(',').next())
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
        } else if *name == CONTENT_LENGTH {
            // `Content-Length: 5, 5` is one length said twice; any disagreement is fatal.
            for part in value.as_bytes().split(|&b| b == b',') {
                let parsed = decimal_length(part.trim_ascii());
                match (parsed, self.length) {
                    (Some(n), Some(seen)) if n != seen => self.bad_length = true,
                    (Some(n), _) => self.length = Some(n),
                    (None, _) => self.bad_length = true,
                }
            }
        }
        Field::Kept
    }
}

/// One length as `Content-Length` gives it: `1*DIGIT` (RFC 9110 section 8.6)
/// that fits a u64. A sign, a space or a list is not one.
pub fn decimal_length(text: &[u8]) -> Option<u64> {
    if text.is_empty() || !text.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// How the body is delimited, and whether the connection stays open after it.
fn framing(
    status: StatusCode,
    version: Version,
    fields: &FramingFields,
    headers: &mut HeaderMap,
    bodiless: bool,
    upgrade: bool,
) -> Result<(Framing, bool), Error> {
    let mut keep_alive = match version {
        Version::HTTP_10 => fields.keep_alive,
        _ => !fields.close,
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return match upgrade {
            true => Ok((Framing::Upgrade, false)),
            false => Err(Error::MalformedHead(
                "a 101 answer to a request that asked for no upgrade",
            )),
        };
    }
    if bodiless || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        return Ok((Framing::Length(0), keep_alive));
    }
    if fields.transfer_encoding {
        // Transfer-Encoding wins over Content-Length; a message with both
        // may be an attempt at splitting, so its connection is not reused.
        if headers.remove(CONTENT_LENGTH).is_some() {
            keep_alive = false;
        }
        return Ok(match fields.chunked_last {
            true => (Framing::Chunked, keep_alive),
            false => (Framing::UntilClose, false),
        });
    }
    if fields.bad_length {
        return Err(Error::BadLength);
    }
    Ok(match fields.length {
        Some(length) => (Framing::Length(length), keep_alive),
        None => (Framing::UntilClose, false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(head: &str) -> Result<Option<Answer>, Error> {
        parse(&mut BytesMut::from(head.as_bytes()), false, false)
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let answer = parsed("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(answer.framing, Framing::Length(5));
        assert!(answer.keep_alive);
        let both = parsed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(both.framing, Framing::Chunked);
        assert!(!both.keep_alive, "both framings: the connection is not reused");
        assert!(!both.parts.headers.contains_key(CONTENT_LENGTH));
        // Transfer-Encoding wins even over a length that is not a number.
        let bad_beside = parsed("HTTP/1.1 200 OK\r\nContent-Length: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(bad_beside.framing, Framing::Chunked);
        assert!(!bad_beside.keep_alive);
        let gzip_last = parsed("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(gzip_last.framing, Framing::UntilClose);
        let old = parsed("HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n").unwrap().unwrap();
        assert!(!old.keep_alive);
        let close = parsed("HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!close.keep_alive);
        for bad in ["5, 6", "-1", "+5", "0x10", "", "99999999999999999999"] {
            let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {bad}\r\n\r\n");
            assert!(matches!(parsed(&head), Err(Error::BadLength)), "{bad:?}");
        }
        let twice = parsed("HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n");
        assert!(matches!(twice, Err(Error::BadLength)));
        let none = parsed("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(none.framing, Framing::Length(0));
    }

    #[test]
    fn connection_fields_of_this_hop_stay_out_of_the_map_and_the_rest_stay_in() {
        let answer = parsed(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Kept: 1\r\nContent-Length: 0\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert!(answer.keep_alive);
        let names: Vec<_> = answer.parts.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["x-kept", "content-length"]);
        let close = parsed("HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!close.keep_alive);
        assert!(!close.parts.headers.contains_key(CONNECTION));
        // A field named in Connection: the line stays for the exchange to strip what it names.
        let naming =
            parsed("HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n")
                .unwrap()
                .unwrap();
        assert_eq!(naming.parts.headers[CONNECTION], "keep-alive, X-Secret");
        assert!(naming.keep_alive);
    }

    #[test]
    fn interim_answers_are_read_past_and_heads_are_bounded() {
        let mut read = BytesMut::from(&b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\nrest"[..]);
        let answer = parse(&mut read, false, false).unwrap().unwrap();
        assert_eq!(answer.parts.status, 201);
        assert_eq!(&read[..], b"rest");
        assert!(parsed("HTTP/1.1 200 OK\r\nX: 1").unwrap().is_none());
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD));
        assert!(matches!(parsed(&huge), Err(Error::HeadTooLarge)));
        assert!(matches!(parsed(&format!("{huge}\r\n\r\n")), Err(Error::HeadTooLarge)));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: 1\r\n".repeat(MAX_FIELDS + 1));
        assert!(matches!(parsed(&many), Err(Error::HeadTooLarge)));
        assert!(matches!(
            parsed("HTTP/1.1 101 Switching\r\n\r\n"),
            Err(Error::MalformedHead(_))
        ));
        assert!(matches!(
            parsed("HTTP/1.1 200 OK\r\nX : 1\r\n\r\n"),
            Err(Error::MalformedHead(_))
        ));
        assert!(matches!(
            parsed("HTTP/1.1 200 OK\r\nX: 1\r\n folded\r\n\r\n"),
            Err(Error::MalformedHead(_))
        ));
    }
}
