//! `portico explain`: what the gateway would do with a request, without
//! sending anything. The route that matches and the near misses that did
//! not (with every condition they fail), the plugins in the order they run
//! and what each would decide, and where the request would go after its
//! rewrites. Served by the CLI (on a config file) and by the admin API's
//! `POST /explain` (on the running config, with live target health).

use crate::config::model::{MatchConfig, RouteConfig};
use crate::context::RequestContext;
use crate::gateway::{Action, Forward, Gateway};
use crate::plugins::{Decision, Phase};
use crate::proxy::listener_checks::listener_decides;
use crate::proxy::phases::{canonical_route, upstream_path};
use crate::router::{request_host, Condition, Lookup, RequestHead};
use crate::upstream::{PickContext, UpstreamPool};
use http::{HeaderValue, Method, Request, Uri};
use indexmap::IndexMap;
use serde::Serialize;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The request to explain, as a client would send it.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    pub method: String,
    /// A path (`/api/users/7?x=1`) or an absolute URL, whose host is matched.
    pub url: String,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    /// The client address rules and `client_ip` hashing see (default 127.0.0.1).
    #[serde(default)]
    pub client_ip: Option<IpAddr>,
    /// The listener the request arrives on, by name (default: the first):
    /// its limits, HTTPS redirect and path policy apply.
    #[serde(default)]
    pub listener: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Explanation {
    pub request: Summary,
    /// What the client would get, in a word: `proxied`, `responded`,
    /// `not_found`, `method_not_allowed`, `bad_request`, `refused` (by the
    /// listener: a limit, or its redirect to HTTPS), `denied`, `unavailable`.
    pub outcome: &'static str,
    /// The status Portico itself would answer with; `None` when the upstream decides.
    pub status: Option<u16>,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub params: IndexMap<String, String>,
    /// Routes that match but lose on precedence, and routes that fail only
    /// some conditions, each with why.
    pub near_misses: Vec<NearMiss>,
    pub plugins: Vec<PluginStep>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<Destination>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub method: String,
    pub host: Option<String>,
    pub path: String,
    /// The path routes see, after dot segments and escapes are resolved.
    pub normalized_path: Option<String>,
    pub query: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct NearMiss {
    pub route: String,
    pub why: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct PluginStep {
    pub plugin: &'static str,
    pub phase: Phase,
    #[serde(flatten)]
    pub decision: Decision,
}

#[derive(Debug, Serialize)]
pub struct Destination {
    pub name: String,
    pub balance: String,
    /// The path and query sent upstream, after rewrites.
    pub path: String,
    pub host_header: Option<String>,
    /// The target it would go to now, if any can take it.
    pub target: Option<String>,
    pub targets: Vec<TargetState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub circuit_breaker: Option<&'static str>,
    pub timeouts: IndexMap<&'static str, String>,
    pub retries: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct TargetState {
    pub addr: String,
    pub available: bool,
    pub backup: bool,
}

/// Routes shown as misses when no route matched the path at all.
const MAX_PATH_MISSES: usize = 20;

/// Explains `question` against `gateway`. `Err` is a question that is not a
/// request (a bad method, URL or header).
pub fn explain(gateway: &Gateway, question: &Question) -> Result<Explanation, String> {
    let request = build_request(question)?;
    let (mut parts, ()) = request.into_parts();
    let host = request_host(&parts.uri, &parts.headers).map(|h| h.into_owned());
    let mut explanation = Explanation {
        request: Summary {
            method: parts.method.to_string(),
            host: host.clone(),
            path: parts.uri.path().to_string(),
            normalized_path: None,
            query: parts.uri.query().map(str::to_string),
        },
        outcome: "bad_request",
        status: Some(400),
        detail: String::new(),
        route: None,
        params: IndexMap::new(),
        near_misses: Vec::new(),
        plugins: Vec::new(),
        upstream: None,
    };
    // What the listener decides, the canonical request and the route: the
    // gateway's own first steps, as that listener takes them.
    let listener = match &question.listener {
        Some(name) => gateway.listeners.iter().find(|l| *l.name == **name),
        None => gateway.listeners.first(),
    }
    .ok_or_else(|| {
        format!(
            "no listener is named {:?}",
            question.listener.as_deref().unwrap_or_default()
        )
    })?;
    let client = SocketAddr::new(question.client_ip.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)), 0);
    if let Err(error) = listener_decides(&parts.uri, &parts.headers, listener) {
        let status = error.kind.status().as_u16();
        explanation.outcome = "refused";
        explanation.status = Some(status);
        let location = error.location.as_ref().and_then(|l| l.to_str().ok());
        explanation.detail = match location {
            Some(location) => format!(
                "listener {:?}: {}: {status} to {location}",
                &*listener.name, error.detail
            ),
            None => format!("listener {:?}: {}: {status}", &*listener.name, error.detail),
        };
        return Ok(explanation);
    }
    let lookup = match canonical_route(gateway, listener, client.ip(), &mut parts) {
        Ok((_, lookup)) => lookup,
        Err(error) => {
            explanation.detail = format!("{}: 400", error.detail);
            return Ok(explanation);
        }
    };
    let path = parts.uri.path();
    explanation.request.normalized_path = Some(path.to_string());
    let host = request_host(&parts.uri, &parts.headers).map(|h| h.into_owned());
    let head = RequestHead::of(&parts, path, host.as_deref());
    let winner = match &lookup {
        Lookup::Found { route, .. } => Some(&*route.name),
        _ => None,
    };
    explanation.near_misses = near_misses(gateway, &head, winner);

    let (route, params) = match lookup {
        Lookup::Found { route, params } => (route, params),
        Lookup::MethodNotAllowed { allow } => {
            let allow = allow_list(&allow);
            explanation.outcome = "method_not_allowed";
            explanation.status = Some(405);
            explanation.detail = format!(
                "a route matches everything but the method: 405, Allow: {}",
                allow.join(", ")
            );
            return Ok(explanation);
        }
        Lookup::NotFound => {
            explanation.outcome = "not_found";
            explanation.status = Some(404);
            explanation.detail = "no route matches: 404".into();
            return Ok(explanation);
        }
    };
    explanation.route = Some(route.name.to_string());
    explanation.params = params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();

    let request_id = HeaderValue::from_static("explain");
    let mut ctx = RequestContext::new(&request_id, client, &route.name, params.clone(), route.upstream());
    ctx.upstream_path = upstream_path(route, &params, &parts.uri);
    for (plugin, phase, decision) in route.plugins.explain(&parts, &mut ctx) {
        if let Some(status) = decision.denies {
            explanation.outcome = "denied";
            explanation.status = Some(status);
            explanation.detail = format!("{plugin} answers {status}: {}", decision.detail);
        }
        explanation.plugins.push(PluginStep {
            plugin,
            phase,
            decision,
        });
    }
    if explanation.outcome == "denied" {
        return Ok(explanation);
    }
    match &route.action {
        Action::Respond(fixed) => {
            explanation.outcome = "responded";
            explanation.status = Some(fixed.status.as_u16());
            explanation.detail = format!(
                "route {:?} answers {} itself ({} bytes); no upstream is called",
                &*route.name,
                fixed.status.as_u16(),
                fixed.body.len()
            );
        }
        Action::Aggregate(aggregate) => {
            let calls: Vec<String> = aggregate
                .calls
                .iter()
                .map(|call| {
                    let waits = call
                        .needs
                        .iter()
                        .map(|&n| aggregate.calls[n].name.as_str())
                        .collect::<Vec<_>>();
                    format!(
                        "{} → {}{}{}",
                        call.name,
                        &*call.forward.pool.name,
                        if call.optional { " (optional)" } else { "" },
                        if waits.is_empty() {
                            String::new()
                        } else {
                            format!(" after {}", waits.join(", "))
                        }
                    )
                })
                .collect();
            explanation.outcome = "aggregated";
            explanation.status = None;
            explanation.detail = format!(
                "{} calls, composed into one JSON answer within {:?}: {}",
                calls.len(),
                aggregate.timeout,
                calls.join("; ")
            );
        }
        Action::Proxy(forward) => {
            // A transcoded route binds methods and paths to gRPC methods itself.
            let grpc_path = match forward.transcode.as_deref().map(|t| t.find(&parts.method, path)) {
                None => None,
                Some(Ok((rule, _))) => Some(rule.grpc_path.to_string()),
                Some(Err(allowed)) if allowed.is_empty() => {
                    explanation.outcome = "not_found";
                    explanation.status = Some(404);
                    explanation.detail = "no gRPC method is bound to this path: 404".into();
                    return Ok(explanation);
                }
                Some(Err(allowed)) => {
                    let allow: Vec<&str> = allow_list(&allowed);
                    explanation.outcome = "method_not_allowed";
                    explanation.status = Some(405);
                    explanation.detail = format!(
                        "no gRPC method is bound to {} on this path: 405, Allow: {}",
                        parts.method,
                        allow.join(", ")
                    );
                    return Ok(explanation);
                }
            };
            let pick = PickContext {
                headers: &parts.headers,
                client_ip: client.ip(),
            };
            let service_path = ctx.upstream_path.as_deref().unwrap_or(path);
            let mut destination = destination(forward, service_path, &parts, &pick);
            if let Some(grpc_path) = grpc_path {
                destination.path = grpc_path;
            }
            let pool = &forward.pool;
            if pool.breaker.as_ref().is_some_and(|b| b.is_refusing()) {
                explanation.outcome = "unavailable";
                explanation.status = Some(503);
                explanation.detail = format!("upstream {:?}'s circuit breaker is open: 503", &*pool.name);
            } else if destination.target.is_none() {
                explanation.outcome = "unavailable";
                explanation.status = Some(503);
                explanation.detail = format!("upstream {:?} has no target that can take it: 503", &*pool.name);
            } else {
                explanation.outcome = "proxied";
                explanation.status = None;
                explanation.detail = format!("sent to upstream {:?}; its answer goes to the client", &*pool.name);
            }
            explanation.upstream = Some(destination);
        }
    }
    Ok(explanation)
}

fn allow_list(methods: &[Method]) -> Vec<&str> {
    methods.iter().map(Method::as_str).collect()
}

fn build_request(question: &Question) -> Result<Request<()>, String> {
    let method = Method::from_bytes(question.method.as_bytes())
        .map_err(|_| format!("{:?} is not an HTTP method", question.method))?;
    let uri: Uri = question
        .url
        .parse()
        .map_err(|e| format!("{:?} is not a URL or path: {e}", question.url))?;
    if uri.path_and_query().is_none() || !question.url.contains('/') {
        return Err(format!(
            "{:?} has no path: write /path or http://host/path",
            question.url
        ));
    }
    // Asked as HTTP/2 asks: the URL's authority if it has one, else Host,
    // and neither required.
    let mut builder = Request::builder()
        .method(method)
        .uri(uri)
        .version(http::Version::HTTP_2);
    for (name, value) in &question.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder.body(()).map_err(|e| format!("invalid header: {e}"))
}

/// Routes that match but lose on precedence, then routes that match the
/// path but fail another condition; if no route matches the path at all,
/// every route (up to a limit) with why.
fn near_misses(gateway: &Gateway, head: &RequestHead<'_>, winner: Option<&str>) -> Vec<NearMiss> {
    let mut shadowed = Vec::new();
    let mut partial = Vec::new();
    let mut path_misses = Vec::new();
    for (matcher, route) in gateway.routes.iter() {
        if Some(&*route.name) == winner {
            continue;
        }
        let (misses, _) = matcher.misses(head);
        let source = gateway.source.routes.iter().find(|r| *r.name == *route.name);
        if misses.is_empty() {
            shadowed.push(NearMiss {
                route: route.name.to_string(),
                why: vec![format!(
                    "matches too, but {:?} comes first (priority, host, path kind, literal length, conditions, order)",
                    winner.unwrap_or_default()
                )],
            });
            continue;
        }
        let why = misses.iter().map(|m| describe(m, head, source)).collect();
        let miss = NearMiss {
            route: route.name.to_string(),
            why,
        };
        if misses.contains(&Condition::Path) {
            path_misses.push(miss);
        } else {
            partial.push(miss);
        }
    }
    shadowed.extend(partial);
    if shadowed.is_empty() && winner.is_none() {
        path_misses.truncate(MAX_PATH_MISSES);
        return path_misses;
    }
    shadowed
}

fn describe(condition: &Condition, head: &RequestHead<'_>, route: Option<&RouteConfig>) -> String {
    let wanted: Option<&MatchConfig> = route.map(|r| &r.matcher);
    match condition {
        Condition::Path => format!(
            "path {} does not match {:?}",
            head.path,
            wanted.map(|m| m.path.as_str()).unwrap_or("?")
        ),
        Condition::Host => format!(
            "host {} is not {:?}",
            head.host.map_or("(none)".to_string(), |h| format!("{h:?}")),
            wanted.and_then(|m| m.host.as_deref()).unwrap_or("?")
        ),
        Condition::Header(name) => {
            let given = head.headers.get(name).and_then(|v| v.to_str().ok());
            let want = wanted.and_then(|m| {
                m.headers
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name.as_str()))
                    .map(|(_, v)| v.as_str())
            });
            format!(
                "header {name}: {}, wants {:?}",
                given.map_or("absent".to_string(), |g| format!("{g:?}")),
                want.unwrap_or("?")
            )
        }
        Condition::Query(key) => {
            let given = head.query.and_then(|q| {
                form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == key.as_str())
                    .map(|(_, v)| v.into_owned())
            });
            let want = wanted.and_then(|m| m.query.get(key)).map(String::as_str);
            format!(
                "query {key}: {}, wants {:?}",
                given.map_or("absent".to_string(), |g| format!("{g:?}")),
                want.unwrap_or("?")
            )
        }
        Condition::Method => format!(
            "method {} is not one of {}",
            head.method,
            wanted
                .and_then(|m| m.methods.as_ref())
                .map(|m| m.join(", "))
                .unwrap_or_default()
        ),
    }
}

/// Where the request would go: `service_path` is the path after the route's
/// rewrite, as the gateway computes it.
fn destination(
    forward: &Forward,
    service_path: &str,
    parts: &http::request::Parts,
    pick: &PickContext<'_>,
) -> Destination {
    let pool: &UpstreamPool = &forward.pool;
    let mut upstream_path = service_path.to_string();
    if let Some(query) = parts.uri.query() {
        upstream_path.push('?');
        upstream_path.push_str(query);
    }
    let target = pool.preview(pick);
    let client_host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()));
    let host_header = match (forward.preserve_host, &client_host) {
        (true, Some(host)) => Some(host.clone()),
        _ => target
            .as_ref()
            .and_then(|t| t.host_header.to_str().ok().map(str::to_string)),
    };
    let (primaries, backups) = pool.targets();
    let targets = primaries
        .iter()
        .map(|t| (t, false))
        .chain(backups.iter().map(|t| (t, true)))
        .map(|(t, backup)| TargetState {
            addr: t.addr.to_string(),
            available: t.health.available(),
            backup,
        })
        .collect();
    let mut timeouts = IndexMap::new();
    timeouts.insert(
        "connect",
        humantime::format_duration(forward.timeouts.connect).to_string(),
    );
    timeouts.insert(
        "response",
        humantime::format_duration(forward.timeouts.response).to_string(),
    );
    if let Some(request) = forward.request_timeout {
        timeouts.insert("request", humantime::format_duration(request).to_string());
    }
    let retries = forward.retry.as_ref().map(|r| {
        let mut on: Vec<String> = r.on_statuses.iter().map(|s| s.as_u16().to_string()).collect();
        if r.on_connect_failure {
            on.insert(0, "connect_failure".into());
        }
        let methods = if r.idempotent_only {
            "idempotent methods"
        } else {
            "any method"
        };
        let applies = if r.allows(&parts.method) {
            ""
        } else {
            " (not for this method)"
        };
        format!(
            "up to {} on {}, {methods}, within a {:.0}% budget{applies}",
            r.attempts,
            on.join(", "),
            r.budget * 100.0
        )
    });
    Destination {
        name: pool.name.to_string(),
        balance: serde_json::to_value(pool.balance())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        path: upstream_path,
        host_header,
        target: target.map(|t| t.addr.to_string()),
        targets,
        circuit_breaker: pool.breaker.as_ref().map(|b| b.state().as_str()),
        timeouts,
        retries,
    }
}

/// The text `portico explain` prints.
impl fmt::Display for Explanation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = &self.request;
        write!(f, "request   {} {}", r.method, r.path)?;
        if let Some(query) = &r.query {
            write!(f, "?{query}")?;
        }
        if let Some(host) = &r.host {
            write!(f, "  (host {host})")?;
        }
        writeln!(f)?;
        if let Some(normalized) = r.normalized_path.as_ref().filter(|n| **n != r.path) {
            writeln!(f, "          routed as {normalized}")?;
        }
        match &self.route {
            Some(route) => writeln!(f, "route     {route}")?,
            None => writeln!(f, "route     none")?,
        }
        if !self.params.is_empty() {
            let params: Vec<String> = self.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
            writeln!(f, "params    {}", params.join(", "))?;
        }
        if !self.near_misses.is_empty() {
            writeln!(f, "not these")?;
            for miss in &self.near_misses {
                writeln!(f, "  {}: {}", miss.route, miss.why.join("; "))?;
            }
        }
        if !self.plugins.is_empty() {
            writeln!(f, "plugins")?;
            for step in &self.plugins {
                let verdict = match step.decision.denies {
                    Some(status) => format!("DENIES {status}: "),
                    None => String::new(),
                };
                let phase = serde_json::to_value(step.phase)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                writeln!(f, "  {phase:<18} {}: {verdict}{}", step.plugin, step.decision.detail)?;
            }
        }
        if let Some(up) = &self.upstream {
            let available = up.targets.iter().filter(|t| t.available).count();
            writeln!(
                f,
                "upstream  {} ({}, {} of {} targets available{})",
                up.name,
                up.balance,
                available,
                up.targets.len(),
                up.circuit_breaker.map(|b| format!(", breaker {b}")).unwrap_or_default()
            )?;
            writeln!(
                f,
                "  to      {}",
                up.target.as_deref().unwrap_or("(no target can take it)")
            )?;
            writeln!(f, "  path    {}", up.path)?;
            if let Some(host) = &up.host_header {
                writeln!(f, "  Host    {host}")?;
            }
            let timeouts: Vec<String> = up.timeouts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            writeln!(f, "  timeouts {}", timeouts.join(", "))?;
            if let Some(retries) = &up.retries {
                writeln!(f, "  retries {retries}")?;
            }
        }
        let status = self.status.map(|s| format!("{s} ")).unwrap_or_default();
        writeln!(f, "answer    {}{}: {}", status, self.outcome, self.detail)
    }
}
