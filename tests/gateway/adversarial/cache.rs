//! Cache privacy by construction: an answer never crosses consumers, and
//! two routes never serve each other's answers.

use crate::config;
use crate::support::*;
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

const SECRET: &str = "a-secret-of-at-least-thirty-two-bytes!!";

fn token(subject: &str) -> String {
    let claims = serde_json::json!({ "sub": subject, "exp": 4_000_000_000u64 });
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Answers with who it was told the caller is, and what version was asked,
/// with `cache_control` (if any).
async fn whoami(cache_control: Option<&'static str>) -> Upstream {
    Upstream::start(move |request| {
        let who = ["x-consumer-name", "x-user"]
            .iter()
            .find_map(|name| request.headers.get(*name))
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_else(|| "nobody".into());
        let version = request
            .headers
            .get("x-api-version")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        let mut response = http::Response::builder();
        if let Some(value) = cache_control {
            response = response.header("cache-control", value);
        }
        response
            .body(Full::new(Bytes::from(format!("{who} v{version}"))))
            .unwrap()
    })
    .await
}

fn gateway_config(upstream: &Upstream, routes: &str) -> String {
    let hash = bcrypt::hash("pw", 4).unwrap();
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
consumers:
  - { name: alice, credentials: { basic: { username: alice, password: "$HASH" } } }
  - { name: bob, credentials: { basic: { username: bob, password: "$HASH" } } }
upstreams: { app: { targets: [ "$U" ] } }
routes:
$ROUTES
"#,
        &[
            ("U", upstream.addr.to_string()),
            ("HASH", hash),
            ("ROUTES", routes.replace("$SECRET", SECRET)),
        ],
    )
}

#[tokio::test]
async fn a_jwt_route_with_a_ttl_never_serves_one_user_another_s_answer() {
    let upstream = whoami(None).await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        r#"  - name: me
    match: { path: /me/profile }
    upstream: app
    plugins:
      jwt: { secret: "$SECRET", claims_to_headers: { sub: X-User } }
      cache: { ttl: 60s }"#,
    ))
    .await;
    for user in ["alice", "bob", "alice"] {
        let reply = get_with(
            &gw.url("/me/profile"),
            &[("authorization", &format!("Bearer {}", token(user)))],
        )
        .await;
        assert_eq!(reply.text(), format!("{user} v"));
        assert_ne!(reply.header("x-cache"), "HIT", "{user} was served from the cache");
    }
    assert_eq!(upstream.count(), 3, "every authenticated request went upstream");
}

#[tokio::test]
async fn basic_auth_with_an_upstream_max_age_is_not_shared_between_consumers() {
    let upstream = whoami(Some("max-age=60")).await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: me, match: { path: /me }, upstream: app, plugins: { basic_auth: {}, cache: {} } }",
    ))
    .await;
    let alice = get_with(&gw.url("/me"), &[("authorization", &basic("alice", "pw"))]).await;
    let bob = get_with(&gw.url("/me"), &[("authorization", &basic("bob", "pw"))]).await;
    assert_eq!(alice.text(), "alice v");
    assert_eq!(bob.text(), "bob v");
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn keyed_by_consumer_each_consumer_has_their_own_answer() {
    let upstream = whoami(Some("private, max-age=60")).await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: me, match: { path: /me }, upstream: app, plugins: { basic_auth: {}, cache: { key: { consumer: true } } } }",
    ))
    .await;
    let ask = |user: &'static str| {
        let url = gw.url("/me");
        async move { get_with(&url, &[("authorization", &basic(user, "pw"))]).await }
    };
    assert_eq!(ask("alice").await.header("x-cache"), "MISS");
    let again = ask("alice").await;
    assert_eq!((again.header("x-cache"), again.text().as_str()), ("HIT", "alice v"));
    let bob = ask("bob").await;
    assert_eq!((bob.header("x-cache"), bob.text().as_str()), ("MISS", "bob v"));
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn shared_in_so_many_words_shares_what_the_upstream_calls_public() {
    let upstream = whoami(Some("public, max-age=60")).await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: catalog, match: { path: /catalog }, upstream: app, plugins: { basic_auth: {}, cache: { shared: true } } }",
    ))
    .await;
    get_with(&gw.url("/catalog"), &[("authorization", &basic("alice", "pw"))]).await;
    let bob = get_with(&gw.url("/catalog"), &[("authorization", &basic("bob", "pw"))]).await;
    assert_eq!(bob.header("x-cache"), "HIT");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn a_request_with_authorization_is_stored_only_when_the_answer_says_so() {
    // No authentication plugin: the credential goes to the service, which
    // decides; `ttl` never makes such an answer storable (RFC 9111 section 3.5).
    let private = whoami(None).await;
    let gw = Gateway::start(&gateway_config(
        &private,
        "  - { name: passthrough, match: { path: /p }, upstream: app, plugins: { cache: { ttl: 60s } } }",
    ))
    .await;
    for user in ["alice", "bob"] {
        let reply = get_with(
            &gw.url("/p"),
            &[("authorization", &format!("Bearer {user}")), ("x-user", user)],
        )
        .await;
        assert_eq!(reply.text(), format!("{user} v"));
    }
    assert_eq!(private.count(), 2);
    // The same route without Authorization is cached on `ttl`.
    get(&gw.url("/p")).await;
    assert_eq!(get(&gw.url("/p")).await.header("x-cache"), "HIT");
    assert_eq!(private.count(), 3);
}

#[tokio::test]
async fn a_global_cache_keys_by_route_so_versioned_routes_stay_apart() {
    let upstream = whoami(Some("max-age=60")).await;
    let yaml = gateway_config(
        &upstream,
        "  - { name: v1, match: { path: /items, headers: { x-api-version: \"1\" } }, upstream: app }\n  \
         - { name: v2, match: { path: /items, headers: { x-api-version: \"2\" } }, upstream: app }",
    )
    .replace("routes:\n", "plugins: { cache: {} }\nroutes:\n");
    let gw = Gateway::start(&yaml).await;
    let v1 = get_with(&gw.url("/items"), &[("x-api-version", "1")]).await;
    let v2 = get_with(&gw.url("/items"), &[("x-api-version", "2")]).await;
    assert_eq!(v1.text(), "nobody v1");
    assert_eq!(v2.text(), "nobody v2", "route v2 served route v1's answer");
    assert_eq!(
        get_with(&gw.url("/items"), &[("x-api-version", "2")])
            .await
            .header("x-cache"),
        "HIT"
    );
}

#[tokio::test]
async fn keyed_header_values_that_differ_only_in_non_utf8_bytes_are_two_answers() {
    // The upstream answers per tenant, by the header's bytes: Latin-1
    // `café` and `cafè` are two tenants, though as text both read `caf\u{FFFD}`.
    let upstream = Upstream::start(|request| {
        let tenant = request
            .headers
            .get("x-tenant")
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        http::Response::builder()
            .header("cache-control", "max-age=60")
            .body(Full::new(Bytes::from(format!("tenant {tenant:?}"))))
            .unwrap()
    })
    .await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: report, match: { path: /report }, upstream: app, plugins: { cache: { key: { headers: [X-Tenant] } } } }",
    ))
    .await;
    let ask = |tenant: &'static [u8]| {
        let request = http::Request::get(gw.url("/report"))
            .header("x-tenant", http::HeaderValue::from_bytes(tenant).unwrap())
            .body(Full::default())
            .unwrap();
        send(request)
    };
    let first = ask(b"caf\xe9").await;
    assert_eq!(first.text(), format!("tenant {:?}", b"caf\xe9".to_vec()));
    let again = ask(b"caf\xe9").await;
    assert_eq!((again.header("x-cache"), again.text()), ("HIT", first.text()));
    let other = ask(b"caf\xe8").await;
    assert_eq!(other.header("x-cache"), "MISS", "served the other tenant's answer");
    assert_eq!(other.text(), format!("tenant {:?}", b"caf\xe8".to_vec()));
    assert_eq!(upstream.count(), 2);
}

#[tokio::test]
async fn stored_answers_keep_no_read_buffers_and_weigh_what_they_hold() {
    // Each answer on a connection of its own, as a client asking for many
    // distinct URLs gets them from a busy upstream: a stored answer must
    // keep its own few hundred bytes, not the 16 KiB read buffers its head
    // (and its request's) were read into.
    let upstream = Upstream::start(|_| {
        http::Response::builder()
            .header("cache-control", "max-age=600")
            .header("connection", "close")
            .body(Full::new(Bytes::from_static(b"small")))
            .unwrap()
    })
    .await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: pages, match: { path: / }, upstream: app, plugins: { cache: { memory: 16MiB } } }
"#,
        &[("U", upstream.addr.to_string())],
    );
    let gateway = Process::start(&yaml);
    let url = |i: usize| format!("http://{}/page?n={i}", gateway.addr);
    for i in 0..200 {
        get(&url(i)).await;
    }
    let before = gateway.peak_rss();
    const ANSWERS: usize = 3000;
    for i in 200..200 + ANSWERS {
        assert_eq!(get(&url(i)).await.header("x-cache"), "MISS");
    }
    assert_eq!(get(&url(300)).await.header("x-cache"), "HIT", "the answers are kept");
    let grown = gateway.peak_rss().saturating_sub(before);
    eprintln!(
        "{ANSWERS} small answers kept: RSS grew {:.1} MiB",
        grown as f64 / 1048576.0
    );
    // The store weighs each of these at about 2.8 KiB (its bound counts
    // that); they held over 20 KiB each when they kept their read buffers.
    assert!(
        grown < ANSWERS as u64 * 4096,
        "RSS grew {grown} bytes for {ANSWERS} answers of 5 bytes"
    );
}
