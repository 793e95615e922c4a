//! `listeners:`: addresses, TLS, timeouts, limits and path policy.

use super::*;

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
