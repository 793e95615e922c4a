//! From the file model to the runtime model ([`Compiled`]), checking what serde
//! cannot: names that refer to each other, patterns, addresses, combinations.
//!
//! Checking and compiling are one pass: each pattern is parsed by the module
//! that owns its syntax (router, rewrite, upstream), once, and a config that
//! compiles is by construction a valid one.

use super::error::{list_names, suggestion, ConfigErrors};
use super::model::*;
use super::units::parse_network;
use crate::consumers::Consumers;
use crate::gateway::{
    Action, AdminSettings, Compiled, Drain, FixedResponse, Forward, Gateway, ListenerSettings, Route,
};
use crate::plugins::{BuildContext as PluginContext, PluginChain, PluginState, REGISTRY};
use crate::proxy::admission::AdmissionLimits;
use crate::proxy::rewrite::Rewrite;
use crate::ratelimit::local::LocalStore;
use crate::ratelimit::redis::RedisStore;
use crate::router::{Matcher, RouteTable};
use crate::telemetry::access_log::{AccessLog, ALL_FIELDS};
use crate::telemetry::metrics::Metrics;
use crate::telemetry::traces::{traces_url, Traces};
use crate::upstream::discovery::{self, Discovery};
use crate::upstream::health::Thresholds;
use crate::upstream::health_check::{self, ActiveCheck};
use crate::upstream::{
    parse_target, BreakerPolicy, HashOn, PassivePolicy, Resilience, RetryPolicy, TargetSpec, Timeouts, Transport,
    UpstreamPool,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use indexmap::IndexMap;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

/// `unparsed_upstreams` names upstreams whose blocks had errors of their own:
/// routes may name them without being reported again.
pub fn compile(
    config: &ConfigFile,
    unparsed_upstreams: &[String],
    context: &BuildContext<'_>,
) -> Result<Compiled, ConfigErrors> {
    let mut errors = ConfigErrors::default();
    let listeners = compile_listeners(&config.listeners, &mut errors);
    let admin = config
        .admin
        .as_ref()
        .and_then(|admin| compile_admin(admin, &listeners, &mut errors));
    let upstreams = compile_upstreams(&config.upstreams, context, &mut errors);
    let consumers = Arc::new(Consumers::compile(&config.consumers).unwrap_or_else(|consumer_errors| {
        for (at, message) in consumer_errors {
            errors.push(at, message);
        }
        Consumers::default()
    }));
    let redis = config
        .cluster
        .as_ref()
        .and_then(|cluster| cluster.redis.as_deref())
        .and_then(|url| {
            RedisStore::shared(url)
                .map_err(|e| errors.push("cluster.redis", e))
                .ok()
        });
    let known = Known {
        consumers: &consumers,
        local_limits: context.local_limits,
        shared: context.plugin_state,
        redis,
        config,
        pools: &upstreams,
        unparsed_upstreams,
        metrics: context.metrics,
    };
    let routes = compile_routes(&known, &mut errors);
    check_positive("shutdown.drain_timeout", config.shutdown.drain_timeout, &mut errors);
    if config.shutdown.close_idle_after > config.shutdown.drain_timeout {
        errors.push("shutdown.close_idle_after", "must not be longer than `drain_timeout`");
    }
    let access_log = compile_access_log(&config.access_log, &mut errors);
    let traces = config
        .tracing
        .as_ref()
        .and_then(|tracing| compile_tracing(tracing, context, &mut errors));
    let trusted_headers =
        crate::consumers::trusted_headers(routes.iter().flat_map(|(_, route)| route.plugins.trusted_headers()));
    errors.into_result(Compiled {
        gateway: Gateway {
            trusted_headers,
            routes: RouteTable::new(routes),
            upstreams,
            access_log,
            metrics: context.metrics.clone(),
            unmatched: context.metrics.unmatched(),
            source: config.clone(),
            hash: String::new(),
            traces,
            // The dashboard is the admin API's: without one, nothing is kept.
            live: admin.as_ref().map(|_| context.metrics.live.clone()),
        },
        listeners,
        admin,
        drain: Drain {
            timeout: config.shutdown.drain_timeout.get(),
            close_idle_after: config.shutdown.close_idle_after.get(),
        },
    })
}

/// What a build may take from outside the file: the process's metrics, and
/// the config running now, whose unchanged upstreams carry over with their
/// state (health, breakers, connections, discovered targets).
pub struct BuildContext<'a> {
    pub metrics: &'a Arc<Metrics>,
    /// Rate-limit counters kept in this process, across reloads.
    pub local_limits: &'a Arc<LocalStore>,
    /// What plugins keep across reloads (in-flight counts).
    pub plugin_state: &'a Arc<PluginState>,
    pub previous: Option<&'a Gateway>,
}

fn compile_admin(
    admin: &AdminConfig,
    listeners: &[ListenerSettings],
    errors: &mut ConfigErrors,
) -> Option<AdminSettings> {
    let before = errors.len();
    let addr = admin
        .addr
        .parse::<SocketAddr>()
        .map_err(|_| {
            errors.push(
                "admin.addr",
                format!("{:?} is not ip:port: write it like 127.0.0.1:9901", admin.addr),
            )
        })
        .ok();
    if let Some(addr) = addr.filter(|a| a.port() != 0) {
        if let Some(listener) = listeners.iter().find(|l| l.addr == addr) {
            errors.push(
                "admin.addr",
                format!(
                    "{addr} is also listener {:?}'s address: give the admin API a port of its own",
                    &*listener.name
                ),
            );
        }
    }
    if admin.token.len() < 16 {
        errors.push(
            "admin.token",
            "the token must be at least 16 characters; generate one (`openssl rand -hex 32`) and pass it as ${env:NAME}",
        );
    }
    match addr {
        Some(addr) if errors.len() == before => Some(AdminSettings {
            addr,
            token: admin.token.clone().into(),
        }),
        _ => None,
    }
}

/// The tracer: the running one when the block is unchanged, so that spans
/// queued for export are not lost to a reload.
fn compile_tracing(
    config: &TracingConfig,
    context: &BuildContext<'_>,
    errors: &mut ConfigErrors,
) -> Option<Arc<Traces>> {
    let before = errors.len();
    check_positive("tracing.otlp.export_interval", config.otlp.export_interval, errors);
    check_positive("tracing.otlp.timeout", config.otlp.timeout, errors);
    if let Err(e) = traces_url(&config.otlp.endpoint) {
        errors.push("tracing.otlp.endpoint", e);
    }
    if config.service_name.is_empty() {
        errors.push(
            "tracing.service_name",
            "give the service a name, or leave it out for `portico`",
        );
    }
    if errors.len() > before {
        return None;
    }
    let running = context.previous.and_then(|p| p.traces.as_ref());
    if let Some(traces) = running.filter(|t| t.config == *config) {
        return Some(traces.clone());
    }
    match Traces::new(config) {
        Ok(traces) => Some(Arc::new(traces)),
        Err(e) => {
            errors.push("tracing.otlp", e);
            None
        }
    }
}

fn compile_access_log(config: &AccessLogConfig, errors: &mut ConfigErrors) -> Option<Arc<AccessLog>> {
    if let Some(fields) = &config.fields {
        if fields.is_empty() {
            errors.push(
                "access_log.fields",
                "list at least one field, or leave `fields` out for all of them",
            );
        }
        if config.format == LogFormat::Combined {
            errors.push(
                "access_log.fields",
                "`fields` applies to `format: json`; the combined format is fixed",
            );
        }
    }
    if config.file.as_deref() == Some("") {
        errors.push("access_log.file", "give a path, or leave `file` out to log to stdout");
    }
    config.enabled.then(|| {
        Arc::new(AccessLog {
            format: config.format,
            fields: config.fields.clone().unwrap_or_else(|| ALL_FIELDS.to_vec()),
        })
    })
}

fn compile_listeners(listeners: &[ListenerConfig], errors: &mut ConfigErrors) -> Vec<ListenerSettings> {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        check_name(&format!("{path}.name"), &listener.name, &mut names, "listener", errors);
        let addr = match listener.addr.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                errors.push(
                    format!("{path}.addr"),
                    format!(
                        "{:?} is not ip:port: write it like 127.0.0.1:8080 or [::]:8080",
                        listener.addr
                    ),
                );
                continue;
            }
        };
        if addr.port() != 0 && !addrs.insert(addr) {
            errors.push(format!("{path}.addr"), format!("{addr} is used by another listener"));
        }
        check_positive(
            &format!("{path}.timeouts.header_read"),
            listener.timeouts.header_read,
            errors,
        );
        check_positive(&format!("{path}.timeouts.idle"), listener.timeouts.idle, errors);
        check_positive(
            &format!("{path}.timeouts.body_read"),
            listener.timeouts.body_read,
            errors,
        );
        let limits = &listener.limits;
        let admission = compile_admission(limits, &path, errors);
        if limits.max_headers == 0 {
            errors.push(format!("{path}.limits.max_headers"), "must be at least 1");
        }
        if limits.max_header_bytes.get() < 1024 {
            errors.push(format!("{path}.limits.max_header_bytes"), "must be at least 1KiB");
        }
        if limits.max_uri_bytes.get() < 256 {
            errors.push(format!("{path}.limits.max_uri_bytes"), "must be at least 256 bytes");
        }
        if limits.http2_max_streams == 0 {
            errors.push(format!("{path}.limits.http2_max_streams"), "must be at least 1");
        }
        let min_rate = limits.min_body_rate.map(|rate| {
            let at = format!("{path}.limits.min_body_rate");
            if rate.per_second.get() == 0 {
                errors.push(
                    format!("{at}.per_second"),
                    "must be more than 0; to turn the check off, set min_body_rate: null",
                );
            }
            check_positive(&format!("{at}.grace"), rate.grace, errors);
            crate::body::pace::MinRate {
                per_second: rate.per_second.get(),
                grace: rate.grace.get(),
            }
        });
        let tls = listener.tls.as_ref().and_then(|tls| {
            crate::proxy::tls::compile(tls)
                .map_err(|field_errors| errors.extend_at(&format!("{path}.tls"), field_errors))
                .ok()
                .map(Arc::new)
        });
        out.push(ListenerSettings {
            name: listener.name.as_str().into(),
            addr,
            header_read_timeout: listener.timeouts.header_read.get(),
            idle_timeout: listener.timeouts.idle.get(),
            max_header_bytes: usize::try_from(limits.max_header_bytes.get()).unwrap_or(usize::MAX),
            max_headers: limits.max_headers,
            max_request_body: limits.max_request_body.map(|size| size.get()),
            max_uri_bytes: usize::try_from(limits.max_uri_bytes.get()).unwrap_or(usize::MAX),
            pace: crate::body::pace::Pace {
                body_read: listener.timeouts.body_read.get(),
                min_rate,
            },
            admission,
            http2_max_streams: limits.http2_max_streams,
            tls,
            hsts: listener.tls.as_ref().and_then(|t| t.hsts.as_ref()).and_then(|hsts| {
                let mut value = format!("max-age={}", hsts.max_age.get().as_secs());
                if hsts.include_subdomains {
                    value.push_str("; includeSubDomains");
                }
                if hsts.preload {
                    value.push_str("; preload");
                }
                http::HeaderValue::from_str(&value).ok()
            }),
            redirect_https: listener.redirect_https,
            path: crate::router::PathPolicy::from(&listener.path),
            trusted_proxies: compile_networks(&listener.trusted_proxies, &format!("{path}.trusted_proxies"), errors),
        });
        if listener.redirect_https.is_some() && listener.tls.is_some() {
            errors.push(
                format!("{path}.redirect_https"),
                "a TLS listener is HTTPS already: set it on a plain one",
            );
        }
    }
    out
}

/// Addresses and CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`, `10.1.0.1`).
pub fn compile_networks(list: &[String], at: &str, errors: &mut ConfigErrors) -> Vec<ipnet::IpNet> {
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| match parse_network(text) {
            Some(net) => Some(net),
            None => {
                errors.push(
                    format!("{at}[{i}]"),
                    format!("{text:?} is not an address or CIDR block, like 10.0.0.0/8 or 2001:db8::/32"),
                );
                None
            }
        })
        .collect()
}

/// A listener's connection caps and per-IP rates.
fn compile_admission(limits: &ListenerLimits, path: &str, errors: &mut ConfigErrors) -> AdmissionLimits {
    use crate::proxy::admission::Rate;
    for (field, value) in [
        ("max_connections", limits.max_connections),
        ("max_connections_per_ip", limits.max_connections_per_ip),
    ] {
        if value == Some(0) {
            errors.push(
                format!("{path}.limits.{field}"),
                "must be at least 1; leave it out for no limit",
            );
        }
    }
    let mut rate = |field: &str, counted: &str, count: u32, per: crate::config::units::Duration| {
        if count == 0 {
            errors.push(format!("{path}.limits.{field}.{counted}"), "must be at least 1");
        }
        check_positive(&format!("{path}.limits.{field}.per"), per, errors);
        Rate { count, per: per.get() }
    };
    AdmissionLimits {
        max_connections: limits.max_connections,
        max_connections_per_ip: limits.max_connections_per_ip,
        connection_rate_per_ip: limits
            .connection_rate_per_ip
            .map(|r| rate("connection_rate_per_ip", "connections", r.connections, r.per)),
        request_rate_per_ip: limits
            .request_rate_per_ip
            .map(|r| rate("request_rate_per_ip", "requests", r.requests, r.per)),
    }
}

fn compile_upstreams(
    upstreams: &IndexMap<String, UpstreamConfig>,
    context: &BuildContext<'_>,
    errors: &mut ConfigErrors,
) -> IndexMap<String, Arc<UpstreamPool>> {
    let mut out = IndexMap::new();
    for (name, upstream) in upstreams {
        let path = format!("upstreams.{name}");
        let before = errors.len();
        if !valid_name(name) {
            errors.push(&path, "upstream names use letters, digits, `-` and `_`");
        }
        let discovery = compile_discovery(&path, upstream, errors);
        if upstream.targets.is_empty() && discovery.is_none() {
            errors.push(
                format!("{path}.targets"),
                "no targets: list at least one `host:port`, or use `discovery`",
            );
        }
        let resilience = compile_resilience(&path, upstream, errors);
        let mut specs = Vec::new();
        let mut seen = HashSet::new();
        for (i, target) in upstream.targets.iter().enumerate() {
            let target_path = format!("{path}.targets[{i}]");
            if target.weight() == 0 {
                errors.push(
                    format!("{target_path}.weight"),
                    "weight must be at least 1 (remove the target to send it nothing)",
                );
                continue;
            }
            if !seen.insert(target.addr()) {
                errors.push(
                    &target_path,
                    format!("{} is listed twice: give it a higher weight instead", target.addr()),
                );
                continue;
            }
            match parse_target(target.addr()) {
                Ok(_) => specs.push(TargetSpec {
                    addr: target.addr().to_string(),
                    weight: target.weight(),
                    backup: target.backup(),
                }),
                Err(e) => errors.push(target_path, e),
            }
        }
        if !specs.is_empty() && specs.iter().all(|t| t.backup) {
            errors.push(
                format!("{path}.targets"),
                "every target is a backup: at least one must take traffic",
            );
        }
        let hash_on = match (&upstream.balance, &upstream.hash_on) {
            (Balance::ConsistentHash, Some(text)) => HashOn::parse(text)
                .map_err(|e| errors.push(format!("{path}.hash_on"), e))
                .ok(),
            (Balance::ConsistentHash, None) => {
                errors.push(
                    &path,
                    "`balance: consistent_hash` needs `hash_on`: header:NAME, cookie:NAME or client_ip",
                );
                None
            }
            (_, Some(_)) => {
                errors.push(
                    format!("{path}.hash_on"),
                    "`hash_on` applies only with `balance: consistent_hash`",
                );
                None
            }
            (_, None) => None,
        };
        check_positive(&format!("{path}.timeouts.connect"), upstream.timeouts.connect, errors);
        check_positive(&format!("{path}.timeouts.response"), upstream.timeouts.response, errors);
        check_positive(
            &format!("{path}.timeouts.websocket_idle"),
            upstream.timeouts.websocket_idle,
            errors,
        );
        let transport = match Transport::compile(upstream.protocol, upstream.tls.as_ref()) {
            Ok(transport) => Arc::new(transport),
            Err(problems) => {
                for (field, problem) in problems {
                    errors.push(format!("{path}.{field}"), problem);
                }
                continue;
            }
        };
        if errors.len() > before {
            continue;
        }
        let timeouts = Timeouts {
            connect: upstream.timeouts.connect.get(),
            response: upstream.timeouts.response.get(),
            websocket_idle: upstream.timeouts.websocket_idle.get(),
        };
        let previous = context
            .previous
            .and_then(|p| Some((p.upstreams.get(name)?, p.source.upstreams.get(name)?)));
        // An upstream whose block (and TLS files) did not change is the same
        // pool: its health, breakers, connections and discovered targets
        // carry over. Listed targets are set again when the config is swapped
        // in (`UpstreamPool::reset_targets`), dropping any the admin API added.
        if let Some((pool, _)) = previous.filter(|(pool, config)| *config == upstream && pool.transport == transport) {
            out.insert(name.clone(), pool.clone());
            continue;
        }
        let metrics = context.metrics.pool(name);
        let mut pool = UpstreamPool::new(
            name,
            (upstream.balance, hash_on),
            (timeouts, transport),
            resilience,
            discovery,
            metrics,
        );
        // A changed upstream is a new pool, but targets it keeps keep their state.
        if let Some((old, _)) = previous {
            pool.inherit_targets(old);
        }
        match pool.configure_targets(specs) {
            Ok(()) => discovery::load_now(&pool),
            Err(e) => errors.push(format!("{path}.targets"), e),
        }
        out.insert(name.clone(), Arc::new(pool));
    }
    out
}

fn compile_discovery(path: &str, upstream: &UpstreamConfig, errors: &mut ConfigErrors) -> Option<Discovery> {
    let config = upstream.discovery.as_ref()?;
    let at = format!("{path}.discovery");
    if !upstream.targets.is_empty() {
        errors.push(&at, "use either `targets` or `discovery`, not both");
    }
    check_positive(&format!("{at}.refresh"), config.refresh, errors);
    let sources = [config.file.is_some(), config.dns.is_some(), config.dns_srv.is_some()];
    if sources.iter().filter(|set| **set).count() != 1 {
        errors.push(
            &at,
            "name one source: `file: PATH`, `dns: name:port` or `dns_srv: _http._tcp.name`",
        );
        return None;
    }
    let mut nameservers = Vec::new();
    for (i, server) in config.nameservers.iter().enumerate() {
        match server.parse::<std::net::SocketAddr>() {
            Ok(addr) => nameservers.push(addr),
            Err(_) => errors.push(
                format!("{at}.nameservers[{i}]"),
                format!("{server:?} is not ip:port, like 10.0.0.2:53"),
            ),
        }
    }
    if let Some(srv) = &config.dns_srv {
        return Some(Discovery::DnsSrv {
            name: srv.clone(),
            refresh: config.refresh.get(),
            nameservers,
        });
    }
    match (&config.file, &config.dns) {
        (Some(file), None) => Some(Discovery::File {
            path: file.into(),
            refresh: config.refresh.get(),
        }),
        (None, Some(dns)) => {
            let before = errors.len();
            let (name, port) = match dns.rsplit_once(':').map(|(name, port)| (name, port.parse::<u16>())) {
                Some((name, Ok(port))) if !name.is_empty() && port > 0 => (name.to_string(), port),
                _ => {
                    errors.push(
                        format!("{at}.dns"),
                        format!("{dns:?} needs a port: write it as name:port"),
                    );
                    (String::new(), 0)
                }
            };
            (errors.len() == before).then(|| Discovery::Dns {
                name,
                port,
                refresh: config.refresh.get(),
                nameservers,
            })
        }
        _ => None,
    }
}

fn compile_resilience(path: &str, upstream: &UpstreamConfig, errors: &mut ConfigErrors) -> Resilience {
    let mut resilience = Resilience::default();
    if let Some(health) = &upstream.health_check {
        if health.active.is_none() && health.passive.is_none() {
            errors.push(format!("{path}.health_check"), "configure `active`, `passive`, or both");
        }
        if let Some(passive) = &health.passive {
            let at = format!("{path}.health_check.passive");
            at_least_one(
                &format!("{at}.consecutive_failures"),
                passive.consecutive_failures,
                errors,
            );
            check_positive(&format!("{at}.eject_for"), passive.eject_for, errors);
            if passive.max_eject_for < passive.eject_for {
                errors.push(format!("{at}.max_eject_for"), "must be at least `eject_for`");
            }
            resilience.passive = Some(PassivePolicy {
                consecutive_failures: passive.consecutive_failures,
                eject_for: passive.eject_for.get(),
                max_eject_for: passive.max_eject_for.get(),
            });
        }
        if let Some(active) = &health.active {
            resilience.active_check = compile_active_check(&format!("{path}.health_check.active"), active, errors);
        }
    }
    if let Some(retries) = &upstream.retries {
        resilience.retry = compile_retries(&format!("{path}.retries"), retries, errors);
    }
    if let Some(breaker) = &upstream.circuit_breaker {
        let at = format!("{path}.circuit_breaker");
        if breaker.failure_rate.0 <= 0.0 {
            errors.push(format!("{at}.failure_rate"), "must be above 0%");
        }
        at_least_one(&format!("{at}.min_requests"), breaker.min_requests, errors);
        at_least_one(&format!("{at}.half_open_requests"), breaker.half_open_requests, errors);
        check_positive(&format!("{at}.window"), breaker.window, errors);
        check_positive(&format!("{at}.open_for"), breaker.open_for, errors);
        resilience.breaker = Some(BreakerPolicy {
            failure_rate: breaker.failure_rate.fraction(),
            min_requests: breaker.min_requests,
            window: breaker.window.get(),
            open_for: breaker.open_for.get(),
            half_open_requests: breaker.half_open_requests,
        });
    }
    resilience
}

fn compile_active_check(at: &str, active: &ActiveCheckConfig, errors: &mut ConfigErrors) -> Option<ActiveCheck> {
    let before = errors.len();
    let path = match http::uri::PathAndQuery::try_from(active.path.as_str()) {
        Ok(path) if active.path.starts_with('/') => Some(path),
        _ => {
            errors.push(
                format!("{at}.path"),
                format!("{:?} is not a path: write it like /health", active.path),
            );
            None
        }
    };
    check_positive(&format!("{at}.interval"), active.interval, errors);
    check_positive(&format!("{at}.timeout"), active.timeout, errors);
    if active.timeout > active.interval {
        errors.push(format!("{at}.timeout"), "must not be longer than `interval`");
    }
    at_least_one(&format!("{at}.healthy"), active.healthy, errors);
    at_least_one(&format!("{at}.unhealthy"), active.unhealthy, errors);
    let expect = health_check::parse_expect(&active.expect).map_err(|e| errors.push(format!("{at}.expect"), e));
    if errors.len() > before {
        return None;
    }
    Some(ActiveCheck {
        path: path?,
        interval: active.interval.get(),
        timeout: active.timeout.get(),
        thresholds: Thresholds {
            healthy: active.healthy,
            unhealthy: active.unhealthy,
        },
        expect: expect.ok()?,
    })
}

/// More retries than this is a typo or a retry storm waiting to happen.
const MAX_RETRY_ATTEMPTS: u32 = 10;
/// Bodies buffered for replay are held in memory per request.
const MAX_RETRY_BUFFER: u64 = 16 * 1024 * 1024;

fn compile_retries(at: &str, retries: &RetriesConfig, errors: &mut ConfigErrors) -> Option<RetryPolicy> {
    let before = errors.len();
    if retries.attempts > MAX_RETRY_ATTEMPTS {
        errors.push(
            format!("{at}.attempts"),
            format!(
                "{} retries is too many: use at most {MAX_RETRY_ATTEMPTS}",
                retries.attempts
            ),
        );
    }
    if retries.on.is_empty() {
        errors.push(
            format!("{at}.on"),
            "list what to retry on, like [connect_failure, 502, 503, 504]",
        );
    }
    if retries.buffer_body.get() > MAX_RETRY_BUFFER {
        errors.push(
            format!("{at}.buffer_body"),
            "must be at most 16MiB: buffered bodies are held in memory",
        );
    }
    (errors.len() == before).then(|| RetryPolicy::new(retries))
}

fn at_least_one(path: &str, value: u32, errors: &mut ConfigErrors) {
    if value == 0 {
        errors.push(path, "must be at least 1");
    }
}

/// What routes may refer to.
struct Known<'a> {
    config: &'a ConfigFile,
    pools: &'a IndexMap<String, Arc<UpstreamPool>>,
    unparsed_upstreams: &'a [String],
    metrics: &'a Arc<Metrics>,
    consumers: &'a Arc<Consumers>,
    local_limits: &'a Arc<LocalStore>,
    shared: &'a Arc<PluginState>,
    redis: Option<Arc<RedisStore>>,
}

fn compile_routes(known: &Known<'_>, errors: &mut ConfigErrors) -> Vec<(Matcher, Route)> {
    let config = known.config;
    let mut names = HashSet::new();
    let mut out = Vec::new();
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
    let overrides = route.timeouts.unwrap_or_default();
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

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

fn check_name<'a>(path: &str, name: &'a str, seen: &mut HashSet<&'a str>, what: &str, errors: &mut ConfigErrors) {
    if !valid_name(name) {
        errors.push(path, format!("{what} names use letters, digits, `-`, `_` and `.`"));
    } else if !seen.insert(name) {
        errors.push(path, format!("duplicate {what} name {name:?}: names must be unique"));
    }
}

fn check_positive(path: &str, duration: super::Duration, errors: &mut ConfigErrors) {
    if duration.get().is_zero() {
        errors.push(path, "must be longer than zero");
    }
}
