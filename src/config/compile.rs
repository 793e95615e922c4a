//! From the file model to the runtime model ([`Compiled`]), checking what serde
//! cannot: names that refer to each other, patterns, addresses, combinations.
//!
//! Checking and compiling are one pass: each pattern is parsed by the module
//! that owns its syntax (router, rewrite, upstream), once, and a config that
//! compiles is by construction a valid one. Each domain compiles its own
//! blocks next to the code that runs them: listeners in `proxy::listeners`,
//! upstreams in `upstream::compile`, routes and their plugin chains in
//! `gateway::routes`, each plugin's block in its own file. This file puts them
//! together, with the blocks that run the gateway itself (admin, tracing,
//! access log, shutdown).

use super::build_context::BuildContext;
use super::check::check_positive;
use super::error::ConfigErrors;
use super::model::*;
use crate::consumers::Consumers;
use crate::gateway::routes::{compile_routes, Known};
use crate::gateway::{AdminSettings, Compiled, Drain, Gateway, ListenerSettings};
use crate::proxy::listeners::compile_listeners;
use crate::ratelimit::redis::RedisStore;
use crate::router::RouteTable;
use crate::telemetry::access_log::{AccessLog, ALL_FIELDS};
use crate::telemetry::traces::{traces_url, Traces};
use crate::upstream::compile::compile_upstreams;
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
    let trusted_headers = Arc::new(crate::proxy::forward::NameSet::new(crate::consumers::trusted_headers(
        routes.iter().flat_map(|(_, route)| route.plugins.trusted_headers()),
    )));
    errors.into_result(Compiled {
        gateway: Gateway {
            trusted_headers,
            listeners: listeners.iter().cloned().collect(),
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
