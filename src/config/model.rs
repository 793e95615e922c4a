//! The config file as written: serde types, unknown keys refused.
//!
//! These types describe the file; `config::validate` checks what serde cannot
//! (cross-references, patterns) and `config::compile` turns them into the
//! immutable runtime model the proxy serves from.

use super::units::{ByteSize, Duration, Percent};
use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_yaml_ng::Value;

/// The whole config document.
#[derive(Debug, Clone, Default, PartialEq, Serialize, schemars::JsonSchema)]
pub struct ConfigFile {
    pub listeners: Vec<ListenerConfig>,
    pub upstreams: IndexMap<String, UpstreamConfig>,
    pub routes: Vec<RouteConfig>,
    /// Global plugins, applied to every route unless the route overrides them.
    /// (Their schema is each plugin's own, put here by `portico schema`.)
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    pub plugins: IndexMap<String, Value>,
    pub shutdown: ShutdownConfig,
    pub access_log: AccessLogConfig,
    pub admin: Option<AdminConfig>,
    pub tracing: Option<TracingConfig>,
    pub consumers: Vec<ConsumerConfig>,
    pub cluster: Option<ClusterConfig>,
}

/// `cluster:` state shared by every node.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db` (or `rediss://` for TLS): rate-limit counters.
    pub redis: Option<String>,
}

/// Top-level keys, in the order they are read.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "listeners",
    "upstreams",
    "routes",
    "plugins",
    "shutdown",
    "access_log",
    "admin",
    "tracing",
    "consumers",
    "cluster",
];

/// A named identity that authenticated requests are tied to.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsumerConfig {
    pub name: String,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub credentials: CredentialsConfig,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CredentialsConfig {
    /// Keys for `key_auth`: as issued (pass them as `${env:NAME}`), or their
    /// SHA-256 as `sha256:<64 hex digits>`.
    #[serde(default)]
    pub api_keys: Vec<String>,
    /// For `basic_auth`: a username and a bcrypt or argon2 hash of the
    /// password (`portico hash-password` prints one).
    pub basic: Option<BasicCredential>,
    /// For `mtls`: client certificate subjects (`CN=billing,O=Example`) or
    /// subject alternative names (`billing.internal`, `spiffe://…`).
    #[serde(default)]
    pub certificates: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicCredential {
    pub username: String,
    pub password: String,
}

/// `tracing:` W3C trace context and OpenTelemetry spans exported over OTLP/HTTP.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TracingConfig {
    pub otlp: OtlpConfig,
    /// Share of new traces recorded; a client's sampled flag is followed.
    #[serde(default = "full_sample")]
    pub sample_ratio: Percent,
    #[serde(default = "default_service_name")]
    pub service_name: String,
}

fn full_sample() -> Percent {
    Percent(100.0)
}

fn default_service_name() -> String {
    "portico".into()
}

/// Where spans are sent: an OTLP/HTTP (protobuf) collector.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// `http://collector:4318` (`/v1/traces` is added when no path is given).
    pub endpoint: String,
    /// Spans are sent in batches at least this often.
    #[serde(default = "default_export_interval")]
    pub export_interval: Duration,
    #[serde(default = "default_export_timeout")]
    pub timeout: Duration,
}

fn default_export_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_export_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The admin API: status, metrics, reload, explain; on its own listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port`; keep it off the public network.
    pub addr: String,
    /// Bearer token every endpoint but `/health` and `/ready` requires.
    pub token: String,
}

/// A socket Portico accepts client connections on.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    pub name: String,
    /// `ip:port`; port 0 picks a free port (useful in tests).
    pub addr: String,
    #[serde(default)]
    pub timeouts: ListenerTimeouts,
    #[serde(default)]
    pub limits: ListenerLimits,
    /// HTTPS: certificates chosen by SNI.
    pub tls: Option<TlsConfig>,
    /// Answer every request with a 308 to the same URL in HTTPS, on this
    /// port (a plain listener in front of a TLS one).
    pub redirect_https: Option<u16>,
    /// How request paths are made canonical before routing.
    #[serde(default)]
    pub path: PathConfig,
    /// Proxies in front of this listener (addresses or CIDR blocks) whose
    /// `Forwarded`, `X-Forwarded-*`, `X-Real-IP` and `Via` are believed;
    /// from anyone else they are removed.
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
}

/// A listener's path canonicalisation; the defaults make the classic
/// route bypasses impossible (docs/src/security.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PathConfig {
    /// `//` is `/`, as nginx's `merge_slashes`.
    #[serde(default = "yes")]
    pub merge_slashes: bool,
    #[serde(default)]
    pub escaped_slashes: EscapedSlashes,
    #[serde(default)]
    pub semicolons: Semicolons,
}

impl Default for PathConfig {
    fn default() -> PathConfig {
        PathConfig {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::default(),
            semicolons: Semicolons::default(),
        }
    }
}

/// What to do with `%2F` in a path (Envoy's `path_with_escaped_slashes_action`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum EscapedSlashes {
    /// Kept escaped: part of a segment (`/packages/@scope%2Fname`).
    #[default]
    Keep,
    /// The request is refused (400).
    Reject,
    /// Decoded to `/` before anything else: a separator like any other.
    Decode,
}

/// What to do with `;` in a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Semicolons {
    /// The request is refused (400).
    #[default]
    Reject,
    /// Kept as part of the segment. Only for services that do not read `;`
    /// as a path parameter (not Tomcat, Jetty or Spring).
    Keep,
}

/// A listener's TLS: rustls, TLS 1.2 and 1.3, ALPN `h2` and `http/1.1`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// Chosen by the name the client asks for (SNI), from the names each
    /// certificate holds; the first is the default.
    pub certificates: Vec<CertificateConfig>,
    #[serde(default)]
    pub min_version: TlsVersion,
    /// `Strict-Transport-Security` on every answer.
    pub hsts: Option<HstsConfig>,
    /// Ask clients for certificates, checked against a CA bundle.
    pub client_auth: Option<ClientAuthConfig>,
    /// Also serve HTTP/3 (QUIC) on the same port over UDP, announced by `Alt-Svc`.
    #[serde(default)]
    pub http3: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// PEM: the CA certificates client certificates must chain to.
    pub ca: String,
    /// Refuse the handshake without a valid certificate (otherwise one is
    /// asked for, checked if given, and not required).
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HstsConfig {
    pub max_age: Duration,
    #[serde(default)]
    pub include_subdomains: bool,
    #[serde(default)]
    pub preload: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM: the certificate, then its chain.
    pub cert: String,
    /// PEM: PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
    pub key: String,
    /// DER: an OCSP response for the certificate, stapled to handshakes
    /// (kept fresh by whoever fetches it; the file is watched).
    pub ocsp: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
pub enum TlsVersion {
    #[default]
    #[serde(rename = "1.2")]
    V1_2,
    #[serde(rename = "1.3")]
    V1_3,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerTimeouts {
    /// Time a client has to send a complete request head (slowloris guard).
    pub header_read: Duration,
    /// Longest wait for the next bytes of a request body, counted only
    /// while the gateway is waiting for them.
    pub body_read: Duration,
    /// Time an open connection with no request in flight is kept.
    pub idle: Duration,
}

impl Default for ListenerTimeouts {
    fn default() -> Self {
        ListenerTimeouts {
            header_read: Duration::from_secs(10),
            body_read: Duration::from_secs(30),
            idle: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ListenerLimits {
    /// Total size of the request headers (names, values and separators).
    pub max_header_bytes: ByteSize,
    /// Number of request header fields.
    pub max_headers: usize,
    /// Request body size; unset means unlimited (bodies stream through).
    pub max_request_body: Option<ByteSize>,
    /// Length of the request target (path and query); longer is a 414.
    pub max_uri_bytes: ByteSize,
    /// The slowest a request body may arrive (slow POST); `null` turns it off.
    pub min_body_rate: Option<MinBodyRate>,
    /// Open client connections on this listener; more are refused at accept.
    pub max_connections: Option<usize>,
    /// Open client connections from one IP address.
    pub max_connections_per_ip: Option<usize>,
    /// New connections one IP address may open: a token bucket refilled
    /// with `connections` every `per`.
    pub connection_rate_per_ip: Option<ConnectionRate>,
    /// Requests one IP address may send, checked before routing.
    pub request_rate_per_ip: Option<RequestRate>,
    /// Streams an HTTP/2 client may have open at once on one connection.
    pub http2_max_streams: u32,
}

impl Default for ListenerLimits {
    fn default() -> Self {
        ListenerLimits {
            max_header_bytes: ByteSize(32 * 1024),
            max_headers: 100,
            max_request_body: None,
            max_uri_bytes: ByteSize(8 * 1024),
            min_body_rate: Some(MinBodyRate::default()),
            max_connections: Some(10_000),
            max_connections_per_ip: None,
            connection_rate_per_ip: None,
            request_rate_per_ip: None,
            http2_max_streams: 256,
        }
    }
}

/// A request body must average `per_second` bytes over the time the gateway
/// spends waiting for it, once `grace` of waiting has passed.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MinBodyRate {
    pub per_second: ByteSize,
    #[serde(default = "default_body_rate_grace")]
    pub grace: Duration,
}

impl Default for MinBodyRate {
    fn default() -> Self {
        MinBodyRate {
            per_second: ByteSize(256),
            grace: default_body_rate_grace(),
        }
    }
}

fn default_body_rate_grace() -> Duration {
    Duration::from_secs(5)
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRate {
    pub connections: u32,
    pub per: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RequestRate {
    pub requests: u32,
    pub per: Duration,
}

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

/// Per-route override of the upstream's timeouts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteTimeouts {
    pub connect: Option<Duration>,
    pub response: Option<Duration>,
    /// The whole exchange until the response head, every attempt and backoff included.
    pub request: Option<Duration>,
    pub websocket_idle: Option<Duration>,
}

/// A route: what it matches, and where the request goes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: String,
    #[serde(rename = "match")]
    pub matcher: MatchConfig,
    /// Higher goes first when several routes match; default 0.
    #[serde(default)]
    pub priority: i32,
    pub upstream: Option<String>,
    pub respond: Option<RespondConfig>,
    /// Several calls, one JSON answer (backend for frontend).
    pub aggregate: Option<AggregateConfig>,
    /// JSON/HTTP requests turned into gRPC calls to the upstream.
    pub grpc_transcode: Option<TranscodeConfig>,
    pub rewrite: Option<RewriteConfig>,
    /// Send the client's Host header upstream instead of the target's address.
    #[serde(default)]
    pub preserve_host: bool,
    pub timeouts: Option<RouteTimeouts>,
    /// Replaces the upstream's retry policy for this route.
    pub retries: Option<RetriesConfig>,
    /// Request body size on this route, in place of the listener's limit.
    pub max_request_body: Option<ByteSize>,
    #[serde(default)]
    #[schemars(with = "std::collections::BTreeMap<String, serde_json::Value>")]
    pub plugins: IndexMap<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `/prefix`, `= /exact`, `/users/{id}`, `/files/{*rest}` or `~ regex`.
    pub path: String,
    pub methods: Option<Vec<String>>,
    /// `api.example.com` or `*.example.com`.
    pub host: Option<String>,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    #[serde(default)]
    pub query: IndexMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    pub strip_prefix: Option<String>,
    pub add_prefix: Option<String>,
    /// A new path built from the route's captured parameters: `/v2/accounts/{id}`.
    pub path: Option<String>,
}

/// `aggregate`: named calls to upstreams, composed into one JSON object.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    pub calls: IndexMap<String, CallConfig>,
    /// Bounds the whole composite; calls still running then are timed out.
    #[serde(default = "default_aggregate_timeout")]
    pub timeout: Duration,
    /// Merge object answers at the top level instead of one key per call.
    #[serde(default)]
    pub merge: bool,
    #[serde(default)]
    pub partial: PartialConfig,
    /// Client headers every call carries.
    #[serde(default = "default_forward_headers")]
    pub forward_headers: Vec<String>,
    /// Largest answer read from one call.
    #[serde(default = "default_call_max_body")]
    pub max_body: ByteSize,
}

fn default_aggregate_timeout() -> Duration {
    Duration(std::time::Duration::from_secs(10))
}

fn default_forward_headers() -> Vec<String> {
    ["authorization", "accept-language", "traceparent", "tracestate"]
        .map(String::from)
        .to_vec()
}

/// `grpc_transcode:` on a route with an HTTP/2 upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TranscodeConfig {
    /// A descriptor set with the services and their `google.api.http`
    /// rules: `protoc --include_imports --descriptor_set_out=FILE`.
    pub descriptors: String,
    /// Full service names; default: every service in the set.
    #[serde(default)]
    pub services: Vec<String>,
    /// Largest gRPC answer read to turn into JSON.
    #[serde(default = "default_transcode_max_body")]
    pub max_body: ByteSize,
}

fn default_transcode_max_body() -> ByteSize {
    ByteSize(4 * 1024 * 1024)
}

fn default_call_max_body() -> ByteSize {
    ByteSize(1024 * 1024)
}

/// How an answer says which optional calls failed; `null` turns one off.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PartialConfig {
    #[serde(default = "default_partial_header")]
    pub header: Option<String>,
    #[serde(default = "default_partial_field")]
    pub field: Option<String>,
}

impl Default for PartialConfig {
    fn default() -> PartialConfig {
        PartialConfig {
            header: default_partial_header(),
            field: default_partial_field(),
        }
    }
}

fn default_partial_header() -> Option<String> {
    Some("X-Portico-Partial".into())
}

fn default_partial_field() -> Option<String> {
    Some("_partial".into())
}

/// One call of an aggregate. `path`, `headers` and string values of `body`
/// are templates: `{param}` (the route's), `{call.field}` (another call's
/// answer: this call then waits for it), and `${header.x}`-style values.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallConfig {
    pub upstream: String,
    #[serde(default = "default_call_method")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    pub body: Option<serde_json::Value>,
    /// A failure becomes `null` and a partial marker instead of a 502.
    #[serde(default)]
    pub optional: bool,
    pub timeout: Option<Duration>,
    /// Keep only these fields of the answer (`id`, `items[*].sku`).
    #[serde(default)]
    pub select: Vec<String>,
    /// The key the answer goes under (default: the call's name).
    #[serde(rename = "as")]
    pub key: Option<String>,
    /// An array answer as an object of arrays, by this field's value.
    pub group_by: Option<String>,
}

fn default_call_method() -> String {
    "GET".into()
}

/// A fixed answer, sent without any upstream.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    #[serde(default = "default_status")]
    pub status: u16,
    #[serde(default)]
    pub headers: IndexMap<String, String>,
    pub body: Option<String>,
    pub json: Option<serde_json::Value>,
}

fn default_status() -> u16 {
    200
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// How long in-flight requests may run after SIGTERM before they are cut.
    pub drain_timeout: Duration,
    /// While draining, keep-alive connections are first asked to close (each
    /// response says `Connection: close`) for this long; then idle ones are
    /// closed. A client never has its next request cut by a close it could
    /// not see coming, unless it sends nothing for this long.
    pub close_idle_after: Duration,
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        ShutdownConfig {
            drain_timeout: Duration::from_secs(30),
            close_idle_after: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// One line per request.
    pub enabled: bool,
    pub format: LogFormat,
    /// Append to this file instead of stdout; reopened on SIGUSR1 (log rotation).
    pub file: Option<String>,
    /// The JSON fields written, in this order; default all of them.
    pub fields: Option<Vec<LogField>>,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: LogFormat::Json,
            file: None,
            fields: None,
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// The Apache/nginx combined log format.
    Combined,
}

/// An access-log field. Request headers that carry secrets (Authorization,
/// Cookie, API keys) are not among them, and the query string is not logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogField {
    Timestamp,
    RequestId,
    Client,
    Method,
    Path,
    Route,
    Upstream,
    Target,
    Status,
    BytesIn,
    BytesOut,
    DurationMs,
    UpstreamMs,
    Error,
    UserAgent,
    Referer,
    TraceId,
}

fn yes() -> bool {
    true
}
