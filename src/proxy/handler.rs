//! The request's way through the gateway: limits, route, plugin phases, then
//! the upstream or a fixed answer, and the access log at the end.

use super::canonical;
use super::client_timeouts::{ActiveRequests, RequestActive};
use super::forward::{self, ClientSide};
use super::grpc;
use super::grpc_web;
use super::request_id;
use super::upgrade;
use crate::body::{BodyError, Fault, Inbound, RequestBody, ResponseBody};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::gateway::{Action, FixedResponse, Forward, Gateway, ListenerSettings, Route};
use crate::plugins::{Flow, RequestContext};
use crate::router::{request_host, Lookup, RequestHead};
use crate::telemetry::access_log::{AccessLog, Entry};
use crate::telemetry::metrics::RouteMetrics;
use crate::telemetry::traces::{RequestSpan, Traces};
use crate::transform::{self, ReadAnswer};
use crate::upstream::{connections, Outcome, PickContext, RetryPolicy, SendError, UpstreamPool};
use arc_swap::ArcSwap;
use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use hyper::body::Body;
use std::convert::Infallible;
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What one client connection's requests share.
pub struct Connection {
    /// Counted against the listener's connection caps while it lives.
    pub admitted: super::admission::Admitted,
    pub gateway: Arc<ArcSwap<Gateway>>,
    pub listener: Arc<ListenerSettings>,
    pub peer: SocketAddr,
    /// `peer`'s IP, formatted once for `X-Forwarded-For`.
    pub peer_ip: HeaderValue,
    pub active: Arc<ActiveRequests>,
    /// Set while the listener drains: HTTP/1 responses then close the connection.
    pub draining: Arc<AtomicBool>,
    /// The certificate the client presented and the listener verified (mTLS).
    pub client_certificate: Option<Arc<super::tls::ClientCertificate>>,
    /// `Alt-Svc` announcing the listener's HTTP/3, on its TCP connections.
    pub alt_svc: Option<HeaderValue>,
}

/// The request's details only the access log uses.
struct Logged {
    log: Option<Arc<AccessLog>>,
    path: String,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

/// What the access log and metrics learn along the way.
#[derive(Default)]
struct Exchange {
    route: Option<Arc<str>>,
    metrics: Option<Arc<RouteMetrics>>,
    /// What the upstream exchange did, for the log.
    call: CallRecord,
    error: Option<&'static str>,
    /// The request's server span, when tracing is on.
    trace: Option<(Arc<Traces>, RequestSpan)>,
    /// Headers plugins add to whatever response the request gets (CORS).
    response_headers: Vec<(http::HeaderName, HeaderValue)>,
    /// What plugins keep until the response body has been sent.
    holds: Vec<Box<dyn Send + Sync>>,
}

/// What one upstream exchange did: where it went, how long it took.
#[derive(Default)]
pub(crate) struct CallRecord {
    upstream: Option<Arc<str>>,
    target: Option<Arc<str>>,
    upstream_latency: Option<Duration>,
    /// Counted by the request body as it streams; `None` for bodyless requests.
    bytes_in: Option<Arc<crate::body::BodyProgress>>,
}

/// What an upstream exchange reports to: the route's metrics and the
/// request's trace span (attempt spans are its children).
#[derive(Clone, Copy)]
pub(crate) struct CallContext<'a> {
    metrics: Option<&'a Arc<RouteMetrics>>,
    trace: Option<&'a (Arc<Traces>, RequestSpan)>,
}

pub async fn handle(conn: Arc<Connection>, request: Request<Inbound>) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let active = conn.active.begin();
    let gateway = conn.gateway.load_full();
    let request_id = request_id::from_request(request.headers());
    let method = request.method().clone();
    let version = request.version();
    // gRPC clients get gateway errors as gRPC statuses (in gRPC-Web's content type for those).
    let grpc = grpc::is_grpc(request.headers()).then(|| grpc_web::mode(request.headers()));
    // What only the log line (and the dashboard's tail) needs is copied only
    // when there is one.
    let logged = (gateway.access_log.is_some() || gateway.live.is_some()).then(|| {
        let headers = request.headers();
        Logged {
            log: gateway.access_log.clone(),
            path: request.uri().path().to_string(),
            user_agent: headers.get(http::header::USER_AGENT).cloned(),
            referer: headers.get(http::header::REFERER).cloned(),
        }
    });
    let mut exchange = Exchange {
        trace: gateway.traces.as_ref().map(|traces| {
            let span = traces.start_request(request.headers(), &method, request.uri().path());
            (traces.clone(), span)
        }),
        ..Exchange::default()
    };

    let served = match check_listener_limits(&conn, &request, &active, &gateway) {
        Err(error) => Err(error),
        Ok(()) => match conn.listener.redirect_https {
            Some(port) => Err(to_https(&request, port)),
            None => {
                let request = request.map(|body| body.paced(conn.listener.pace));
                serve(&gateway, &conn, request, &request_id, &mut exchange).await
            }
        },
    };
    let close_connection = served.as_ref().is_err_and(|error| error.kind.closes_connection());
    let mut response = match served {
        Ok(response) => response,
        Err(error) => {
            if let (Some((plugin, reason)), Some(route)) = (error.rejected_by, &exchange.route) {
                gateway.metrics.rejected(route, plugin, reason);
            }
            match error.kind.side() {
                Side::Client => tracing::debug!(request_id = ?request_id, %error, "request refused"),
                _ => {
                    tracing::warn!(request_id = ?request_id, route = exchange.route.as_deref(), %error, "request failed")
                }
            }
            exchange.error = Some(error.kind.code());
            if error.kind == ErrorKind::RequestTimeout {
                gateway.metrics.listener_refused(&conn.listener.name, error.kind.code());
            }
            match grpc {
                Some(web) => {
                    let mut response = grpc::error_response(&error);
                    if let Some(mode) = web {
                        response
                            .headers_mut()
                            .insert(CONTENT_TYPE, grpc_web::content_type(mode));
                    }
                    response
                }
                None => error.to_response(&request_id),
            }
        }
    };
    for (name, value) in exchange.response_headers.drain(..) {
        if name == http::header::VARY {
            response.headers_mut().append(name, value);
        } else {
            response.headers_mut().insert(name, value);
        }
    }
    response
        .headers_mut()
        .insert(&request_id::X_REQUEST_ID, request_id.clone());
    if let Some(hsts) = &conn.listener.hsts {
        response
            .headers_mut()
            .insert(http::header::STRICT_TRANSPORT_SECURITY, hsts.clone());
    }
    if let Some(alt_svc) = &conn.alt_svc {
        response.headers_mut().insert(http::header::ALT_SVC, alt_svc.clone());
    }
    if version < Version::HTTP_2 && (close_connection || conn.draining.load(Ordering::Relaxed)) {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    let holds = std::mem::take(&mut exchange.holds);
    let status = response.status().as_u16();
    let (log, path, user_agent, referer) = match logged {
        Some(l) => (l.log, l.path, l.user_agent, l.referer),
        None => (None, String::new(), None, None),
    };
    response.body_mut().set_log(Box::new(Entry {
        started,
        request_id,
        client: conn.peer,
        method,
        version,
        path,
        metrics: exchange.metrics.unwrap_or_else(|| gateway.unmatched.clone()),
        route: exchange.route,
        upstream: exchange.call.upstream,
        target: exchange.call.target,
        status,
        bytes_in: exchange.call.bytes_in,
        upstream_latency: exchange.call.upstream_latency,
        error: exchange.error,
        user_agent,
        referer,
        trace_id: exchange.trace.as_ref().and_then(|(_, span)| span.trace_id()),
        span: exchange.trace.map(|(_, span)| span),
        log,
        live: gateway.live.clone(),
    }));
    response.body_mut().hold(active, holds);
    Ok(response)
}

async fn serve(
    gateway: &Arc<Gateway>,
    conn: &Arc<Connection>,
    request: Request<Inbound>,
    request_id: &HeaderValue,
    exchange: &mut Exchange,
) -> Result<Response<ResponseBody>, ProxyError> {
    let (mut parts, body) = request.into_parts();
    let extended_connect = upgrade::from_extended_connect(&mut parts);
    // From here on, the request is the canonical one: routes, plugins and
    // the upstream see nothing else.
    let facts = canonical::canonicalise(&mut parts, &conn.listener, conn.peer.ip(), &gateway.trusted_headers)?;
    let (route, params, rewritten) = {
        let path = parts.uri.path();
        let host = request_host(&parts.uri, &parts.headers);
        let head = RequestHead::of(&parts, path, host.as_deref());
        let (route, params) = match gateway.routes.find(&head) {
            Lookup::Found { route, params } => (route, params),
            Lookup::MethodNotAllowed { allow } => match preflight_route(gateway, &head, &parts) {
                Some(found) => found,
                None => return Err(method_not_allowed(&parts.method, &allow)),
            },
            Lookup::NotFound => {
                return Err(ProxyError::new(ErrorKind::NotFound, "no route matches this request"));
            }
        };
        // Only the path: the query is joined after the plugins, which may change it.
        let rewritten = match &route.action {
            Action::Proxy(forward) => rewritten_path(forward.rewrite.apply(path, &params), &parts.uri),
            Action::Respond(_) | Action::Aggregate(_) => None,
        };
        (route, params, rewritten)
    };
    exchange.route = Some(route.name.clone());
    exchange.metrics = Some(route.metrics.clone());
    if let Some((_, span)) = &exchange.trace {
        span.set_route(&parts.method, &route.name);
    }

    let mut ctx = RequestContext::new(request_id, conn.peer, &route.name, &params, route.upstream());
    ctx.upstream_path = rewritten.as_deref();
    ctx.client_certificate = conn.client_certificate.as_deref();
    ctx.facts = facts;
    ctx.facts.has_body = !body.is_end_stream();
    let answer = async {
        if !route.plugins.is_empty() {
            match route.plugins.on_request(&mut parts, &mut ctx).await {
                Ok(Flow::Continue) => {}
                Ok(Flow::Respond(response)) => return Ok(*response),
                Err(error) => return Err(error),
            }
        }
        // Plugins that inspect bodies (`waf`) see their start before anything goes on.
        let body = match route.plugins.body_inspection_limit() {
            // No body: the inspection still runs (the Core Rule Set decides with it).
            Some(_) if body.is_end_stream() => {
                route.plugins.inspect_request_body(&[], true, &parts, &ctx)?;
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
                    .inspect_request_body(&ahead[..seen], complete && seen == ahead.len(), &parts, &ctx)?;
                body
            }
            _ => body,
        };
        let response = match &route.action {
            Action::Respond(fixed) => fixed_response(fixed),
            Action::Aggregate(aggregate) => {
                let shared = CallContext {
                    metrics: exchange.metrics.as_ref(),
                    trace: exchange.trace.as_ref(),
                };
                crate::aggregate::run(aggregate, conn, &parts, &ctx, shared).await?
            }
            Action::Proxy(
                forward @ Forward {
                    transcode: Some(transcoder),
                    ..
                },
            ) => {
                let shared = CallContext {
                    metrics: exchange.metrics.as_ref(),
                    trace: exchange.trace.as_ref(),
                };
                let call = (forward, &**transcoder, route.body_limit(&conn.listener));
                crate::transcode::transcode(call, conn, parts, body, request_id, shared, &mut exchange.call).await?
            }
            Action::Proxy(forward) => {
                let body = match route.plugins.request_body_cap(&parts.headers, ctx.facts.has_body)? {
                    Some(cap) => {
                        // Read as any body is: the route's or listener's limit (or the plugin's cap,
                        // if smaller) answers 413, and its bytes are counted for the log.
                        let cap = route.body_limit(&conn.listener).map_or(cap, |limit| limit.min(cap));
                        let bytes = read_client_body(body, cap, &mut exchange.call).await?;
                        let (changed, content_type) = route.plugins.transform_request_body(bytes, &parts, &ctx)?;
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
                // An upgrade is never a cached exchange.
                if route.plugins.cache().is_some() && upgrade.is_none() {
                    // The cache answers, or goes upstream and runs the response plugins
                    // itself, so that what it stores is what clients get.
                    let path_and_query = upstream_path_and_query(rewritten.as_deref(), &parts.uri)?;
                    return cached(
                        route,
                        forward,
                        gateway,
                        conn,
                        parts,
                        body,
                        path_and_query,
                        request_id,
                        &ctx,
                        exchange,
                    )
                    .await;
                }
                let upstream_request = UpstreamRequest {
                    body_limit: route.body_limit(&conn.listener),
                    path_and_query: upstream_path_and_query(rewritten.as_deref(), &parts.uri)?,
                    parts,
                    body,
                    request_id,
                    upgrade,
                };
                let shared = CallContext {
                    metrics: exchange.metrics.as_ref(),
                    trace: exchange.trace.as_ref(),
                };
                proxy(forward, conn, upstream_request, shared, &mut exchange.call).await?
            }
        };
        run_response_plugins(route, response, &ctx).await
    }
    .await;
    exchange.response_headers = std::mem::take(&mut ctx.response_headers);
    exchange.holds = std::mem::take(&mut ctx.holds);
    answer
}

/// A proxied request on a route with a `cache`: answered from it, or sent
/// upstream through it.
#[allow(clippy::too_many_arguments)]
async fn cached(
    route: &Route,
    forward: &Forward,
    gateway: &Arc<Gateway>,
    conn: &Arc<Connection>,
    parts: http::request::Parts,
    body: ClientBody,
    path_and_query: Option<PathAndQuery>,
    request_id: &HeaderValue,
    ctx: &RequestContext<'_>,
    exchange: &mut Exchange,
) -> Result<Response<ResponseBody>, ProxyError> {
    let Some(cache) = route.plugins.cache() else {
        return Err(ProxyError::new(ErrorKind::Internal, "the route has no cache"));
    };
    let shared = CallContext {
        metrics: exchange.metrics.as_ref(),
        trace: exchange.trace.as_ref(),
    };
    // Sent once at most: only the first exchange carries the client's body.
    let mut body = Some(body);
    let record = std::sync::Mutex::new(CallRecord::default());
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
            let mut call = CallRecord::default();
            let response = proxy(forward, conn, request, shared, &mut call).await;
            *record.lock().unwrap_or_else(|p| p.into_inner()) = call;
            run_response_plugins(route, response?, ctx).await
        }
    };
    let served = cache.serve(&parts, ctx, fetch).await;
    exchange.call = record.into_inner().unwrap_or_else(|p| p.into_inner());
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
    let (params, identity, facts) = (ctx.params.clone(), ctx.identity.clone(), ctx.facts);
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
        let mut ctx = RequestContext::new(&request_id, conn.peer, &route.name, &params, route.upstream());
        ctx.identity = identity;
        ctx.facts = facts;
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
                let response = proxy(forward, conn, request, shared, &mut CallRecord::default()).await?;
                run_response_plugins(route, response, ctx).await
            }
        };
        cache.refresh(job, &head, &ctx, fetch).await;
    });
}

/// The 308 to the same URL in HTTPS (as an error, so that it is answered
/// and logged the way every other early answer is).
fn to_https(request: &Request<Inbound>, port: u16) -> ProxyError {
    let host = request_host(request.uri(), request.headers()).unwrap_or_default();
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let location = if port == 443 {
        format!("https://{host}{path}")
    } else {
        format!("https://{host}:{port}{path}")
    };
    let mut error = ProxyError::new(ErrorKind::PermanentRedirect, "this address is served over HTTPS");
    error.location = HeaderValue::from_str(&location).ok().map(Box::new);
    error
}

/// A CORS preflight (`OPTIONS` asking about another method) is routed as
/// that method, when the route it reaches answers preflights itself.
fn preflight_route<'g>(
    gateway: &'g Gateway,
    head: &RequestHead<'_>,
    parts: &http::request::Parts,
) -> Option<(&'g Route, crate::router::Params)> {
    if !crate::plugins::cors::is_preflight(parts) {
        return None;
    }
    let asked = parts.headers.get(http::header::ACCESS_CONTROL_REQUEST_METHOD)?;
    let method = http::Method::from_bytes(asked.as_bytes()).ok()?;
    let as_asked = RequestHead {
        method: &method,
        ..*head
    };
    match gateway.routes.find(&as_asked) {
        Lookup::Found { route, params } if route.plugins.answers_preflight() => Some((route, params)),
        _ => None,
    }
}

async fn run_response_plugins(
    route: &Route,
    response: Response<ResponseBody>,
    ctx: &RequestContext<'_>,
) -> Result<Response<ResponseBody>, ProxyError> {
    if route.plugins.is_empty() {
        return Ok(response);
    }
    let (mut parts, body) = response.into_parts();
    route.plugins.on_response(&mut parts, ctx);
    let body = match route.plugins.response_body_cap(&parts.headers) {
        Some((cap, must)) => {
            let bytes = match transform::read_response(body, cap, must).await? {
                ReadAnswer::Whole(bytes) => bytes,
                ReadAnswer::TooLarge(body) => {
                    tracing::debug!(
                        route = ctx.route,
                        cap,
                        "the answer is too large to check; passed on unchecked"
                    );
                    return Ok(Response::from_parts(parts, body));
                }
            };
            let (changed, content_type) = route.plugins.transform_response_body(bytes, ctx)?;
            if let Some(content_type) = content_type {
                parts.headers.insert(CONTENT_TYPE, content_type);
            }
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(changed.len()));
            parts.headers.remove(http::header::TRANSFER_ENCODING);
            ResponseBody::full(changed)
        }
        None => body,
    };
    Ok(Response::from_parts(parts, body))
}

/// The path after the route's rewrite; `None` when it is the client's.
fn rewritten_path(path: std::borrow::Cow<'_, str>, uri: &Uri) -> Option<String> {
    (path != uri.path()).then(|| path.into_owned())
}

/// `None` when the client's path and query go upstream unchanged.
fn upstream_path_and_query(path: Option<&str>, uri: &Uri) -> Result<Option<PathAndQuery>, ProxyError> {
    let Some(path) = path else { return Ok(None) };
    let text = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path.to_string(),
    };
    PathAndQuery::try_from(text)
        .map(Some)
        .map_err(|_| ProxyError::new(ErrorKind::BadRequest, "the rewritten path is not a valid URI path"))
}

pub(crate) fn method_not_allowed(method: &http::Method, allow: &[http::Method]) -> ProxyError {
    let list = allow.iter().map(http::Method::as_str).collect::<Vec<_>>().join(", ");
    let mut error = ProxyError::new(
        ErrorKind::MethodNotAllowed,
        format!("{method} is not allowed here; allowed: {list}"),
    );
    error.allow = HeaderValue::from_str(&list).ok().map(Box::new);
    error
}

/// The listener's own checks, before anything else: framing, the client's
/// request rate, the size of the target and the headers. Refusals are
/// counted by reason.
fn check_listener_limits(
    conn: &Connection,
    request: &Request<Inbound>,
    active: &RequestActive,
    gateway: &Gateway,
) -> Result<(), ProxyError> {
    let listener = &conn.listener;
    let checked = check_framing(request, active)
        .and_then(|()| check_request_rate(conn))
        .and_then(|()| check_uri_length(request.uri(), listener))
        .and_then(|()| check_header_limits(request.headers(), listener));
    if let Err(error) = &checked {
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

fn fixed_response(fixed: &FixedResponse) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::full(fixed.body.clone()));
    *response.status_mut() = fixed.status;
    *response.headers_mut() = fixed.headers.clone();
    response
}

/// The body a request goes upstream with.
pub(crate) enum ClientBody {
    /// The client's, streamed through.
    Stream(Inbound),
    /// Read whole and changed by a transform.
    Transformed(Bytes),
}

pub(crate) struct UpstreamRequest<'a> {
    pub parts: http::request::Parts,
    pub body: ClientBody,
    /// Rewritten path and query; `None` keeps the client's.
    pub path_and_query: Option<PathAndQuery>,
    pub request_id: &'a HeaderValue,
    /// The route's (or else the listener's) request body limit.
    pub body_limit: Option<u64>,
    /// The client's side of an upgrade it asked for (WebSocket).
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

pub(crate) async fn proxy(
    forward: &Forward,
    conn: &Connection,
    request: UpstreamRequest<'_>,
    shared: CallContext<'_>,
    exchange: &mut CallRecord,
) -> Result<Response<ResponseBody>, ProxyError> {
    let UpstreamRequest {
        mut parts,
        body,
        path_and_query,
        request_id,
        body_limit: limit,
        mut upgrade,
    } = request;
    let pool = &forward.pool;
    exchange.upstream = Some(pool.name.clone());
    if let Err(wait) = pool.admit() {
        let mut error = ProxyError::new(
            ErrorKind::CircuitOpen,
            format!("upstream {:?} is failing; its circuit breaker is open", &*pool.name),
        );
        error.retry_after = Some(wait.as_secs_f64().ceil().clamp(1.0, f64::from(u32::MAX)) as u32);
        return Err(error);
    }
    let declared_length = content_length(&parts.headers);
    let grpc_deadline = grpc::timeout(&parts.headers);
    if let (Some(limit), Some(length)) = (limit, declared_length) {
        if length > limit {
            return Err(body_too_large(limit));
        }
    }

    let client_host = parts.headers.get(http::header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let preserved_host = forward.preserve_host && client_host.is_some();
    let client_version = parts.version;
    forward::upstream_request(
        &mut parts.headers,
        ClientSide {
            ip: &conn.peer_ip,
            version: client_version,
            host: client_host,
            request_id,
            preserve_host: forward.preserve_host,
            tls: conn.listener.tls.is_some(),
            client_certificate: conn.client_certificate.as_deref(),
        },
    );
    // gRPC-Web goes to HTTP/2 upstreams as gRPC; its answer is turned back.
    let web = grpc_web::mode(&parts.headers).filter(|_| pool.transport.is_multiplexed());
    if let Some(mode) = web {
        grpc_web::to_grpc_request(&mut parts.headers, mode);
    }
    let web_text = web == Some(grpc_web::Mode::Text);
    // Origin-form: the connection already goes to the target.
    parts.uri = Uri::from(
        path_and_query
            .or_else(|| parts.uri.path_and_query().cloned())
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    );
    parts.version = Version::HTTP_11;

    let retry = forward.retry.as_ref();
    if retry.is_some() {
        pool.retry_budget.deposit();
    }
    // A request that may be retried whatever the failure keeps a copy of its
    // head and a buffered body. Any other request streams, and is sent again
    // only if it never left (the connection could not be made).
    let (replay, first_body) = match body {
        ClientBody::Transformed(bytes) => {
            let replay = retry.filter(|r| r.allows(&parts.method)).map(|_| bytes.clone());
            (replay, RequestBody::buffered(bytes))
        }
        ClientBody::Stream(body) => {
            let bodyless = body.is_end_stream();
            let mut stream = (!bodyless).then_some(body);
            let replay = match retry.filter(|r| r.allows(&parts.method)) {
                Some(_) if bodyless => Some(Bytes::new()),
                Some(policy) if declared_length.is_some_and(|n| n <= policy.buffer_body) => match stream.take() {
                    Some(body) => {
                        let counter = exchange.bytes_in.get_or_insert_with(Arc::default).clone();
                        let body = RequestBody::new(body, limit, counter).decoding_base64(web_text);
                        Some(buffer_body(body, limit).await?)
                    }
                    None => Some(Bytes::new()),
                },
                _ => None,
            };
            let first_body = match (&replay, stream) {
                (Some(bytes), _) => RequestBody::buffered(bytes.clone()),
                (None, Some(body)) => {
                    RequestBody::new(body, limit, exchange.bytes_in.get_or_insert_with(Arc::default).clone())
                        .decoding_base64(web_text)
                }
                (None, None) => RequestBody::empty(),
            };
            (replay, first_body)
        }
    };
    let replay = replay.map(|bytes| (clone_head(&parts), bytes));
    let mut next_request = Some(Request::from_parts(parts, first_body));

    // The route's whole-request timeout, or the gRPC client's deadline if sooner.
    let whole = match (forward.request_timeout, grpc_deadline) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let deadline = whole.map(|timeout| Instant::now() + timeout);
    let client_deadline = grpc_deadline.map(|timeout| Instant::now() + timeout);
    let mut tried: Vec<Arc<crate::upstream::Target>> = Vec::new();
    let mut last_error: Option<ProxyError> = None;
    let mut retries = 0;
    loop {
        let Some(mut request) = next_request.take() else {
            return Err(last_error.unwrap_or_else(|| no_target(pool)));
        };
        let pick = PickContext {
            headers: request.headers(),
            client_ip: conn.peer.ip(),
        };
        let Some(target) = pool.pick(&pick, &tried) else {
            return Err(last_error.unwrap_or_else(|| no_target(pool)));
        };
        exchange.target = Some(target.addr.clone());
        if !preserved_host {
            request
                .headers_mut()
                .insert(http::header::HOST, target.host_header.clone());
        }
        let wait = match deadline {
            Some(deadline) => forward
                .timeouts
                .response
                .min(deadline.saturating_duration_since(Instant::now())),
            None => forward.timeouts.response,
        };
        let attempt_span = shared.trace.map(|(traces, span)| {
            let method = request.method().clone();
            traces.start_attempt(span, request.headers_mut(), &method, &pool.name, &target.addr)
        });
        let in_flight = target.begin();
        let sent = Instant::now();
        let attempt = tokio::time::timeout(wait, connections::send(&target, request, forward.timeouts.connect)).await;
        let latency = sent.elapsed();
        exchange.upstream_latency = Some(latency);
        if let Some(metrics) = shared.metrics {
            metrics.upstream_latency(latency.as_secs_f64());
        }
        if let Some(span) = attempt_span {
            span.finish(match &attempt {
                Ok(Ok((response, _))) => Ok(response.status().as_u16()),
                Ok(Err(failed)) if connect_failure(&failed.error) => Err("connect_failure"),
                Ok(Err(_)) => Err("upstream_broken"),
                Err(_) => Err("timeout"),
            });
        }

        // Either the answer, or the error and the request to send again.
        let (error, again) = match attempt {
            Ok(Ok((response, lease))) => {
                let status = response.status();
                pool.observe_latency(&target, latency);
                pool.record(&target, outcome_of(status));
                // The condition first: a replay copy is made only for a retry.
                let retryable = replay.is_some() && retry.is_some_and(|r| r.retries_status(status));
                let again = if retryable && may_retry(retry, retries, deadline, pool) {
                    replayed(&replay)
                } else {
                    None
                };
                match again {
                    Some(again) => {
                        let error = ProxyError::new(
                            ErrorKind::UpstreamBroken,
                            format!("upstream {:?} answered {status}", &*pool.name),
                        );
                        (error, again)
                    }
                    // Not retried: the upstream's own answer goes to the client.
                    None => {
                        let mut response = response;
                        let switched = match upgrade.take() {
                            Some(client) if status == http::StatusCode::SWITCHING_PROTOCOLS => {
                                let protocol = response.headers().get(http::header::UPGRADE).cloned();
                                upgrade::bridge(
                                    client,
                                    hyper::upgrade::on(&mut response),
                                    forward.timeouts.websocket_idle,
                                    shared.metrics.cloned(),
                                    conn.active.begin(),
                                );
                                protocol
                            }
                            _ => None,
                        };
                        let (mut parts, body) = response.into_parts();
                        forward::downstream_response(&mut parts.headers, parts.version, request_id);
                        match switched {
                            Some(_) if client_version == Version::HTTP_2 => {
                                upgrade::to_extended_connect_answer(&mut parts);
                            }
                            Some(protocol) => {
                                parts
                                    .headers
                                    .insert(http::header::CONNECTION, HeaderValue::from_static("upgrade"));
                                parts.headers.insert(http::header::UPGRADE, protocol);
                            }
                            None => {}
                        }
                        parts.version = client_version;
                        let mut body = ResponseBody::upstream(body, forward.timeouts.response, in_flight, lease);
                        if let Some(mode) = web.filter(|_| grpc::is_grpc(&parts.headers)) {
                            // A trailers-only answer has its status in the head, as gRPC-Web reads it.
                            if !parts.headers.contains_key("grpc-status") {
                                body = ResponseBody::grpc_web(body, mode);
                            }
                            grpc_web::to_web_response(&mut parts.headers, mode);
                        }
                        return Ok(Response::from_parts(parts, body));
                    }
                }
            }
            Ok(Err(failed)) => {
                let never_connected = connect_failure(&failed.error);
                // The client's body failing is the client's error, whatever the
                // connection made of it (HTTP/2 reports a reset stream).
                if let Some(fault) = exchange.bytes_in.as_ref().and_then(|p| p.fault()) {
                    return Err(client_body_error(fault, limit));
                }
                let error = upstream_error(failed.error, &pool.name, limit);
                if error.kind.side() != Side::Client {
                    pool.record(&target, Outcome::Failure);
                }
                let again = match failed.unsent {
                    // It never reached the target: it may go elsewhere, whatever its method.
                    Some(unsent) if never_connected => retry.filter(|r| r.on_connect_failure).map(|_| unsent),
                    // The exchange broke before a response head (a target that died,
                    // a keep-alive connection it closed): a replayable request is
                    // sent again, as nginx's `proxy_next_upstream error` does.
                    _ if error.kind == ErrorKind::UpstreamBroken => replayed(&replay),
                    _ => None,
                };
                match again.filter(|_| may_retry(retry, retries, deadline, pool)) {
                    Some(again) => (error, again),
                    None => return Err(error),
                }
            }
            // The client's own deadline passed first: its 504, not the target's failure.
            Err(_) if client_deadline.is_some_and(|d| Instant::now() >= d) => {
                return Err(ProxyError::new(
                    ErrorKind::DeadlineExceeded,
                    format!(
                        "upstream {:?} did not answer within the client's deadline ({}), set by its grpc-timeout",
                        &*pool.name,
                        humantime::format_duration(grpc_deadline.unwrap_or_default())
                    ),
                ));
            }
            Err(_) => {
                pool.record(&target, Outcome::Failure);
                return Err(ProxyError::new(
                    ErrorKind::UpstreamTimeout,
                    match whole.filter(|_| wait < forward.timeouts.response) {
                        Some(whole) => format!(
                            "upstream {:?} did not answer within the request's deadline ({})",
                            &*pool.name,
                            humantime::format_duration(whole)
                        ),
                        None => format!("upstream {:?} did not answer within {wait:?}", &*pool.name),
                    },
                ));
            }
        };
        retries += 1;
        pool.metrics.retries.inc();
        tried.push(target);
        last_error = Some(error);
        next_request = Some(again);
        if let Some(policy) = retry {
            tokio::time::sleep(policy.backoff(retries)).await;
        }
    }
}

/// Whether one more retry is allowed: policy attempts, time and budget.
fn may_retry(retry: Option<&RetryPolicy>, done: u32, deadline: Option<Instant>, pool: &UpstreamPool) -> bool {
    let Some(policy) = retry else { return false };
    done < policy.attempts && deadline.is_none_or(|d| Instant::now() < d) && pool.retry_budget.withdraw(policy.budget)
}

fn outcome_of(status: http::StatusCode) -> Outcome {
    if status.is_server_error() {
        Outcome::Failure
    } else {
        Outcome::Success
    }
}

fn connect_failure(error: &SendError) -> bool {
    matches!(
        error,
        SendError::Connect(_) | SendError::ConnectTimeout(_) | SendError::Tls(_) | SendError::Protocol(_)
    )
}

fn no_target(pool: &UpstreamPool) -> ProxyError {
    ProxyError::new(
        ErrorKind::NoTarget,
        format!("upstream {:?} has no healthy target", &*pool.name),
    )
}

/// The request head again, for another attempt (extensions are not carried).
/// A request head without its body or extensions, to send again.
pub(crate) fn clone_head(parts: &http::request::Parts) -> http::request::Parts {
    let (mut head, ()) = Request::new(()).into_parts();
    head.method = parts.method.clone();
    head.uri = parts.uri.clone();
    head.version = parts.version;
    head.headers = parts.headers.clone();
    head
}

fn replayed(replay: &Option<(http::request::Parts, Bytes)>) -> Option<Request<RequestBody>> {
    replay
        .as_ref()
        .map(|(head, bytes)| Request::from_parts(clone_head(head), RequestBody::buffered(bytes.clone())))
}

/// Reads the client's body whole, up to `cap` bytes, counted in the record.
pub(crate) async fn read_client_body(body: Inbound, cap: u64, record: &mut CallRecord) -> Result<Bytes, ProxyError> {
    let counter = record.bytes_in.get_or_insert_with(Arc::default).clone();
    buffer_body(RequestBody::new(body, Some(cap), counter), Some(cap)).await
}

/// Reads a (small, declared-length) request body whole so it can be replayed.
async fn buffer_body(body: RequestBody, limit: Option<u64>) -> Result<Bytes, ProxyError> {
    match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(client_body_error(Fault::of(&error).unwrap_or(Fault::Unreadable), limit)),
    }
}

/// What the client hears of its own body failing on the way.
fn client_body_error(fault: Fault, limit: Option<u64>) -> ProxyError {
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
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

fn body_too_large(limit: u64) -> ProxyError {
    ProxyError::new(
        ErrorKind::PayloadTooLarge,
        format!("the request body is larger than the limit of {limit} bytes"),
    )
}

/// Sorts a failed exchange into what the caller should hear: our own body
/// limit (413), a connect timeout (504), a refused connection or a broken
/// exchange (502). Target addresses go to the log, not to the client.
fn upstream_error(error: SendError, upstream: &str, limit: Option<u64>) -> ProxyError {
    let kind = match &error {
        SendError::ConnectTimeout(_) => ErrorKind::UpstreamTimeout,
        SendError::Connect(_) | SendError::Tls(_) => ErrorKind::UpstreamConnect,
        SendError::Protocol(_) => ErrorKind::UpstreamBroken,
        SendError::Http(http) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = http.source();
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
