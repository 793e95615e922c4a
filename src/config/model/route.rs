//! `routes:`: matching, rewrites, timeouts, and the actions (proxy, aggregate,
//! transcode, respond).

use super::*;

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
    // The blocks most routes leave out are boxed: the running config keeps
    // its source, and inline they made a route 928 bytes (9 MB at 10,000
    // routes) whether it used them or not.
    pub respond: Option<Box<RespondConfig>>,
    /// Several calls, one JSON answer (backend for frontend).
    pub aggregate: Option<Box<AggregateConfig>>,
    /// JSON/HTTP requests turned into gRPC calls to the upstream.
    pub grpc_transcode: Option<Box<TranscodeConfig>>,
    pub rewrite: Option<Box<RewriteConfig>>,
    /// Send the client's Host header upstream instead of the target's address.
    #[serde(default)]
    pub preserve_host: bool,
    pub timeouts: Option<Box<RouteTimeouts>>,
    /// Replaces the upstream's retry policy for this route.
    pub retries: Option<Box<RetriesConfig>>,
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
