//! JWT: every algorithm family, every rejection, JWKS from a real HTTP
//! server that rotates its keys mid-test.

use crate::config;
use crate::support::*;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::json;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SECRET: &str = "an-hmac-secret-of-at-least-32-bytes!!";

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/jwt")
            .join(name),
    )
    .unwrap()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(extra: serde_json::Value) -> serde_json::Value {
    let mut claims = json!({
        "sub": "user-42", "iss": "https://id.test", "aud": "api",
        "exp": now() + 600, "iat": now(), "scope": "orders:read orders:write", "tenant": "acme",
    });
    for (k, v) in extra.as_object().unwrap() {
        if v.is_null() {
            claims.as_object_mut().unwrap().remove(k);
        } else {
            claims[k] = v.clone();
        }
    }
    claims
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &serde_json::Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_string);
    encode(&header, claims, key).unwrap()
}

fn rsa(name: &str) -> EncodingKey {
    EncodingKey::from_rsa_pem(fixture(&format!("{name}.key")).as_bytes()).unwrap()
}

/// A JWKS document with the RSA keys given (kid = file name).
fn jwks(names: &[&str]) -> String {
    let keys: Vec<serde_json::Value> = names
        .iter()
        .map(|name| {
            let hex = fixture(&format!("{name}.modulus"));
            let bytes: Vec<u8> = (0..hex.trim().len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex.trim()[i..i + 2], 16).unwrap())
                .collect();
            let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
            json!({ "kty": "RSA", "kid": name, "use": "sig", "alg": "RS256", "n": n, "e": "AQAB" })
        })
        .collect();
    json!({ "keys": keys }).to_string()
}

fn route(name: &str, jwt: &str) -> String {
    format!("  - {{ name: {name}, match: {{ path: /{name} }}, upstream: api, plugins: {{ jwt: {jwt} }} }}\n")
}

async fn gateway(upstream: &Upstream, routes: &str) -> Gateway {
    Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
consumers: [{ name: user-42, groups: [customers] }]
upstreams: { api: { targets: [ "$U" ] } }
routes:
$ROUTES"#,
        &[("U", upstream.addr.to_string()), ("ROUTES", routes.to_string())],
    ))
    .await
}

async fn call(gw: &Gateway, path: &str, token: &str) -> Reply {
    get_with(&gw.url(path), &[("authorization", &format!("Bearer {token}"))]).await
}

#[tokio::test]
async fn every_algorithm_family_verifies_and_claims_reach_the_upstream() {
    let upstream = Upstream::named("ok").await;
    let pem = |name: &str| serde_json::to_string(&fixture(name)).unwrap();
    let routes = [
        route("hs", &format!("{{ secret: \"{SECRET}\", issuer: \"https://id.test\", audience: api, claims_to_headers: {{ sub: X-User-Id, tenant: X-Tenant }} }}")),
        route("rs", &format!("{{ public_key: {}, algorithms: [RS256, PS256] }}", pem("rsa1.pub"))),
        route("es", &format!("{{ public_key: {} }}", pem("ec.pub"))),
        route("ed", &format!("{{ public_key: {} }}", pem("ed.pub"))),
    ]
    .concat();
    let gw = gateway(&upstream, &routes).await;
    let c = claims(json!({}));
    let tokens = [
        (
            "/hs",
            sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes()), None, &c),
        ),
        (
            "/hs",
            sign(Algorithm::HS512, &EncodingKey::from_secret(SECRET.as_bytes()), None, &c),
        ),
        ("/rs", sign(Algorithm::RS256, &rsa("rsa1"), None, &c)),
        ("/rs", sign(Algorithm::PS256, &rsa("rsa1"), None, &c)),
        (
            "/es",
            sign(
                Algorithm::ES256,
                &EncodingKey::from_ec_pem(fixture("ec.key").as_bytes()).unwrap(),
                None,
                &c,
            ),
        ),
        (
            "/ed",
            sign(
                Algorithm::EdDSA,
                &EncodingKey::from_ed_pem(fixture("ed.key").as_bytes()).unwrap(),
                None,
                &c,
            ),
        ),
    ];
    for (path, token) in &tokens {
        let reply = call(&gw, path, token).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.text());
        let seen = upstream.last();
        assert_eq!(seen.headers["x-consumer-name"], "user-42");
        assert_eq!(seen.headers["x-consumer-groups"], "customers");
        assert_eq!(seen.headers["x-authenticated-scope"], "orders:read orders:write");
    }
    call(&gw, "/hs", &tokens[0].1).await;
    let seen = upstream.last();
    assert_eq!(seen.headers["x-user-id"], "user-42");
    assert_eq!(seen.headers["x-tenant"], "acme");
    // RS384 is not among the route's algorithms.
    let rs384 = sign(Algorithm::RS384, &rsa("rsa1"), None, &c);
    call(&gw, "/rs", &rs384).await.problem(401);
    // A client cannot set the claim headers itself.
    let spoofed = get_with(&gw.url("/hs"), &[("x-user-id", "admin")]).await;
    spoofed.problem(401);
}

#[tokio::test]
async fn every_bad_token_is_refused_with_the_reason_and_never_reaches_the_upstream() {
    let upstream = Upstream::named("ok").await;
    let rsa_pub = fixture("rsa1.pub");
    let routes = [
        route("hs", &format!("{{ secret: \"{SECRET}\", issuer: \"https://id.test\", audience: api, required_claims: [tenant], leeway: 5s }}")),
        route("rs", &format!("{{ public_key: {} }}", serde_json::to_string(&rsa_pub).unwrap())),
    ]
    .concat();
    let gw = gateway(&upstream, &routes).await;
    let hs = |extra: serde_json::Value| {
        sign(
            Algorithm::HS256,
            &EncodingKey::from_secret(SECRET.as_bytes()),
            None,
            &claims(extra),
        )
    };
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(claims(json!({})))
    );
    // The RSA public key used as an HMAC secret: algorithm confusion.
    let confused = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(rsa_pub.as_bytes()),
        None,
        &claims(json!({})),
    );
    // One signature character changed, in the middle (the last one's low bits are padding).
    let token = hs(json!({}));
    let at = token.rfind('.').unwrap() + 10;
    let swapped = if &token[at..at + 1] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &token[..at], &token[at + 1..]);
    let rs = sign(Algorithm::RS256, &rsa("rsa1"), None, &claims(json!({})));
    let at = rs.rfind('.').unwrap() + 10;
    let swapped = if &rs[at..at + 1] == "A" { "B" } else { "A" };
    let rs_tampered = format!("{}{swapped}{}", &rs[..at], &rs[at + 1..]);
    let cases = [
        ("/hs", "not-a-jwt".to_string(), "well-formed"),
        ("/hs", hs(json!({ "exp": now() - 60 })), "expired"),
        ("/hs", hs(json!({ "nbf": now() + 600 })), "not valid yet"),
        ("/hs", hs(json!({ "iss": "https://evil.test" })), "issuer"),
        ("/hs", hs(json!({ "aud": "other" })), "audience"),
        ("/hs", hs(json!({ "tenant": null })), "required claim"),
        (
            "/hs",
            sign(
                Algorithm::HS256,
                &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes"),
                None,
                &claims(json!({})),
            ),
            "signature",
        ),
        ("/hs", tampered, "signature"),
        ("/hs", alg_none.clone(), "algorithm"),
        ("/rs", alg_none, "algorithm"),
        ("/rs", confused, "algorithm"),
        (
            "/rs",
            sign(Algorithm::RS256, &rsa("rsa2"), None, &claims(json!({}))),
            "signature",
        ),
        ("/rs", rs_tampered, "signature"),
        (
            "/rs",
            sign(Algorithm::PS256, &rsa("rsa2"), None, &claims(json!({}))),
            "signature",
        ),
    ];
    for (path, token, why) in cases {
        let reply = call(&gw, path, &token).await;
        assert_eq!(reply.status, 401, "{why}: {}", reply.text());
        let problem = reply.problem(401);
        let detail = problem["detail"].as_str().unwrap();
        assert!(detail.contains(why), "{why}: {detail}");
        assert!(reply
            .header("www-authenticate")
            .starts_with("Bearer error=\"invalid_token\""));
    }
    let missing = get(&gw.url("/hs")).await;
    missing.problem(401);
    assert_eq!(missing.header("www-authenticate"), "Bearer");
    assert_eq!(upstream.count(), 0);
    // Within the leeway, an expired token still passes.
    assert_eq!(call(&gw, "/hs", &hs(json!({ "exp": now() - 2 }))).await.status, 200);
}

/// A JWKS endpoint whose document can change, counting its fetches.
struct JwksServer {
    addr: std::net::SocketAddr,
    document: Arc<Mutex<String>>,
    fetches: Arc<AtomicUsize>,
    up: Arc<std::sync::atomic::AtomicBool>,
}

impl JwksServer {
    async fn start(document: String) -> JwksServer {
        let document = Arc::new(Mutex::new(document));
        let fetches = Arc::new(AtomicUsize::new(0));
        let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (d, f, u) = (document.clone(), fetches.clone(), up.clone());
        let addr = serve(move |_request| {
            let (d, f, u) = (d.clone(), f.clone(), u.clone());
            async move {
                f.fetch_add(1, Ordering::SeqCst);
                let response = if u.load(Ordering::SeqCst) {
                    http::Response::new(http_body_util::Full::new(bytes::Bytes::from(d.lock().unwrap().clone())))
                } else {
                    http::Response::builder()
                        .status(503)
                        .body(http_body_util::Full::default())
                        .unwrap()
                };
                Ok::<_, std::convert::Infallible>(response)
            }
        })
        .await;
        JwksServer {
            addr,
            document,
            fetches,
            up,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn jwks_keys_rotate_unknown_kids_are_rate_limited_and_stale_keys_keep_serving() {
    let upstream = Upstream::named("ok").await;
    let server = JwksServer::start(jwks(&["rsa1"])).await;
    let jwt = format!(
        "{{ jwks_url: \"http://{}/jwks.json\", jwks: {{ refresh: 1h, min_refresh: 2s }} }}",
        server.addr
    );
    let gw = gateway(&upstream, &route("api", &jwt)).await;
    let c = claims(json!({}));
    let old = sign(Algorithm::RS256, &rsa("rsa1"), Some("rsa1"), &c);
    let mut first = call(&gw, "/api", &old).await;
    for _ in 0..50 {
        if first.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        first = call(&gw, "/api", &old).await;
    }
    assert_eq!(first.status, 200, "{}", first.text());
    let fetched = server.fetches.load(Ordering::SeqCst);

    // The provider rotates in a new key: a token with its kid triggers a fetch.
    *server.document.lock().unwrap() = jwks(&["rsa1", "rsa2"]);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let new = sign(Algorithm::RS256, &rsa("rsa2"), Some("rsa2"), &c);
    assert_eq!(call(&gw, "/api", &new).await.status, 200);
    assert_eq!(server.fetches.load(Ordering::SeqCst), fetched + 1);

    // Made-up kids: at most one fetch per min_refresh, however many arrive.
    let fetched = server.fetches.load(Ordering::SeqCst);
    for i in 0..20 {
        let garbage = sign(Algorithm::RS256, &rsa("rsa2"), Some(&format!("made-up-{i}")), &c);
        let reply = call(&gw, "/api", &garbage).await;
        reply.problem(401);
    }
    assert!(
        server.fetches.load(Ordering::SeqCst) <= fetched + 1,
        "the provider was hammered"
    );

    // The provider goes down: the last good keys keep serving.
    server.up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let unknown = sign(Algorithm::RS256, &rsa("rsa2"), Some("another"), &c);
    call(&gw, "/api", &unknown).await.problem(401);
    assert_eq!(call(&gw, "/api", &old).await.status, 200, "stale keys still verify");
}

#[tokio::test(start_paused = true)]
async fn with_no_keys_from_the_provider_the_answer_is_503_not_401() {
    let upstream = Upstream::named("ok").await;
    let server = JwksServer::start(jwks(&["rsa1"])).await;
    server.up.store(false, Ordering::SeqCst);
    let jwt = format!(
        "{{ jwks_url: \"http://{}/jwks.json\", jwks: {{ min_refresh: 1s }} }}",
        server.addr
    );
    let gw = gateway(&upstream, &route("api", &jwt)).await;
    let token = sign(Algorithm::RS256, &rsa("rsa1"), Some("rsa1"), &claims(json!({})));
    let reply = call(&gw, "/api", &token).await;
    let problem = reply.problem(503);
    assert!(problem["detail"].as_str().unwrap().contains("keys are not available"));
    // Once the provider is back, the background refresh brings the keys.
    server.up.store(true, Ordering::SeqCst);
    let mut status = 0;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = call(&gw, "/api", &token).await.status.as_u16();
        if status == 200 {
            break;
        }
    }
    assert_eq!(status, 200);
}

/// RFC 7518 §3.3: RS and PS keys have 2048 bits or more. A smaller one from
/// a JWKS never verifies a token (an inline one is a config error).
#[tokio::test]
async fn an_rsa_key_under_2048_bits_never_verifies() {
    let upstream = Upstream::named("ok").await;
    let server = JwksServer::start(jwks(&["rsa1024", "rsa1"])).await;
    let jwt = format!("{{ jwks_url: \"http://{}/jwks.json\" }}", server.addr);
    let gw = gateway(&upstream, &route("api", &jwt)).await;
    let small = sign(Algorithm::RS256, &rsa("rsa1024"), Some("rsa1024"), &claims(json!({})));
    let problem = call(&gw, "/api", &small).await.problem(401);
    assert!(problem["detail"].as_str().unwrap().contains("signature"), "{problem}");
    let large = sign(Algorithm::RS256, &rsa("rsa1"), Some("rsa1"), &claims(json!({})));
    assert_eq!(call(&gw, "/api", &large).await.status, 200);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn scopes_from_the_token_authorize_and_jwt_config_errors_are_named() {
    let upstream = Upstream::named("ok").await;
    let routes = format!(
        "  - {{ name: read, match: {{ path: /read }}, upstream: api, plugins: {{ jwt: {{ secret: \"{SECRET}\" }}, scopes: [orders:read] }} }}\n  \
         - {{ name: admin, match: {{ path: /admin }}, upstream: api, plugins: {{ jwt: {{ secret: \"{SECRET}\" }}, scopes: [admin] }} }}\n"
    );
    let gw = gateway(&upstream, &routes).await;
    let token = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        &claims(json!({})),
    );
    assert_eq!(call(&gw, "/read", &token).await.status, 200);
    let scp = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(SECRET.as_bytes()),
        None,
        &claims(json!({ "scope": null, "scp": ["admin"] })),
    );
    assert_eq!(call(&gw, "/admin", &scp).await.status, 200);
    call(&gw, "/admin", &token).await.problem(403);

    let errors = match portico::config::build(
        "listeners: [{ name: p, addr: '127.0.0.1:0' }]\nroutes:\n  - { name: r, match: { path: / }, respond: { body: x }, plugins: { jwt: { secret: short, algorithms: [RS256, XX999], jwks_url: 'ftp://x' } } }\n",
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    for expected in [
        "routes[0].plugins.jwt.algorithms[1]: \"XX999\" is not a JWS algorithm",
        "routes[0].plugins.jwt: give the keys one way",
        "routes[0].plugins.jwt.secret: an HMAC secret must be at least 32 bytes",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\n{errors:#?}"
        );
    }
    assert!(
        !errors.iter().any(|e| e.contains("short")),
        "a secret in an error: {errors:#?}"
    );
    let small_key = serde_json::to_string(&fixture("rsa1024.pub")).unwrap();
    let errors = match portico::config::build(&format!(
        "listeners: [{{ name: p, addr: '127.0.0.1:0' }}]\nroutes:\n  - {{ name: r, match: {{ path: / }}, respond: {{ body: x }}, plugins: {{ jwt: {{ public_key: {small_key} }} }} }}\n"
    )) {
        Ok(_) => panic!("a 1024-bit RSA key was accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    assert!(
        errors[0].starts_with("routes[0].plugins.jwt.public_key: an RSA key of 1024 bits"),
        "{errors:#?}"
    );
}
