//! Compiles `routes[]`: matches, actions (proxy, respond, aggregate) and
//! their plugin chains, checking the names they refer to.

use crate::config::check::{check_name, check_positive};
use crate::config::error::{list_names, suggestion, ConfigErrors};
use crate::config::model::*;
use crate::consumers::Consumers;
use crate::gateway::{Action, FixedResponse, Forward, Route};
use crate::plugins::{BuildContext as PluginContext, PluginChain, PluginState, REGISTRY};
use crate::proxy::rewrite::Rewrite;
use crate::ratelimit::local::LocalStore;
use crate::ratelimit::redis::RedisStore;
use crate::router::Matcher;
use crate::telemetry::metrics::Metrics;
use crate::upstream::compile::compile_retries;
use crate::upstream::{Timeouts, UpstreamPool};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use indexmap::IndexMap;
use std::collections::HashSet;
use std::sync::Arc;

/// What routes may refer to.
pub(crate) struct Known<'a> {
    pub(crate) config: &'a ConfigFile,
    pub(crate) pools: &'a IndexMap<String, Arc<UpstreamPool>>,
    pub(crate) unparsed_upstreams: &'a [String],
    pub(crate) metrics: &'a Arc<Metrics>,
    pub(crate) consumers: &'a Arc<Consumers>,
    pub(crate) local_limits: &'a Arc<LocalStore>,
    pub(crate) shared: &'a Arc<PluginState>,
    pub(crate) redis: Option<Arc<RedisStore>>,
}

pub(crate) fn compile_routes(known: &Known<'_>, errors: &mut ConfigErrors) -> Vec<(Matcher, Route)> {
    let config = known.config;
    let mut names = HashSet::new();
    // The route table keeps this list: sized once, it holds no spare capacity.
    let mut out = Vec::with_capacity(config.routes.len());
    let this_build = PluginState::default();
    for (i, route) in config.routes.iter().enumerate() {
        let path = format!("routes[{i}]");
        let before = errors.len();
        check_name(&format!("{path}.name"), &route.name, &mut names, "route", errors);
        let matcher = Matcher::compile(&route.matcher, route.priority)
            .map_err(|field_errors| errors.extend_at(&format!("{path}.match"), field_errors));
        let context = PluginContext {
            consumers: known.consumers,
            metrics: known.metrics,
            local_limits: known.local_limits,
            shared: known.shared,
            this_build: &this_build,
            redis: known.redis.as_ref(),
        };
        let params = matcher.as_ref().map(|m| m.path.param_names()).unwrap_or_default();
        let plugins = PluginChain::build(
            REGISTRY,
            &config.plugins,
            &route.plugins,
            &path,
            &route.name,
            &params,
            &context,
        )
        .map_err(|plugin_errors| {
            for (at, message) in plugin_errors {
                errors.push(at, message);
            }
        });
        let action = match (&route.upstream, &route.respond) {
            _ if route.aggregate.is_some() && (route.upstream.is_some() || route.respond.is_some()) => {
                errors.push(&path, "a route has one of `upstream`, `respond` or `aggregate`");
                None
            }
            (None, None) if route.aggregate.is_some() => {
                let params = matcher.as_ref().map(|m| m.path.param_names()).unwrap_or_default();
                compile_aggregate(&path, route, &params, known, errors).map(Action::Aggregate)
            }
            (Some(upstream), None) => {
                let params = matcher.as_ref().map(|m| m.path.param_names()).unwrap_or_default();
                compile_forward(&path, route, upstream, &params, known, errors).map(Action::Proxy)
            }
            (None, Some(respond)) => {
                refuse_forward_settings(&path, route, "applies only to routes with an `upstream`", errors);
                compile_respond(&format!("{path}.respond"), respond, errors).map(Action::Respond)
            }
            (Some(_), Some(_)) => {
                errors.push(&path, "a route has either `upstream` or `respond`, not both");
                None
            }
            (None, None) => {
                errors.push(
                    &path,
                    "the route needs somewhere to go: add `upstream: NAME` or `respond: {status: 200}`",
                );
                None
            }
        };
        if let (Ok(matcher), Ok(plugins), Some(action), true) = (matcher, plugins, action, errors.len() == before) {
            out.push((
                matcher,
                Route {
                    name: route.name.as_str().into(),
                    metrics: Arc::new(known.metrics.route(&route.name, route.upstream.as_deref())),
                    action,
                    plugins,
                    max_request_body: route.max_request_body.map(|size| size.get()),
                },
            ));
        }
    }
    out
}

/// `retries`, `rewrite`, `preserve_host` and `timeouts` shape the one
/// upstream exchange of a proxying route; elsewhere they are errors.
fn refuse_forward_settings(path: &str, route: &RouteConfig, why: &str, errors: &mut ConfigErrors) {
    for (field, set) in [
        ("retries", route.retries.is_some()),
        ("rewrite", route.rewrite.is_some()),
        ("preserve_host", route.preserve_host),
        ("timeouts", route.timeouts.is_some()),
    ] {
        if set {
            errors.push(format!("{path}.{field}"), why);
        }
    }
}

fn compile_aggregate(
    path: &str,
    route: &RouteConfig,
    params: &[String],
    known: &Known<'_>,
    errors: &mut ConfigErrors,
) -> Option<crate::aggregate::Aggregate> {
    let config = route.aggregate.as_ref()?;
    refuse_forward_settings(
        path,
        route,
        "applies to routes with an `upstream`; an aggregate's calls use their upstreams' settings",
        errors,
    );
    // Each call goes through its upstream's pool with the upstream's own settings.
    let forwards = config
        .calls
        .iter()
        .map(|(name, call)| {
            let at = format!("{path}.aggregate.calls.{name}");
            find_pool(&at, &call.upstream, known, errors).map(|pool| Forward {
                pool: pool.clone(),
                timeouts: pool.timeouts,
                request_timeout: None,
                retry: pool.retry.clone(),
                rewrite: Rewrite::default(),
                preserve_host: false,
                transcode: None,
            })
        })
        .collect();
    crate::aggregate::compile(config, params, forwards)
        .map_err(|field_errors| errors.extend_at(&format!("{path}.aggregate"), field_errors))
        .ok()
}

fn compile_forward(
    path: &str,
    route: &RouteConfig,
    upstream: &str,
    params: &[String],
    known: &Known<'_>,
    errors: &mut ConfigErrors,
) -> Option<Forward> {
    // Every part is checked before any is used, so that all errors are reported.
    let pool = find_pool(path, upstream, known, errors);
    let rewrite = match &route.rewrite {
        Some(rewrite) => Rewrite::compile(rewrite, params)
            .map_err(|field_errors| errors.extend_at(&format!("{path}.rewrite"), field_errors))
            .ok(),
        None => Some(Rewrite::default()),
    };
    let retry = match &route.retries {
        Some(retries) => compile_retries(&format!("{path}.retries"), retries, errors),
        None => pool.and_then(|pool| pool.retry.clone()),
    };
    let overrides = route.timeouts.as_deref().copied().unwrap_or_default();
    for (field, value) in [
        ("connect", overrides.connect),
        ("response", overrides.response),
        ("request", overrides.request),
        ("websocket_idle", overrides.websocket_idle),
    ] {
        if let Some(value) = value {
            check_positive(&format!("{path}.timeouts.{field}"), value, errors);
        }
    }
    let (pool, rewrite) = (pool?, rewrite?);
    let timeouts = Timeouts {
        connect: overrides.connect.map_or(pool.timeouts.connect, |d| d.get()),
        response: overrides.response.map_or(pool.timeouts.response, |d| d.get()),
        websocket_idle: overrides
            .websocket_idle
            .map_or(pool.timeouts.websocket_idle, |d| d.get()),
    };
    let transcode = match &route.grpc_transcode {
        None => None,
        Some(config) => {
            let at = format!("{path}.grpc_transcode");
            if !pool.transport.is_multiplexed() {
                errors.push(
                    &at,
                    format!(
                        "gRPC needs HTTP/2: give upstream {:?} `protocol: h2c` or `http2`",
                        &*pool.name
                    ),
                );
            }
            if route.rewrite.is_some() {
                errors.push(&at, "the gRPC method sets the upstream path: remove `rewrite`");
            }
            match crate::transcode::Transcoder::compile(config) {
                Ok(transcoder) => Some(Arc::new(transcoder)),
                Err(problems) => {
                    errors.extend_at(&at, problems);
                    None
                }
            }
        }
    };
    Some(Forward {
        pool: pool.clone(),
        timeouts,
        request_timeout: overrides.request.map(|d| d.get()),
        retry,
        rewrite,
        preserve_host: route.preserve_host,
        transcode,
    })
}

fn find_pool<'a>(
    path: &str,
    upstream: &str,
    known: &Known<'a>,
    errors: &mut ConfigErrors,
) -> Option<&'a Arc<UpstreamPool>> {
    if let Some(pool) = known.pools.get(upstream) {
        return Some(pool);
    }
    // An upstream that exists but failed to parse or compile has its own errors already.
    let declared = known.config.upstreams.keys().chain(known.unparsed_upstreams);
    if !declared.clone().any(|name| name == upstream) {
        errors.push(
            format!("{path}.upstream"),
            format!(
                "unknown upstream {upstream:?}{}; {}",
                suggestion(upstream, declared.clone().map(String::as_str)),
                match list_names(declared.map(String::as_str), 12) {
                    names if names.is_empty() => "no upstreams are declared: add one under `upstreams:`".to_string(),
                    names => format!("the upstreams are {names}"),
                }
            ),
        );
    }
    None
}

fn compile_respond(path: &str, respond: &RespondConfig, errors: &mut ConfigErrors) -> Option<FixedResponse> {
    let before = errors.len();
    let status = StatusCode::from_u16(respond.status)
        .ok()
        .filter(|s| (200..=599).contains(&s.as_u16()));
    if status.is_none() {
        errors.push(
            format!("{path}.status"),
            format!("{} is not a final status: use 200 to 599", respond.status),
        );
    }
    let mut headers = HeaderMap::new();
    for (name, value) in &respond.headers {
        match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            (Ok(name), Ok(value)) => {
                headers.append(name, value);
            }
            _ => errors.push(format!("{path}.headers.{name}"), "not a valid header name and value"),
        }
    }
    let body = match (&respond.body, &respond.json) {
        (Some(_), Some(_)) => {
            errors.push(path, "give either `body` or `json`, not both");
            Bytes::new()
        }
        (Some(body), None) => {
            if !headers.contains_key(http::header::CONTENT_TYPE) {
                headers.insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; charset=utf-8"),
                );
            }
            Bytes::from(body.clone())
        }
        (None, Some(json)) => {
            if !headers.contains_key(http::header::CONTENT_TYPE) {
                headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            }
            Bytes::from(json.to_string())
        }
        (None, None) => Bytes::new(),
    };
    match status {
        Some(status) if errors.len() == before => Some(FixedResponse { status, headers, body }),
        _ => None,
    }
}
