//! A transcoded request's way: the rule, the client's JSON read whole, one
//! gRPC call through the route's upstream (its pool, retries, timeouts),
//! and the answer read whole (trailers included) and turned into JSON.

use crate::body::ResponseBody;
use crate::error::{ErrorKind, ProxyError};
use crate::gateway::Forward;
use crate::proxy::connection::Connection;
use crate::proxy::errors::method_not_allowed;
use crate::proxy::exchange::{self, read_client_body, CallContext, ClientBody, UpstreamCall, UpstreamRequest};
use http::header::{HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, TE, TRANSFER_ENCODING};
use http::{Method, Response};
use http_body_util::BodyExt;

/// Serves a request on a route with `grpc_transcode`; `route_body_limit`
/// is the route's request body limit, if it has one.
pub(crate) async fn transcode(
    (forward, transcoder, route_body_limit): (&Forward, &super::Transcoder, Option<u64>),
    conn: &Connection,
    mut parts: http::request::Parts,
    body: crate::body::Inbound,
    request_id: &HeaderValue,
    shared: CallContext<'_>,
    record: &mut UpstreamCall,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (rule, values) = match transcoder.find(&parts.method, parts.uri.path()) {
        Ok(found) => found,
        Err(allowed) if allowed.is_empty() => {
            return Err(ProxyError::new(
                ErrorKind::NotFound,
                "no gRPC method is bound to this path",
            ))
        }
        Err(allowed) => return Err(method_not_allowed(&parts.method, &allowed)),
    };
    let cap = route_body_limit.map_or(transcoder.max_body, |limit| limit.min(transcoder.max_body));
    let json = read_client_body(body, cap, record).await?;
    let message = rule.request(&values, parts.uri.query(), &json)?;

    parts.method = Method::POST;
    let headers = &mut parts.headers;
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/grpc"));
    headers.insert(TE, HeaderValue::from_static("trailers"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(message.len()));
    headers.remove(TRANSFER_ENCODING);
    // What the JSON client accepts says nothing of what gRPC sends.
    headers.remove(http::header::ACCEPT_ENCODING);
    let request = UpstreamRequest {
        parts,
        body: ClientBody::Transformed(message),
        path_and_query: Some(rule.grpc_path.clone()),
        request_id,
        // Made by the gateway, from a body read within the limit.
        body_limit: None,
        upgrade: None,
    };
    let response = exchange::send(forward, conn, request, shared, record).await?;
    let (head, body) = response.into_parts();
    let collected = http_body_util::Limited::new(body, transcoder.max_body as usize)
        .collect()
        .await
        .map_err(|e| {
            let detail = match e.downcast_ref::<http_body_util::LengthLimitError>() {
                Some(_) => format!(
                    "the gRPC answer is larger than max_body ({} bytes)",
                    transcoder.max_body
                ),
                None => format!("the gRPC answer could not be read: {e}"),
            };
            ProxyError::new(ErrorKind::UpstreamBroken, detail)
        })?;
    let trailers = collected.trailers().cloned();
    rule.response(
        (head.status, &head.headers),
        &collected.to_bytes(),
        trailers.as_ref(),
        request_id,
    )
}
