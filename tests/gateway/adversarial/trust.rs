//! One list of trusted headers: what Portico sets for upstreams to trust
//! never comes from a client, on any route, and `Connection` cannot take
//! it away. Forwarding headers pass only from trusted proxies; only
//! WebSocket upgrades pass.

use super::recording;
use crate::config;
use crate::support::*;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!!";
const KEY: &str = "ops-key-0123456789abcdef0";

fn token(subject: &str) -> String {
    let claims = serde_json::json!({ "sub": subject, "uid": format!("id-{subject}"), "exp": 4_000_000_000u64 });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn gateway_config(upstream: &Upstream) -> String {
    config(
        r#"
listeners:
  - { name: public, addr: "127.0.0.1:0" }
  - { name: behind-lb, addr: "127.0.0.1:0", trusted_proxies: [ 127.0.0.1 ] }
access_log: { enabled: false }
consumers:
  - { name: ops, groups: [staff], credentials: { api_keys: [ "$KEY" ] } }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - name: me
    match: { path: /me }
    upstream: app
    plugins: { jwt: { secret: "$SECRET", claims_to_headers: { uid: X-User-Id } } }
  - { name: keyed, match: { path: /keyed }, upstream: app, plugins: { key_auth: {} } }
  - { name: open, match: { path: /open }, upstream: app }
"#,
        &[
            ("U", upstream.addr.to_string()),
            ("KEY", KEY.to_string()),
            ("SECRET", SECRET.to_string()),
        ],
    )
}

#[tokio::test]
async fn a_claim_header_is_portico_s_on_every_route_not_only_the_jwt_one() {
    let upstream = recording().await;
    let gw = Gateway::start(&gateway_config(&upstream)).await;
    for header in [
        "x-user-id",
        "X-User-Id",
        "x-consumer-name",
        "x-consumer-groups",
        "x-client-cert-subject",
    ] {
        let reply = get_with(&gw.url("/open"), &[(header, "victim")]).await;
        assert_eq!(reply.status, 200);
        assert!(
            !upstream.last().headers.contains_key(header),
            "{header} reached the upstream from a client"
        );
    }
    // On the jwt route, the claim's own value, never the client's.
    let bearer = format!("Bearer {}", token("alice"));
    get_with(&gw.url("/me"), &[("authorization", &bearer), ("x-user-id", "victim")]).await;
    let seen = upstream.last();
    assert_eq!(seen.headers.get_all("x-user-id").iter().count(), 1);
    assert_eq!(seen.headers["x-user-id"], "id-alice");
}

#[tokio::test]
async fn connection_cannot_remove_what_portico_set() {
    let upstream = recording().await;
    let gw = Gateway::start(&gateway_config(&upstream)).await;
    let reply = get_with(
        &gw.url("/keyed"),
        &[
            ("x-api-key", KEY),
            ("connection", "x-consumer-name, X-Consumer-Groups, x-request-id, via"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-consumer-name"], "ops");
    assert_eq!(seen.headers["x-consumer-groups"], "staff");
    assert!(seen.headers.contains_key("x-request-id"));
    assert!(seen.headers.contains_key("via"));
    let bearer = format!("Bearer {}", token("bob"));
    get_with(
        &gw.url("/me"),
        &[("authorization", &bearer), ("connection", "x-user-id")],
    )
    .await;
    assert_eq!(upstream.last().headers["x-user-id"], "id-bob");
}

#[tokio::test]
async fn forwarding_headers_pass_only_from_trusted_proxies() {
    let upstream = recording().await;
    let gw = Gateway::start(&gateway_config(&upstream)).await;
    let spoofed = [
        ("forwarded", "for=10.0.0.1;proto=https"),
        ("x-real-ip", "10.0.0.1"),
        ("x-forwarded-prefix", "/admin"),
        ("x-forwarded-port", "443"),
        ("x-forwarded-host", "admin.internal"),
        ("x-forwarded-proto", "https"),
        ("via", "1.1 trusted-lb"),
    ];
    get_with(&gw.url("/open"), &spoofed).await;
    let seen = upstream.last();
    for name in ["forwarded", "x-real-ip", "x-forwarded-prefix", "x-forwarded-port"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} passed from an untrusted client"
        );
    }
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_ne!(seen.headers["x-forwarded-host"], "admin.internal");
    assert_eq!(seen.headers["via"], "1.1 portico");
    // Behind a trusted load balancer, they pass (Portico adds its own after).
    let lb = gw.listener("behind-lb").unwrap();
    get_with(&format!("http://{lb}/open"), &spoofed).await;
    let seen = upstream.last();
    assert_eq!(seen.headers["forwarded"], "for=10.0.0.1;proto=https");
    assert_eq!(seen.headers["x-real-ip"], "10.0.0.1");
    assert_eq!(seen.headers["x-forwarded-prefix"], "/admin");
    let via: Vec<_> = seen.headers.get_all("via").iter().collect();
    assert_eq!(via, ["1.1 trusted-lb", "1.1 portico"]);
}

#[tokio::test]
async fn only_websocket_upgrades_are_passed_on() {
    let upstream = recording().await;
    let gw = Gateway::start(&gateway_config(&upstream)).await;
    let answer = raw(
        gw.addr,
        b"GET /open HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = upstream.last();
    for name in ["upgrade", "connection", "http2-settings"] {
        assert!(!seen.headers.contains_key(name), "{name} reached the upstream");
    }
    for protocol in ["h2c", "TLS/1.2", "foo, h2c"] {
        let request = format!(
            "GET /open HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: {protocol}\r\nConnection: close\r\n\r\n"
        );
        let answer = raw(gw.addr, request.as_bytes()).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(!upstream.last().headers.contains_key("upgrade"), "{protocol} passed");
    }
}

/// `trusted_proxies` takes networks and addresses in every spelling, and an
/// IPv4-mapped IPv6 entry trusts the IPv4 peer it maps: a client on
/// 127.0.0.1 is trusted by `127.0.0.0/8` and `::ffff:127.0.0.1`, not by a
/// neighbour (`127.0.0.2/32`) or by `::1`.
#[tokio::test]
async fn trusted_proxies_match_networks_and_mapped_addresses() {
    let upstream = recording().await;
    let gw = Gateway::start(&config(
        r#"
listeners:
  - { name: network, addr: "127.0.0.1:0", trusted_proxies: [ 127.0.0.0/8 ] }
  - { name: mapped, addr: "127.0.0.1:0", trusted_proxies: [ "10.0.0.0/8", "::ffff:127.0.0.1" ] }
  - { name: others, addr: "127.0.0.1:0", trusted_proxies: [ 127.0.0.2/32, "::1", "2001:db8::/32" ] }
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes: [ { name: open, match: { path: /open }, upstream: app } ]
"#,
        &[("U", upstream.addr.to_string())],
    ))
    .await;
    for (listener, trusted) in [("network", true), ("mapped", true), ("others", false)] {
        let addr = gw.listener(listener).unwrap();
        get_with(&format!("http://{addr}/open"), &[("x-real-ip", "10.9.9.9")]).await;
        let seen = upstream.last();
        assert_eq!(
            seen.headers.get("x-real-ip").is_some(),
            trusted,
            "listener {listener}: X-Real-IP {}",
            if trusted { "dropped" } else { "passed" }
        );
    }
}
