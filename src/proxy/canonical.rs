//! The canonical request, made once before routing: one authority, one
//! path, and no header a client may not send. What routes match, what
//! plugins check and what the upstream receives is this request; nothing
//! later reads the client's own spelling.
//!
//! - **Authority** (RFC 9112 section 3.2, RFC 9113 section 8.3.1): an
//!   absolute-form target's authority wins over Host, which is replaced;
//!   an HTTP/1.1 request without Host, or with several, is a 400; on
//!   HTTP/2 and HTTP/3 a Host that names another authority than
//!   `:authority` is a 400. The authority is then the Host header, and the
//!   target is origin-form.
//! - **Path**: [`crate::router::canonical`], by the listener's policy.
//! - **Headers**: the gateway's trusted headers (identity, claims,
//!   client certificates) are removed whoever sends them; fields named in
//!   `Connection` are removed now, so that a client cannot name a header
//!   Portico sets later; `Upgrade` passes only for WebSocket; forwarding
//!   headers (`Forwarded`, `X-Forwarded-Host`, `-Proto`, `-Port`,
//!   `-Prefix`, `-Server`, `X-Real-IP`, `Via`) pass only from the
//!   listener's `trusted_proxies`.

use super::forward::{accepts_trailers, connection_is, connection_named, remove_named, tokens, HopByHop, NameSet};
use crate::error::{ErrorKind, ProxyError};
use crate::gateway::ListenerSettings;
use crate::plugins::ClientFacts;
use crate::router::{canonical_path, PathPolicy};
use http::header::{CONNECTION, HOST, TE, UPGRADE};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use std::net::IpAddr;
use std::sync::LazyLock;

/// Headers that say who forwarded a request and for whom: believed only
/// from a trusted proxy. `X-Forwarded-For` is not among them: Portico
/// appends the peer to it, as nginx does, and whoever reads it (the
/// `ip_restriction` plugin, a service) reads it from the right, past the
/// proxies it trusts.
static FORWARDING: LazyLock<NameSet> = LazyLock::new(|| {
    NameSet::new(vec![
        HeaderName::from_static("forwarded"),
        HeaderName::from_static("x-forwarded-host"),
        HeaderName::from_static("x-forwarded-proto"),
        HeaderName::from_static("x-forwarded-port"),
        HeaderName::from_static("x-forwarded-prefix"),
        HeaderName::from_static("x-forwarded-server"),
        HeaderName::from_static("x-real-ip"),
        http::header::VIA,
    ])
});

/// Makes `parts` the canonical request, as `listener` says, for a request
/// from `peer`. `trusted` is the gateway's list of headers only Portico sets.
pub fn canonicalise(
    parts: &mut http::request::Parts,
    listener: &ListenerSettings,
    peer: IpAddr,
    trusted: &NameSet,
) -> Result<ClientFacts, ProxyError> {
    canonicalise_with(parts, &listener.path, listener.trusts(peer), trusted)
}

/// [`canonicalise`] with the listener's decisions made: its path policy,
/// and whether it trusts the peer's forwarding headers.
pub fn canonicalise_with(
    parts: &mut http::request::Parts,
    policy: &PathPolicy,
    peer_trusted: bool,
    trusted: &NameSet,
) -> Result<ClientFacts, ProxyError> {
    let authority = authority(parts)?;
    let path = canonical_path(parts.uri.path(), policy).map_err(|e| bad_request(e.detail()))?;
    if path != parts.uri.path() || parts.uri.scheme().is_some() || parts.uri.authority().is_some() {
        let target = match parts.uri.query() {
            Some(query) => format!("{path}?{query}"),
            None => path.into_owned(),
        };
        let target = PathAndQuery::try_from(target).map_err(|_| bad_request("the request target is not valid"))?;
        parts.uri = Uri::from(target);
    }
    match authority {
        Host::Keep => {}
        Host::Set(authority) => {
            parts.headers.insert(HOST, authority);
        }
        Host::Remove => {
            parts.headers.remove(HOST);
        }
    }
    let headers = &mut parts.headers;
    remove_named(headers, trusted);
    strip_connection_named(headers);
    if !peer_trusted {
        remove_named(headers, &FORWARDING);
    }
    Ok(ClientFacts {
        sent_authorization: headers.contains_key(http::header::AUTHORIZATION),
        // Known only from the body, which the caller has.
        has_body: false,
    })
}

/// What the Host field becomes.
enum Host {
    /// It is the request's one authority already.
    Keep,
    /// The target's authority (absolute-form, or HTTP/2's `:authority`).
    Set(HeaderValue),
    /// The request has no authority (HTTP/1.0 without Host, or an empty Host).
    Remove,
}

/// The one authority of the request, as its Host field.
fn authority(parts: &http::request::Parts) -> Result<Host, ProxyError> {
    let mut hosts = parts.headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(bad_request("the request has more than one Host field"));
    }
    let invalid = || bad_request("the Host field is not a valid authority");
    let from_target = parts.uri.authority();
    let chosen = match (parts.version, from_target, host) {
        // Absolute-form: the target's authority, whatever Host says (RFC 9112 section 3.2.2).
        (Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11, Some(target), _) => target.as_str(),
        (Version::HTTP_11, None, None) => return Err(bad_request("an HTTP/1.1 request must have a Host field")),
        (_, None, None) => return Ok(Host::Remove),
        (_, None, Some(host)) => host.to_str().map_err(|_| invalid())?,
        // HTTP/2 and HTTP/3: Host may repeat `:authority`, never name another (RFC 9113 section 8.3.1).
        (_, Some(target), Some(host)) if !host.as_bytes().eq_ignore_ascii_case(target.as_str().as_bytes()) => {
            return Err(bad_request("the Host field names another authority than :authority"));
        }
        (_, Some(target), _) => target.as_str(),
    };
    if chosen.is_empty() {
        return Ok(Host::Remove);
    }
    if from_target.is_none() && valid_host::was_last(chosen) {
        return Ok(Host::Keep);
    }
    let authority: Authority = chosen.parse().map_err(|_| invalid())?;
    // `user@host` is not a Host (RFC 9110 section 7.2), and a port is a number.
    let port_ok = match authority.as_str().rsplit_once(':') {
        Some((host, _)) if host.starts_with('[') && !host.ends_with(']') => true,
        Some((_, port)) => port.parse::<u16>().is_ok() && port.bytes().all(|b| b.is_ascii_digit()),
        None => true,
    };
    if authority.as_str().contains('@') || !port_ok {
        return Err(invalid());
    }
    if from_target.is_none() {
        valid_host::remember(chosen);
        return Ok(Host::Keep);
    }
    HeaderValue::from_str(authority.as_str())
        .map(Host::Set)
        .map_err(|_| invalid())
}

/// The last Host value this thread found valid. A keep-alive connection
/// sends the same Host on every request, and checking one is a parse into
/// an `Authority` that copies it (an allocation): a match with the last
/// valid one skips that, and a Host that differs is checked in full.
mod valid_host {
    use std::cell::RefCell;

    /// Longer Hosts are checked every time.
    const KEPT: usize = 64;

    thread_local! {
        static LAST: RefCell<([u8; KEPT], usize)> = const { RefCell::new(([0; KEPT], 0)) };
    }

    pub fn was_last(host: &str) -> bool {
        LAST.with_borrow(|(bytes, len)| *len != 0 && bytes[..*len] == *host.as_bytes())
    }

    pub fn remember(host: &str) {
        if host.len() <= KEPT {
            LAST.with_borrow_mut(|(bytes, len)| {
                bytes[..host.len()].copy_from_slice(host.as_bytes());
                *len = host.len();
            });
        }
    }
}

/// Removes the fields `Connection` names and every `Upgrade` but
/// WebSocket's. `Connection` is left saying only `upgrade` (for WebSocket)
/// and `TE` only `trailers`, which is all the way upstream reads of them.
fn strip_connection_named(headers: &mut HeaderMap) {
    // Most requests have none of the three: one pass over their names says so.
    let present = HopByHop::of(headers);
    if ![CONNECTION, UPGRADE, TE].iter().any(|name| present.has_field(name)) {
        return;
    }
    // The usual `Connection: keep-alive`: it and the field it names go.
    if !present.has_field(&UPGRADE) && !present.has_field(&TE) && connection_is(headers, &["keep-alive"]) {
        headers.remove(CONNECTION);
        present.strip_keep_alive(headers);
        return;
    }
    let websocket = tokens(headers, &UPGRADE).any(|token| token.eq_ignore_ascii_case("websocket"));
    if headers.contains_key(CONNECTION) {
        let mut upgrade = false;
        for name in connection_named(headers) {
            if name == UPGRADE {
                upgrade = true;
            } else {
                headers.remove(name);
            }
        }
        headers.remove(CONNECTION);
        if upgrade && websocket {
            headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        }
    }
    if !headers.contains_key(CONNECTION) {
        headers.remove(UPGRADE);
    } else if websocket {
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
    }
    if headers.contains_key(TE) {
        let trailers = accepts_trailers(headers);
        headers.remove(TE);
        if trailers {
            headers.insert(TE, HeaderValue::from_static("trailers"));
        }
    }
}

fn bad_request(detail: &'static str) -> ProxyError {
    ProxyError::new(ErrorKind::BadRequest, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, target: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut builder = http::Request::builder().version(version).uri(target);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn host_of(parts: &http::request::Parts) -> Result<Option<String>, u16> {
        let text = |v: &HeaderValue| v.to_str().unwrap().to_string();
        match authority(parts).map_err(|e| e.kind.status().as_u16())? {
            Host::Keep => Ok(parts.headers.get(HOST).map(text)),
            Host::Set(value) => Ok(Some(text(&value))),
            Host::Remove => Ok(None),
        }
    }

    #[test]
    fn one_authority_per_request() {
        let h1 = |target, headers| host_of(&request(Version::HTTP_11, target, headers));
        assert_eq!(
            h1("/x", &[("host", "api.example.com")]),
            Ok(Some("api.example.com".into()))
        );
        assert_eq!(h1("/x", &[]), Err(400));
        assert_eq!(
            h1("/x", &[("host", "a.example.com"), ("host", "b.example.com")]),
            Err(400)
        );
        assert_eq!(h1("/x", &[("host", "user@a.example.com")]), Err(400));
        assert_eq!(h1("/x", &[("host", "a.example.com/x")]), Err(400));
        assert_eq!(h1("/x", &[("host", "a.example.com:")]), Err(400));
        assert_eq!(h1("/x", &[("host", "a.example.com:80x")]), Err(400));
        assert_eq!(h1("/x", &[("host", "a.example.com:99999")]), Err(400));
        assert_eq!(h1("/x", &[("host", "[::1]:8080")]), Ok(Some("[::1]:8080".into())));
        assert_eq!(h1("/x", &[("host", "[::1]")]), Ok(Some("[::1]".into())));
        assert_eq!(
            h1("http://www.example.com/site", &[("host", "admin.example.com")]),
            Ok(Some("www.example.com".into()))
        );
        assert_eq!(host_of(&request(Version::HTTP_10, "/x", &[])), Ok(None));
        let h2 = |target, headers| host_of(&request(Version::HTTP_2, target, headers));
        assert_eq!(h2("https://a.example.com/x", &[]), Ok(Some("a.example.com".into())));
        assert_eq!(
            h2("https://a.example.com/x", &[("host", "A.example.com")]),
            Ok(Some("a.example.com".into()))
        );
        assert_eq!(h2("https://a.example.com/x", &[("host", "b.example.com")]), Err(400));
    }

    #[test]
    fn a_remembered_host_passes_only_itself() {
        let h1 = |host| host_of(&request(Version::HTTP_11, "/x", &[("host", host)]));
        assert_eq!(h1("api.example.com:8080"), Ok(Some("api.example.com:8080".into())));
        assert!(valid_host::was_last("api.example.com:8080"));
        for bad in [
            "api.example.com:8080x",
            "api.example.com:808",
            "user@api.example.com:8080",
        ] {
            let expected = if bad.ends_with(":808") {
                Ok(Some(bad.into()))
            } else {
                Err(400)
            };
            assert_eq!(h1(bad), expected, "{bad}");
        }
        assert!(!valid_host::was_last("api.example.com:8080x"));
        assert!(valid_host::was_last("api.example.com:808"));
        // Absolute-form takes the target's authority, checked as before.
        assert_eq!(
            host_of(&request(
                Version::HTTP_11,
                "http://a.example.com/x",
                &[("host", "api.example.com:80")]
            )),
            Ok(Some("a.example.com".into()))
        );
    }

    #[test]
    fn connection_cannot_name_a_header_away_and_only_websocket_upgrades() {
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "x-consumer-name, upgrade, HTTP2-Settings".parse().unwrap());
        headers.insert(UPGRADE, "h2c".parse().unwrap());
        headers.insert("http2-settings", "AAMAAABkAAQAAP__".parse().unwrap());
        headers.insert("x-consumer-name", "kept".parse().unwrap());
        strip_connection_named(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");

        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "keep-alive, Upgrade".parse().unwrap());
        headers.insert(UPGRADE, "WebSocket".parse().unwrap());
        headers.insert(TE, "gzip, trailers".parse().unwrap());
        strip_connection_named(&mut headers);
        assert_eq!(headers[CONNECTION], "upgrade");
        assert_eq!(headers[UPGRADE], "websocket");
        assert_eq!(headers[TE], "trailers");

        // The common line: it and the field it names go, the rest stays.
        let mut headers = HeaderMap::new();
        headers.insert(CONNECTION, "Keep-Alive".parse().unwrap());
        headers.insert("keep-alive", "timeout=5".parse().unwrap());
        headers.insert("x-kept", "1".parse().unwrap());
        strip_connection_named(&mut headers);
        assert_eq!(headers.keys().collect::<Vec<_>>(), ["x-kept"]);

        // Two lines, or a field named beside it: the full reading.
        let mut headers = HeaderMap::new();
        headers.append(CONNECTION, "keep-alive".parse().unwrap());
        headers.append(CONNECTION, "x-secret".parse().unwrap());
        headers.insert("x-secret", "1".parse().unwrap());
        strip_connection_named(&mut headers);
        assert!(headers.is_empty(), "{headers:?}");
    }
}
