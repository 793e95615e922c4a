//! `upstreams:`: targets, balancing, timeouts, retries, health, breakers and discovery.

use super::*;

/// A named pool of targets that routes send requests to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    #[serde(default)]
    pub targets: Vec<TargetConfig>,
    /// Targets from outside the config, instead of `targets`.
    pub discovery: Option<DiscoveryConfig>,
    #[serde(default)]
    pub balance: Balance,
    /// `consistent_hash` only: `header:NAME`, `cookie:NAME` or `client_ip`.
    pub hash_on: Option<String>,
    #[serde(default)]
    pub timeouts: UpstreamTimeouts,
    pub health_check: Option<HealthCheckConfig>,
    pub retries: Option<RetriesConfig>,
    pub circuit_breaker: Option<CircuitBreakerConfig>,
    /// How requests reach the targets: HTTP/1.1, HTTP/2 over TLS, or h2c.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// Connect to the targets over TLS.
    pub tls: Option<UpstreamTlsConfig>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    /// HTTP/1.1, with or without TLS: a pool of keep-alive connections.
    #[default]
    Http1,
    /// HTTP/2 over TLS (ALPN `h2`): one multiplexed connection per target.
    Http2,
    /// HTTP/2 over cleartext TCP, by prior knowledge (gRPC services often).
    H2c,
}

/// `tls:` of an upstream: how Portico checks the targets and shows itself.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM: the CA certificates targets must chain to (default: the Mozilla
    /// roots built into Portico).
    pub ca: Option<String>,
    /// PEM: a client certificate for targets that require one, with its key.
    pub client_cert: Option<String>,
    pub client_key: Option<String>,
    /// The name sent as SNI and checked in the target's certificate
    /// (default: the target's host).
    pub server_name: Option<String>,
    /// Check the target's certificate. `false` is for tests only.
    #[serde(default = "yes")]
    pub verify: bool,
}

/// `circuit_breaker:`, applied to the upstream as a whole and to each target.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CircuitBreakerConfig {
    /// Share of failed requests (connect failures, broken exchanges, 5xx) that opens it.
    pub failure_rate: Percent,
    /// Requests the window must hold before the rate is judged.
    pub min_requests: u32,
    pub window: Duration,
    /// How long it stays open before letting probes through.
    pub open_for: Duration,
    /// Probe requests let through half-open; all must succeed to close it.
    pub half_open_requests: u32,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        CircuitBreakerConfig {
            failure_rate: Percent(50.0),
            min_requests: 20,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(15),
            half_open_requests: 3,
        }
    }
}

/// `discovery:`: where targets come from when the config does not list them.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscoveryConfig {
    /// A file holding a list of targets, polled for changes.
    pub file: Option<String>,
    /// `name:port`: the name's A and AAAA records, re-resolved every `refresh`.
    pub dns: Option<String>,
    /// `_http._tcp.name`: SRV records, each target resolved with its port and
    /// weight; records of a worse priority become backups.
    pub dns_srv: Option<String>,
    /// DNS servers (`ip:port`) to ask instead of the system's (`/etc/resolv.conf`).
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// How often the source is read again.
    #[serde(default = "default_refresh")]
    pub refresh: Duration,
}

fn default_refresh() -> Duration {
    Duration::from_secs(5)
}

/// `health_check:`: active probes, passive ejection, or both.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub active: Option<ActiveCheckConfig>,
    pub passive: Option<PassiveCheckConfig>,
}

/// A GET of `path` on every target at each `interval`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ActiveCheckConfig {
    pub path: String,
    #[serde(default = "default_check_interval")]
    pub interval: Duration,
    #[serde(default = "default_check_timeout")]
    pub timeout: Duration,
    /// Consecutive passes that make an unhealthy target healthy.
    #[serde(default = "default_healthy")]
    pub healthy: u32,
    /// Consecutive failures that make a healthy target unhealthy.
    #[serde(default = "default_unhealthy")]
    pub unhealthy: u32,
    /// Statuses that pass: `200`, `200-399`.
    #[serde(default = "default_expect")]
    pub expect: String,
}

fn default_check_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_check_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_healthy() -> u32 {
    2
}
fn default_unhealthy() -> u32 {
    3
}
fn default_expect() -> String {
    "200-399".into()
}

/// Ejection of targets that fail real traffic.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct PassiveCheckConfig {
    /// Consecutive connect failures, broken exchanges or 5xx that eject a target.
    pub consecutive_failures: u32,
    /// First ejection; each repeat doubles it.
    pub eject_for: Duration,
    pub max_eject_for: Duration,
}

impl Default for PassiveCheckConfig {
    fn default() -> Self {
        PassiveCheckConfig {
            consecutive_failures: 5,
            eject_for: Duration::from_secs(30),
            max_eject_for: Duration::from_secs(300),
        }
    }
}

/// When a failed attempt is tried again on another target.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetriesConfig {
    /// Retries after the first attempt.
    pub attempts: u32,
    /// `connect_failure` and/or statuses (500-599).
    pub on: Vec<RetryOn>,
    /// Retry only GET, HEAD, OPTIONS, PUT, DELETE and TRACE (RFC 9110 9.2.2).
    pub idempotent_only: bool,
    /// Retries allowed as a share of recent requests, like `20%`.
    pub budget: Percent,
    /// First backoff between attempts; doubles each retry, with full jitter.
    pub backoff: Duration,
    /// Request bodies up to this size are buffered so they can be sent again;
    /// larger or unknown-length bodies stream and are never retried.
    pub buffer_body: ByteSize,
}

impl Default for RetriesConfig {
    fn default() -> Self {
        RetriesConfig {
            attempts: 2,
            on: vec![
                RetryOn::ConnectFailure,
                RetryOn::Status(502),
                RetryOn::Status(503),
                RetryOn::Status(504),
            ],
            idempotent_only: true,
            budget: Percent(20.0),
            backoff: Duration(std::time::Duration::from_millis(25)),
            buffer_body: ByteSize(64 * 1024),
        }
    }
}

/// One retry condition: `connect_failure`, or a status such as `503`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryOn {
    ConnectFailure,
    Status(u16),
}

impl Serialize for RetryOn {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            RetryOn::ConnectFailure => serializer.serialize_str("connect_failure"),
            RetryOn::Status(status) => serializer.serialize_u16(*status),
        }
    }
}

impl<'de> Deserialize<'de> for RetryOn {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RetryOnVisitor;
        impl serde::de::Visitor<'_> for RetryOnVisitor {
            type Value = RetryOn;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`connect_failure` or a status from 500 to 599")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<RetryOn, E> {
                match text {
                    "connect_failure" => Ok(RetryOn::ConnectFailure),
                    other => match other.parse::<u64>() {
                        Ok(status) => self.visit_u64(status),
                        Err(_) => Err(E::custom(format!(
                            "unknown retry condition {other:?}: use `connect_failure` or a status like 503"
                        ))),
                    },
                }
            }
            fn visit_u64<E: serde::de::Error>(self, status: u64) -> Result<RetryOn, E> {
                match u16::try_from(status) {
                    Ok(status @ 500..=599) => Ok(RetryOn::Status(status)),
                    _ => Err(E::custom(format!(
                        "{status} cannot be retried on: only server errors (500-599) are"
                    ))),
                }
            }
            fn visit_i64<E: serde::de::Error>(self, status: i64) -> Result<RetryOn, E> {
                self.visit_u64(status.unsigned_abs())
            }
        }
        deserializer.deserialize_any(RetryOnVisitor)
    }
}

impl schemars::JsonSchema for RetryOn {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "RetryOn".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "anyOf": [
                { "const": "connect_failure" },
                { "type": "integer", "minimum": 500, "maximum": 599 },
                { "type": "string", "pattern": "^5[0-9][0-9]$" },
            ],
            "description": "`connect_failure`, or a status from 500 to 599.",
        })
    }
}

/// A target: `host:port`, or `{ addr, weight, backup }`.
#[derive(Debug, Clone, PartialEq, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum TargetConfig {
    Addr(String),
    Detailed(TargetDetail),
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetDetail {
    pub addr: String,
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Takes traffic only when no primary target is available.
    #[serde(default)]
    pub backup: bool,
}

// Written by hand rather than `#[serde(untagged)]`, whose only error is "data did
// not match any variant": a typo in `{ addr, weigth: 2 }` must be named.
impl<'de> Deserialize<'de> for TargetConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TargetVisitor;
        impl<'de> serde::de::Visitor<'de> for TargetVisitor {
            type Value = TargetConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`host:port` or `{ addr: host:port, weight: N, backup: bool }`")
            }
            fn visit_str<E: serde::de::Error>(self, addr: &str) -> Result<TargetConfig, E> {
                Ok(TargetConfig::Addr(addr.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TargetConfig, A::Error> {
                TargetDetail::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(TargetConfig::Detailed)
            }
        }
        deserializer.deserialize_any(TargetVisitor)
    }
}

fn default_weight() -> u32 {
    1
}

impl TargetConfig {
    pub fn addr(&self) -> &str {
        match self {
            TargetConfig::Addr(addr) => addr,
            TargetConfig::Detailed(detail) => &detail.addr,
        }
    }

    pub fn weight(&self) -> u32 {
        match self {
            TargetConfig::Addr(_) => 1,
            TargetConfig::Detailed(detail) => detail.weight,
        }
    }

    pub fn backup(&self) -> bool {
        matches!(self, TargetConfig::Detailed(TargetDetail { backup: true, .. }))
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Smooth weighted round robin (nginx's algorithm).
    #[default]
    RoundRobin,
    /// Power of two random choices, fewer in-flight requests wins.
    LeastRequest,
    /// Power of two random choices on peak-EWMA latency times in-flight requests.
    Ewma,
    /// Weighted random.
    Random,
    /// Maglev consistent hashing on `hash_on`.
    ConsistentHash,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamTimeouts {
    /// Time to open a TCP connection to a target.
    pub connect: Duration,
    /// Time to the response head, and the longest pause between two reads of
    /// the response body.
    pub response: Duration,
    /// An upgraded (WebSocket) connection with no byte either way this long
    /// is closed. Envoy's stream idle timeout has the same default.
    pub websocket_idle: Duration,
}

impl Default for UpstreamTimeouts {
    fn default() -> Self {
        UpstreamTimeouts {
            connect: Duration::from_secs(5),
            response: Duration::from_secs(60),
            websocket_idle: Duration::from_secs(300),
        }
    }
}
