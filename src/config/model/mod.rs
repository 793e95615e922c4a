//! The config file as written: serde types, unknown keys refused.
//!
//! These types describe the file; `config::validate` checks what serde cannot
//! (cross-references, patterns) and `config::compile` turns them into the
//! immutable runtime model the proxy serves from. The top level, consumers,
//! admin, tracing, shutdown and the access log are here; listeners, upstreams
//! and routes have a file each.

mod listener;
mod route;
mod upstream;

pub use listener::*;
pub use route::*;
pub use upstream::*;

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
