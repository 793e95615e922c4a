//! Request and response transformation: JSON field paths (`path`), value
//! templates (`template`), the operations on headers, query strings and JSON
//! bodies (`ops`), and reading a body whole when one must change.
//!
//! A body is read only when a transform must change it and it is JSON;
//! every other body streams through untouched.

pub mod ops;
pub mod path;
pub mod template;

use crate::body::{BodyError, ResponseBody};
use crate::error::{ErrorKind, ProxyError};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};

/// Is the message's body JSON (`application/json`, `application/*+json`)?
pub fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|mime| mime.trim().to_ascii_lowercase())
        .is_some_and(|mime| mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json")))
}

/// Reads a client's body to transform it: over `cap` (or the listener's
/// body limit) it is a 413.
pub async fn read_whole(
    body: hyper::body::Incoming,
    cap: u64,
    listener_limit: Option<u64>,
) -> Result<Bytes, ProxyError> {
    let cap = listener_limit.map_or(cap, |limit| limit.min(cap));
    match Limited::new(body, usize::try_from(cap).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ProxyError::new(
            ErrorKind::PayloadTooLarge,
            format!("the request body must be read to be transformed, and is over {cap} bytes"),
        )),
        Err(_) => Err(ProxyError::new(
            ErrorKind::BadRequest,
            "the request body could not be read from the client",
        )),
    }
}

/// Reads an upstream's body to transform it. Over `cap` it is a 502: a
/// response that must be filtered is never passed on unfiltered.
pub async fn read_response(body: ResponseBody, cap: u64) -> Result<Bytes, ProxyError> {
    match Limited::new(body, usize::try_from(cap).unwrap_or(usize::MAX))
        .collect()
        .await
    {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(ProxyError::new(
            ErrorKind::UpstreamBroken,
            format!("the upstream's answer must be transformed, and is over {cap} bytes"),
        )),
        Err(error) => {
            let detail = match error.downcast_ref::<BodyError>() {
                Some(BodyError::UpstreamIdle(_)) => "the upstream stopped sending its answer",
                _ => "the upstream's answer broke off",
            };
            Err(ProxyError::new(ErrorKind::UpstreamBroken, detail))
        }
    }
}
