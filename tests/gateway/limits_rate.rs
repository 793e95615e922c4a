//! Rate limits, quotas and concurrency limits: local and through a real Redis.

use crate::config;
use crate::support::*;
use std::time::Duration;

fn limited(upstream: &Upstream, routes: &str, cluster: &str) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
access_log: { enabled: false }
$CLUSTER
consumers:
  - { name: gold, credentials: { api_keys: [ "gold-key-0123456789abcdef" ] } }
  - { name: free, credentials: { api_keys: [ "free-key-0123456789abcdef" ] } }
upstreams: { api: { targets: [ "$U" ] } }
routes:
$ROUTES"#,
        &[
            ("TOKEN", ADMIN_TOKEN.to_string()),
            ("U", upstream.addr.to_string()),
            ("ROUTES", routes.to_string()),
            ("CLUSTER", cluster.to_string()),
        ],
    )
}

/// Sends `n` GETs with `headers`; returns the statuses.
async fn statuses(url: &str, n: usize, headers: &[(&str, &str)]) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get_with(url, headers).await.status.as_u16());
    }
    out
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn a_limit_allows_exactly_its_requests_then_answers_429_with_headers() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&limited(
        &upstream,
        "  - { name: api, match: { path: /api }, upstream: api, plugins: { rate_limit: { limits: [ { requests: 5, per: 1h, algorithm: sliding_window } ], by: client_ip } } }",
        "",
    ))
    .await;
    let first = get(&gw.url("/api")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("ratelimit-policy"), "\"5/1h\";q=5;w=3600");
    assert!(
        first.header("ratelimit").starts_with("\"5/1h\";r=4;t="),
        "{}",
        first.header("ratelimit")
    );
    let rest = statuses(&gw.url("/api"), 6, &[]).await;
    assert_eq!(rest, [200, 200, 200, 200, 429, 429]);
    let refused = get(&gw.url("/api")).await;
    let problem = refused.problem(429);
    assert!(problem["detail"].as_str().unwrap().contains("5/1h"));
    let retry: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=3600).contains(&retry), "{retry}");
    assert!(refused.header("ratelimit").starts_with("\"5/1h\";r=0;"));
    assert_eq!(upstream.count(), 5, "refused requests never reach the upstream");
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert!(
        metrics.contains(r#"portico_rejections_total{plugin="rate_limit",reason="limit_exceeded",route="api"} 3"#),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn gcra_gives_the_burst_then_spaces_requests() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&limited(
        &upstream,
        "  - { name: api, match: { path: /api }, upstream: api, plugins: { rate_limit: { limits: [ { requests: 4, per: 2s, burst: 2 } ], by: route } } }",
        "",
    ))
    .await;
    // Burst 2 at once, then one request back every 500 ms.
    assert_eq!(statuses(&gw.url("/api"), 3, &[]).await, [200, 200, 429]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(statuses(&gw.url("/api"), 2, &[]).await, [200, 429]);
}

#[tokio::test(start_paused = true)]
async fn keys_separate_clients_and_each_limit_counts_on_its_own() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&limited(
        &upstream,
        "  - { name: keyed, match: { path: /keyed }, upstream: api, plugins: { key_auth: {}, rate_limit: { limits: [ { requests: 2, per: 1h, algorithm: sliding_window } ], by: consumer } } }\n  \
         - { name: by-header, match: { path: /tenant }, upstream: api, plugins: { rate_limit: { limits: [ { requests: 1, per: 1h, algorithm: sliding_window } ], by: header:x-tenant } } }\n  \
         - { name: by-param, match: { path: \"/items/{id}\" }, upstream: api, plugins: { rate_limit: { limits: [ { requests: 1, per: 1h, algorithm: sliding_window } ], by: [client_ip, param:id] } } }\n  \
         - { name: two, match: { path: /two }, upstream: api, plugins: { rate_limit: { limits: [ { requests: 3, per: 1h, algorithm: sliding_window }, { requests: 2, per: 1s } ], by: route } } }",
        "",
    ))
    .await;
    let gold = [("x-api-key", "gold-key-0123456789abcdef")];
    let free = [("x-api-key", "free-key-0123456789abcdef")];
    assert_eq!(statuses(&gw.url("/keyed"), 3, &gold).await, [200, 200, 429]);
    assert_eq!(statuses(&gw.url("/keyed"), 3, &free).await, [200, 200, 429]);
    assert_eq!(statuses(&gw.url("/tenant"), 2, &[("x-tenant", "a")]).await, [200, 429]);
    assert_eq!(statuses(&gw.url("/tenant"), 1, &[("x-tenant", "b")]).await, [200]);
    assert_eq!(statuses(&gw.url("/items/1"), 2, &[]).await, [200, 429]);
    assert_eq!(statuses(&gw.url("/items/2"), 1, &[]).await, [200]);

    // Two limits: the 2-per-second one refuses the third; that refusal is
    // not charged to the 3-per-hour one, which still allows one more later.
    assert_eq!(statuses(&gw.url("/two"), 3, &[]).await, [200, 200, 429]);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let reply = get(&gw.url("/two")).await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.header("ratelimit").starts_with("\"3/1h\";r=0;"),
        "{}",
        reply.header("ratelimit")
    );
    assert_eq!(get(&gw.url("/two")).await.status, 429);
}

#[tokio::test]
async fn quotas_reset_at_the_calendar_boundary_of_their_time_zone() {
    let upstream = Upstream::named("ok").await;
    let gw = Gateway::start(&limited(
        &upstream,
        "  - { name: quota, match: { path: /quota }, upstream: api, plugins: { rate_limit: { limits: [ { requests: 2, per: 1d, algorithm: calendar } ], by: route, timezone: Pacific/Auckland } } }",
        "",
    ))
    .await;
    assert_eq!(statuses(&gw.url("/quota"), 2, &[]).await, [200, 200]);
    let refused = get(&gw.url("/quota")).await;
    refused.problem(429);
    assert_eq!(refused.header("ratelimit-policy"), "\"2/day\";q=2;w=86400");
    // Retry-After is the time to the next midnight in Auckland.
    let now = jiff::Timestamp::now().to_zoned_datetime(jiff::tz::TimeZone::get("Pacific/Auckland").unwrap());
    let midnight = now.start_of_day().unwrap().checked_add(jiff::ToSpan::day(1)).unwrap();
    let expected = midnight.timestamp().as_second() - now.timestamp().as_second();
    let retry: i64 = refused.header("retry-after").parse().unwrap();
    assert!((retry - expected).abs() <= 2, "retry {retry}, expected {expected}");
}

#[tokio::test]
async fn rate_limit_config_errors_name_the_fix() {
    let errors = match portico::config::build(
        "listeners: [{ name: p, addr: '127.0.0.1:0' }]\nroutes:\n  - { name: r, match: { path: / }, respond: { body: x }, plugins: { rate_limit: { limits: [ { requests: 0, per: 1s }, { requests: 5, per: 90m, algorithm: calendar }, { requests: 5, per: 1s, algorithm: sliding_window, burst: 2 } ], by: [consumer, cookie:x], timezone: Mars/Olympus, store: redis } } }\n",
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    for expected in [
        "routes[0].plugins.rate_limit.limits[0].requests: must be at least 1",
        "routes[0].plugins.rate_limit.limits[1].per: a calendar quota is per 1h, 1d, 1w or 1month",
        "routes[0].plugins.rate_limit.limits[2].burst: `burst` applies to the gcra algorithm only",
        "routes[0].plugins.rate_limit.by: \"cookie:x\" is not a key",
        "routes[0].plugins.rate_limit.timezone: \"Mars/Olympus\" is not a time zone",
        "routes[0].plugins.rate_limit.store: `store: redis` needs `cluster: { redis: redis://host:port }`",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\n{errors:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_shared_through_redis_holds_across_two_gateways() {
    let redis = RedisServer::start().await;
    let upstream = Upstream::named("ok").await;
    let cluster = format!("cluster: {{ redis: \"{}\" }}", redis.url());
    let yaml = limited(
        &upstream,
        "  - { name: shared, match: { path: /shared }, upstream: api, plugins: { rate_limit: { limits: [ { requests: 100, per: 1h, algorithm: sliding_window } ], by: route } } }",
        &cluster,
    );
    let one = Gateway::start(&yaml).await;
    let two = Process::start(&yaml);
    let urls = [one.url("/shared"), format!("http://{}/shared", two.addr)];
    // 3×N requests, spread over both nodes, eight at a time.
    let mut tasks = Vec::new();
    for i in 0..8 {
        let url = urls[i % 2].clone();
        tasks.push(tokio::spawn(async move { statuses(&url, 300 / 8 + 1, &[]).await }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let allowed = count(&all, 200);
    assert!((100..=101).contains(&allowed), "{allowed} of {} allowed", all.len());
    assert_eq!(count(&all, 429), all.len() - allowed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_limits_fail_open_or_closed_as_configured_and_recover() {
    let mut redis = RedisServer::start().await;
    let upstream = Upstream::named("ok").await;
    let cluster = format!("cluster: {{ redis: \"{}\" }}", redis.url());
    let gw = Gateway::start(&limited(
        &upstream,
        "  - { name: open, match: { path: /open }, upstream: api, plugins: { rate_limit: { limits: [ { requests: 2, per: 1h, algorithm: sliding_window } ], by: route, redis_timeout: 300ms } } }\n  \
         - { name: closed, match: { path: /closed }, upstream: api, plugins: { rate_limit: { limits: [ { requests: 2, per: 1h, algorithm: sliding_window } ], by: route, on_store_error: deny, redis_timeout: 300ms } } }",
        &cluster,
    ))
    .await;
    assert_eq!(statuses(&gw.url("/open"), 3, &[]).await, [200, 200, 429]);
    assert_eq!(statuses(&gw.url("/closed"), 3, &[]).await, [200, 200, 429]);

    redis.kill();
    assert_eq!(
        statuses(&gw.url("/open"), 3, &[]).await,
        [200, 200, 200],
        "fail-open serves"
    );
    let closed = get(&gw.url("/closed")).await;
    closed.problem(503);
    assert_eq!(closed.header("retry-after"), "1");
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert!(
        metrics.contains("portico_rate_limit_store_errors_total{route=\"open\"}"),
        "{metrics}"
    );

    // Back, empty (no persistence): limits count again from zero.
    redis.restart().await;
    let mut recovered = Vec::new();
    for _ in 0..50 {
        recovered = statuses(&gw.url("/closed"), 1, &[]).await;
        if recovered == [200] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(recovered, [200], "limits work again once Redis is back");
    assert_eq!(statuses(&gw.url("/closed"), 2, &[]).await, [200, 429]);
}

#[tokio::test]
async fn concurrency_limits_queue_then_answer_503() {
    let slow = Upstream::slow("slow", Duration::from_millis(500)).await;
    let gw = Gateway::start(&limited(
        &slow,
        "  - { name: queued, match: { path: /queued }, upstream: api, plugins: { concurrency_limit: { max: 2, queue: 1, queue_timeout: 3s } } }\n  \
         - { name: strict, match: { path: /strict }, upstream: api, plugins: { concurrency_limit: { max: 2, by: upstream } } }",
        "",
    ))
    .await;
    let burst = |path: &'static str| {
        let url = gw.url(path);
        async move {
            let tasks: Vec<_> = (0..4)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { get(&url).await })
                })
                .collect();
            let mut replies = Vec::new();
            for task in tasks {
                replies.push(task.await.unwrap());
            }
            replies
        }
    };
    // Two in flight, one waits for a slot, the fourth finds the queue full.
    let queued = burst("/queued").await;
    let codes: Vec<u16> = queued.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!(count(&codes, 200), 3, "{codes:?}");
    assert_eq!(count(&codes, 503), 1, "{codes:?}");
    let refused = queued.iter().find(|r| r.status == 503).unwrap();
    refused.problem(503);
    assert_eq!(refused.header("retry-after"), "1");

    let strict = burst("/strict").await;
    let codes: Vec<u16> = strict.iter().map(|r| r.status.as_u16()).collect();
    assert_eq!((count(&codes, 200), count(&codes, 503)), (2, 2), "{codes:?}");
    // Slots are given back when responses end.
    assert_eq!(get(&gw.url("/strict")).await.status, 200);
}
