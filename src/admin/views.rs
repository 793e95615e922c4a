//! What each admin endpoint shows, as serializable views of the running state.

use super::Operated;
use super::{error, json, redact, Answer};
use crate::config::model::TargetConfig;
use crate::gateway::Gateway;
use crate::upstream::{parse_target, Target, TargetSpec, UpstreamPool};
use http::StatusCode;
use indexmap::IndexMap;
use serde::Serialize;
use std::sync::Arc;
use std::time::SystemTime;

/// What a reload did, as `/status` and `POST /reload` report it.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    /// `signal`, `admin_api` or `file_changed`.
    pub trigger: &'static str,
    #[serde(serialize_with = "rfc3339")]
    pub at: SystemTime,
    pub ok: bool,
    /// The config hash serving now (the new one, or the kept one).
    pub hash: String,
    /// Every error, with its place in the file, when the config was refused.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
}

#[derive(Serialize)]
pub struct Health {
    status: &'static str,
}

pub fn health() -> Health {
    Health { status: "ok" }
}

#[derive(Serialize)]
pub struct Ready {
    pub ready: bool,
    listeners: usize,
}

/// Ready once a config is loaded and every listener is bound: a gateway that
/// runs has both, so this turns false only while it shuts down.
pub fn ready(control: &dyn Operated) -> Ready {
    let listeners = control.listeners().len();
    Ready {
        ready: listeners > 0,
        listeners,
    }
}

#[derive(Serialize)]
pub struct Status {
    version: &'static str,
    /// Changes when a binary upgrade hands over to a new process.
    pid: u32,
    uptime_seconds: u64,
    #[serde(serialize_with = "rfc3339")]
    started_at: SystemTime,
    config: ConfigStatus,
    last_reload: Option<ReloadReport>,
    listeners: IndexMap<String, String>,
}

#[derive(Serialize)]
struct ConfigStatus {
    path: String,
    hash: String,
    #[serde(serialize_with = "rfc3339")]
    loaded_at: SystemTime,
}

pub fn status(control: &dyn Operated) -> Status {
    let (loaded_at, last_reload) = control.reload_status();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
        uptime_seconds: control.started().elapsed().map(|d| d.as_secs()).unwrap_or(0),
        started_at: control.started(),
        config: ConfigStatus {
            path: control.config_path().display().to_string(),
            hash: control.gateway().hash.clone(),
            loaded_at,
        },
        last_reload,
        listeners: control
            .listeners()
            .into_iter()
            .map(|(name, addr)| (name.to_string(), addr.to_string()))
            .collect(),
    }
}

/// The dashboard's numbers: the last `seconds` second by second, and each
/// route's requests and errors so far.
pub fn stats(control: &dyn Operated, seconds: usize) -> serde_json::Value {
    let metrics = control.metrics();
    serde_json::json!({
        "series": metrics.live.series(seconds),
        "routes": metrics.route_totals(),
    })
}

/// The routes as configured, plugin secrets redacted, in file order.
pub fn routes(control: &dyn Operated) -> serde_json::Value {
    let mut routes = serde_json::to_value(&control.gateway().source.routes).unwrap_or_default();
    redact::redact(&mut routes);
    routes
}

#[derive(Serialize)]
pub struct UpstreamView {
    balance: String,
    /// `closed`, `open` or `half_open`; absent without `circuit_breaker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breaker: Option<&'static str>,
    /// Where the targets come from: `config`, `discovery`.
    source: &'static str,
    targets: Vec<TargetView>,
}

#[derive(Serialize)]
struct TargetView {
    addr: String,
    weight: u32,
    backup: bool,
    /// Takes traffic now: passes active checks and is not ejected.
    healthy: bool,
    passes_checks: bool,
    ejected: bool,
    ejections: u32,
    in_flight: usize,
    /// Recent average time to the response head, in ms; absent before any answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    circuit_breaker: Option<&'static str>,
}

pub fn upstreams(gateway: &Gateway) -> IndexMap<String, UpstreamView> {
    gateway
        .upstreams
        .iter()
        .map(|(name, pool)| (name.clone(), upstream(pool)))
        .collect()
}

pub fn upstream(pool: &UpstreamPool) -> UpstreamView {
    let (primaries, backups) = pool.targets();
    let view = |target: &Arc<Target>, backup: bool| TargetView {
        addr: target.addr.to_string(),
        weight: target.weight,
        backup,
        healthy: target.health.available(),
        passes_checks: target.health.passes_checks(),
        ejected: target.health.is_ejected(),
        ejections: target.health.ejections(),
        in_flight: target.in_flight(),
        latency_ms: target
            .recent_latency()
            .map(|d| (d.as_secs_f64() * 10_000.0).round() / 10.0),
        circuit_breaker: target.breaker.as_ref().map(|b| b.state().as_str()),
    };
    UpstreamView {
        balance: serde_json::to_value(pool.balance())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default(),
        circuit_breaker: pool.breaker.as_ref().map(|b| b.state().as_str()),
        source: if pool.discovery.is_some() {
            "discovery"
        } else {
            "config"
        },
        targets: primaries
            .iter()
            .map(|t| view(t, false))
            .chain(backups.iter().map(|t| view(t, true)))
            .collect(),
    }
}

/// `PUT /upstreams/{name}/targets`: replaces the targets of an upstream
/// until the next reload. The body is a list in the config's own shape:
/// `["10.0.0.1:80", {"addr": "10.0.0.2:80", "weight": 2, "backup": true}]`.
pub fn put_targets(gateway: &Gateway, name: &str, body: serde_json::Value) -> Answer {
    let Some(pool) = gateway.upstreams.get(name) else {
        return Err(error(StatusCode::NOT_FOUND, &format!("no upstream is named {name:?}")));
    };
    if pool.discovery.is_some() {
        return Err(error(
            StatusCode::CONFLICT,
            &format!("upstream {name:?} takes its targets from discovery; they cannot also be set here"),
        ));
    }
    let targets: Vec<TargetConfig> = serde_json::from_value(body).map_err(|e| {
        error(
            StatusCode::BAD_REQUEST,
            &format!("expected a list of targets like [\"10.0.0.1:8080\", {{\"addr\": \"10.0.0.2:8080\", \"weight\": 2}}]: {e}"),
        )
    })?;
    let mut specs = Vec::with_capacity(targets.len());
    for (i, target) in targets.iter().enumerate() {
        let bad = |why: String| error(StatusCode::BAD_REQUEST, &format!("targets[{i}]: {why}"));
        parse_target(target.addr()).map_err(bad)?;
        if target.weight() == 0 {
            return Err(bad("weight must be at least 1".into()));
        }
        if specs.iter().any(|s: &TargetSpec| s.addr == target.addr()) {
            return Err(bad(format!("{} is listed twice", target.addr())));
        }
        specs.push(TargetSpec {
            addr: target.addr().to_string(),
            weight: target.weight(),
            backup: target.backup(),
        });
    }
    if specs.iter().all(|s| s.backup) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "at least one target must take traffic (not `backup: true`)",
        ));
    }
    pool.set_targets(&specs)
        .map_err(|e| error(StatusCode::BAD_REQUEST, &e))?;
    tracing::info!(
        upstream = name,
        targets = specs.len(),
        "targets set through the admin API"
    );
    json(StatusCode::OK, &upstream(pool))
}

/// Sets the gauges that describe state rather than count events, from the
/// running config, just before a scrape.
pub fn refresh_gauges(control: &dyn Operated) {
    let metrics = control.metrics();
    metrics.target_healthy.reset();
    metrics.target_in_flight.reset();
    metrics.breaker_state.reset();
    for (name, pool) in &control.gateway().upstreams {
        if let Some(breaker) = &pool.breaker {
            metrics
                .breaker_state
                .with_label_values(&[name.as_str(), ""])
                .set(breaker.state() as i64);
        }
        for target in pool.all_targets() {
            let labels = [name.as_str(), &*target.addr];
            metrics
                .target_healthy
                .with_label_values(&labels)
                .set(i64::from(target.health.available()));
            metrics
                .target_in_flight
                .with_label_values(&labels)
                .set(target.in_flight() as i64);
            if let Some(breaker) = &target.breaker {
                metrics
                    .breaker_state
                    .with_label_values(&labels)
                    .set(breaker.state() as i64);
            }
        }
    }
}

fn rfc3339<S: serde::Serializer>(time: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.collect_str(&humantime::format_rfc3339_millis(*time))
}

/// The cache stores in use: the memory store's bound and bytes held, and
/// whether answers are also kept in Redis.
pub fn cache(control: &dyn Operated) -> serde_json::Value {
    let memory = memory_store(control)
        .map(|store| serde_json::json!({ "bound_bytes": store.bound(), "used_bytes": store.weighted_size() }));
    serde_json::json!({ "memory": memory, "redis": redis_url(control).is_some() })
}

/// Purges the memory store and, with `cluster.redis`, the Redis store.
pub async fn purge(control: &dyn Operated, what: &crate::cache::store::Purge) -> Result<serde_json::Value, String> {
    use crate::cache::store::Store;
    let mut purged = Vec::new();
    if let Some(store) = memory_store(control) {
        Store::Memory(store).purge(what).await?;
        purged.push("memory");
    }
    if let Some(url) = redis_url(control) {
        let redis = crate::ratelimit::redis::RedisStore::shared(&url)?;
        Store::Redis(redis)
            .purge(what)
            .await
            .map_err(|e| format!("the cache's Redis cannot be purged now: {e}"))?;
        purged.push("redis");
    }
    Ok(serde_json::json!({ "purged": purged }))
}

fn memory_store(control: &dyn Operated) -> Option<std::sync::Arc<crate::cache::store::MemoryStore>> {
    use crate::plugins::cache::{MemoryStores, MEMORY_STORES};
    control
        .plugin_state()
        .get_or_insert(MEMORY_STORES, MemoryStores::default)
        .current()
}

fn redis_url(control: &dyn Operated) -> Option<String> {
    control.gateway().source.cluster.as_ref()?.redis.clone()
}
