//! Operating a running gateway: the admin API, metrics, and reloads by each
//! trigger, with what must survive them.

use crate::config;
use crate::support::*;
use std::time::Duration;

/// A gateway with an admin API, one upstream and one proxied route.
fn with_admin(upstream: &Upstream, extra_routes: &str) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
access_log: { enabled: false }
upstreams:
  api:
    targets: [ "$U" ]
    health_check: { passive: { consecutive_failures: 1, eject_for: 60s } }
    circuit_breaker: { failure_rate: 50%, min_requests: 100, window: 10s, open_for: 15s }
routes:
  - { name: api, match: { path: /api }, upstream: api }
$EXTRA
"#,
        &[
            ("TOKEN", ADMIN_TOKEN.to_string()),
            ("U", upstream.addr.to_string()),
            ("EXTRA", extra_routes.to_string()),
        ],
    )
}

/// The value of one sample in a Prometheus text exposition, by name and labels.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, label_text) = match series.split_once('{') {
            Some((metric, rest)) => (metric, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let wanted = labels
            .iter()
            .all(|(k, v)| label_text.split(',').any(|l| l == format!("{k}=\"{v}\"")));
        (metric == name && wanted).then(|| value.parse().ok())?
    })
}

#[tokio::test]
async fn admin_endpoints_need_the_token_but_probes_do_not() {
    let upstream = Upstream::named("a").await;
    let gw = Gateway::start(&with_admin(&upstream, "")).await;
    for path in [
        "/status",
        "/routes",
        "/upstreams",
        "/config",
        "/metrics",
        "/openapi.json",
    ] {
        let anonymous = get(&gw.admin_url(path)).await;
        anonymous.problem(401);
        assert_eq!(anonymous.header("www-authenticate"), "Bearer realm=\"portico-admin\"");
        let wrong = get_with(&gw.admin_url(path), &[("authorization", "Bearer not-the-token-at-all")]).await;
        assert_eq!(wrong.status, 401, "{path} with a wrong token");
        let right = gw.admin("GET", path, "").await;
        assert_eq!(right.status, 200, "{path}: {}", right.text());
    }
    let health = get(&gw.admin_url("/health")).await;
    assert_eq!(health.json()["status"], "ok");
    let ready = get(&gw.admin_url("/ready")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.json()["ready"], true);

    let unknown = gw.admin("GET", "/nope", "").await;
    unknown.problem(404);
    let wrong_method = gw.admin("POST", "/status", "").await;
    wrong_method.problem(405);
    assert_eq!(wrong_method.header("allow"), "GET");
    let openapi = gw.admin("GET", "/openapi.json", "").await.json();
    assert_eq!(openapi["openapi"], "3.1.0");
    for path in [
        "/status",
        "/upstreams/{name}/targets",
        "/reload",
        "/explain",
        "/metrics",
    ] {
        assert!(openapi["paths"][path].is_object(), "{path} is documented");
    }
}

#[tokio::test]
async fn status_routes_and_config_describe_the_running_gateway_without_secrets() {
    let upstream = Upstream::named("a").await;
    let gw = Gateway::start(&with_admin(&upstream, "")).await;
    let status = gw.admin("GET", "/status", "").await.json();
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["config"]["hash"].as_str().map(str::len), Some(16));
    assert!(status["last_reload"].is_null());
    assert_eq!(status["listeners"]["public"], gw.addr.to_string());

    let routes = gw.admin("GET", "/routes", "").await.json();
    assert_eq!(routes[0]["name"], "api");
    assert_eq!(routes[0]["match"]["path"], "/api");

    let config = gw.admin("GET", "/config", "").await;
    assert!(
        !config.text().contains(ADMIN_TOKEN),
        "the token leaked: {}",
        config.text()
    );
    let config = config.json();
    assert_eq!(config["admin"]["token"], "[redacted]");
    // Defaults are filled in: this is the effective config.
    assert_eq!(config["upstreams"]["api"]["timeouts"]["connect"], "5s");
}

#[tokio::test]
async fn upstreams_show_health_ejections_and_breakers() {
    let alive = Upstream::named("alive").await;
    let dead = refusing_addr().await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
upstreams:
  api:
    targets: [ "$A", "$D" ]
    balance: round_robin
    health_check: { passive: { consecutive_failures: 1, eject_for: 60s } }
    circuit_breaker: { min_requests: 1000 }
routes: [{ name: api, match: { path: / }, upstream: api }]
"#,
        &[
            ("TOKEN", ADMIN_TOKEN.to_string()),
            ("A", alive.addr.to_string()),
            ("D", dead.to_string()),
        ],
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..4 {
        get(&gw.url("/")).await;
    }
    let view = gw.admin("GET", "/upstreams", "").await.json();
    let api = &view["api"];
    assert_eq!(api["circuit_breaker"], "closed");
    assert_eq!(api["source"], "config");
    let target = |addr: String| {
        api["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["addr"] == addr.as_str())
            .cloned()
            .unwrap()
    };
    let (alive_view, dead_view) = (target(alive.addr.to_string()), target(dead.to_string()));
    assert_eq!(alive_view["healthy"], true);
    assert_eq!(dead_view["healthy"], false);
    assert_eq!(dead_view["ejected"], true);
    assert_eq!(dead_view["ejections"], 1);
    assert_eq!(dead_view["circuit_breaker"], "closed");
    assert_eq!(
        gw.admin("GET", "/upstreams/api", "").await.json()["targets"],
        api["targets"]
    );
    gw.admin("GET", "/upstreams/nope", "").await.problem(404);

    let metrics = gw.admin("GET", "/metrics", "").await.text();
    let dead_addr = dead.to_string();
    let alive_addr = alive.addr.to_string();
    let target_labels = |addr| [("upstream", "api"), ("target", addr)];
    assert_eq!(
        sample(&metrics, "portico_upstream_target_healthy", &target_labels(&dead_addr)),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "portico_upstream_target_healthy", &target_labels(&alive_addr)),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "portico_upstream_ejections_total", &target_labels(&dead_addr)),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "portico_circuit_breaker_state",
            &[("upstream", "api"), ("target", "")]
        ),
        Some(0.0)
    );
    assert!(sample(&metrics, "portico_upstream_retries_total", &[("upstream", "api")]).is_some());
}

#[tokio::test]
async fn targets_set_through_the_admin_api_take_traffic_until_the_next_reload() {
    let first = Upstream::named("first").await;
    let second = Upstream::named("second").await;
    let yaml = with_admin(&first, "");
    let gw = Gateway::start(&yaml).await;
    assert_eq!(get(&gw.url("/api")).await.text(), "first");

    let body = format!(r#"["{}"]"#, second.addr);
    let put = gw.admin("PUT", "/upstreams/api/targets", &body).await;
    assert_eq!(put.status, 200, "{}", put.text());
    assert_eq!(put.json()["targets"][0]["addr"], second.addr.to_string());
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/api")).await.text(), "second");
    }

    // Bad input changes nothing.
    for (body, status) in [
        ("not json", 400),
        (r#"{"addr": "x"}"#, 400),
        (r#"["http://10.0.0.1:80/"]"#, 400),
        (r#"["10.0.0.1"]"#, 400),
        (r#"[{"addr": "10.0.0.1:80", "weight": 0}]"#, 400),
        (r#"[{"addr": "10.0.0.1:80", "backup": true}]"#, 400),
        (r#"["10.0.0.1:80", "10.0.0.1:80"]"#, 400),
    ] {
        let answer = gw.admin("PUT", "/upstreams/api/targets", body).await;
        answer.problem(status);
    }
    gw.admin("PUT", "/upstreams/nope/targets", "[]").await.problem(404);
    gw.admin("GET", "/upstreams/api/targets", "").await.problem(405);
    assert_eq!(get(&gw.url("/api")).await.text(), "second");

    // A reload goes back to the configured targets.
    assert!(gw.reload(&yaml).await.ok);
    assert_eq!(get(&gw.url("/api")).await.text(), "first");
}

#[tokio::test]
async fn discovered_upstreams_refuse_targets_from_the_admin_api() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.yaml");
    std::fs::write(&file, "- 127.0.0.1:9\n").unwrap();
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
upstreams: { found: { discovery: { file: "$F" } } }
routes: [{ name: r, match: { path: / }, upstream: found }]
"#,
        &[("TOKEN", ADMIN_TOKEN.to_string()), ("F", file.display().to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    gw.admin("PUT", "/upstreams/found/targets", r#"["127.0.0.1:80"]"#)
        .await
        .problem(409);
    assert_eq!(
        gw.admin("GET", "/upstreams", "").await.json()["found"]["source"],
        "discovery"
    );
}

#[tokio::test]
async fn post_reload_swaps_a_valid_config_and_refuses_an_invalid_one() {
    let upstream = Upstream::named("a").await;
    let gw = Gateway::start(&with_admin(&upstream, "")).await;
    get(&gw.url("/new")).await.problem(404);
    let hash_before = gw.admin("GET", "/status", "").await.json()["config"]["hash"].clone();

    gw.write_config(&with_admin(
        &upstream,
        "  - { name: new, match: { path: /new }, respond: { body: fresh } }",
    ));
    let reloaded = gw.admin("POST", "/reload", "").await;
    assert_eq!(reloaded.status, 200, "{}", reloaded.text());
    let report = reloaded.json();
    assert_eq!(report["ok"], true);
    assert_eq!(report["trigger"], "admin_api");
    assert_ne!(report["hash"], hash_before);
    assert_eq!(get(&gw.url("/new")).await.text(), "fresh");

    gw.write_config(&with_admin(
        &upstream,
        "  - { name: broken, match: { path: /b }, upstream: nowhere, colour: red }",
    ));
    let refused = gw.admin("POST", "/reload", "").await;
    let problem = refused.problem(422);
    assert_eq!(problem["ok"], false);
    let errors = problem["errors"].as_array().unwrap();
    assert!(
        errors.iter().any(|e| e.as_str().unwrap().contains("colour")),
        "{errors:?}"
    );
    // The old config keeps serving, and says why the new one was refused.
    assert_eq!(get(&gw.url("/new")).await.text(), "fresh");
    let status = gw.admin("GET", "/status", "").await.json();
    assert_eq!(status["last_reload"]["ok"], false);
    assert_eq!(status["config"]["hash"], report["hash"]);

    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert_eq!(
        sample(&metrics, "portico_config_reloads_total", &[("result", "success")]),
        Some(1.0)
    );
    assert_eq!(
        sample(&metrics, "portico_config_reloads_total", &[("result", "failure")]),
        Some(1.0)
    );
    let hash = report["hash"].as_str().unwrap();
    assert_eq!(sample(&metrics, "portico_config_info", &[("hash", hash)]), Some(1.0));
}

#[tokio::test(start_paused = true)]
async fn a_changed_config_file_is_reloaded_on_its_own() {
    let before = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes: [{ name: v, match: { path: / }, respond: { body: before } }]
"#;
    let gw = Gateway::start_watching(before).await;
    assert_eq!(get(&gw.url("/")).await.text(), "before");
    gw.write_config(&before.replace("body: before", "body: after"));
    let mut seen = String::new();
    for _ in 0..100 {
        seen = get(&gw.url("/")).await.text();
        if seen == "after" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, "after", "the file change was picked up");
    let (_, report) = gw.control.reload_status();
    assert_eq!(report.map(|r| r.trigger), Some("file_changed"));

    // An invalid file is refused like any reload.
    gw.write_config("listeners: [");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(get(&gw.url("/")).await.text(), "after");
    let (_, report) = gw.control.reload_status();
    assert_eq!(report.map(|r| r.ok), Some(false));
}

#[tokio::test]
async fn health_breakers_and_counters_survive_a_reload() {
    let alive = Upstream::named("alive").await;
    let dead = refusing_addr().await;
    let yaml = |timeout: &str| {
        config(
            r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
upstreams:
  api:
    targets: [ "$A", "$D" ]
    timeouts: { response: $T }
    retries: { attempts: 1 }
    health_check: { passive: { consecutive_failures: 1, eject_for: 60s } }
routes: [{ name: api, match: { path: / }, upstream: api }]
"#,
            &[
                ("TOKEN", ADMIN_TOKEN.to_string()),
                ("A", alive.addr.to_string()),
                ("D", dead.to_string()),
                ("T", timeout.to_string()),
            ],
        )
    };
    let gw = Gateway::start(&yaml("10s")).await;
    for _ in 0..4 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    let ejected = |view: serde_json::Value| {
        view["api"]["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["addr"] == dead.to_string().as_str())
            .map(|t| t["ejected"] == true)
    };
    assert_eq!(ejected(gw.admin("GET", "/upstreams", "").await.json()), Some(true));

    // Unchanged upstream: the same pool. Changed upstream: a new pool that
    // keeps the state of the targets it lists again.
    for config in [yaml("10s"), yaml("20s")] {
        assert!(gw.reload(&config).await.ok);
        assert_eq!(ejected(gw.admin("GET", "/upstreams", "").await.json()), Some(true));
        let before = alive.count();
        for _ in 0..4 {
            assert_eq!(get(&gw.url("/")).await.status, 200, "the ejected target gets nothing");
        }
        assert_eq!(alive.count(), before + 4);
    }
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    let requests = sample(
        &metrics,
        "portico_requests_total",
        &[("route", "api"), ("method", "GET"), ("status", "2xx")],
    );
    assert_eq!(requests, Some(12.0), "counters count across reloads");
}

#[tokio::test(start_paused = true)]
async fn metrics_count_requests_latency_bytes_and_connections() {
    let upstream = Upstream::named("hello").await;
    let gw = Gateway::start(&with_admin(
        &upstream,
        "  - { name: teapot, match: { path: /tea }, respond: { status: 418, body: short } }",
    ))
    .await;
    for _ in 0..3 {
        get(&gw.url("/api/x")).await;
    }
    let post = http::Request::post(gw.url("/api/upload"))
        .body(http_body_util::Full::new(bytes::Bytes::from_static(b"0123456789")))
        .unwrap();
    send(post).await;
    get(&gw.url("/tea")).await;
    get(&gw.url("/nowhere")).await;
    get(&gw.url("/nowhere")).await;
    // Body bytes are counted when the response ends, just after the client has it.
    tokio::time::sleep(Duration::from_millis(100)).await;

    let metrics = gw.admin("GET", "/metrics", "").await;
    assert!(metrics.header("content-type").starts_with("text/plain; version=0.0.4"));
    let m = metrics.text();
    for (route, method, class, expected) in [
        ("api", "GET", "2xx", 3.0),
        ("api", "POST", "2xx", 1.0),
        ("teapot", "GET", "4xx", 1.0),
        ("(none)", "GET", "4xx", 2.0),
    ] {
        let labels = [("route", route), ("method", method), ("status", class)];
        assert_eq!(
            sample(&m, "portico_requests_total", &labels),
            Some(expected),
            "{labels:?}"
        );
    }
    assert_eq!(
        sample(&m, "portico_request_duration_seconds_count", &[("route", "api")]),
        Some(4.0)
    );
    assert_eq!(
        sample(
            &m,
            "portico_upstream_duration_seconds_count",
            &[("route", "api"), ("upstream", "api")]
        ),
        Some(4.0)
    );
    assert_eq!(
        sample(&m, "portico_received_bytes_total", &[("route", "api")]),
        Some(10.0)
    );
    // "hello" four times from the upstream, "short" once.
    assert_eq!(sample(&m, "portico_sent_bytes_total", &[("route", "api")]), Some(20.0));
    assert_eq!(
        sample(&m, "portico_sent_bytes_total", &[("route", "teapot")]),
        Some(5.0)
    );
    // The metrics scrape does not count: it is not on a gateway listener.
    let open = sample(&m, "portico_client_connections", &[]).unwrap();
    assert!((0.0..=7.0).contains(&open), "{open}");
    // Raw paths never become labels.
    assert!(!m.contains("/nowhere") && !m.contains("/api/x"), "{m}");
}

#[tokio::test(start_paused = true)]
async fn listeners_are_added_and_removed_by_a_reload() {
    let yaml = |listeners: &str| {
        format!("listeners: [{listeners}]\nroutes: [{{ name: r, match: {{ path: / }}, respond: {{ body: hi }} }}]\n")
    };
    let gw = Gateway::start(&yaml(r#"{ name: public, addr: "127.0.0.1:0" }"#)).await;
    let extra = refusing_addr().await;
    let both = yaml(&format!(
        r#"{{ name: public, addr: "127.0.0.1:0" }}, {{ name: extra, addr: "{extra}" }}"#
    ));
    assert!(gw.reload(&both).await.ok);
    assert_eq!(get(&format!("http://{extra}/")).await.text(), "hi");
    assert_eq!(
        get(&gw.url("/")).await.text(),
        "hi",
        "the kept listener keeps its socket"
    );

    // A listener that cannot bind refuses the reload and changes nothing.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clash = yaml(&format!(
        r#"{{ name: public, addr: "127.0.0.1:0" }}, {{ name: extra, addr: "{extra}" }}, {{ name: taken, addr: "{}" }}"#,
        taken.local_addr().unwrap()
    ));
    let report = gw.reload(&clash).await;
    assert!(!report.ok);
    assert!(report.errors[0].contains("cannot bind"), "{:?}", report.errors);
    assert_eq!(get(&format!("http://{extra}/")).await.text(), "hi");

    assert!(gw.reload(&yaml(r#"{ name: public, addr: "127.0.0.1:0" }"#)).await.ok);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(extra).await.is_err(),
        "the removed listener no longer accepts"
    );
    assert_eq!(get(&gw.url("/")).await.text(), "hi");
}

#[tokio::test(start_paused = true)]
async fn requests_in_flight_finish_on_the_config_they_started_with() {
    let slow = Upstream::slow("old-route", Duration::from_millis(600)).await;
    let yaml = |route: &str| {
        format!(
            "listeners: [{{ name: public, addr: \"127.0.0.1:0\" }}]\n\
             upstreams: {{ slow: {{ targets: [\"{}\"] }} }}\n\
             routes: [{route}]\n",
            slow.addr
        )
    };
    let gw = Gateway::start(&yaml("{ name: r, match: { path: / }, upstream: slow }")).await;
    let url = gw.url("/");
    let in_flight = tokio::spawn(async move { get(&url).await.text() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        gw.reload(&yaml("{ name: r, match: { path: / }, respond: { body: new-route } }"))
            .await
            .ok
    );
    assert_eq!(get(&gw.url("/")).await.text(), "new-route");
    assert_eq!(in_flight.await.unwrap(), "old-route");
}

#[tokio::test]
async fn a_keep_alive_connection_uses_the_new_routes_for_its_next_request() {
    let yaml = |body: &str| {
        format!(
            "listeners: [{{ name: public, addr: \"127.0.0.1:0\" }}]\n\
             routes: [{{ name: r, match: {{ path: / }}, respond: {{ body: {body} }} }}]\n"
        )
    };
    let gw = Gateway::start(&yaml("one")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let ask = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    let first = exchange(&mut stream, ask).await;
    assert!(first.ends_with("one"), "{first}");
    assert!(gw.reload(&yaml("two")).await.ok);
    let second = exchange(&mut stream, ask).await;
    assert!(
        second.ends_with("two"),
        "the same connection sees the new config: {second}"
    );
}

/// Writes a request on an open connection and reads one small response.
async fn exchange(stream: &mut tokio::net::TcpStream, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn admin_config_errors_name_the_fix() {
    let errors = |yaml: &str| match portico::config::build(yaml) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    let short =
        errors("listeners: [{ name: p, addr: '127.0.0.1:8080' }]\nadmin: { addr: '127.0.0.1:8080', token: short }\n");
    assert!(
        short
            .iter()
            .any(|e| e.contains("admin.token") && e.contains("at least 16")),
        "{short:?}"
    );
    assert!(
        short
            .iter()
            .any(|e| e.contains("admin.addr") && e.contains("port of its own")),
        "{short:?}"
    );
    let bad = errors("listeners: [{ name: p, addr: '127.0.0.1:0' }]\nadmin: { addr: nine, tokn: x }\n");
    assert!(
        bad.iter()
            .any(|e| e.contains("admin.tokn") && e.contains("did you mean")),
        "{bad:?}"
    );
}

#[tokio::test]
async fn explain_shows_the_route_near_misses_and_destination_without_sending() {
    let upstream = Upstream::named("a").await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
upstreams:
  users: { targets: [ "$U" ], retries: { attempts: 2 }, timeouts: { connect: 1s } }
routes:
  - name: user
    match: { path: "/api/users/{id}", methods: [GET] }
    upstream: users
    rewrite: { path: "/v2/accounts/{id}" }
  - name: beta
    match: { path: "/api/users/{id}", headers: { x-beta: "1" } }
    upstream: users
  - name: catch-api
    match: { path: /api }
    respond: { status: 410, body: gone }
"#,
        &[("TOKEN", ADMIN_TOKEN.to_string()), ("U", upstream.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    let ask = |body: serde_json::Value| {
        let gw = &gw;
        async move { gw.admin("POST", "/explain", &body.to_string()).await }
    };

    let found = ask(serde_json::json!({ "method": "GET", "url": "/api/users/7?full=1" })).await;
    assert_eq!(found.status, 200, "{}", found.text());
    let found = found.json();
    assert_eq!(found["outcome"], "proxied");
    assert_eq!(found["route"], "user");
    assert_eq!(found["params"]["id"], "7");
    assert_eq!(found["upstream"]["path"], "/v2/accounts/7?full=1");
    assert_eq!(found["upstream"]["target"], upstream.addr.to_string());
    assert_eq!(found["upstream"]["timeouts"]["connect"], "1s");
    assert!(found["upstream"]["retries"].as_str().unwrap().starts_with("up to 2"));
    let misses = found["near_misses"].as_array().unwrap();
    let beta = misses.iter().find(|m| m["route"] == "beta").unwrap();
    assert_eq!(beta["why"][0], "header x-beta: absent, wants \"1\"");
    let catch = misses.iter().find(|m| m["route"] == "catch-api").unwrap();
    assert!(catch["why"][0].as_str().unwrap().contains("matches too"), "{catch}");
    assert_eq!(upstream.count(), 0, "explain sends nothing");

    let not_allowed =
        ask(serde_json::json!({ "method": "DELETE", "url": "/api/users/7", "headers": { "x-beta": "2" } }))
            .await
            .json();
    // beta fails on its header; the `catch-api` prefix takes it.
    assert_eq!(not_allowed["route"], "catch-api");
    assert_eq!(not_allowed["outcome"], "responded");
    assert_eq!(not_allowed["status"], 410);

    let missing = ask(serde_json::json!({ "method": "GET", "url": "http://api.example/other" }))
        .await
        .json();
    assert_eq!(missing["outcome"], "not_found");
    assert_eq!(missing["status"], 404);
    assert_eq!(missing["request"]["host"], "api.example");
    assert_eq!(missing["near_misses"].as_array().unwrap().len(), 3);

    let climbing = ask(serde_json::json!({ "method": "GET", "url": "/../etc" }))
        .await
        .json();
    assert_eq!(climbing["outcome"], "bad_request");

    ask(serde_json::json!({ "method": "G E T", "url": "/" }))
        .await
        .problem(400);
    ask(serde_json::json!({ "method": "GET" })).await.problem(400);
    ask(serde_json::json!({ "method": "GET", "url": "/", "headers": { "bad header": "x" } }))
        .await
        .problem(400);
}

#[tokio::test]
async fn explain_tells_when_the_method_is_wrong_or_no_target_can_take_it() {
    let dead = refusing_addr().await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
upstreams:
  down:
    targets: [ "$D" ]
    health_check: { passive: { consecutive_failures: 1, eject_for: 60s } }
routes:
  - { name: only-get, match: { path: /get, methods: [GET] }, respond: { body: x } }
  - { name: down, match: { path: /down }, upstream: down }
"#,
        &[("TOKEN", ADMIN_TOKEN.to_string()), ("D", dead.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    let wrong = gw
        .admin("POST", "/explain", r#"{"method": "POST", "url": "/get"}"#)
        .await
        .json();
    assert_eq!(wrong["outcome"], "method_not_allowed");
    assert_eq!(wrong["status"], 405);
    assert!(
        wrong["detail"].as_str().unwrap().contains("Allow: HEAD, GET"),
        "{wrong}"
    );

    get(&gw.url("/down")).await.problem(502);
    let down = gw
        .admin("POST", "/explain", r#"{"method": "GET", "url": "/down"}"#)
        .await
        .json();
    assert_eq!(down["outcome"], "unavailable");
    assert_eq!(down["status"], 503);
    assert_eq!(down["upstream"]["targets"][0]["available"], false);
    assert!(down["upstream"]["target"].is_null());
}

#[tokio::test(start_paused = true)]
async fn a_draining_listener_asks_keep_alive_clients_to_close_before_closing_idle_ones() {
    let gw = Gateway::start(
        "listeners: [{ name: public, addr: \"127.0.0.1:0\" }]\n\
         shutdown: { drain_timeout: 5s, close_idle_after: 2s }\n\
         routes: [{ name: r, match: { path: / }, respond: { body: hi } }]\n",
    )
    .await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let ask = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(!exchange(&mut stream, ask).await.contains("connection: close"));
    let control = gw.control.clone();
    let shutdown = tokio::spawn(async move { control.shutdown().await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The idle connection was not cut: its next request is answered, with
    // the notice to close.
    let answer = exchange(&mut stream, ask).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    assert_eq!(shutdown.await.unwrap(), portico::proxy::Drained::Clean);
}
