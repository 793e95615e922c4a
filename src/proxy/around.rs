//! A proxied request on a route where a plugin stands around the upstream
//! call (`AroundUpstream`, such as a response cache): the plugin answers, or
//! calls the upstream through the exchange offered here, and any work it
//! leaves for after the answer (a background refresh) runs with an exchange
//! of its own and a context carried over from the request.

use crate::around::{AroundUpstream, BoxFuture, Later, Upstream};
use crate::body::ResponseBody;
use crate::context::RequestContext;
use crate::error::ProxyError;
use crate::gateway::{Action, Forward, Gateway, Route};
use crate::proxy::connection::Connection;
use crate::proxy::exchange::{self, CallContext, ClientBody, UpstreamCall, UpstreamRequest};
use bytes::Bytes;
use http::uri::PathAndQuery;
use http::{HeaderValue, Response};
use std::sync::Arc;

/// The upstream call as the plugin sees it: one exchange per head, the
/// client's body with the first, the route's response phases on each
/// answer. The last exchange's record is the one the log keeps.
struct Exchange<'r, 'c> {
    route: &'r Route,
    forward: &'r Forward,
    conn: &'r Arc<Connection>,
    /// Sent once at most: only the first exchange carries the client's body.
    body: Option<ClientBody>,
    body_limit: Option<u64>,
    path_and_query: Option<PathAndQuery>,
    request_id: &'r HeaderValue,
    ctx: &'r RequestContext<'c>,
    shared: CallContext<'r>,
    record: UpstreamCall,
}

impl Upstream for Exchange<'_, '_> {
    fn send(&mut self, head: http::request::Parts) -> BoxFuture<'_, Result<Response<ResponseBody>, ProxyError>> {
        let request = UpstreamRequest {
            body_limit: self.body_limit,
            parts: head,
            body: self.body.take().unwrap_or(ClientBody::Transformed(Bytes::new())),
            path_and_query: self.path_and_query.clone(),
            request_id: self.request_id,
            upgrade: None,
        };
        Box::pin(async move {
            let mut call = UpstreamCall::default();
            let response = exchange::send(self.forward, self.conn, request, self.shared, &mut call).await;
            self.record = call;
            self.route.plugins.respond(response?, self.ctx).await
        })
    }
}

/// Serves the request through `around`, then leaves its later work running.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn serve_around(
    around: &dyn AroundUpstream,
    (route, forward): (&Route, &Forward),
    gateway: &Arc<Gateway>,
    conn: &Arc<Connection>,
    parts: http::request::Parts,
    body: ClientBody,
    path_and_query: Option<PathAndQuery>,
    ctx: &RequestContext<'_>,
    shared: CallContext<'_>,
    call: &mut UpstreamCall,
) -> Result<Response<ResponseBody>, ProxyError> {
    let mut upstream = Exchange {
        route,
        forward,
        conn,
        body: Some(body),
        body_limit: route.body_limit(&conn.listener),
        path_and_query: path_and_query.clone(),
        request_id: ctx.request_id,
        ctx,
        shared,
        record: UpstreamCall::default(),
    };
    let served = around.serve(&parts, ctx, &mut upstream).await;
    *call = std::mem::take(&mut upstream.record);
    let (response, later) = served?;
    if let Some(later) = later {
        run_later(
            gateway.clone(),
            conn.clone(),
            route.name.clone(),
            parts,
            ctx,
            path_and_query,
            later,
        );
    }
    Ok(response)
}

/// Runs what the plugin left for after the answer, in the background,
/// through the route as it is in the gateway that served the request.
fn run_later(
    gateway: Arc<Gateway>,
    conn: Arc<Connection>,
    route_name: Arc<str>,
    head: http::request::Parts,
    ctx: &RequestContext<'_>,
    path_and_query: Option<PathAndQuery>,
    later: Box<dyn Later>,
) {
    // Whom the answer is for, so that the work keys and stores it as the request did.
    let carried = ctx.carried();
    let request_id = ctx.request_id.clone();
    tokio::spawn(async move {
        let Some(route) = gateway
            .routes
            .iter()
            .map(|(_, route)| route)
            .find(|r| r.name == route_name)
        else {
            return;
        };
        let Action::Proxy(forward) = &route.action else {
            return;
        };
        let ctx = carried.context(&request_id, conn.peer, &route.name, route.upstream());
        let mut upstream = Exchange {
            route,
            forward,
            conn: &conn,
            body: None,
            body_limit: None,
            path_and_query,
            request_id: &request_id,
            ctx: &ctx,
            shared: CallContext {
                metrics: Some(&route.metrics),
                trace: None,
            },
            record: UpstreamCall::default(),
        };
        later.run(&head, &ctx, &mut upstream).await;
    });
}
