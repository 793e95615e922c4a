//! The listener's own checks, before routing: framing, the client's request
//! rate, the size of the target and of the headers.

use crate::body::Inbound;
use crate::error::{ErrorKind, ProxyError};
use crate::gateway::{Gateway, ListenerSettings};
use crate::proxy::client_timeouts::RequestActive;
use crate::proxy::connection::Connection;
use http::uri::Uri;
use http::{HeaderMap, Request, Version};

/// The listener's own checks, before anything else: framing, the client's
/// request rate, then what it decides from the head (sizes, the redirect to
/// HTTPS). Refusals are counted by reason.
pub(crate) fn check_listener_limits(
    conn: &Connection,
    request: &Request<Inbound>,
    active: &RequestActive,
    gateway: &Gateway,
) -> Result<(), ProxyError> {
    let listener = &conn.listener;
    let checked = check_framing(request, active)
        .and_then(|()| check_request_rate(conn))
        .and_then(|()| listener_decides(request.uri(), request.headers(), listener));
    // A redirect to HTTPS is the listener's answer, not a refusal.
    if let Some(error) = checked
        .as_ref()
        .err()
        .filter(|e| e.kind != ErrorKind::PermanentRedirect)
    {
        let reason = match error.kind {
            ErrorKind::RateLimited => "request_rate_per_ip",
            kind => kind.code(),
        };
        gateway.metrics.listener_refused(&listener.name, reason);
    }
    checked
}

/// Both `Content-Length` and `Transfer-Encoding` (request smuggling): hyper
/// would read it by the coding; it is refused instead, never forwarded.
fn check_framing(request: &Request<Inbound>, active: &RequestActive) -> Result<(), ProxyError> {
    if request.version() == Version::HTTP_11
        && request.headers().contains_key(http::header::TRANSFER_ENCODING)
        && active.framing_ambiguous()
    {
        return Err(ProxyError::new(
            ErrorKind::AmbiguousFraming,
            "the request has both Content-Length and Transfer-Encoding; send one",
        ));
    }
    Ok(())
}

fn check_request_rate(conn: &Connection) -> Result<(), ProxyError> {
    conn.admitted.request(&conn.listener.admission).map_err(|wait| {
        let mut error = ProxyError::new(ErrorKind::RateLimited, "too many requests from your address");
        error.retry_after = Some(wait.as_secs_f64().ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        error
    })
}

/// What the listener decides from the request head alone: its size limits,
/// then its redirect to HTTPS. The session asks it after the connection's
/// own checks, and `explain` asks it alone.
pub(crate) fn listener_decides(uri: &Uri, headers: &HeaderMap, listener: &ListenerSettings) -> Result<(), ProxyError> {
    check_uri_length(uri, listener)?;
    check_header_limits(headers, listener)?;
    match listener.redirect_https {
        Some(port) => Err(to_https(uri, headers, port)),
        None => Ok(()),
    }
}

/// The 308 to the same URL in HTTPS, for a listener with `redirect_https`
/// (as an error, so that it is answered and logged the way every other
/// early answer is).
fn to_https(uri: &Uri, headers: &HeaderMap, port: u16) -> ProxyError {
    let host = crate::router::request_host(uri, headers).unwrap_or_default();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut error = ProxyError::new(ErrorKind::PermanentRedirect, "this address is served over HTTPS");
    error.location = http::HeaderValue::from_str(&location).ok();
    error
}

fn check_uri_length(uri: &Uri, listener: &ListenerSettings) -> Result<(), ProxyError> {
    // Origin-form is the path and query; absolute-form counts whole.
    let length = match uri.scheme() {
        None => uri.path_and_query().map_or(0, |target| target.as_str().len()),
        Some(_) => uri.to_string().len(),
    };
    if length > listener.max_uri_bytes {
        return Err(ProxyError::new(
            ErrorKind::UriTooLong,
            format!(
                "the request target is {length} bytes; the limit is {}",
                listener.max_uri_bytes
            ),
        ));
    }
    Ok(())
}

fn check_header_limits(headers: &HeaderMap, listener: &ListenerSettings) -> Result<(), ProxyError> {
    if headers.len() > listener.max_headers {
        return Err(ProxyError::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "the request has {} header fields; the limit is {}",
                headers.len(),
                listener.max_headers
            ),
        ));
    }
    // Counted as on the wire: `name: value\r\n`.
    let size: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > listener.max_header_bytes {
        return Err(ProxyError::new(
            ErrorKind::HeadersTooLarge,
            format!(
                "the request headers are {size} bytes; the limit is {}",
                listener.max_header_bytes
            ),
        ));
    }
    Ok(())
}
