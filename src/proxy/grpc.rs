//! gRPC as the gateway sees it: which requests are gRPC, the deadline a
//! client gives in `grpc-timeout`, and the gateway's own errors told as
//! gRPC statuses, since gRPC clients read `grpc-status`, not HTTP statuses
//! or problem documents.

use crate::body::ResponseBody;
use crate::error::{ErrorKind, ProxyError};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, Response, StatusCode};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use std::time::Duration;

/// `application/grpc`, `application/grpc+proto`, `application/grpc-web`...
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().len() >= 16 && v.as_bytes()[..16].eq_ignore_ascii_case(b"application/grpc"))
}

/// The deadline in `grpc-timeout`: up to 8 digits and a unit (`H`ours,
/// `M`inutes, `S`econds, `m`illis, `u`micros, `n`anos). `None` when absent
/// or malformed, as the gRPC spec asks servers to treat a bad value.
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    // Looked up by a ready name: a `&str` key is parsed into one on every call.
    static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
    let value = headers.get(&GRPC_TIMEOUT)?.as_bytes();
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(amount * 3600),
        b'M' => Duration::from_secs(amount * 60),
        b'S' => Duration::from_secs(amount),
        b'm' => Duration::from_millis(amount),
        b'u' => Duration::from_micros(amount),
        b'n' => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// gRPC status codes (grpc/doc/statuscodes.md) the gateway answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// The status a gateway error is told as. Close to gRPC's HTTP mapping
/// (404 → UNIMPLEMENTED, 401 → UNAUTHENTICATED, 5xx → UNAVAILABLE), but more
/// precise where the gateway knows more: a used-up limit is
/// RESOURCE_EXHAUSTED, a passed deadline DEADLINE_EXCEEDED.
pub fn code_of(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound | ErrorKind::MethodNotAllowed => Code::Unimplemented,
        ErrorKind::Unauthorized => Code::Unauthenticated,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::RateLimited | ErrorKind::PayloadTooLarge | ErrorKind::HeadersTooLarge | ErrorKind::UriTooLong => {
            Code::ResourceExhausted
        }
        ErrorKind::UpstreamTimeout | ErrorKind::RequestTimeout | ErrorKind::DeadlineExceeded => Code::DeadlineExceeded,
        ErrorKind::BadRequest | ErrorKind::AmbiguousFraming | ErrorKind::UnsupportedMediaType => Code::InvalidArgument,
        ErrorKind::UpstreamConnect
        | ErrorKind::UpstreamBroken
        | ErrorKind::NoTarget
        | ErrorKind::CircuitOpen
        | ErrorKind::AuthUnavailable
        | ErrorKind::LimitUnavailable
        | ErrorKind::PermanentRedirect => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
    }
}

/// `grpc-message` is percent-encoded: bytes outside printable ASCII, and `%`.
const MESSAGE: &AsciiSet = &CONTROLS.add(b'%');

/// A trailers-only answer: HTTP 200 with the status in the headers and no
/// body, which gRPC clients read as the call's end.
pub fn error_response(error: &ProxyError) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::empty());
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code_of(error.kind) as u16));
    let message = utf8_percent_encode(&error.detail, MESSAGE).to_string();
    if let Ok(message) = HeaderValue::from_str(&message) {
        headers.insert("grpc-message", message);
    }
    if let Some(challenge) = &error.challenge {
        headers.insert(http::header::WWW_AUTHENTICATE, challenge.clone());
    }
    if let Some(seconds) = error.retry_after {
        headers.insert(http::header::RETRY_AFTER, HeaderValue::from(seconds));
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(name: &'static str, value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn grpc_requests_are_known_by_their_content_type() {
        assert!(is_grpc(&with("content-type", "application/grpc")));
        assert!(is_grpc(&with("content-type", "application/grpc+proto")));
        assert!(is_grpc(&with("content-type", "Application/GRPC-web+proto")));
        assert!(!is_grpc(&with("content-type", "application/json")));
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeout_reads_every_unit_and_refuses_the_malformed() {
        let read = |v: &'static str| timeout(&with("grpc-timeout", v));
        assert_eq!(read("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(read("2M"), Some(Duration::from_secs(120)));
        assert_eq!(read("3S"), Some(Duration::from_secs(3)));
        assert_eq!(read("250m"), Some(Duration::from_millis(250)));
        assert_eq!(read("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(read("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "123456789S", "1x", "-1S", "1.5S", "10"] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn gateway_errors_become_trailers_only_answers() {
        let error = ProxyError::new(ErrorKind::RateLimited, "limit of 5% used: 100/min");
        let response = error_response(&error);
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["grpc-status"], "8");
        assert_eq!(response.headers()["grpc-message"], "limit of 5%25 used: 100/min");
        assert_eq!(code_of(ErrorKind::NotFound), Code::Unimplemented);
        assert_eq!(code_of(ErrorKind::UpstreamTimeout), Code::DeadlineExceeded);
    }
}
