//! Header rules for a message crossing the proxy (RFC 9110 section 7.6):
//! hop-by-hop fields stay on their hop; `X-Forwarded-*` and `Via` say who
//! forwarded it; Host is the target's unless the route preserves the client's.

use super::request_id::X_REQUEST_ID;
use http::header::{CONNECTION, HOST, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING, UPGRADE, VIA};
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use std::net::IpAddr;

/// The client's address as it goes into `X-Forwarded-For`.
pub fn client_ip_header(ip: IpAddr) -> HeaderValue {
    HeaderValue::from_str(&ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Hop-by-hop fields (RFC 9110 section 7.6.1 and the historical ones).
static HOP_BY_HOP: [HeaderName; 8] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    TE,
    TRAILER,
    TRANSFER_ENCODING,
    UPGRADE,
    PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
];

/// The comma-separated tokens of every `name` field, trimmed.
pub fn tokens<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

/// The fields `Connection` names.
pub fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    tokens(headers, &CONNECTION)
        .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
        .collect()
}

/// Which hop-by-hop fields a message has, one bit each by their place in
/// `HOP_BY_HOP`: found in one pass over the names it has (a handful),
/// rather than a hashed lookup for each of the eight, most of which a
/// message does not have.
#[derive(Clone, Copy)]
pub struct HopByHop(u8);

impl HopByHop {
    pub fn of(headers: &HeaderMap) -> HopByHop {
        HopByHop(
            headers
                .keys()
                .filter_map(hop_by_hop_index)
                .fold(0, |present, index| present | 1 << index),
        )
    }

    fn has(self, index: usize) -> bool {
        self.0 & 1 << index != 0
    }

    /// Whether the message has `name`, one of `HOP_BY_HOP`.
    pub fn has_field(self, name: &HeaderName) -> bool {
        hop_by_hop_index(name).is_some_and(|index| self.has(index))
    }

    /// Removes them: those `Connection` names, then the fixed set.
    pub fn strip(self, headers: &mut HeaderMap) {
        if self.0 == 0 {
            return;
        }
        if self.has(CONNECTION_INDEX) {
            remove_connection_named(headers);
        }
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            if self.has(index) {
                headers.remove(name);
            }
        }
    }

    /// Removes `Keep-Alive`, if the message has it.
    pub fn strip_keep_alive(self, headers: &mut HeaderMap) {
        if self.has(KEEP_ALIVE_INDEX) {
            headers.remove(&HOP_BY_HOP[KEEP_ALIVE_INDEX]);
        }
    }
}

const CONNECTION_INDEX: usize = 0;
const KEEP_ALIVE_INDEX: usize = 1;
const TE_INDEX: usize = 2;

/// The place of `name` in `HOP_BY_HOP`. A match on the text compiles to a
/// switch on its length and one comparison, where `==` against each of the
/// eight names costs eight.
fn hop_by_hop_index(name: &HeaderName) -> Option<usize> {
    Some(match name.as_str() {
        "connection" => CONNECTION_INDEX,
        "keep-alive" => KEEP_ALIVE_INDEX,
        "te" => TE_INDEX,
        "trailer" => 3,
        "transfer-encoding" => 4,
        "upgrade" => 5,
        "proxy-authorization" => 6,
        "proxy-connection" => 7,
        _ => return None,
    })
}

/// Removes hop-by-hop fields: those `Connection` names, and the fixed set.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    HopByHop::of(headers).strip(headers);
}

/// Removes what `Connection` names. Most name only `keep-alive`, `close` or
/// `upgrade`, which are hop-by-hop anyway or no field at all: those cost
/// no lookup and no allocation.
fn remove_connection_named(headers: &mut HeaderMap) {
    // Neither names a field (`anyway` below).
    if connection_is(headers, &["keep-alive", "close"]) {
        return;
    }
    let anyway = |token: &str| {
        token.eq_ignore_ascii_case("close") || HOP_BY_HOP.iter().any(|name| token.eq_ignore_ascii_case(name.as_str()))
    };
    let named: Vec<HeaderName> = tokens(headers, &CONNECTION)
        .filter(|token| !anyway(token))
        .filter_map(|token| HeaderName::from_bytes(token.as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
}

/// Whether `Connection` is one line holding just one of `options`, as
/// nearly every message that has it says (`keep-alive`, `close`): then its
/// tokens need not be split and looked up.
pub fn connection_is(headers: &HeaderMap, options: &[&str]) -> bool {
    let mut values = headers.get_all(CONNECTION).iter();
    match (values.next(), values.next()) {
        (Some(value), None) => options
            .iter()
            .any(|option| value.as_bytes().eq_ignore_ascii_case(option.as_bytes())),
        _ => false,
    }
}

/// Header names that no request may carry past the gateway, checked
/// against each of a request's fields. A mask of the names' lengths and last
/// bytes rules most fields out in a few instructions; comparing every field
/// with every name cost a dozen a pair (a custom field such as `x-api-key`
/// compares bytes), some 250 instructions a field for the two sets a request
/// meets.
#[derive(Debug, Clone)]
pub struct NameSet {
    names: Vec<HeaderName>,
    mask: u128,
}

impl NameSet {
    pub fn new(names: Vec<HeaderName>) -> NameSet {
        let mask = names.iter().fold(0, |mask, name| mask | Self::bit(name));
        NameSet { names, mask }
    }

    fn bit(name: &HeaderName) -> u128 {
        let text = name.as_str().as_bytes();
        let last = text.last().copied().unwrap_or(0);
        1 << ((text.len() + 7 * usize::from(last)) % 128)
    }

    /// The place of `name` in the set.
    fn position(&self, name: &HeaderName) -> Option<usize> {
        if self.mask & Self::bit(name) == 0 {
            return None;
        }
        self.names.iter().position(|n| n == name)
    }
}

/// Removes every field named in `names`.
pub fn remove_named(headers: &mut HeaderMap, names: &NameSet) {
    while let Some(found) = headers.keys().find_map(|name| names.position(name)) {
        headers.remove(&names.names[found]);
    }
}

/// The protocol an HTTP/1.1 message switches to: `Upgrade` named in `Connection`.
pub fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asked = tokens(headers, &CONNECTION).any(|token| token.eq_ignore_ascii_case("upgrade"));
    asked.then(|| headers.get(http::header::UPGRADE).cloned()).flatten()
}

/// Does the client take trailers (`TE: trailers`)? gRPC needs them, and its
/// services check that the request says so.
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    tokens(headers, &TE).any(|token| token.eq_ignore_ascii_case("trailers"))
}

/// The `Via` entry for a message received with `version`.
fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 portico",
        Version::HTTP_2 => "2 portico",
        Version::HTTP_3 => "3 portico",
        _ => "1.1 portico",
    })
}

/// What the request's way upstream needs to know of the client side.
pub struct ClientSide<'a> {
    /// The client's IP as a header value, made once per connection.
    pub ip: &'a HeaderValue,
    pub version: Version,
    /// The Host the client asked for (Host header or HTTP/2 authority).
    pub host: Option<HeaderValue>,
    pub request_id: &'a HeaderValue,
    /// Keep the client's Host; otherwise each attempt sets its target's over
    /// it (the exchange, as it picks the target).
    pub preserve_host: bool,
    /// The client came over TLS.
    pub tls: bool,
    /// The client's verified certificate, told to the upstream.
    pub client_certificate: Option<&'a super::tls::ClientCertificate>,
}

use crate::consumers::{X_CLIENT_CERT_NAMES, X_CLIENT_CERT_SUBJECT};

/// Rewrites the headers of a request about to go upstream.
pub fn upstream_request(headers: &mut HeaderMap, client: ClientSide<'_>) {
    let hop_by_hop = HopByHop::of(headers);
    let upgrade = hop_by_hop.has(CONNECTION_INDEX).then(|| upgrade_of(headers)).flatten();
    let trailers = hop_by_hop.has(TE_INDEX) && accepts_trailers(headers);
    hop_by_hop.strip(headers);
    // Room for what is added below, so the map grows once, not field by field.
    headers.reserve(6);
    // `TE: trailers` says what this hop takes, and Portico passes trailers on.
    if trailers {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    // An upgrade (WebSocket) is the one hop-by-hop exchange passed on.
    if let Some(protocol) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(http::header::UPGRADE, protocol);
    }
    // Append the client to any chain it sent, as nginx's
    // $proxy_add_x_forwarded_for does (several fields are joined first).
    // One lookup: most requests carry no chain.
    match headers.entry(&X_FORWARDED_FOR) {
        http::header::Entry::Vacant(vacant) => {
            vacant.insert(client.ip.clone());
        }
        http::header::Entry::Occupied(mut occupied) => {
            let mut chain: Vec<&[u8]> = occupied.iter().map(HeaderValue::as_bytes).collect();
            chain.push(client.ip.as_bytes());
            let joined = HeaderValue::from_bytes(&chain.join(&b", "[..])).unwrap_or_else(|_| client.ip.clone());
            occupied.insert(joined);
        }
    }
    // A client's own were removed with the other trusted headers (`canonical`).
    if let Some(certificate) = client.client_certificate {
        if let Ok(subject) = HeaderValue::from_str(&certificate.subject) {
            headers.insert(&X_CLIENT_CERT_SUBJECT, subject);
        }
        if let Ok(names) = HeaderValue::from_str(&certificate.names.join(", ")) {
            headers.insert(&X_CLIENT_CERT_NAMES, names);
        }
    }
    headers.insert(
        &X_FORWARDED_PROTO,
        HeaderValue::from_static(if client.tls { "https" } else { "http" }),
    );
    match &client.host {
        Some(host) => headers.insert(&X_FORWARDED_HOST, host.clone()),
        None => headers.remove(&X_FORWARDED_HOST),
    };
    headers.append(VIA, via(client.version));
    headers.insert(&X_REQUEST_ID, client.request_id.clone());
    if let (true, Some(host)) = (client.preserve_host, client.host) {
        headers.insert(HOST, host);
    }
}

/// Rewrites the headers of a response about to go to the client. Its
/// `X-Request-Id` is set with every other answer's, when the session ends.
pub fn downstream_response(headers: &mut HeaderMap, upstream_version: Version) {
    strip_hop_by_hop(headers);
    headers.append(VIA, via(upstream_version));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_set_removes_its_names_however_often_sent_and_nothing_else() {
        let set = NameSet::new(
            ["x-real-ip", "x-consumer-name", "via", "forwarded"]
                .map(HeaderName::from_static)
                .to_vec(),
        );
        let mut headers = HeaderMap::new();
        for name in ["x-real-ip", "via", "x-consumer-name", "forwarded", "x-real-ip"] {
            headers.append(name, HeaderValue::from_static("client's"));
        }
        // Same lengths and last bytes as names in the set, and common fields.
        let kept = [
            "x-api-keyp",
            "y-real-ip",
            "x-consumer-namf",
            "vib",
            "via2",
            "host",
            "accept",
        ];
        for name in kept {
            headers.append(name, HeaderValue::from_static("kept"));
        }
        remove_named(&mut headers, &set);
        let mut left: Vec<&str> = headers.keys().map(|name| name.as_str()).collect();
        left.sort_unstable();
        let mut kept = kept.to_vec();
        kept.sort_unstable();
        assert_eq!(left, kept);
    }

    #[test]
    fn hop_by_hop_fields_and_those_connection_names_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "keep-alive, x-secret-hop".parse().unwrap());
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert(TE, "trailers".parse().unwrap());
        headers.insert(PROXY_AUTHORIZATION, "Basic x".parse().unwrap());
        headers.insert("x-end-to-end", "kept".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-end-to-end"));
    }

    #[test]
    fn each_hop_by_hop_name_is_found_at_its_place() {
        for (index, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(index), "{name}");
        }
        assert_eq!(hop_by_hop_index(&http::header::CONTENT_LENGTH), None);
        assert_eq!(hop_by_hop_index(&HeaderName::from_static("x-te")), None);
    }

    #[test]
    fn an_answer_s_connection_line_takes_what_it_names_with_it() {
        for (lines, named) in [
            (&["keep-alive"][..], false),
            (&["Close"], false),
            (&["keep-alive, x-hop"], true),
            (&["keep-alive", "x-hop"], true),
        ] {
            let mut headers = HeaderMap::new();
            for line in lines {
                headers.append(CONNECTION, line.parse().unwrap());
            }
            headers.insert("keep-alive", "timeout=5".parse().unwrap());
            headers.insert("x-hop", "1".parse().unwrap());
            headers.insert("x-kept", "1".parse().unwrap());
            strip_hop_by_hop(&mut headers);
            assert_eq!(headers.contains_key("x-hop"), !named, "{lines:?}");
            assert!(headers.contains_key("x-kept") && !headers.contains_key(CONNECTION));
            assert!(!headers.contains_key("keep-alive"), "{lines:?}");
        }
    }

    #[test]
    fn forwarded_headers_are_set_and_appended() {
        let mut headers = HeaderMap::new();
        headers.append("x-forwarded-for", "10.0.0.1".parse().unwrap());
        headers.append("x-forwarded-for", "10.0.0.2".parse().unwrap());
        headers.insert(HOST, "api.example.com".parse().unwrap());
        let id = HeaderValue::from_static("rid");
        let ip = client_ip_header([192, 0, 2, 7].into());
        let client = ClientSide {
            ip: &ip,
            version: Version::HTTP_11,
            host: Some(HeaderValue::from_static("api.example.com")),
            request_id: &id,
            preserve_host: false,
            tls: false,
            client_certificate: None,
        };
        upstream_request(&mut headers, client);
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 192.0.2.7");
        assert_eq!(headers["x-forwarded-host"], "api.example.com");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["via"], "1.1 portico");
        assert_eq!(headers["x-request-id"], "rid");
        // Left for the attempt to replace with its target's (exchange.rs):
        // one lookup, where removing it here and inserting it there took two.
        assert_eq!(headers[HOST], "api.example.com");
    }
}
