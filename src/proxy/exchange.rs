//! The upstream exchange: pick a target, connect, send, retry within the
//! policy and its budget, and turn the answer (or an upgrade, or gRPC-Web)
//! into the client's response. Aggregate calls, transcoding and the cache use
//! it through this module.

use crate::body::{Fault, Inbound, RequestBody, ResponseBody};
use crate::error::{ErrorKind, ProxyError, Side};
use crate::gateway::Forward;
use crate::proxy::connection::Connection;
use crate::proxy::errors::{body_too_large, client_body_error, no_target, upstream_error};
use crate::proxy::forward::{self, ClientSide};
use crate::proxy::grpc;
use crate::proxy::grpc_web;
use crate::proxy::upgrade;
use crate::telemetry::metrics::RouteMetrics;
use crate::telemetry::traces::{RequestSpan, Traces};
use crate::upstream::{
    clone_head, connections, Checkout, InFlight, Outcome, PickContext, RetryPolicy, SendError, UpstreamPool,
};
use bytes::Bytes;
use http::header::CONTENT_LENGTH;
use http::uri::{PathAndQuery, Uri};
use http::{HeaderMap, HeaderValue, Request, Response, Version};
use hyper::body::Body;
use std::sync::Arc;
use tokio::time::Instant;

pub(crate) use crate::telemetry::access_log::UpstreamCall;

/// What an upstream exchange reports to: the route's metrics and the
/// request's trace span (attempt spans are its children).
#[derive(Clone, Copy)]
pub(crate) struct CallContext<'a> {
    pub(crate) metrics: Option<&'a Arc<RouteMetrics>>,
    pub(crate) trace: Option<&'a (Arc<Traces>, RequestSpan)>,
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

/// Sends the request to one of `forward`'s targets, retrying as its policy
/// allows, and turns the answer into the client's response.
pub(crate) async fn send(
    forward: &Forward,
    conn: &Connection,
    request: UpstreamRequest<'_>,
    shared: CallContext<'_>,
    exchange: &mut UpstreamCall,
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
    if exchange.keep_names {
        exchange.upstream = Some(pool.name.clone());
    }
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
    let web = pool
        .transport
        .is_multiplexed()
        .then(|| grpc_web::mode(&parts.headers))
        .flatten();
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
                        // Boxed: only a body kept for a retry is read here, and
                        // inline its reader (3.7 KB) sized every request's future.
                        Some(Box::pin(buffer_body(body, limit)).await?)
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
        let Some(picked) = pool.pick(&pick, &tried) else {
            return Err(last_error.unwrap_or_else(|| no_target(pool)));
        };
        // Counted in flight from here, holding the picked target.
        let in_flight = InFlight::to(picked);
        let target = in_flight.target();
        if exchange.keep_names {
            exchange.target = Some(target.addr.clone());
        }
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
        let sent = Instant::now();
        let attempt = connections::send(target, request, forward.timeouts.connect, sent + wait).await;
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
                pool.observe_latency(target, latency);
                pool.record(target, outcome_of(status));
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
                        let upstream_side = match status == http::StatusCode::SWITCHING_PROTOCOLS {
                            true => response.body_mut().upgraded(),
                            false => None,
                        };
                        let switched = match (upgrade.take(), upstream_side) {
                            (Some(client), Some(upstream_side)) => {
                                let protocol = response.headers().get(http::header::UPGRADE).cloned();
                                upgrade::bridge(
                                    client,
                                    upstream_side,
                                    forward.timeouts.websocket_idle,
                                    shared.metrics.cloned(),
                                    conn.active.begin(),
                                );
                                protocol
                            }
                            _ => None,
                        };
                        let (mut parts, body) = response.into_parts();
                        forward::downstream_response(&mut parts.headers, parts.version);
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
                        let mut body =
                            ResponseBody::upstream(body, forward.timeouts.response, Checkout::new(in_flight, lease));
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
                    pool.record(target, Outcome::Failure);
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
                pool.record(target, Outcome::Failure);
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
        tried.push(target.clone());
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

pub(crate) fn connect_failure(error: &SendError) -> bool {
    matches!(
        error,
        SendError::Connect(_) | SendError::ConnectTimeout(_) | SendError::Tls(_) | SendError::Protocol(_)
    )
}

pub(crate) fn replayed(replay: &Option<(http::request::Parts, Bytes)>) -> Option<Request<RequestBody>> {
    replay
        .as_ref()
        .map(|(head, bytes)| Request::from_parts(clone_head(head), RequestBody::buffered(bytes.clone())))
}

/// Reads the client's body whole, up to `cap` bytes, counted in the record.
pub(crate) async fn read_client_body(body: Inbound, cap: u64, record: &mut UpstreamCall) -> Result<Bytes, ProxyError> {
    let counter = record.bytes_in.get_or_insert_with(Arc::default).clone();
    buffer_body(RequestBody::new(body, Some(cap), counter), Some(cap)).await
}

/// Reads a (small, declared-length) request body whole so it can be replayed.
pub(crate) async fn buffer_body(body: RequestBody, limit: Option<u64>) -> Result<Bytes, ProxyError> {
    match http_body_util::BodyExt::collect(body).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) => Err(client_body_error(Fault::of(&error).unwrap_or(Fault::Unreadable), limit)),
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}
