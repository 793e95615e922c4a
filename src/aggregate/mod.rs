//! Aggregation (backend for frontend): a route with `aggregate` makes
//! several calls to upstreams and answers with one JSON object.
//!
//! Calls run in parallel, except that a call whose templates name another
//! call's answer (`{user.account_id}`) waits for it: the calls form a graph,
//! checked for cycles when the config is read. Each call goes through its
//! upstream's pool like any proxied request (balancing, retries, breakers,
//! timeouts). `run` executes them, `compose` builds the answer, `template`
//! renders their paths, headers and bodies.

mod compose;
mod run;
pub mod template;

pub(crate) use run::run;

use crate::config::model::AggregateConfig;
use crate::gateway::forward::Forward;
use crate::transform::path::JsonPath;
use http::{HeaderName, Method};
use std::time::Duration;
use template::{BodyTemplate, CallTemplate};

/// Calls one aggregate may make, at most: each holds a connection and up
/// to `max_body` of answer.
pub const MAX_CALLS: usize = 32;

#[derive(Debug)]
pub struct Aggregate {
    /// In config order; `needs` refer to them by index.
    pub calls: Vec<Call>,
    pub timeout: Duration,
    pub merge: bool,
    pub partial_header: Option<HeaderName>,
    pub partial_field: Option<String>,
    pub forward_headers: Vec<HeaderName>,
    pub max_body: u64,
}

#[derive(Debug)]
pub struct Call {
    pub name: String,
    /// The key its answer goes under.
    pub key: String,
    pub forward: Forward,
    pub method: Method,
    pub path: CallTemplate,
    pub headers: Vec<(HeaderName, CallTemplate)>,
    pub body: Option<BodyTemplate>,
    pub optional: bool,
    pub timeout: Option<Duration>,
    pub select: Vec<JsonPath>,
    pub group_by: Option<JsonPath>,
    /// The calls whose answers it needs.
    pub needs: Vec<usize>,
}

/// Compiles an `aggregate` block; `forwards` are its calls' upstreams, in
/// order (`None` where the upstream is unknown: already an error). Errors
/// are `(field, message)`, relative to the block.
pub fn compile(
    config: &AggregateConfig,
    params: &[String],
    forwards: Vec<Option<Forward>>,
) -> Result<Aggregate, Vec<(String, String)>> {
    let mut errors = Vec::new();
    if config.calls.is_empty() {
        errors.push(("calls".into(), "an aggregate needs at least one call".into()));
    }
    if config.calls.len() > MAX_CALLS {
        errors.push((
            "calls".into(),
            format!("{} calls; an aggregate makes {MAX_CALLS} at most", config.calls.len()),
        ));
    }
    let names: Vec<&str> = config.calls.keys().map(String::as_str).collect();
    let mut calls = Vec::new();
    for ((name, call), forward) in config.calls.iter().zip(forwards) {
        let at = |field: &str| format!("calls.{name}{}{field}", if field.is_empty() { "" } else { "." });
        let mut fail = |field: &str, message: String| errors.push((at(field), message));
        if name.is_empty() || name.contains(['.', '{', '}', '$']) {
            fail("", "a call's name is used in templates: no `.`, `{`, `}` or `$`".into());
        }
        if params.iter().any(|p| p == name) {
            fail(
                "",
                format!("{{{name}}} would name both a route parameter and this call: rename the call"),
            );
        }
        let method = Method::from_bytes(call.method.to_ascii_uppercase().as_bytes())
            .map_err(|_| fail("method", format!("{:?} is not an HTTP method", call.method)))
            .ok();
        if !call.path.starts_with('/') {
            fail("path", "a call's path starts with /".into());
        }
        let path = CallTemplate::parse(&call.path, params, &names)
            .map_err(|e| fail("path", e))
            .ok();
        let mut headers = Vec::new();
        for (header, value) in &call.headers {
            match (
                HeaderName::from_bytes(header.as_bytes()),
                CallTemplate::parse(value, params, &names),
            ) {
                (Ok(header), Ok(template)) => headers.push((header, template)),
                (Err(_), _) => fail(&format!("headers.{header}"), "not a header name".into()),
                (_, Err(e)) => fail(&format!("headers.{header}"), e),
            }
        }
        let body = match call.body.as_ref().map(|b| BodyTemplate::parse(b, params, &names)) {
            Some(Ok(body)) => Some(body),
            Some(Err(e)) => {
                fail("body", e);
                None
            }
            None => None,
        };
        let mut select = Vec::new();
        for (i, field) in call.select.iter().enumerate() {
            match JsonPath::parse(field) {
                Ok(path) => select.push(path),
                Err(e) => fail(&format!("select[{i}]"), e),
            }
        }
        let group_by = call
            .group_by
            .as_deref()
            .and_then(|field| JsonPath::parse(field).map_err(|e| fail("group_by", e)).ok());
        let timeout = call.timeout.map(|t| t.get());
        if timeout.is_some_and(|t| t.is_zero()) {
            fail("timeout", "must be more than 0".into());
        }
        let (Some(forward), Some(method), Some(path)) = (forward, method, path) else {
            continue;
        };
        let mut needs: Vec<usize> = path.needs().collect();
        needs.extend(headers.iter().flat_map(|(_, t)| t.needs()));
        needs.extend(body.iter().flat_map(BodyTemplate::needs));
        needs.sort_unstable();
        needs.dedup();
        calls.push(Call {
            name: name.clone(),
            key: call.key.clone().unwrap_or_else(|| name.clone()),
            forward,
            method,
            path,
            headers,
            body,
            optional: call.optional,
            timeout,
            select,
            group_by,
            needs,
        });
    }
    if calls.len() != config.calls.len() {
        // A call could not be compiled (its upstream's error is reported where
        // upstreams are checked): the graph below would be missing it.
        return Err(errors);
    }
    if errors.is_empty() {
        if let Some(cycle) = find_cycle(&calls) {
            errors.push((
                "calls".into(),
                format!("the calls wait for each other in a cycle: {cycle}"),
            ));
        }
        let mut keys: Vec<&str> = calls.iter().map(|c| c.key.as_str()).collect();
        keys.sort_unstable();
        if let Some(pair) = keys.windows(2).find(|pair| pair[0] == pair[1]) {
            errors.push((
                "calls".into(),
                format!("two calls answer under the key {:?}: give one another `as`", pair[0]),
            ));
        }
    }
    let partial_header = match config
        .partial
        .header
        .as_deref()
        .map(|h| HeaderName::from_bytes(h.as_bytes()))
    {
        Some(Ok(name)) => Some(name),
        Some(Err(_)) => {
            errors.push(("partial.header".into(), "not a header name".into()));
            None
        }
        None => None,
    };
    let mut forward_headers = Vec::new();
    for (i, header) in config.forward_headers.iter().enumerate() {
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) => forward_headers.push(name),
            Err(_) => errors.push((format!("forward_headers[{i}]"), "not a header name".into())),
        }
    }
    if config.timeout.get().is_zero() {
        errors.push(("timeout".into(), "must be more than 0".into()));
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Aggregate {
        calls,
        timeout: config.timeout.get(),
        merge: config.merge,
        partial_header,
        partial_field: config.partial.field.clone(),
        forward_headers,
        max_body: config.max_body.get(),
    })
}

/// A cycle among the calls, written `a → b → a`, if there is one.
fn find_cycle(calls: &[Call]) -> Option<String> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Open,
        Done,
    }
    fn visit(at: usize, calls: &[Call], marks: &mut [Mark], path: &mut Vec<usize>) -> Option<Vec<usize>> {
        marks[at] = Mark::Open;
        path.push(at);
        for &next in &calls[at].needs {
            match marks.get(next) {
                Some(Mark::Open) => {
                    let start = path.iter().position(|&c| c == next).unwrap_or(0);
                    let mut cycle = path[start..].to_vec();
                    cycle.push(next);
                    return Some(cycle);
                }
                Some(Mark::New) => {
                    if let Some(cycle) = visit(next, calls, marks, path) {
                        return Some(cycle);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        marks[at] = Mark::Done;
        None
    }
    let mut marks = vec![Mark::New; calls.len()];
    for start in 0..calls.len() {
        if marks[start] == Mark::New {
            if let Some(cycle) = visit(start, calls, &mut marks, &mut Vec::new()) {
                let names: Vec<&str> = cycle.iter().map(|&i| calls[i].name.as_str()).collect();
                return Some(names.join(" → "));
            }
        }
    }
    None
}
