//! Authentication and authorization: consumers, API keys, Basic, ACLs,
//! scopes, anonymous access, identity headers. Failures never reach the
//! upstream.

use crate::config;
use crate::support::*;

const PARTNER_KEY: &str = "partner-key-0123456789abcdef";
const INTERNAL_KEY: &str = "internal-key-0123456789abcdef";
/// `printf %s hashed-key-0123456789abcdef | sha256sum`
const HASHED_KEY: &str = "hashed-key-0123456789abcdef";

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Consumers with keys and passwords, an upstream, and `$ROUTES`.
fn gateway_config(upstream: &Upstream, routes: &str) -> String {
    let bcrypt = bcrypt::hash("open sesame", 4).unwrap();
    let argon = portico::password::hash("correct horse", true).unwrap();
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
access_log: { enabled: false }
consumers:
  - name: partner-app
    groups: [partners]
    credentials:
      api_keys: [ "$PARTNER" ]
      basic: { username: aladdin, password: "$BCRYPT" }
  - name: internal-tool
    groups: [staff, internal]
    credentials:
      api_keys: [ "$INTERNAL", "sha256:$HASHED" ]
      basic: { username: ops, password: "$ARGON" }
upstreams: { api: { targets: [ "$U" ] } }
routes:
$ROUTES
"#,
        &[
            ("TOKEN", ADMIN_TOKEN.to_string()),
            ("PARTNER", PARTNER_KEY.to_string()),
            ("INTERNAL", INTERNAL_KEY.to_string()),
            ("HASHED", sha256_hex(HASHED_KEY)),
            ("BCRYPT", bcrypt),
            ("ARGON", argon),
            ("U", upstream.addr.to_string()),
            ("ROUTES", routes.to_string()),
        ],
    )
}

#[tokio::test]
async fn api_keys_identify_consumers_and_never_reach_the_upstream() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: keyed, match: { path: /keyed }, upstream: api, plugins: { key_auth: { query: api_key } } }",
    ))
    .await;

    let missing = get(&gw.url("/keyed")).await;
    missing.problem(401);
    assert_eq!(missing.header("www-authenticate"), "ApiKey header=\"x-api-key\"");
    let wrong = get_with(&gw.url("/keyed"), &[("x-api-key", "not-a-key-0123456789")]).await;
    assert!(wrong.problem(401)["detail"].as_str().unwrap().contains("not valid"));
    assert!(!wrong.text().contains("not-a-key"), "the key is not echoed");
    assert_eq!(upstream.count(), 0, "failures never reach the upstream");

    let ok = get_with(
        &gw.url("/keyed"),
        &[
            ("x-api-key", PARTNER_KEY),
            ("x-consumer-name", "admin"),
            ("x-consumer-groups", "root"),
        ],
    )
    .await;
    assert_eq!(ok.status, 200);
    let seen = upstream.last();
    assert_eq!(
        seen.headers["x-consumer-name"], "partner-app",
        "a spoofed identity is replaced"
    );
    assert_eq!(seen.headers["x-consumer-groups"], "partners");
    assert!(seen.headers.get("x-api-key").is_none(), "the key is removed");

    // A key in the query, and a key stored as its SHA-256.
    let by_query = get(&gw.url(&format!("/keyed/x?a=1&api_key={HASHED_KEY}&b=2"))).await;
    assert_eq!(by_query.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-consumer-name"], "internal-tool");
    assert_eq!(seen.headers["x-consumer-groups"], "staff,internal");
    assert_eq!(seen.uri.to_string(), "/keyed/x?a=1&b=2");
}

#[tokio::test]
async fn spoofed_identity_headers_are_removed_on_every_route() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: open, match: { path: /open }, upstream: api }",
    ))
    .await;
    let reply = get_with(
        &gw.url("/open"),
        &[
            ("x-consumer-name", "admin"),
            ("x-authenticated-scope", "everything"),
            ("x-anonymous-consumer", "false"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = upstream.last();
    for name in ["x-consumer-name", "x-authenticated-scope", "x-anonymous-consumer"] {
        assert!(seen.headers.get(name).is_none(), "{name} passed through");
    }
}

#[tokio::test]
async fn basic_auth_checks_bcrypt_and_argon2_hashes() {
    use base64::Engine;
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: basic, match: { path: /basic }, upstream: api, plugins: { basic_auth: { realm: api } } }",
    ))
    .await;
    let basic = |user: &str, password: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        )
    };
    for (user, password, consumer) in [
        ("aladdin", "open sesame", "partner-app"),
        ("ops", "correct horse", "internal-tool"),
        ("ops", "correct horse", "internal-tool"),
    ] {
        let ok = get_with(&gw.url("/basic"), &[("authorization", &basic(user, password))]).await;
        assert_eq!(ok.status, 200, "{user}");
        let seen = upstream.last();
        assert_eq!(seen.headers["x-consumer-name"], consumer);
        assert!(seen.headers.get("authorization").is_none(), "credentials are removed");
    }
    let before = upstream.count();
    for authorization in [
        basic("aladdin", "wrong"),
        basic("nobody", "open sesame"),
        "Basic !!!not-base64".to_string(),
        "Basic bm9jb2xvbg==".to_string(),
    ] {
        let refused = get_with(&gw.url("/basic"), &[("authorization", &authorization)]).await;
        refused.problem(401);
        assert_eq!(
            refused.header("www-authenticate"),
            "Basic realm=\"api\", charset=\"UTF-8\""
        );
    }
    get(&gw.url("/basic")).await.problem(401);
    assert_eq!(upstream.count(), before);
}

#[tokio::test]
async fn several_methods_on_a_route_and_anonymous_access() {
    use base64::Engine;
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: either, match: { path: /either }, upstream: api, plugins: { key_auth: {}, basic_auth: {} } }\n  \
         - { name: public, match: { path: /public }, upstream: api, plugins: { key_auth: { anonymous: true } } }",
    ))
    .await;
    let basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("aladdin:open sesame")
    );
    assert_eq!(
        get_with(&gw.url("/either"), &[("x-api-key", INTERNAL_KEY)])
            .await
            .status,
        200
    );
    assert_eq!(upstream.last().headers["x-consumer-name"], "internal-tool");
    assert_eq!(
        get_with(&gw.url("/either"), &[("authorization", &basic)]).await.status,
        200
    );
    assert_eq!(upstream.last().headers["x-consumer-name"], "partner-app");
    let none = get(&gw.url("/either")).await;
    let problem = none.problem(401);
    assert!(problem["detail"].as_str().unwrap().contains("key_auth or basic_auth"));
    assert_eq!(
        none.header("www-authenticate"),
        "ApiKey header=\"x-api-key\", Basic realm=\"portico\", charset=\"UTF-8\""
    );

    assert_eq!(get(&gw.url("/public")).await.status, 200);
    let seen = upstream.last();
    assert_eq!(seen.headers["x-consumer-name"], "anonymous");
    assert_eq!(seen.headers["x-anonymous-consumer"], "true");
    // Anonymous access is for requests without credentials, not with bad ones.
    get_with(&gw.url("/public"), &[("x-api-key", "wrong-key-0123456789")])
        .await
        .problem(401);
}

#[tokio::test]
async fn acls_and_scopes_answer_403_and_are_counted() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: partners, match: { path: /partners }, upstream: api, plugins: { key_auth: {}, acl: { allow: [partners] } } }\n  \
         - { name: no-interns, match: { path: /staff }, upstream: api, plugins: { key_auth: {}, acl: { allow: [staff], deny: [internal] } } }\n  \
         - { name: scoped, match: { path: /scoped }, upstream: api, plugins: { key_auth: {}, scopes: [orders:read] } }",
    ))
    .await;
    assert_eq!(
        get_with(&gw.url("/partners"), &[("x-api-key", PARTNER_KEY)])
            .await
            .status,
        200
    );
    let before = upstream.count();
    let denied = get_with(&gw.url("/partners"), &[("x-api-key", INTERNAL_KEY)]).await;
    assert!(denied.problem(403)["detail"]
        .as_str()
        .unwrap()
        .contains("none of the allowed groups"));
    let denied = get_with(&gw.url("/staff"), &[("x-api-key", INTERNAL_KEY)]).await;
    assert!(denied.problem(403)["detail"]
        .as_str()
        .unwrap()
        .contains("denied group \"internal\""));
    let scoped = get_with(&gw.url("/scoped"), &[("x-api-key", PARTNER_KEY)]).await;
    scoped.problem(403);
    assert_eq!(
        scoped.header("www-authenticate"),
        "Bearer error=\"insufficient_scope\", scope=\"orders:read\""
    );
    assert_eq!(upstream.count(), before, "refused requests never reach the upstream");

    get(&gw.url("/partners")).await.problem(401);
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    for line in [
        r#"portico_rejections_total{plugin="acl",reason="not_allowed",route="partners"} 1"#,
        r#"portico_rejections_total{plugin="acl",reason="denied_group",route="no-interns"} 1"#,
        r#"portico_rejections_total{plugin="scopes",reason="insufficient_scope",route="scoped"} 1"#,
        r#"portico_rejections_total{plugin="key_auth",reason="missing",route="partners"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }
}

#[tokio::test]
async fn auth_config_errors_name_the_fix() {
    let errors = |yaml: &str| match portico::config::build(yaml) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    let found = errors(
        r#"
listeners: [{ name: p, addr: "127.0.0.1:0" }]
consumers:
  - { name: a, credentials: { api_keys: [short], basic: { username: "x:y", password: plain-text } } }
routes:
  - { name: r, match: { path: / }, respond: { body: x }, plugins: { acl: { allow: [g] }, key_auth: { heder: x } } }
  - { name: s, match: { path: /s }, respond: { body: x }, plugins: { acl: { allow: [g] } } }
"#,
    );
    let expect = [
        "consumers[0].credentials.api_keys[0]: API keys must be at least 16 characters",
        "consumers[0].credentials.basic.username",
        "consumers[0].credentials.basic.password: unknown hash format",
        "routes[0].plugins.key_auth.heder: unknown key `heder` (did you mean \"header\"?)",
        "routes[1].plugins.acl: authorizes who the request is, but no authentication plugin",
    ];
    for expected in expect {
        assert!(found.iter().any(|e| e.starts_with(expected)), "{expected}\n{found:#?}");
    }
    assert!(
        !found.iter().any(|e| e.contains("plain-text")),
        "a password in an error: {found:#?}"
    );
}

#[tokio::test]
async fn ip_rules_use_the_peer_or_forwarded_for_behind_trusted_proxies() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: loopback, match: { path: /loopback }, upstream: api, plugins: { ip_restriction: { allow: [127.0.0.0/8] } } }\n  \
         - { name: elsewhere, match: { path: /elsewhere }, upstream: api, plugins: { ip_restriction: { allow: [\"2001:db8::/32\", 10.0.0.0/8] } } }\n  \
         - { name: proxied, match: { path: /proxied }, upstream: api, plugins: { ip_restriction: { deny: [\"2001:db8:bad::/48\"], trusted_proxies: [127.0.0.1] } } }",
    ))
    .await;
    assert_eq!(get(&gw.url("/loopback")).await.status, 200);
    // The client's own X-Forwarded-For is not believed: the peer is not a trusted proxy.
    let refused = get_with(&gw.url("/elsewhere"), &[("x-forwarded-for", "10.1.1.1")]).await;
    refused.problem(403);
    // Behind a trusted proxy (the test client on 127.0.0.1), the chain is read.
    let ok = get_with(&gw.url("/proxied"), &[("x-forwarded-for", "2001:db8:1::1")]).await;
    assert_eq!(ok.status, 200);
    let denied = get_with(
        &gw.url("/proxied"),
        &[("x-forwarded-for", "2001:db8:bad::7, 127.0.0.1")],
    )
    .await;
    denied.problem(403);
}

#[tokio::test]
async fn cors_preflights_are_answered_and_allowed_origins_get_headers() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - name: app\n    match: { path: /app, methods: [GET, POST] }\n    upstream: api\n    plugins:\n      \
         cors: { origins: [\"https://app.example.com\", \"https://*.example.org\"], methods: [GET, POST], credentials: true, expose_headers: [X-Total], max_age: 10m }\n      \
         key_auth: {}",
    ))
    .await;
    let preflight = |origin: &str, method: &str| {
        http::Request::builder()
            .method("OPTIONS")
            .uri(gw.url("/app"))
            .header("origin", origin)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "x-api-key, content-type")
            .body(http_body_util::Full::default())
            .unwrap()
    };
    let ok = send(preflight("https://app.example.com", "POST")).await;
    assert_eq!(ok.status, 204);
    assert_eq!(ok.header("access-control-allow-origin"), "https://app.example.com");
    assert_eq!(ok.header("access-control-allow-methods"), "GET, POST");
    assert_eq!(ok.header("access-control-allow-headers"), "x-api-key, content-type");
    assert_eq!(ok.header("access-control-allow-credentials"), "true");
    assert_eq!(ok.header("access-control-max-age"), "600");
    let sub = send(preflight("https://shop.example.org", "GET")).await;
    assert_eq!(sub.header("access-control-allow-origin"), "https://shop.example.org");
    for (origin, method) in [
        ("https://evil.example", "GET"),
        ("https://example.org", "GET"),
        ("https://app.example.com", "DELETE"),
    ] {
        let refused = send(preflight(origin, method)).await;
        // A method the route does not serve cannot be routed at all: 405.
        assert_eq!(refused.status, if method == "DELETE" { 405 } else { 204 });
        assert!(
            refused.headers.get("access-control-allow-origin").is_none(),
            "{origin} {method}"
        );
    }
    assert_eq!(upstream.count(), 0, "preflights are answered by the gateway");
    // `explain` routes a preflight as serving does: to the route of the asked
    // method, answered by `cors`; a method no route serves is the same 405.
    for (method, route, status) in [
        ("POST", serde_json::json!("app"), 204),
        ("DELETE", serde_json::Value::Null, 405),
    ] {
        let question = serde_json::json!({
            "method": "OPTIONS",
            "url": "/app",
            "headers": { "origin": "https://app.example.com", "access-control-request-method": method },
        });
        let explained = gw.admin("POST", "/explain", &question.to_string()).await.json();
        assert_eq!(explained["route"], route, "{explained}");
        assert_eq!(explained["status"], status, "{explained}");
    }

    let simple = get_with(
        &gw.url("/app"),
        &[("origin", "https://app.example.com"), ("x-api-key", PARTNER_KEY)],
    )
    .await;
    assert_eq!(simple.status, 200);
    assert_eq!(simple.header("access-control-allow-origin"), "https://app.example.com");
    assert_eq!(simple.header("access-control-expose-headers"), "X-Total");
    assert_eq!(simple.header("vary"), "Origin");
    // Errors carry CORS headers too, so the page can read them.
    let unauthorized = get_with(&gw.url("/app"), &[("origin", "https://app.example.com")]).await;
    unauthorized.problem(401);
    assert_eq!(
        unauthorized.header("access-control-allow-origin"),
        "https://app.example.com"
    );
    let foreign = get_with(
        &gw.url("/app"),
        &[("origin", "https://evil.example"), ("x-api-key", PARTNER_KEY)],
    )
    .await;
    assert_eq!(foreign.status, 200);
    assert!(foreign.headers.get("access-control-allow-origin").is_none());
}

/// An RFC 7662 authorization server: `good-token` is active, anything else
/// inactive; it checks the client's credentials and counts the calls.
async fn authorization_server() -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use http_body_util::BodyExt;
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let addr = serve(move |request: http::Request<hyper::body::Incoming>| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            use base64::Engine;
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("portico:client-secret")
            );
            let authorized = request.headers().get("authorization").is_some_and(|v| v == expected.as_str());
            let body = request.into_body().collect().await.unwrap().to_bytes();
            let form: std::collections::HashMap<String, String> =
                form_urlencoded::parse(&body).into_owned().collect();
            let answer = if !authorized {
                return Ok::<_, std::convert::Infallible>(status_response(401));
            } else if form.get("token").map(String::as_str) == Some("good-token") {
                serde_json::json!({ "active": true, "sub": "partner-app", "scope": "orders:read", "exp": 4102444800u64 })
            } else {
                serde_json::json!({ "active": false })
            };
            Ok(http::Response::new(http_body_util::Full::new(bytes::Bytes::from(answer.to_string()))))
        }
    })
    .await;
    (addr, calls)
}

#[tokio::test]
async fn introspection_checks_opaque_tokens_with_the_authorization_server_and_caches_the_answer() {
    let upstream = Upstream::named("ok").await;
    let (server, calls) = authorization_server().await;
    let down = refusing_addr().await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        &format!(
            "  - {{ name: opaque, match: {{ path: /opaque }}, upstream: api, plugins: {{ oauth2_introspection: {{ url: \"http://{server}/introspect\", client_id: portico, client_secret: client-secret }}, scopes: [orders:read] }} }}\n  \
             - {{ name: down, match: {{ path: /down }}, upstream: api, plugins: {{ oauth2_introspection: {{ url: \"http://{down}/introspect\", client_id: portico, client_secret: client-secret, timeout: 1s }} }} }}"
        ),
    ))
    .await;
    let bearer = |token: &str| format!("Bearer {token}");
    for _ in 0..3 {
        let ok = get_with(&gw.url("/opaque"), &[("authorization", &bearer("good-token"))]).await;
        assert_eq!(ok.status, 200, "{}", ok.text());
    }
    let seen = upstream.last();
    assert_eq!(seen.headers["x-consumer-name"], "partner-app");
    assert_eq!(seen.headers["x-consumer-groups"], "partners");
    assert_eq!(seen.headers["x-authenticated-scope"], "orders:read");
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the answer is cached"
    );

    let before = upstream.count();
    for _ in 0..2 {
        let inactive = get_with(&gw.url("/opaque"), &[("authorization", &bearer("revoked-token"))]).await;
        assert!(inactive.problem(401)["detail"].as_str().unwrap().contains("not active"));
    }
    assert_eq!(
        calls.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "inactive answers are cached briefly too"
    );
    let unreachable = get_with(&gw.url("/down"), &[("authorization", &bearer("good-token"))]).await;
    unreachable.problem(503);
    assert_eq!(upstream.count(), before);
}

#[tokio::test]
async fn explain_tells_who_a_request_is_and_which_plugin_refuses_it() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&gateway_config(
        &upstream,
        "  - { name: partners, match: { path: /partners }, upstream: api, plugins: { key_auth: {}, basic_auth: {}, acl: { allow: [partners] } } }",
    ))
    .await;
    let explain = |key: &str| {
        let body = serde_json::json!({ "method": "GET", "url": "/partners", "headers": { "x-api-key": key } });
        let gw = &gw;
        async move { gw.admin("POST", "/explain", &body.to_string()).await.json() }
    };
    let ok = explain(PARTNER_KEY).await;
    assert_eq!(ok["outcome"], "proxied", "{ok}");
    let steps = ok["plugins"].as_array().unwrap();
    assert!(
        steps
            .iter()
            .any(|s| s["plugin"] == "authentication" && s["detail"] == "goes on as \"partner-app\""),
        "{ok}"
    );

    let wrong_group = explain(INTERNAL_KEY).await;
    assert_eq!(wrong_group["outcome"], "denied");
    assert_eq!(wrong_group["status"], 403);
    assert!(
        wrong_group["detail"].as_str().unwrap().starts_with("acl answers 403"),
        "{wrong_group}"
    );

    let bad_key = explain("not-a-key-0123456789").await;
    assert_eq!(bad_key["outcome"], "denied");
    assert_eq!(bad_key["status"], 401);
    assert_eq!(upstream.count(), 0, "explain sends nothing");
    // The key itself is not repeated in the answer.
    assert!(!bad_key.to_string().contains("not-a-key-0123456789"), "{bad_key}");
}
