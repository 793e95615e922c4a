//! The request's phases: the canonical request, the route, the plugins by
//! phase, then the route's action (a fixed answer, an aggregate, a
//! transcoded call, the cache, or the upstream exchange), and the response
//! plugins on the way back.

use crate::body::{Fault, Inbound, ResponseBody};
use crate::context::{ClientFacts, RequestContext};
use crate::error::{ErrorKind, ProxyError};
use crate::gateway::{Action, FixedResponse, Forward, Gateway, ListenerSettings, Route};
use crate::plugins::Flow;
use crate::proxy::around::serve_around;
use crate::proxy::canonical;
use crate::proxy::connection::Connection;
use crate::proxy::errors::{client_body_error, method_not_allowed};
use crate::proxy::exchange::{self, read_client_body, CallContext, ClientBody, UpstreamRequest};
use crate::proxy::forward;
use crate::proxy::upgrade;
use crate::router::{request_host, Lookup, Params, RequestHead};
use crate::telemetry::access_log::Entry;
use crate::telemetry::traces::{RequestSpan, Traces};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::uri::{PathAndQuery, Uri};
use http::{HeaderValue, Request, Response, Version};
use hyper::body::Body;
use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;

/// What the session records of the request beside its context: the
/// access-log entry, which the phases write in place (route, metrics, the
/// upstream call) and the session sets on the response when it is done.
pub(crate) struct Observed {
    pub(crate) entry: Box<Entry>,
    /// The request's server span, when tracing is on; moved into the entry
    /// at the end (upstream attempts are its children until then).
    pub(crate) trace: Option<(Arc<Traces>, RequestSpan)>,
}

/// The request after the listener's checks: made canonical, routed, through
/// its plugins by phase, then the route's action and the response plugins.
pub(crate) async fn serve<'a>(
    gateway: &'a Arc<Gateway>,
    conn: &'a Arc<Connection>,
    request: Request<Inbound>,
    ctx: &mut RequestContext<'a>,
    observed: &mut Observed,
) -> Result<Response<ResponseBody>, ProxyError> {
    let request_id = ctx.request_id;
    let (mut parts, body) = request.into_parts();
    let extended_connect = upgrade::from_extended_connect(&mut parts);
    // From here on, the request is the canonical one: routes, plugins and
    // the upstream see nothing else.
    let (facts, lookup) = canonical_route(gateway, &conn.listener, conn.peer.ip(), &mut parts)?;
    let (route, params) = match lookup {
        Lookup::Found { route, params } => (route, params),
        Lookup::MethodNotAllowed { allow } => return Err(method_not_allowed(&parts.method, &allow)),
        Lookup::NotFound => {
            return Err(ProxyError::new(ErrorKind::NotFound, "no route matches this request"));
        }
    };
    let upstream_path = upstream_path(route, &params, &parts.uri);
    observed.entry.route = Some(route.name.clone());
    observed.entry.metrics = Some(route.metrics.clone());
    if let Some((_, span)) = &observed.trace {
        span.set_route(&parts.method, &route.name);
    }

    ctx.routed(&route.name, params, route.upstream());
    ctx.upstream_path = upstream_path;
    ctx.facts = facts;
    ctx.facts.has_body = !body.is_end_stream();
    if !route.plugins.is_empty() {
        match route.plugins.on_request(&mut parts, ctx).await {
            Ok(Flow::Continue) => {}
            Ok(Flow::Respond(response)) => return Ok(*response),
            Err(error) => return Err(error),
        }
    }
    let body = route.plugins.filter_request_body(body, &parts, ctx)?;
    // Plugins that inspect bodies (`waf`) see their start before anything goes on.
    let body = match route.plugins.body_inspection_limit() {
        // No body: the inspection still runs (the Core Rule Set decides with it).
        Some(_) if body.is_end_stream() => {
            route.plugins.inspect_request_body(&[], true, &parts, ctx)?;
            body
        }
        Some(limit) => {
            let limit = route.body_limit(&conn.listener).map_or(limit, |most| most.min(limit));
            let (ahead, complete, body) = body
                .read_ahead(limit)
                .await
                .map_err(|e| client_body_error(Fault::of(&e).unwrap_or(Fault::Unreadable), Some(limit)))?;
            // A frame may bring more than the limit: only the limit is read.
            let seen = ahead.len().min(usize::try_from(limit).unwrap_or(usize::MAX));
            route
                .plugins
                .inspect_request_body(&ahead[..seen], complete && seen == ahead.len(), &parts, ctx)?;
            body
        }
        _ => body,
    };
    // What the upstream calls below report to: the route's series, the request's span.
    let shared = CallContext {
        metrics: Some(&route.metrics),
        trace: observed.trace.as_ref(),
    };
    let response = match &route.action {
        Action::Respond(fixed) => fixed_response(fixed),
        Action::Aggregate(aggregate) => {
            // Boxed, as the transcoding call below: these rarer actions'
            // futures (about 13 KB each) would otherwise size every
            // request's future, which is moved whole.
            Box::pin(crate::aggregate::run(aggregate, conn, &parts, ctx, shared)).await?
        }
        Action::Proxy(
            forward @ Forward {
                transcode: Some(transcoder),
                ..
            },
        ) => {
            let call = (forward, &**transcoder, route.body_limit(&conn.listener));
            Box::pin(crate::transcode::transcode(
                call,
                conn,
                parts,
                body,
                request_id,
                shared,
                &mut observed.entry.call,
            ))
            .await?
        }
        Action::Proxy(forward) => {
            let body = match route.plugins.request_body_cap(&parts.headers, ctx.facts.has_body)? {
                Some(cap) => {
                    // Read as any body is: the route's or listener's limit (or the plugin's cap,
                    // if smaller) answers 413, and its bytes are counted for the log.
                    let cap = route.body_limit(&conn.listener).map_or(cap, |limit| limit.min(cap));
                    let bytes = read_client_body(body, cap, &mut observed.entry.call).await?;
                    let (changed, content_type) = route.plugins.transform_request_body(bytes, &parts, ctx)?;
                    if let Some(content_type) = content_type {
                        parts.headers.insert(CONTENT_TYPE, content_type);
                    }
                    parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(changed.len()));
                    parts.headers.remove(http::header::TRANSFER_ENCODING);
                    ClientBody::Transformed(changed)
                }
                None => ClientBody::Stream(body),
            };
            let upgrade = match forward::upgrade_of(&parts.headers) {
                Some(_) if parts.version == Version::HTTP_11 || extended_connect => {
                    parts.extensions.remove::<hyper::upgrade::OnUpgrade>()
                }
                _ => None,
            };
            // A plugin standing around the upstream call (a cache) answers, or
            // calls the upstream through it; an upgrade never goes that way.
            if let (Some(around), None) = (route.plugins.around_upstream(), &upgrade) {
                let path_and_query = upstream_path_and_query(forward, ctx.upstream_path.as_deref(), &parts.uri)?;
                return serve_around(
                    &**around,
                    (route, forward),
                    gateway,
                    conn,
                    parts,
                    body,
                    path_and_query,
                    ctx,
                    shared,
                    &mut observed.entry.call,
                )
                .await;
            }
            let upstream_request = UpstreamRequest {
                body_limit: route.body_limit(&conn.listener),
                path_and_query: upstream_path_and_query(forward, ctx.upstream_path.as_deref(), &parts.uri)?,
                parts,
                body,
                request_id,
                upgrade,
            };
            exchange::send(forward, conn, upstream_request, shared, &mut observed.entry.call).await?
        }
    };
    route.plugins.respond(response, ctx).await
}

/// The request made canonical as `listener` makes it, and looked up in the
/// route table: the first decisions of `serve`, and the ones `explain` asks.
pub(crate) fn canonical_route<'g>(
    gateway: &'g Gateway,
    listener: &ListenerSettings,
    peer: IpAddr,
    parts: &mut http::request::Parts,
) -> Result<(ClientFacts, Lookup<'g, Route>), ProxyError> {
    let facts = canonical::canonicalise(parts, listener, peer, &gateway.trusted_headers)?;
    let host = gateway
        .routes
        .matches_hosts()
        .then(|| request_host(&parts.uri, &parts.headers))
        .flatten();
    let head = RequestHead::of(parts, parts.uri.path(), host.as_deref());
    Ok((facts, gateway.route(&head, parts)))
}

/// The path the route's upstream receives, when its rewrite changes the
/// client's; only the path: the query is joined after the plugins, which may
/// change it.
pub(crate) fn upstream_path<'r>(route: &'r Route, params: &Params, uri: &Uri) -> Option<Cow<'r, str>> {
    let Action::Proxy(forward) = &route.action else {
        return None;
    };
    if let Some(fixed) = forward.rewrite.fixed_path() {
        return (fixed != uri.path()).then_some(Cow::Borrowed(fixed));
    }
    let path = forward.rewrite.apply(uri.path(), params);
    (path != uri.path()).then(|| Cow::Owned(path.into_owned()))
}

/// `None` when the client's path and query go upstream unchanged.
fn upstream_path_and_query(
    forward: &Forward,
    path: Option<&str>,
    uri: &Uri,
) -> Result<Option<PathAndQuery>, ProxyError> {
    let Some(path) = path else { return Ok(None) };
    forward
        .rewrite
        .target(path, uri.query())
        .map(Some)
        .ok_or_else(|| ProxyError::new(ErrorKind::BadRequest, "the rewritten path is not a valid URI path"))
}

fn fixed_response(fixed: &FixedResponse) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(fixed.body.clone()));
    *response.status_mut() = fixed.status;
    *response.headers_mut() = fixed.headers.clone();
    response
}
