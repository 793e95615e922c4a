//! The admin API: JSON over HTTP on its own listener, behind a bearer token.
//! `/health` and `/ready` are open, for orchestrators' probes, and so is the
//! `/docs` page, which holds no data; everything else needs
//! `Authorization: Bearer <admin.token>`. Its OpenAPI description
//! is served at `/openapi.json`.

mod redact;
mod views;

pub use views::ReloadReport;

use crate::body::ResponseBody;
use crate::control::upgrade;
use crate::error::problem;
use crate::gateway::{AdminSettings, Gateway};
use crate::proxy::request_id;
use crate::telemetry::metrics::Metrics;
use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What the admin API operates: the running gateway and its controls. The
/// controller implements it (`control`), so the API knows nothing else of it
/// and the controller may start the API without the two importing each other.
pub trait Operated: Send + Sync + 'static {
    /// The config serving now.
    fn gateway(&self) -> Arc<Gateway>;
    fn metrics(&self) -> &Metrics;
    /// Reloads the config file now; the report says what happened.
    fn reload(
        self: Arc<Self>,
        trigger: &'static str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ReloadReport> + Send>>;
    fn admin_settings(&self) -> Option<Arc<AdminSettings>>;
    /// The listeners serving, by name, with the addresses they are bound to.
    fn listeners(&self) -> Vec<(Arc<str>, SocketAddr)>;
    /// What plugins keep across reloads (the cache's memory store).
    fn plugin_state(&self) -> &crate::plugins::PluginState;
    /// When the running config was loaded, and the last reload's report.
    fn reload_status(&self) -> (std::time::SystemTime, Option<ReloadReport>);
    fn started(&self) -> std::time::SystemTime;
    fn config_path(&self) -> &std::path::Path;
}

const OPENAPI: &str = include_str!("openapi.json");
/// The dashboard: one self-contained page (no CDN, no build step).
const DASHBOARD: &str = include_str!("dashboard.html");
/// Request bodies the admin API reads (target lists, explain requests).
const MAX_BODY: usize = 1024 * 1024;

/// The admin API's bound socket and accept loop.
pub struct AdminListener {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    /// The listening socket's descriptor, to hand to a new binary on upgrade.
    fd: std::os::fd::OwnedFd,
}

impl AdminListener {
    /// Binds `addr` and serves the admin API for `control` (held weakly: the
    /// listener must not keep a stopped gateway alive).
    pub fn start(addr: SocketAddr, control: Weak<dyn Operated>) -> std::io::Result<AdminListener> {
        let std_listener = match upgrade::take("admin", addr) {
            Some(inherited) => inherited,
            None => std::net::TcpListener::bind(addr)?,
        };
        std_listener.set_nonblocking(true)?;
        let fd = upgrade::duplicate(&std_listener)?;
        let listener = TcpListener::from_std(std_listener)?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "admin API listening");
        let (stop, mut stopped) = watch::channel(false);
        tokio::spawn(async move {
            let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    _ = stopped.wait_for(|stop| *stop) => return,
                };
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors and the like: back off rather than spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let control = control.clone();
                let builder = builder.clone();
                let mut stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(control.clone(), request));
                    let connection = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = connection => {}
                        _ = stopped.wait_for(|stop| *stop) => {}
                    }
                });
            }
        });
        Ok(AdminListener { addr, stop, fd })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A duplicate of the socket, for a binary upgrade.
    pub fn socket(&self) -> std::io::Result<std::os::fd::OwnedFd> {
        self.fd.try_clone()
    }

    /// Stops accepting and closes the admin connections.
    pub fn stop(self) {
        let _ = self.stop.send(true);
    }
}

async fn handle(control: Weak<dyn Operated>, request: Request<Incoming>) -> Result<Response<ResponseBody>, Infallible> {
    let request_id = request_id::from_request(request.headers());
    let answer = match control.upgrade() {
        Some(control) => route(&control, request).await,
        None => Err(Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the gateway is shutting down",
        )),
    };
    let mut response = answer.unwrap_or_else(|problem| problem.into_response(&request_id));
    response.headers_mut().insert(&request_id::X_REQUEST_ID, request_id);
    Ok(response)
}

type Answer = Result<Response<ResponseBody>, Problem>;

/// An admin API error, answered as problem+json.
pub(super) struct Problem {
    status: StatusCode,
    detail: String,
    /// More members of the problem document (boxed: the error stays small).
    extra: Box<serde_json::Value>,
    headers: Vec<(http::HeaderName, HeaderValue)>,
}

impl Problem {
    fn new(status: StatusCode, detail: &str) -> Problem {
        Problem {
            status,
            detail: detail.to_string(),
            extra: Box::new(serde_json::json!({})),
            headers: Vec::new(),
        }
    }

    fn into_response(mut self, request_id: &HeaderValue) -> Response<ResponseBody> {
        if let Some(extra) = self.extra.as_object_mut() {
            extra.insert("request_id".into(), request_id.to_str().unwrap_or_default().into());
        }
        let mut response = problem(self.status, &self.detail, *self.extra);
        response.headers_mut().extend(self.headers);
        response
    }
}

async fn route(operated: &Arc<dyn Operated>, request: Request<Incoming>) -> Answer {
    let control: &dyn Operated = &**operated;
    let path = request.uri().path().trim_end_matches('/').to_string();
    let method = request.method().clone();
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    // Probes are open: they say nothing an attacker could use.
    match segments.as_slice() {
        ["health"] => return only(&method, &[Method::GET], || json(StatusCode::OK, &views::health())),
        ["ready"] => {
            return only(&method, &[Method::GET], || {
                let ready = views::ready(control);
                let status = if ready.ready {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                json(status, &ready)
            })
        }
        // The pages hold no data: they ask for the token to fetch it.
        ["docs"] => return only(&method, &[Method::GET], || page(crate::openapi::docs::PAGE)),
        [] | ["dashboard"] => return only(&method, &[Method::GET], || page(DASHBOARD)),
        _ => {}
    }
    authorize(control, &request)?;
    match segments.as_slice() {
        ["status"] => only(&method, &[Method::GET], || {
            json(StatusCode::OK, &views::status(control))
        }),
        ["routes"] => only(&method, &[Method::GET], || {
            json(StatusCode::OK, &views::routes(control))
        }),
        ["stats"] => only(&method, &[Method::GET], || {
            let seconds = query_number(&request, "seconds").unwrap_or(120);
            json(StatusCode::OK, &views::stats(control, seconds))
        }),
        ["requests"] => only(&method, &[Method::GET], || {
            let limit = query_number(&request, "limit").unwrap_or(100);
            json(StatusCode::OK, &control.metrics().live.recent(limit))
        }),
        ["upstreams"] => only(&method, &[Method::GET], || {
            json(StatusCode::OK, &views::upstreams(&control.gateway()))
        }),
        ["upstreams", name] => only(&method, &[Method::GET], || {
            match control.gateway().upstreams.get(*name) {
                Some(pool) => json(StatusCode::OK, &views::upstream(pool)),
                None => Err(error(StatusCode::NOT_FOUND, &format!("no upstream is named {name:?}"))),
            }
        }),
        ["upstreams", name, "targets"] => {
            if method != Method::PUT {
                return Err(not_allowed(&[Method::PUT]));
            }
            let name = name.to_string();
            let body = read_json(request).await?;
            views::put_targets(&control.gateway(), &name, body)
        }
        ["config"] => only(&method, &[Method::GET], || {
            json(StatusCode::OK, &redact::config(&control.gateway().source))
        }),
        ["reload"] => {
            if method != Method::POST {
                return Err(not_allowed(&[Method::POST]));
            }
            let report = operated.clone().reload("admin_api").await;
            if report.ok {
                json(StatusCode::OK, &report)
            } else {
                let detail = format!(
                    "the config has {} error(s); the running config stays",
                    report.errors.len()
                );
                let mut problem = error(StatusCode::UNPROCESSABLE_ENTITY, &detail);
                problem.extra = Box::new(serde_json::to_value(&report).unwrap_or_else(|_| serde_json::json!({})));
                Err(problem)
            }
        }
        ["metrics"] => only(&method, &[Method::GET], || {
            views::refresh_gauges(control);
            let mut response = Response::new(ResponseBody::full(control.metrics().encode()));
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            Ok(response)
        }),
        ["cache"] => only(&method, &[Method::GET], || json(StatusCode::OK, &views::cache(control))),
        ["cache", "purge"] => {
            if method != Method::POST {
                return Err(not_allowed(&[Method::POST]));
            }
            let body = read_json(request).await?;
            let what: crate::cache::store::Purge = serde_json::from_value(body).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    &format!(
                        "expected {{\"url\": \"host/path?query\"}}, {{\"prefix\": \"/path\"}}, {{\"tag\": \"key\"}} or \"all\": {e}"
                    ),
                )
            })?;
            match views::purge(control, &what).await {
                Ok(report) => json(StatusCode::OK, &report),
                Err(why) => Err(error(StatusCode::SERVICE_UNAVAILABLE, &why)),
            }
        }
        ["explain"] => {
            if method != Method::POST {
                return Err(not_allowed(&[Method::POST]));
            }
            let body = read_json(request).await?;
            let question: crate::explain::Question = serde_json::from_value(body).map_err(|e| {
                error(
                    StatusCode::BAD_REQUEST,
                    &format!("expected {{\"method\": \"GET\", \"url\": \"/path\", \"headers\": {{...}}}}: {e}"),
                )
            })?;
            match crate::explain::explain(&control.gateway(), &question) {
                Ok(explanation) => json(StatusCode::OK, &explanation),
                Err(why) => Err(error(StatusCode::BAD_REQUEST, &why)),
            }
        }
        ["docs", "openapi.json"] => only(&method, &[Method::GET], || {
            json(StatusCode::OK, &crate::openapi::docs::merged(&control.gateway()))
        }),
        ["openapi.json"] => only(&method, &[Method::GET], || {
            let mut response = Response::new(ResponseBody::full(Bytes::from_static(OPENAPI.as_bytes())));
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }),
        _ => Err(error(
            StatusCode::NOT_FOUND,
            "no such admin endpoint; GET /openapi.json lists them",
        )),
    }
}

/// A self-contained HTML page: inline script and style, nothing fetched
/// from elsewhere.
fn page(html: &'static str) -> Answer {
    let mut response = Response::new(ResponseBody::full(Bytes::from_static(html.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:",
        ),
    );
    Ok(response)
}

/// A whole-number query parameter, if present and valid.
fn query_number(request: &Request<Incoming>, name: &str) -> Option<usize> {
    form_urlencoded::parse(request.uri().query()?.as_bytes())
        .find(|(key, _)| key == name)
        .and_then(|(_, value)| value.parse().ok())
}

/// Checks the bearer token in constant time (of the token's length).
fn authorize(control: &dyn Operated, request: &Request<Incoming>) -> Result<(), Problem> {
    use subtle::ConstantTimeEq;
    let expected = control.admin_settings().map(|a| a.token.clone());
    let given = request
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let ok = match (expected, given) {
        (Some(expected), Some(given)) => bool::from(expected.as_bytes().ct_eq(given.as_bytes())),
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let mut problem = error(
        StatusCode::UNAUTHORIZED,
        "send the admin token as `Authorization: Bearer <admin.token>`",
    );
    problem.headers.push((
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"portico-admin\""),
    ));
    Err(problem)
}

/// Runs `answer` if the method is one of `allowed`, else answers 405.
fn only(method: &Method, allowed: &[Method], answer: impl FnOnce() -> Answer) -> Answer {
    let allowed_here = allowed.contains(method) || (*method == Method::HEAD && allowed.contains(&Method::GET));
    if allowed_here {
        answer()
    } else {
        Err(not_allowed(allowed))
    }
}

fn not_allowed(allowed: &[Method]) -> Problem {
    let list = allowed.iter().map(Method::as_str).collect::<Vec<_>>().join(", ");
    let mut problem = error(StatusCode::METHOD_NOT_ALLOWED, &format!("allowed here: {list}"));
    if let Ok(value) = HeaderValue::from_str(&list) {
        problem.headers.push((ALLOW, value));
    }
    problem
}

fn error(status: StatusCode, detail: &str) -> Problem {
    Problem::new(status, detail)
}

fn json(status: StatusCode, value: &impl Serialize) -> Answer {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => {
            let mut response = Response::new(ResponseBody::full(body));
            *response.status_mut() = status;
            response
                .headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            Ok(response)
        }
        Err(e) => Err(error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())),
    }
}

async fn read_json(request: Request<Incoming>) -> Result<serde_json::Value, Problem> {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return Err(error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body could not be read, or is over 1MiB",
            ))
        }
    };
    serde_json::from_slice(&body).map_err(|e| error(StatusCode::BAD_REQUEST, &format!("the body is not JSON: {e}")))
}
