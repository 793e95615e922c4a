//! The cached path: a proxied request on a route with a `cache` is answered
//! from it or sent upstream through it, and stale answers are refreshed in
//! the background with the request's identity.

use crate::body::ResponseBody;
use crate::context::RequestContext;
use crate::error::{ErrorKind, ProxyError};
use crate::gateway::{Action, Forward, Gateway, Route};
use crate::proxy::connection::Connection;
use crate::proxy::exchange::{self, CallContext, ClientBody, UpstreamCall, UpstreamRequest};
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Response};
use std::sync::Arc;

/// A proxied request on a route with a `cache`: answered from it, or sent
/// upstream through it.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn cached(
    route: &Route,
    forward: &Forward,
    gateway: &Arc<Gateway>,
    conn: &Arc<Connection>,
    parts: http::request::Parts,
    body: ClientBody,
    path_and_query: Option<PathAndQuery>,
    request_id: &HeaderValue,
    ctx: &RequestContext<'_>,
    shared: CallContext<'_>,
    call: &mut UpstreamCall,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Some(cache) = route.plugins.cache() else {
        return Err(ProxyError::new(ErrorKind::Internal, "the route has no cache"));
    };
    // Sent once at most: only the first exchange carries the client's body.
    let mut body = Some(body);
    let record = std::sync::Mutex::new(UpstreamCall::default());
    let fetch = |head: http::request::Parts| {
        let body = body.take().unwrap_or(ClientBody::Transformed(Bytes::new()));
        let request = UpstreamRequest {
            body_limit: route.body_limit(&conn.listener),
            parts: head,
            body,
            path_and_query: path_and_query.clone(),
            request_id,
            upgrade: None,
        };
        let record = &record;
        async move {
            let mut call = UpstreamCall::default();
            let response = exchange::send(forward, conn, request, shared, &mut call).await;
            *record.lock().unwrap_or_else(|p| p.into_inner()) = call;
            route.plugins.respond(response?, ctx).await
        }
    };
    let served = cache.serve(&parts, ctx, fetch).await;
    *call = record.into_inner().unwrap_or_else(|p| p.into_inner());
    let (response, refresh) = served?;
    if let Some(job) = refresh {
        refresh_in_background(
            gateway.clone(),
            conn.clone(),
            route.name.clone(),
            parts,
            ctx,
            path_and_query,
            request_id.clone(),
            job,
        );
    }
    Ok(response)
}

/// Revalidates a stale answer after it was served (`stale-while-revalidate`),
/// through the route as it is in the gateway that served it.
#[allow(clippy::too_many_arguments)]
fn refresh_in_background(
    gateway: Arc<Gateway>,
    conn: Arc<Connection>,
    route_name: Arc<str>,
    head: http::request::Parts,
    ctx: &RequestContext<'_>,
    path_and_query: Option<PathAndQuery>,
    request_id: HeaderValue,
    job: crate::cache::Refresh,
) {
    // Whom the answer is for, so that the refresh keys and stores it as the request did.
    let carried = ctx.carried();
    tokio::spawn(async move {
        let Some(route) = gateway
            .routes
            .iter()
            .map(|(_, route)| route)
            .find(|r| r.name == route_name)
        else {
            return;
        };
        let (Action::Proxy(forward), Some(cache)) = (&route.action, route.plugins.cache()) else {
            return;
        };
        let ctx = carried.context(&request_id, conn.peer, &route.name, route.upstream());
        let shared = CallContext {
            metrics: Some(&route.metrics),
            trace: None,
        };
        let fetch = |head: http::request::Parts| {
            let request = UpstreamRequest {
                body_limit: None,
                parts: head,
                body: ClientBody::Transformed(Bytes::new()),
                path_and_query: path_and_query.clone(),
                request_id: &request_id,
                upgrade: None,
            };
            let (conn, ctx) = (&conn, &ctx);
            async move {
                let response = exchange::send(forward, conn, request, shared, &mut UpstreamCall::default()).await?;
                route.plugins.respond(response, ctx).await
            }
        };
        cache.refresh(job, &head, &ctx, fetch).await;
    });
}
