//! Compiles `upstreams`: targets, balancing, transport, timeouts,
//! discovery, health checks, passive ejection, breakers and retries.

use crate::config::build_context::BuildContext;
use crate::config::check::{at_least_one, check_positive, valid_name};
use crate::config::error::ConfigErrors;
use crate::config::model::*;
use crate::upstream::discovery::{self, Discovery};
use crate::upstream::health::Thresholds;
use crate::upstream::health_check::{self, ActiveCheck};
use crate::upstream::{
    parse_target, BreakerPolicy, HashOn, PassivePolicy, Resilience, RetryPolicy, TargetSpec, Timeouts, Transport,
    UpstreamPool,
};
use indexmap::IndexMap;
use std::collections::HashSet;
use std::sync::Arc;

pub(crate) fn compile_upstreams(
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

pub(crate) fn compile_retries(at: &str, retries: &RetriesConfig, errors: &mut ConfigErrors) -> Option<RetryPolicy> {
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
