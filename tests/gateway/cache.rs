//! `cache`: RFC 9111 behaviour against a real upstream that counts its hits
//! and answers with the caching headers each test asks for in the query.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Hits per path, and whether the upstream fails (500) for now.
#[derive(Clone, Default)]
struct Origin {
    hits: Arc<Mutex<HashMap<String, usize>>>,
    failing: Arc<AtomicBool>,
    /// What each request carried in `If-None-Match`, in order.
    conditions: Arc<Mutex<Vec<String>>>,
}

impl Origin {
    fn hits(&self, path: &str) -> usize {
        self.hits.lock().unwrap().get(path).copied().unwrap_or(0)
    }
}

/// The upstream: its answer's headers come from the query: `cc`
/// (Cache-Control), `etag`, `vary`, `tag` (Surrogate-Key), `cookie`
/// (Set-Cookie), `size` (body bytes), `delay` (ms). It answers 304 to a
/// matching `If-None-Match`.
async fn origin() -> (std::net::SocketAddr, Origin) {
    let state = Origin::default();
    let shared = state.clone();
    let addr = serve(move |request: http::Request<hyper::body::Incoming>| {
        let state = shared.clone();
        async move {
            let path = request.uri().path().to_string();
            let query: HashMap<String, String> = request
                .uri()
                .query()
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default();
            let n = {
                let mut hits = state.hits.lock().unwrap();
                let n = hits.entry(path.clone()).or_default();
                *n += 1;
                *n
            };
            let condition = request
                .headers()
                .get("if-none-match")
                .map(|v| v.to_str().unwrap().to_string());
            state
                .conditions
                .lock()
                .unwrap()
                .push(condition.clone().unwrap_or_default());
            if let Some(delay) = query.get("delay") {
                tokio::time::sleep(Duration::from_millis(delay.parse().unwrap())).await;
            }
            let mut response = http::Response::builder().header("content-type", "application/json");
            for (param, header) in [
                ("cc", "cache-control"),
                ("etag", "etag"),
                ("vary", "vary"),
                ("tag", "surrogate-key"),
                ("cookie", "set-cookie"),
                ("expires", "expires"),
                ("age", "age"),
            ] {
                if let Some(value) = query.get(param) {
                    response = response.header(header, value.as_str());
                }
            }
            if state.failing.load(Ordering::SeqCst) {
                return Ok::<_, std::convert::Infallible>(
                    response.status(500).body(Full::new(Bytes::from_static(b"{}"))).unwrap(),
                );
            }
            if condition.is_some() && condition.as_deref() == query.get("etag").map(String::as_str) {
                return Ok(response.status(304).body(Full::new(Bytes::new())).unwrap());
            }
            let lang = request
                .headers()
                .get("accept-language")
                .map(|v| v.to_str().unwrap().to_string());
            let mut body = json!({ "path": path, "hit": n, "lang": lang }).to_string();
            if let Some(size) = query.get("size") {
                body = "x".repeat(size.parse().unwrap());
            }
            Ok(response.body(Full::new(Bytes::from(body))).unwrap())
        }
    })
    .await;
    (addr, state)
}

async fn gateway(upstream: std::net::SocketAddr, cache: &str) -> Gateway {
    Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
access_log: { enabled: false }
consumers:
  - { name: ada, credentials: { api_keys: [ "ada-key-0123456789abcdef" ] } }
  - { name: bob, credentials: { api_keys: [ "bob-key-0123456789abcdef" ] } }
upstreams: { origin: { targets: [ "$U" ] } }
routes:
  - name: cached
    match: { path: /c }
    upstream: origin
    plugins: { cache: $CACHE }
  - name: per-user
    match: { path: /u }
    upstream: origin
    plugins: { key_auth: {}, cache: { key: { consumer: true } } }
"#,
        &[
            ("U", upstream.to_string()),
            ("CACHE", cache.to_string()),
            ("TOKEN", ADMIN_TOKEN.to_string()),
        ],
    ))
    .await
}

fn cc(path: &str, query: &str) -> String {
    format!("/c/{path}?{query}")
}

async fn fetch(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Reply {
    get_with(&gw.url(path), headers).await
}

#[tokio::test]
async fn the_response_directives_decide_what_is_kept() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{}").await;
    let cases = [
        ("max-age", "cc=max-age%3D60", true),
        ("s-maxage", "cc=max-age%3D0%2C%20s-maxage%3D60", true),
        // Shareable, but with no lifetime and no validator: of no use stored.
        ("public", "cc=public", false),
        ("no-store", "cc=no-store%2C%20max-age%3D60", false),
        ("private", "cc=private%2C%20max-age%3D60", false),
        ("set-cookie", "cc=max-age%3D60&cookie=session%3D1", false),
        ("vary-star", "cc=max-age%3D60&vary=*", false),
        ("nothing", "", false),
    ];
    for (name, query, kept) in cases {
        let path = cc(name, query);
        let first = fetch(&gw, &path, &[]).await;
        assert_eq!(
            (first.status.as_u16(), first.header("x-cache")),
            (200, "MISS"),
            "{name}"
        );
        let second = fetch(&gw, &path, &[]).await;
        assert_eq!(second.header("x-cache"), if kept { "HIT" } else { "MISS" }, "{name}");
        assert_eq!(origin.hits(&format!("/c/{name}")), if kept { 1 } else { 2 }, "{name}");
        if kept {
            assert_eq!(second.json()["hit"], 1, "{name}: the stored answer");
            assert!(second.headers.contains_key("age"), "{name}");
        }
    }
    // Expires, and an Age the answer already has.
    let expires = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(120));
    let path = cc(
        "expires",
        &format!("expires={}", expires.replace(' ', "%20").replace(',', "%2C")),
    );
    fetch(&gw, &path, &[]).await;
    assert_eq!(fetch(&gw, &path, &[]).await.header("x-cache"), "HIT");
    let past = cc("expired", "expires=Thu%2C%2001%20Jan%201970%2000%3A00%3A00%20GMT");
    fetch(&gw, &past, &[]).await;
    assert_eq!(fetch(&gw, &past, &[]).await.header("x-cache"), "MISS");
    let aged = cc("aged", "cc=max-age%3D60&age=50");
    fetch(&gw, &aged, &[]).await;
    let age: u64 = fetch(&gw, &aged, &[]).await.header("age").parse().unwrap();
    assert!((50..60).contains(&age), "the upstream's Age counts: {age}");
    let too_old = cc("too-old", "cc=max-age%3D60&age=61");
    fetch(&gw, &too_old, &[]).await;
    assert_eq!(fetch(&gw, &too_old, &[]).await.header("x-cache"), "MISS");

    // With `ttl`, every storable answer that gives no freshness is kept.
    let ttl = gateway(upstream, "{ ttl: 60s }").await;
    let path = cc("ttl", "");
    fetch(&ttl, &path, &[]).await;
    assert_eq!(fetch(&ttl, &path, &[]).await.header("x-cache"), "HIT");
    // `force_ttl` keeps even what says no-store (documented as unsafe).
    let forced = gateway(upstream, "{ ttl: 60s, force_ttl: true }").await;
    let path = cc("forced", "cc=no-store");
    fetch(&forced, &path, &[]).await;
    assert_eq!(fetch(&forced, &path, &[]).await.header("x-cache"), "HIT");
}

#[tokio::test]
async fn a_key_that_sorts_or_drops_the_query_finds_the_answer_in_any_order() {
    let (upstream, origin) = origin().await;
    let sorted = gateway(upstream, "{ key: { query: sorted } }").await;
    let first = fetch(&sorted, "/c/sorted?cc=max-age%3D60&b=2&a=1", &[]).await;
    assert_eq!(first.header("x-cache"), "MISS");
    for (query, asks) in [
        ("a=1&cc=max-age%3D60&b=2", None),
        ("b=2&a=1&cc=max-age%3D60", Some("max-stale=5")),
        ("a=1&b=2&cc=max-age%3D60", Some("min-fresh=10")),
    ] {
        let headers: Vec<(&str, &str)> = asks.map(|cc| ("cache-control", cc)).into_iter().collect();
        let again = fetch(&sorted, &format!("/c/sorted?{query}"), &headers).await;
        assert_eq!(
            (again.header("x-cache"), again.json()["hit"].as_u64()),
            ("HIT", Some(1)),
            "{query} {asks:?}"
        );
    }
    // The client's own condition still counts: an hour's min-fresh is more than is left.
    let asked = fetch(
        &sorted,
        "/c/sorted?b=2&cc=max-age%3D60&a=1",
        &[("cache-control", "min-fresh=3600")],
    )
    .await;
    assert_eq!(asked.header("x-cache"), "MISS");
    assert_eq!(origin.hits("/c/sorted"), 2);
    // Another value is another answer.
    let other = fetch(&sorted, "/c/sorted?a=2&cc=max-age%3D60&b=2", &[]).await;
    assert_eq!(other.header("x-cache"), "MISS");

    let only = gateway(upstream, "{ key: { query_params: [cc] } }").await;
    fetch(&only, "/c/only?cc=max-age%3D60&utm=mail", &[]).await;
    let again = fetch(
        &only,
        "/c/only?utm=web&cc=max-age%3D60",
        &[("cache-control", "max-stale=5")],
    )
    .await;
    assert_eq!(again.header("x-cache"), "HIT");
    assert_eq!(origin.hits("/c/only"), 1);
}

#[tokio::test(start_paused = true)]
async fn an_upstream_age_past_any_clock_is_stale_and_harmless() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{}").await;
    for age in ["18446744073709551615", "99999999999999999999999", "-5", "x"] {
        let path = cc(
            &format!("age{}", age.len()),
            &format!("cc=max-age%3D60&etag=%22v1%22&age={age}"),
        );
        let first = fetch(&gw, &path, &[]).await;
        assert_eq!(first.status, 200, "Age: {age}");
        // Seconds later, the stored Age plus its time in the cache, with
        // and without the client's own directives.
        tokio::time::advance(Duration::from_secs(2)).await;
        for asks in [&[][..], &[("cache-control", "max-stale=5")][..]] {
            let again = fetch(&gw, &path, asks).await;
            assert_eq!(again.status, 200, "Age: {age}, {asks:?}");
        }
    }
    // The gateway still answers.
    let path = cc("after", "cc=max-age%3D60");
    fetch(&gw, &path, &[]).await;
    assert_eq!(fetch(&gw, &path, &[]).await.header("x-cache"), "HIT");
    assert_eq!(origin.hits("/c/after"), 1);
}

#[tokio::test]
async fn requests_with_credentials_and_variants_are_kept_apart() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{}").await;
    // Authorization: kept only when the answer says it may be shared.
    let secret = cc("auth", "cc=max-age%3D60");
    fetch(&gw, &secret, &[("authorization", "Bearer a")]).await;
    assert_eq!(
        fetch(&gw, &secret, &[("authorization", "Bearer b")])
            .await
            .header("x-cache"),
        "MISS"
    );
    let shared = cc("auth-public", "cc=public%2C%20max-age%3D60");
    fetch(&gw, &shared, &[("authorization", "Bearer a")]).await;
    assert_eq!(
        fetch(&gw, &shared, &[("authorization", "Bearer b")])
            .await
            .header("x-cache"),
        "HIT"
    );

    // Vary: one variant per language.
    let varied = cc("vary", "cc=max-age%3D60&vary=accept-language");
    let en = fetch(&gw, &varied, &[("accept-language", "en")]).await;
    let fr = fetch(&gw, &varied, &[("accept-language", "fr")]).await;
    let en_again = fetch(&gw, &varied, &[("accept-language", "en")]).await;
    assert_eq!(
        (en.header("x-cache"), fr.header("x-cache"), en_again.header("x-cache")),
        ("MISS", "MISS", "HIT")
    );
    assert_eq!(en_again.json()["lang"], "en");
    assert_eq!(
        fetch(&gw, &varied, &[("accept-language", "fr")]).await.json()["lang"],
        "fr"
    );
    assert_eq!(origin.hits("/c/vary"), 2);

    // Keyed by consumer: private answers are each consumer's own.
    let private = "/u/me?cc=private%2C%20max-age%3D60";
    let ada = fetch(&gw, private, &[("x-api-key", "ada-key-0123456789abcdef")]).await;
    let bob = fetch(&gw, private, &[("x-api-key", "bob-key-0123456789abcdef")]).await;
    let ada_again = fetch(&gw, private, &[("x-api-key", "ada-key-0123456789abcdef")]).await;
    assert_eq!(
        (
            ada.header("x-cache"),
            bob.header("x-cache"),
            ada_again.header("x-cache")
        ),
        ("MISS", "MISS", "HIT")
    );
    assert_eq!(ada_again.json()["hit"], ada.json()["hit"], "Ada gets her own answer");
    assert_ne!(bob.json()["hit"], ada.json()["hit"], "never Ada's answer to Bob");
}

#[tokio::test(start_paused = true)]
async fn conditional_requests_both_ways() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{}").await;
    // Clients' own conditions are answered from the cache.
    let path = cc("etag", "cc=max-age%3D60&etag=%22v1%22");
    fetch(&gw, &path, &[]).await;
    let not_modified = fetch(&gw, &path, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!(
        (not_modified.status.as_u16(), not_modified.header("x-cache")),
        (304, "HIT")
    );
    assert_eq!(not_modified.header("etag"), "\"v1\"");
    assert!(not_modified.body.is_empty());
    assert_eq!(fetch(&gw, &path, &[("if-none-match", "\"v0\"")]).await.status, 200);
    assert_eq!(origin.hits("/c/etag"), 1);

    // A stale answer with a validator is revalidated; a 304 refreshes it.
    let short = cc("revalidate", "cc=max-age%3D1&etag=%22r1%22");
    let first = fetch(&gw, &short, &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let revalidated = fetch(&gw, &short, &[]).await;
    assert_eq!(
        (revalidated.status.as_u16(), revalidated.header("x-cache")),
        (200, "REVALIDATED")
    );
    assert_eq!(revalidated.body, first.body, "the stored body, still good");
    assert_eq!(origin.conditions.lock().unwrap().last().unwrap(), "\"r1\"");
    assert_eq!(fetch(&gw, &short, &[]).await.header("x-cache"), "HIT", "fresh again");
    assert_eq!(origin.hits("/c/revalidate"), 2);

    // `no-cache` answers are stored, and revalidated before every use.
    let always = cc("no-cache", "cc=no-cache&etag=%22n1%22");
    fetch(&gw, &always, &[]).await;
    assert_eq!(fetch(&gw, &always, &[]).await.header("x-cache"), "REVALIDATED");
}

#[tokio::test]
async fn client_directives_are_honoured_or_ignored() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{}").await;
    let path = cc("client", "cc=max-age%3D60");
    fetch(&gw, &path, &[]).await;
    assert_eq!(
        fetch(&gw, &path, &[("cache-control", "no-cache")])
            .await
            .header("x-cache"),
        "MISS"
    );
    assert_eq!(
        fetch(&gw, &path, &[("pragma", "no-cache")]).await.header("x-cache"),
        "MISS"
    );
    assert_eq!(
        fetch(&gw, &path, &[("cache-control", "no-store")])
            .await
            .header("x-cache"),
        "BYPASS"
    );
    assert_eq!(origin.hits("/c/client"), 4);
    fetch(
        &gw,
        &cc("only", "cc=max-age%3D60"),
        &[("cache-control", "only-if-cached")],
    )
    .await
    .problem(504);

    // A client's max-age=0 (a browser's reload) finds the stored answer too old.
    assert_eq!(
        fetch(&gw, &path, &[("cache-control", "max-age=0")])
            .await
            .header("x-cache"),
        "MISS"
    );
    assert_eq!(
        fetch(&gw, &path, &[("cache-control", "max-stale=30")])
            .await
            .header("x-cache"),
        "HIT"
    );

    let deaf = gateway(upstream, "{ client_directives: ignore }").await;
    let path = cc("deaf", "cc=max-age%3D60");
    fetch(&deaf, &path, &[]).await;
    assert_eq!(
        fetch(&deaf, &path, &[("cache-control", "no-cache")])
            .await
            .header("x-cache"),
        "HIT"
    );
}

#[tokio::test(start_paused = true)]
async fn stale_answers_are_served_while_revalidating_and_when_the_upstream_fails() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{}").await;
    let swr = cc("swr", "cc=max-age%3D1%2C%20stale-while-revalidate%3D60");
    fetch(&gw, &swr, &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let stale = fetch(&gw, &swr, &[]).await;
    assert_eq!(
        (stale.header("x-cache"), stale.json()["hit"].as_u64()),
        ("STALE", Some(1))
    );
    // Refreshed in the background: the next client gets the new answer.
    let mut refreshed = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reply = fetch(&gw, &swr, &[]).await;
        if reply.header("x-cache") == "HIT" {
            refreshed = Some(reply);
            break;
        }
    }
    assert_eq!(refreshed.expect("refreshed").json()["hit"], 2);

    let sie = cc("sie", "cc=max-age%3D1%2C%20stale-if-error%3D60");
    fetch(&gw, &sie, &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    origin.failing.store(true, Ordering::SeqCst);
    let saved = fetch(&gw, &sie, &[]).await;
    assert_eq!((saved.status.as_u16(), saved.header("x-cache")), (200, "STALE"));
    // `must-revalidate` forbids serving it stale, whatever else it says.
    origin.failing.store(false, Ordering::SeqCst);
    let strict = cc("strict", "cc=max-age%3D1%2C%20must-revalidate%2C%20stale-if-error%3D60");
    fetch(&gw, &strict, &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    origin.failing.store(true, Ordering::SeqCst);
    assert_eq!(fetch(&gw, &strict, &[]).await.status, 500);
    // Without stale-if-error the upstream's failure is what the client gets.
    let plain = cc("plain", "cc=max-age%3D1");
    origin.failing.store(false, Ordering::SeqCst);
    fetch(&gw, &plain, &[]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    origin.failing.store(true, Ordering::SeqCst);
    assert_eq!(fetch(&gw, &plain, &[]).await.status, 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_send_one_request_upstream() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{}").await;
    let url = gw.url(&cc("herd", "cc=max-age%3D60&delay=300"));
    let replies = futures_join(100, &url).await;
    assert!(replies.iter().all(|r| r.status == 200), "every client answered");
    assert_eq!(origin.hits("/c/herd"), 1, "100 concurrent misses, one upstream request");
}

async fn futures_join(n: usize, url: &str) -> Vec<Reply> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let url = url.to_string();
            tokio::spawn(async move { get(&url).await })
        })
        .collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn unsafe_methods_invalidate_and_purges_forget() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{}").await;
    let path = cc("item", "cc=max-age%3D60");
    fetch(&gw, &path, &[]).await;
    assert_eq!(fetch(&gw, &path, &[]).await.header("x-cache"), "HIT");
    let post = send(
        http::Request::post(gw.url(&path))
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap(),
    )
    .await;
    assert_eq!((post.status.as_u16(), post.header("x-cache")), (200, "BYPASS"));
    assert_eq!(
        fetch(&gw, &path, &[]).await.header("x-cache"),
        "MISS",
        "the POST invalidated it"
    );

    // Purges through the admin API: one URL, a prefix, a surrogate key, all.
    let a = cc("purge-a", "cc=max-age%3D60&tag=blue");
    let b = cc("purge-b", "cc=max-age%3D60&tag=green");
    for path in [&a, &b] {
        fetch(&gw, path, &[]).await;
    }
    let purge = |body: serde_json::Value| {
        let gw = &gw;
        async move { gw.admin("POST", "/cache/purge", &body.to_string()).await }
    };
    // The URL as purges name it: host (without port), path and query.
    let url = format!("127.0.0.1{a}");
    assert_eq!(purge(json!({ "url": url })).await.status, 200);
    assert_eq!(fetch(&gw, &a, &[]).await.header("x-cache"), "MISS");
    assert_eq!(fetch(&gw, &b, &[]).await.header("x-cache"), "HIT");
    purge(json!({ "tag": "green" })).await;
    assert_eq!(fetch(&gw, &b, &[]).await.header("x-cache"), "MISS");
    purge(json!({ "prefix": "/c/purge-" })).await;
    assert_eq!(fetch(&gw, &a, &[]).await.header("x-cache"), "MISS");
    purge(json!("all")).await;
    assert_eq!(fetch(&gw, &b, &[]).await.header("x-cache"), "MISS");
    gw.admin("POST", "/cache/purge", "{\"everything\": 1}")
        .await
        .problem(400);
    assert_eq!(origin.hits("/c/item"), 3, "GET, POST, then GET again upstream");
}

#[tokio::test]
async fn large_answers_stream_through_and_memory_stays_bounded() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{ max_body: 4KiB, memory: 256KiB }").await;
    let big = cc("big", "cc=max-age%3D60&size=10000");
    let first = fetch(&gw, &big, &[]).await;
    assert_eq!((first.body.len(), first.header("x-cache")), (10000, "MISS"));
    assert_eq!(
        fetch(&gw, &big, &[]).await.header("x-cache"),
        "MISS",
        "over max_body: not kept"
    );
    for i in 0..200 {
        fetch(&gw, &cc(&format!("fill{i}"), "cc=max-age%3D60&size=3000"), &[]).await;
    }
    let stats = gw.admin("GET", "/cache", "").await.json();
    let used = stats["memory"]["used_bytes"].as_u64().unwrap();
    assert_eq!(stats["memory"]["bound_bytes"], 256 * 1024);
    assert!(used <= 256 * 1024 && used > 100 * 1024, "{stats}");
    assert_eq!(origin.hits("/c/big"), 2, "the large answer went upstream each time");
}

#[tokio::test]
async fn cache_config_errors_name_the_fix() {
    let errors = match portico::config::build(
        "listeners: [{ name: p, addr: '127.0.0.1:0' }]\nroutes:\n  - { name: r, match: { path: / }, respond: { body: x }, plugins: { cache: { methods: [POST], force_ttl: true, store: redis, key: { headers: [\"a b\"] } } } }\n",
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    for expected in [
        "routes[0].plugins.cache.methods[0]: only GET and HEAD answers can be cached",
        "routes[0].plugins.cache.force_ttl: forces `ttl`: set it",
        "routes[0].plugins.cache.store: redis needs `cluster.redis` set",
        "routes[0].plugins.cache.key.headers[0]: not a header name",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\n{errors:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_one_redis_cache_and_a_dead_redis_is_a_miss() {
    let mut redis = RedisServer::start().await;
    let (upstream, origin) = origin().await;
    let text = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
access_log: { enabled: false }
cluster: { redis: "$REDIS" }
upstreams: { origin: { targets: [ "$U" ] } }
routes:
  - { name: cached, match: { path: /c }, upstream: origin, plugins: { cache: {} } }
"#,
        &[
            ("U", upstream.to_string()),
            ("REDIS", redis.url()),
            ("TOKEN", ADMIN_TOKEN.to_string()),
        ],
    );
    let (a, b) = (Gateway::start(&text).await, Gateway::start(&text).await);
    // Behind one load balancer, both nodes see one Host.
    const HOST: (&str, &str) = ("host", "api.example.com");
    let path = cc("shared", "cc=max-age%3D60&etag=%22s1%22&tag=red");
    let first = fetch(&a, &path, &[HOST]).await;
    assert_eq!(first.header("x-cache"), "MISS");
    let other = fetch(&b, &path, &[HOST]).await;
    assert_eq!(other.header("x-cache"), "HIT", "stored by the other node");
    assert_eq!(other.body, first.body);
    assert_eq!(fetch(&b, &path, &[HOST, ("if-none-match", "\"s1\"")]).await.status, 304);
    assert_eq!(origin.hits("/c/shared"), 1);
    // Vary, through Redis.
    let varied = cc("shared-vary", "cc=max-age%3D60&vary=accept-language");
    fetch(&a, &varied, &[HOST, ("accept-language", "en")]).await;
    assert_eq!(
        fetch(&b, &varied, &[HOST, ("accept-language", "en")])
            .await
            .header("x-cache"),
        "HIT"
    );
    assert_eq!(
        fetch(&b, &varied, &[HOST, ("accept-language", "fr")])
            .await
            .header("x-cache"),
        "MISS"
    );

    // A purge on one node is a purge for both; an unsafe method too.
    assert_eq!(a.admin("POST", "/cache/purge", r#"{"tag": "red"}"#).await.status, 200);
    assert_eq!(fetch(&b, &path, &[HOST]).await.header("x-cache"), "MISS");
    assert_eq!(fetch(&a, &path, &[HOST]).await.header("x-cache"), "HIT");
    send(
        http::Request::delete(b.url(&path))
            .header("host", HOST.1)
            .body(Full::new(Bytes::new()))
            .unwrap(),
    )
    .await;
    assert_eq!(fetch(&a, &path, &[HOST]).await.header("x-cache"), "MISS");

    // Redis down: answers still come, from the upstream.
    redis.kill();
    let down = fetch(&a, &path, &[HOST]).await;
    assert_eq!((down.status.as_u16(), down.header("x-cache")), (200, "MISS"));
    a.admin("POST", "/cache/purge", "\"all\"").await.problem(503);
}

/// An answer that varies keeps its variants through revalidation and
/// background refresh: each is stored again where the next request of its
/// kind looks for it.
#[tokio::test(start_paused = true)]
async fn varying_answers_stay_found_after_revalidation_and_refresh() {
    let (upstream, origin) = origin().await;
    let gw = gateway(upstream, "{}").await;
    let german = [("accept-language", "de")];
    let french = [("accept-language", "fr")];

    let path = cc("vary-revalidate", "cc=max-age%3D1&etag=%22v1%22&vary=accept-language");
    fetch(&gw, &path, &german).await;
    fetch(&gw, &path, &french).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fetch(&gw, &path, &german).await.header("x-cache"), "REVALIDATED");
    let again = fetch(&gw, &path, &german).await;
    assert_eq!(again.header("x-cache"), "HIT", "the revalidated variant is found");
    assert_eq!(again.json()["lang"], "de");

    let path = cc(
        "vary-refresh",
        "cc=max-age%3D1%2C%20stale-while-revalidate%3D60&vary=accept-language",
    );
    fetch(&gw, &path, &german).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(fetch(&gw, &path, &german).await.header("x-cache"), "STALE");
    for _ in 0..100 {
        if origin.hits("/c/vary-refresh") == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refreshed = fetch(&gw, &path, &german).await;
    assert_eq!(refreshed.header("x-cache"), "HIT", "the refreshed variant is found");
    assert_eq!(refreshed.json()["hit"], 2);
    assert_eq!(origin.hits("/c/vary-refresh"), 2);
}
