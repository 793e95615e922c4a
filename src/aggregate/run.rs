//! Running an aggregate's calls: every call whose needs are answered starts
//! at once; the others start as their needs are answered. The whole is
//! bounded by the aggregate's `timeout`, each call by its own.

use super::compose::compose;
use super::template::Escape;
use super::{Aggregate, Call};
use crate::body::ResponseBody;
use crate::context::RequestContext;
use crate::error::{ErrorKind, ProxyError};
use crate::proxy::connection::Connection;
use crate::proxy::exchange::{self, CallContext, ClientBody, UpstreamCall, UpstreamRequest};
use crate::transform::{self, ReadAnswer};
use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt};
use http::header::{ACCEPT, CONTENT_LENGTH, CONTENT_TYPE};
use http::{HeaderValue, Request, Response};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use tokio::time::Instant;

/// Why a call has no answer.
enum Failure {
    /// The upstream refused, broke, timed out or answered what cannot be used.
    Failed(ProxyError),
    /// A call it needs has no answer.
    Needs(String),
}

type Running<'a> = Pin<Box<dyn Future<Output = (usize, Result<Value, ProxyError>)> + Send + 'a>>;

/// Makes the calls and answers with their composite.
pub(crate) async fn run(
    aggregate: &Aggregate,
    conn: &Connection,
    request: &http::request::Parts,
    ctx: &RequestContext<'_>,
    shared: CallContext<'_>,
) -> Result<Response<ResponseBody>, ProxyError> {
    let deadline = Instant::now() + aggregate.timeout;
    let count = aggregate.calls.len();
    let mut answers: Vec<Option<Value>> = vec![None; count];
    let mut failures: Vec<Option<Failure>> = (0..count).map(|_| None).collect();
    let mut started = vec![false; count];
    let mut running: FuturesUnordered<Running<'_>> = FuturesUnordered::new();
    loop {
        // Start what can start; a call whose need failed fails at once, which
        // may let others start (or fail): repeat until nothing changes.
        let mut progressed = true;
        while progressed {
            progressed = false;
            for (i, call) in aggregate.calls.iter().enumerate() {
                let done = |n: &usize| answers[*n].is_some() || failures[*n].is_some();
                if started[i] || !call.needs.iter().all(done) {
                    continue;
                }
                started[i] = true;
                progressed = true;
                if let Some(&missing) = call.needs.iter().find(|n| failures[**n].is_some()) {
                    failures[i] = Some(Failure::Needs(aggregate.calls[missing].name.clone()));
                    continue;
                }
                let outgoing = build_request(aggregate, call, request, ctx, &answers);
                running.push(Box::pin(make_call(aggregate, i, outgoing, conn, ctx, shared)));
            }
        }
        if running.is_empty() {
            break;
        }
        tokio::select! {
            Some((i, outcome)) = running.next() => match outcome {
                Ok(answer) => answers[i] = Some(answer),
                Err(error) => failures[i] = Some(Failure::Failed(error)),
            },
            () = tokio::time::sleep_until(deadline) => {
                for (i, failure) in failures.iter_mut().enumerate() {
                    if answers[i].is_none() && failure.is_none() {
                        *failure = Some(Failure::Failed(ProxyError::new(
                            ErrorKind::UpstreamTimeout,
                            format!("not answered within the aggregate's {:?}", aggregate.timeout),
                        )));
                    }
                }
                break;
            }
        }
    }
    // The first required call without an answer, in config order, decides.
    for (call, failure) in aggregate.calls.iter().zip(&mut failures) {
        if call.optional {
            if let Some(failure) = failure {
                tracing::debug!(call = call.name, why = %describe(failure), "an optional call failed");
            }
            continue;
        }
        if let Some(failure) = failure.take() {
            return Err(required_failed(call, failure));
        }
    }
    let (body, partial) = compose(aggregate, answers);
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let mut response = Response::new(ResponseBody::full(body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if let (Some(name), false) = (&aggregate.partial_header, partial.is_empty()) {
        if let Ok(value) = HeaderValue::from_str(&partial.join(", ")) {
            headers.insert(name.clone(), value);
        }
    }
    Ok(response)
}

fn describe(failure: &Failure) -> String {
    match failure {
        Failure::Failed(error) => error.detail.to_string(),
        Failure::Needs(other) => format!("it needs call {other:?}, which has no answer"),
    }
}

/// A 502 (or 504 when it timed out) naming the call and why.
fn required_failed(call: &Call, failure: Failure) -> ProxyError {
    let kind = match &failure {
        Failure::Failed(error) if error.kind == ErrorKind::UpstreamTimeout => ErrorKind::UpstreamTimeout,
        _ => ErrorKind::UpstreamBroken,
    };
    let mut error = ProxyError::new(kind, format!("call {:?} failed: {}", call.name, describe(&failure)));
    error.extra = Some(json!({ "call": call.name }));
    error
}

/// A call's request: its templates rendered over the client's request and
/// the answers so far, and the client headers every call carries.
fn build_request(
    aggregate: &Aggregate,
    call: &Call,
    client: &http::request::Parts,
    ctx: &RequestContext<'_>,
    answers: &[Option<Value>],
) -> Result<(http::request::Parts, Bytes), ProxyError> {
    let path = call.path.render(client, ctx, answers, Escape::Url);
    let mut builder = Request::builder().method(call.method.clone()).uri(path.as_str());
    for name in &aggregate.forward_headers {
        for value in client.headers.get_all(name) {
            builder = builder.header(name, value);
        }
    }
    let (mut parts, ()) = builder
        .body(())
        .map_err(|_| {
            ProxyError::new(
                ErrorKind::BadRequest,
                format!("call {:?}: {path:?} is not a valid path", call.name),
            )
        })?
        .into_parts();
    parts
        .headers
        .insert(ACCEPT, HeaderValue::from_static("application/json"));
    for (name, template) in &call.headers {
        let value = template.render(client, ctx, answers, Escape::Raw);
        // A value that cannot be a header (a newline from a client) is left out.
        if let Ok(value) = HeaderValue::from_str(&value) {
            parts.headers.insert(name.clone(), value);
        }
    }
    let body = match &call.body {
        Some(body) => {
            let bytes = Bytes::from(serde_json::to_vec(&body.render(client, ctx, answers)).unwrap_or_default());
            parts
                .headers
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            parts.headers.insert(CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            bytes
        }
        None => Bytes::new(),
    };
    Ok((parts, body))
}

/// One call, through its upstream's pool, to its answer as JSON.
async fn make_call<'a>(
    aggregate: &'a Aggregate,
    index: usize,
    outgoing: Result<(http::request::Parts, Bytes), ProxyError>,
    conn: &'a Connection,
    ctx: &'a RequestContext<'_>,
    shared: CallContext<'a>,
) -> (usize, Result<Value, ProxyError>) {
    let call = &aggregate.calls[index];
    let exchange = async {
        let (parts, body) = outgoing?;
        let request = UpstreamRequest {
            parts,
            body: ClientBody::Transformed(body),
            path_and_query: None,
            request_id: ctx.request_id,
            // Made by the gateway, from a body read within the limit.
            body_limit: None,
            upgrade: None,
        };
        let response = exchange::send(&call.forward, conn, request, shared, &mut UpstreamCall::default()).await?;
        let (head, body) = response.into_parts();
        if !head.status.is_success() {
            return Err(ProxyError::new(
                ErrorKind::UpstreamBroken,
                format!("upstream {:?} answered {}", &*call.forward.pool.name, head.status),
            ));
        }
        if !transform::is_json(&head.headers) {
            return Err(ProxyError::new(
                ErrorKind::UpstreamBroken,
                format!(
                    "upstream {:?} answered something other than JSON",
                    &*call.forward.pool.name
                ),
            ));
        }
        let bytes = match transform::read_response(body, aggregate.max_body, true).await? {
            ReadAnswer::Whole(bytes) => bytes,
            // Not returned when the answer must be read; said for completeness.
            ReadAnswer::TooLarge(_) => {
                return Err(ProxyError::new(
                    ErrorKind::UpstreamBroken,
                    "the answer is over max_body",
                ))
            }
        };
        transform::parse_json(&bytes).map_err(|e| {
            ProxyError::new(
                ErrorKind::UpstreamBroken,
                format!("upstream {:?} answered {e}", &*call.forward.pool.name),
            )
        })
    };
    let outcome = match call.timeout {
        Some(limit) => tokio::time::timeout(limit, exchange).await.unwrap_or_else(|_| {
            Err(ProxyError::new(
                ErrorKind::UpstreamTimeout,
                format!("not answered within its {limit:?}"),
            ))
        }),
        None => exchange.await,
    };
    (index, outcome)
}
