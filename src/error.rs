//! The one error type of the request path, and the one place it becomes an
//! HTTP answer: RFC 9457 `application/problem+json`.

use crate::body::ResponseBody;
use http::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use std::borrow::Cow;

/// Who caused an error: decides retryability and which side a log blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Upstream,
    Internal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    BadRequest,
    NotFound,
    MethodNotAllowed,
    PayloadTooLarge,
    HeadersTooLarge,
    /// The request target is longer than the listener allows.
    UriTooLong,
    /// The client sent its request too slowly.
    RequestTimeout,
    /// The request's framing is ambiguous (request smuggling).
    AmbiguousFraming,
    /// The upstream refused the connection.
    UpstreamConnect,
    /// The upstream broke the exchange (reset, closed, malformed answer).
    UpstreamBroken,
    /// Connect or response deadline passed.
    UpstreamTimeout,
    /// The deadline the client chose (`grpc-timeout`) passed first: the
    /// client's 504, never held against the upstream.
    DeadlineExceeded,
    /// The pool has no target to offer.
    NoTarget,
    /// The upstream's circuit breaker is open.
    CircuitOpen,
    /// No credentials, or credentials that do not check out: "who are you?"
    Unauthorized,
    /// Known, but not allowed here.
    Forbidden,
    /// Credentials cannot be checked now (no keys from the identity
    /// provider, introspection unreachable): not the client's fault.
    AuthUnavailable,
    /// A rate limit or quota is used up.
    RateLimited,
    /// The body is not of a type the route accepts.
    UnsupportedMediaType,
    /// Limits cannot be checked (the store is down, with `on_store_error:
    /// deny`), or too many requests are in flight.
    LimitUnavailable,
    /// Plain HTTP on a listener that sends clients to HTTPS.
    PermanentRedirect,
    Internal,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest | ErrorKind::AmbiguousFraming => StatusCode::BAD_REQUEST,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::UpstreamConnect | ErrorKind::UpstreamBroken => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout | ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::NoTarget | ErrorKind::CircuitOpen | ErrorKind::AuthUnavailable | ErrorKind::LimitUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::Unauthorized => StatusCode::UNAUTHORIZED,
            ErrorKind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::PermanentRedirect => StatusCode::PERMANENT_REDIRECT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn side(self) -> Side {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::NotFound
            | ErrorKind::MethodNotAllowed
            | ErrorKind::PayloadTooLarge
            | ErrorKind::HeadersTooLarge
            | ErrorKind::UriTooLong
            | ErrorKind::RequestTimeout
            | ErrorKind::AmbiguousFraming
            | ErrorKind::Unauthorized
            | ErrorKind::Forbidden
            | ErrorKind::RateLimited
            | ErrorKind::UnsupportedMediaType
            | ErrorKind::DeadlineExceeded
            | ErrorKind::PermanentRedirect => Side::Client,
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamBroken
            | ErrorKind::UpstreamTimeout
            | ErrorKind::NoTarget
            | ErrorKind::CircuitOpen => Side::Upstream,
            ErrorKind::AuthUnavailable | ErrorKind::LimitUnavailable | ErrorKind::Internal => Side::Internal,
        }
    }

    /// True when the connection cannot carry another request after this
    /// error: what is left of the request on it cannot be trusted or waited for.
    pub fn closes_connection(self) -> bool {
        matches!(self, ErrorKind::RequestTimeout | ErrorKind::AmbiguousFraming)
    }

    /// Short name for logs and metrics.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::NotFound => "no_route",
            ErrorKind::MethodNotAllowed => "method_not_allowed",
            ErrorKind::PayloadTooLarge => "body_too_large",
            ErrorKind::HeadersTooLarge => "headers_too_large",
            ErrorKind::UriTooLong => "uri_too_long",
            ErrorKind::RequestTimeout => "request_timeout",
            ErrorKind::AmbiguousFraming => "ambiguous_framing",
            ErrorKind::UpstreamConnect => "upstream_connect_failed",
            ErrorKind::UpstreamBroken => "upstream_failed",
            ErrorKind::UpstreamTimeout => "upstream_timeout",
            ErrorKind::DeadlineExceeded => "deadline_exceeded",
            ErrorKind::NoTarget => "no_target",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::AuthUnavailable => "auth_unavailable",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::UnsupportedMediaType => "unsupported_media_type",
            ErrorKind::LimitUnavailable => "limit_unavailable",
            ErrorKind::PermanentRedirect => "redirect_https",
            ErrorKind::Internal => "internal",
        }
    }
}

/// An error on the request path: one pointer, as it travels in every
/// `Result` of the request path, whose futures move those results from
/// layer to layer on the way back (a `Result` of a response and the error
/// inline was 288 bytes, moved about ten times a request).
#[derive(Debug)]
pub struct ProxyError(Box<ErrorDetails>);

/// What a [`ProxyError`] says, read and set through it.
#[derive(Debug)]
pub struct ErrorDetails {
    pub kind: ErrorKind,
    /// Safe to show the client: never contains secrets or internal addresses.
    pub detail: Cow<'static, str>,
    /// For 405: the methods the resource accepts.
    pub allow: Option<HeaderValue>,
    /// For 503: seconds until trying again makes sense.
    pub retry_after: Option<u32>,
    /// For 401: the challenge(s) to send in `WWW-Authenticate`.
    pub challenge: Option<HeaderValue>,
    /// The plugin that refused the request and why, for the metrics.
    pub rejected_by: Option<(&'static str, &'static str)>,
    /// More members of the problem document (a validator's `errors`).
    pub extra: Option<serde_json::Value>,
    /// For redirects: where to.
    pub location: Option<HeaderValue>,
    /// The underlying cause, for the log only.
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl std::ops::Deref for ProxyError {
    type Target = ErrorDetails;

    fn deref(&self) -> &ErrorDetails {
        &self.0
    }
}

impl std::ops::DerefMut for ProxyError {
    fn deref_mut(&mut self) -> &mut ErrorDetails {
        &mut self.0
    }
}

impl ProxyError {
    pub fn new(kind: ErrorKind, detail: impl Into<Cow<'static, str>>) -> ProxyError {
        ProxyError(Box::new(ErrorDetails {
            kind,
            detail: detail.into(),
            allow: None,
            retry_after: None,
            challenge: None,
            rejected_by: None,
            extra: None,
            location: None,
            source: None,
        }))
    }

    /// A refusal by a plugin: counted in `portico_rejections_total`.
    pub fn rejected(
        kind: ErrorKind,
        plugin: &'static str,
        reason: &'static str,
        detail: impl Into<Cow<'static, str>>,
    ) -> ProxyError {
        let mut error = ProxyError::new(kind, detail);
        error.rejected_by = Some((plugin, reason));
        error
    }

    pub fn with_source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> ProxyError {
        self.source = Some(source.into());
        self
    }

    /// The problem+json answer, carrying the request id so a client's report
    /// can be found in the logs.
    pub fn to_response(&self, request_id: &HeaderValue) -> Response<ResponseBody> {
        let mut members = self.extra.clone().unwrap_or_else(|| serde_json::json!({}));
        if let Some(members) = members.as_object_mut() {
            members.insert("request_id".into(), request_id.to_str().unwrap_or_default().into());
        }
        let mut response = problem(self.kind.status(), &self.detail, members);
        let headers = response.headers_mut();
        if let Some(allow) = &self.allow {
            headers.insert(ALLOW, allow.clone());
        }
        if let Some(seconds) = self.retry_after {
            headers.insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if let Some(challenge) = &self.challenge {
            headers.insert(WWW_AUTHENTICATE, challenge.clone());
        }
        if let Some(location) = &self.location {
            headers.insert(http::header::LOCATION, location.clone());
        }
        response
    }
}

/// An RFC 9457 problem document; `extra` (a JSON object) adds members.
pub fn problem(status: StatusCode, detail: &str, extra: serde_json::Value) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(problem_document(status, detail, extra)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The problem+json document itself, for answers written without hyper
/// (connections refused at accept).
pub fn problem_document(status: StatusCode, detail: &str, extra: serde_json::Value) -> String {
    let mut body = serde_json::json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    if let (Some(body), serde_json::Value::Object(extra)) = (body.as_object_mut(), extra) {
        body.extend(extra);
    }
    body.to_string()
}

impl std::fmt::Display for ProxyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.detail)?;
        if let Some(source) = &self.source {
            write!(f, " ({source})")?;
        }
        Ok(())
    }
}
