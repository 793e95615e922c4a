//! The request path's own errors, named once: what the client hears of a
//! failed exchange, its own body failing, a missing method or target, and how
//! any of them becomes the answer (problem+json, or a gRPC status).

use crate::body::filter::Refusal;
use crate::body::{BodyError, Fault, ResponseBody};
use crate::error::{ErrorKind, ProxyError};
use crate::proxy::{grpc, grpc_web};
use crate::upstream::{SendError, UpstreamPool};
use http::{HeaderValue, Response};
use std::error::Error as _;

pub(crate) fn method_not_allowed(method: &http::Method, allow: &[http::Method]) -> ProxyError {
    let list = allow.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
    let mut error = ProxyError::new(
        ErrorKind::MethodNotAllowed,
        format!("{method} is not allowed here; allowed: {list}"),
    );
    error.allow = HeaderValue::from_str(&list).ok();
    error
}

pub(crate) fn no_target(pool: &UpstreamPool) -> ProxyError {
    ProxyError::new(
        ErrorKind::NoTarget,
        format!("upstream {:?} has no healthy target", &*pool.name),
    )
}

/// What the client hears of its own body failing on the way.
pub(crate) fn client_body_error(fault: Fault, limit: Option<u64>) -> ProxyError {
    match fault {
        Fault::TooLarge => body_too_large(limit.unwrap_or_default()),
        Fault::NotBase64 => ProxyError::new(
            ErrorKind::BadRequest,
            "the request body is not base64, as gRPC-Web text must be",
        ),
        Fault::Unreadable => ProxyError::new(
            ErrorKind::BadRequest,
            "the request body could not be read from the client",
        ),
        Fault::TooSlow => ProxyError::new(
            ErrorKind::RequestTimeout,
            "the request body arrived too slowly; send it at a steady pace",
        ),
        Fault::Refused => ProxyError::new(ErrorKind::PayloadTooLarge, Refusal::TooLarge.to_string()),
        Fault::RefusedDecompressed => {
            ProxyError::new(ErrorKind::PayloadTooLarge, Refusal::DecompressedTooLarge.to_string())
        }
        Fault::Undecodable => ProxyError::new(ErrorKind::BadRequest, Refusal::Undecodable.to_string()),
    }
}

pub(crate) fn body_too_large(limit: u64) -> ProxyError {
    ProxyError::new(
        ErrorKind::PayloadTooLarge,
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}

/// Sorts a failed exchange into what the caller should hear: our own body
/// limit (413), a connect timeout (504), a refused connection or a broken
/// exchange (502). Target addresses go to the log, not to the client.
pub(crate) fn upstream_error(error: SendError, upstream: &str, limit: Option<u64>) -> ProxyError {
    let kind = match &error {
        SendError::ConnectTimeout(_) => ErrorKind::UpstreamTimeout,
        SendError::Connect(_) | SendError::Tls(_) => ErrorKind::UpstreamConnect,
        SendError::Protocol(_) => ErrorKind::UpstreamBroken,
        SendError::Http(_) | SendError::Http1(_) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = error.source();
            while let Some(current) = cause {
                if let Some(fault) = current.downcast_ref::<BodyError>().and_then(Fault::of) {
                    return client_body_error(fault, limit);
                }
                cause = current.source();
            }
            ErrorKind::UpstreamBroken
        }
    };
    let detail = match (&error, kind) {
        (_, ErrorKind::UpstreamTimeout) => format!("connecting to upstream {upstream:?} timed out"),
        // What failed in the handshake is logged, not told to the client.
        (SendError::Tls(_), _) => format!("the TLS handshake with upstream {upstream:?} failed"),
        (SendError::Protocol(why), _) => format!("upstream {upstream:?}: {why}"),
        (_, ErrorKind::UpstreamConnect) => format!("upstream {upstream:?} refused the connection"),
        _ => format!("upstream {upstream:?} failed before answering"),
    };
    ProxyError::new(kind, detail).with_source(error)
}

/// How the client hears of an error: gRPC clients as a gRPC status (in
/// gRPC-Web's content type for those), everyone else as problem+json.
pub(crate) fn answer(
    error: &ProxyError,
    grpc: Option<Option<grpc_web::Mode>>,
    request_id: &HeaderValue,
) -> Response<ResponseBody> {
    match grpc {
        Some(web) => {
            let mut response = grpc::error_response(error);
            if let Some(mode) = web {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_TYPE, grpc_web::content_type(mode));
            }
            response
        }
        None => error.to_response(request_id),
    }
}
