//! One request's session, from accept to log: the listener's checks, the
//! phases (`phases`), then the response finished (request id, HSTS,
//! `Alt-Svc`, `Connection: close` while draining) and its access-log entry
//! set, to be written when the body has been sent.

use crate::body::{Inbound, ResponseBody};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::proxy::connection::Connection;
use crate::proxy::errors;
use crate::proxy::grpc;
use crate::proxy::grpc_web;
use crate::proxy::listener_checks::check_listener_limits;
use crate::proxy::phases::{serve, Observed};
use crate::proxy::request_id;
use crate::router::request_host;
use crate::telemetry::access_log::{AccessLog, Entry};
use http::{HeaderValue, Request, Response, Version};
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

/// The request's details only the access log uses.
struct Logged {
    log: Option<Arc<AccessLog>>,
    path: String,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
}

/// Serves one request of `conn` and sets its access-log entry.
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
    let mut observed = Observed {
        trace: gateway.traces.as_ref().map(|traces| {
            let span = traces.start_request(request.headers(), &method, request.uri().path());
            (traces.clone(), span)
        }),
        ..Observed::default()
    };

    let served = match check_listener_limits(&conn, &request, &active, &gateway) {
        Err(error) => Err(error),
        Ok(()) => match conn.listener.redirect_https {
            Some(port) => Err(to_https(&request, port)),
            None => {
                let request = request.map(|body| body.paced(conn.listener.pace));
                serve(&gateway, &conn, request, &request_id, &mut observed).await
            }
        },
    };
    let close_connection = served.as_ref().is_err_and(|error| error.kind.closes_connection());
    let mut response = match served {
        Ok(response) => response,
        Err(error) => {
            if let (Some((plugin, reason)), Some(route)) = (error.rejected_by, &observed.route) {
                gateway.metrics.rejected(route, plugin, reason);
            }
            match error.kind.side() {
                Side::Client => tracing::debug!(request_id = ?request_id, %error, "request refused"),
                _ => {
                    tracing::warn!(request_id = ?request_id, route = observed.route.as_deref(), %error, "request failed")
                }
            }
            observed.error = Some(error.kind.code());
            if error.kind == ErrorKind::RequestTimeout {
                gateway.metrics.listener_refused(&conn.listener.name, error.kind.code());
            }
            errors::answer(&error, grpc, &request_id)
        }
    };
    for (name, value) in observed.response_headers.drain(..) {
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
    let holds = std::mem::take(&mut observed.holds);
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
        metrics: observed.metrics.unwrap_or_else(|| gateway.unmatched.clone()),
        route: observed.route,
        upstream: observed.call.upstream,
        target: observed.call.target,
        status,
        bytes_in: observed.call.bytes_in,
        upstream_latency: observed.call.upstream_latency,
        error: observed.error,
        user_agent,
        referer,
        trace_id: observed.trace.as_ref().and_then(|(_, span)| span.trace_id()),
        span: observed.trace.map(|(_, span)| span),
        log,
        live: gateway.live.clone(),
    }));
    response.body_mut().hold(active, holds);
    Ok(response)
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
