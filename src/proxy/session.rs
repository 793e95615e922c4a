//! One request's session, from accept to log: the listener's checks, the
//! phases (`phases`), then the response finished (request id, HSTS,
//! `Alt-Svc`, `Connection: close` while draining) and its access-log entry
//! set, to be written when the body has been sent.

use crate::body::{Inbound, ResponseBody};
use crate::context::RequestContext;
use crate::error::{ErrorKind, Side};
use crate::proxy::connection::Connection;
use crate::proxy::errors;
use crate::proxy::grpc;
use crate::proxy::grpc_web;
use crate::proxy::listener_checks::check_listener_limits;
use crate::proxy::phases::{serve, Observed};
use crate::proxy::request_id;
use crate::telemetry::access_log::{Entry, UpstreamCall};
use http::{HeaderValue, Request, Response, Version};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

/// Serves one request of `conn` and sets its access-log entry.
pub async fn handle(conn: Arc<Connection>, request: Request<Inbound>) -> Result<Response<ResponseBody>, Infallible> {
    let started = Instant::now();
    let active = conn.active.begin();
    let gateway = conn.gateway.load_full();
    let request_id = request_id::from_request(request.headers());
    let version = request.version();
    // gRPC clients get gateway errors as gRPC statuses (in gRPC-Web's content type for those).
    let grpc = grpc::is_grpc(request.headers()).then(|| grpc_web::mode(request.headers()));
    // What only the log line (and the dashboard's tail) needs is copied only
    // when there is one.
    let logged = gateway.access_log.is_some() || gateway.live.is_some();
    let headers = request.headers();
    let entry = Entry {
        started,
        request_id: request_id.clone(),
        client: conn.peer,
        method: request.method().clone(),
        version,
        path: if logged {
            request.uri().path().to_string()
        } else {
            String::new()
        },
        route: None,
        call: UpstreamCall {
            keep_names: gateway.access_log.is_some(),
            ..UpstreamCall::default()
        },
        status: 0,
        error: None,
        user_agent: logged.then(|| headers.get(http::header::USER_AGENT).cloned()).flatten(),
        referer: logged.then(|| headers.get(http::header::REFERER).cloned()).flatten(),
        trace_id: None,
        span: None,
        metrics: None,
        log: gateway.access_log.clone(),
        live: gateway.live.clone(),
    };
    let mut observed = Observed {
        entry: Box::new(entry),
        trace: gateway.traces.as_ref().map(|traces| {
            let span = traces.start_request(request.headers(), request.method(), request.uri().path());
            (traces.clone(), span)
        }),
    };
    // The request's context, from here to its log line.
    let mut ctx = RequestContext::arrived(&request_id, conn.peer);
    ctx.client_certificate = conn.client_certificate.as_deref();

    let served = match check_listener_limits(&conn, &request, &active, &gateway) {
        Err(error) => Err(error),
        Ok(()) => {
            let request = request.map(|body| body.paced(conn.listener.pace));
            serve(&gateway, &conn, request, &mut ctx, &mut observed).await
        }
    };
    let close_connection = served.as_ref().is_err_and(|error| error.kind.closes_connection());
    let mut response = match served {
        Ok(response) => response,
        Err(error) => {
            if let (Some((plugin, reason)), Some(route)) = (error.rejected_by, &observed.entry.route) {
                gateway.metrics.rejected(route, plugin, reason);
            }
            match error.kind.side() {
                Side::Client => tracing::debug!(request_id = ?request_id, %error, "request refused"),
                _ => {
                    tracing::warn!(request_id = ?request_id, route = observed.entry.route.as_deref(), %error, "request failed")
                }
            }
            observed.entry.error = Some(error.kind.code());
            if error.kind == ErrorKind::RequestTimeout {
                gateway.metrics.listener_refused(&conn.listener.name, error.kind.code());
            }
            errors::answer(&error, grpc, &request_id)
        }
    };
    for (name, value) in ctx.response_headers.drain(..) {
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
    let Observed { mut entry, trace } = observed;
    entry.status = response.status().as_u16();
    // A request answered before it was routed counts in the unmatched series.
    entry.metrics.get_or_insert_with(|| gateway.unmatched.clone());
    if let Some((_, span)) = trace {
        entry.trace_id = span.trace_id();
        entry.span = Some(span);
    }
    response.body_mut().set_log(entry);
    response.body_mut().hold(active, ctx.holds);
    Ok(response)
}

/// One request of `conn` as hyper brings it: its service's future.
///
/// Over HTTP/2 (TLS with ALPN h2) the service boxes this future: hyper spawns
/// each stream as a task and tokio moves the task's future whole, into the
/// task and again over its stage when it ends, so a pointer is cheaper to
/// move than the session's state (7.9 KB). HTTP/1 keeps it inline: hyper
/// holds one request's future at a time in a slot made once per connection,
/// and the allocation would cost more than the one move (bench/ab.py: boxed,
/// -3% requests/s on HTTP/1 and +13% on HTTP/2). HTTP/1 requests hyper
/// serves (`http1` hands it a connection) and plain-text HTTP/2 clients
/// (prior knowledge) get it inline.
pub fn from_hyper(
    conn: &Arc<Connection>,
    request: Request<hyper::body::Incoming>,
) -> impl std::future::Future<Output = Result<Response<ResponseBody>, Infallible>> {
    handle(conn.clone(), request.map(Inbound::from))
}
