//! Upstreams that die, restart, fail checks or answer 5xx: clients see no
//! error where another target can answer, and a fast 503 when none can.

use crate::config;
use crate::support::*;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn gateway_config(targets: &str, upstream_extra: &str) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  svc:
    targets: $TARGETS
    timeouts: { connect: 1s, response: 5s }
$EXTRA
routes:
  - { name: svc, match: { path: / }, upstream: svc }
"#,
        &[("TARGETS", targets.to_string()), ("EXTRA", upstream_extra.to_string())],
    )
}

/// An upstream whose `/health` answer (and every answer) can be switched.
async fn switchable(name: &'static str, up: Arc<AtomicBool>) -> Upstream {
    Upstream::start(move |_| {
        if up.load(Ordering::SeqCst) {
            named_response(name)
        } else {
            status_response(500)
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_of_three_targets_dying_under_load_is_invisible_to_get_clients() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let c = Upstream::named("c").await;
    let targets = format!(r#"["{}", "{}", "{}"]"#, a.addr, b.addr, c.addr);
    let extra =
        "    health_check: { passive: { consecutive_failures: 3, eject_for: 30s } }\n    retries: { attempts: 2 }";
    let gw = Gateway::start(&gateway_config(&targets, extra)).await;
    let url = gw.url("/");
    let load = tokio::spawn({
        let url = url.clone();
        async move { get_many(&url, 6, 40).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.stop();
    let replies = load.await.unwrap();
    let failed: Vec<_> = replies.iter().filter(|r| r.status != 200).map(|r| r.status).collect();
    assert!(failed.is_empty(), "clients saw errors: {failed:?}");
    assert_eq!(replies.len(), 240);
    let after = b.count();
    for _ in 0..30 {
        assert_eq!(get(&url).await.status, 200);
    }
    assert_eq!(
        b.count(),
        after,
        "the dead target is ejected, not tried on every request"
    );
}

#[tokio::test]
async fn with_every_target_down_the_answer_is_503_at_once() {
    let targets = format!(r#"["{}", "{}"]"#, refusing_addr().await, refusing_addr().await);
    let extra =
        "    health_check: { passive: { consecutive_failures: 1, eject_for: 1m } }\n    retries: { attempts: 1 }";
    let gw = Gateway::start(&gateway_config(&targets, extra)).await;
    // The first request finds both refusing (and ejects them): a 502 naming the failure.
    get(&gw.url("/")).await.problem(502);
    let started = Instant::now();
    let problem = get(&gw.url("/")).await.problem(503);
    assert!(
        problem["detail"].as_str().unwrap().contains("no healthy target"),
        "{problem}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn active_checks_take_a_failing_target_out_and_bring_it_back() {
    let a_up = Arc::new(AtomicBool::new(true));
    let a = switchable("a", a_up.clone()).await;
    let b = Upstream::named("b").await;
    let targets = format!(r#"["{}", "{}"]"#, a.addr, b.addr);
    let extra =
        "    health_check: { active: { path: /health, interval: 100ms, timeout: 100ms, healthy: 2, unhealthy: 2 } }";
    let gw = Gateway::start(&gateway_config(&targets, extra)).await;
    a_up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    for _ in 0..20 {
        assert_eq!(
            get(&gw.url("/")).await.text(),
            "b",
            "the unhealthy target gets no traffic"
        );
    }
    a_up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut seen_a = false;
    for _ in 0..20 {
        seen_a |= get(&gw.url("/")).await.text() == "a";
    }
    assert!(seen_a, "a target that passes again gets traffic again");
    let probes: Vec<_> = a.requests().into_iter().filter(|r| r.uri.path() == "/health").collect();
    assert!(probes.len() >= 8, "probed at its interval: {}", probes.len());
    assert_eq!(probes[0].headers["user-agent"], "portico-health-check");
}

#[tokio::test(start_paused = true)]
async fn backups_take_over_when_no_primary_is_healthy_and_hand_back() {
    let primary_up = Arc::new(AtomicBool::new(true));
    let primary = switchable("primary", primary_up.clone()).await;
    let backup = Upstream::named("backup").await;
    let targets = format!(r#"["{}", {{ addr: "{}", backup: true }}]"#, primary.addr, backup.addr);
    let extra =
        "    health_check: { active: { path: /health, interval: 100ms, timeout: 100ms, healthy: 1, unhealthy: 1 } }";
    let gw = Gateway::start(&gateway_config(&targets, extra)).await;
    assert_eq!(get(&gw.url("/")).await.text(), "primary");
    primary_up.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/")).await.text(), "backup");
    }
    primary_up.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&gw.url("/")).await.text(), "primary", "handed back");
}

#[tokio::test]
async fn retries_go_to_another_target_and_only_for_idempotent_methods_unless_the_route_says() {
    let failing = Upstream::start(|_| status_response(503)).await;
    let healthy = Upstream::named("healthy").await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  svc:
    targets: ["$F", "$H"]
    retries: { attempts: 1, on: [503], backoff: 1ms }
routes:
  - { name: any, match: { path: /any }, upstream: svc, retries: { attempts: 1, on: [503], idempotent_only: false, backoff: 1ms } }
  - { name: svc, match: { path: / }, upstream: svc }
"#,
        &[("F", failing.addr.to_string()), ("H", healthy.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..6 {
        assert_eq!(
            get(&gw.url("/")).await.text(),
            "healthy",
            "a GET that met a 503 went to the other target"
        );
    }
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let request = http::Request::post(gw.url("/")).body(http_body_util::Full::new(bytes::Bytes::from("x")));
        statuses.push(send(request.unwrap()).await.status.as_u16());
    }
    assert!(statuses.contains(&503), "a POST is not retried: {statuses:?}");
    for _ in 0..6 {
        let request = http::Request::post(gw.url("/any")).body(http_body_util::Full::new(bytes::Bytes::from("body")));
        let reply = send(request.unwrap()).await;
        assert_eq!(reply.text(), "healthy", "the route allows retrying POST");
    }
    assert_eq!(healthy.last().body, "body", "the buffered body was sent again whole");
}

#[tokio::test]
async fn a_refused_connection_is_retried_whatever_the_method() {
    let healthy = Upstream::named("healthy").await;
    let targets = format!(r#"["{}", "{}"]"#, refusing_addr().await, healthy.addr);
    let gw = Gateway::start(&gateway_config(&targets, "    retries: { attempts: 1, backoff: 1ms }")).await;
    for _ in 0..6 {
        let request = http::Request::post(gw.url("/")).body(http_body_util::Full::new(bytes::Bytes::from("x")));
        assert_eq!(
            send(request.unwrap()).await.text(),
            "healthy",
            "it never reached the refusing target"
        );
    }
}

#[tokio::test]
async fn the_retry_budget_caps_the_extra_load_on_a_failing_service() {
    let status = Arc::new(AtomicU16::new(503));
    let code = status.clone();
    let a = Upstream::start(move |_| status_response(code.load(Ordering::SeqCst))).await;
    let b = Upstream::start(|_| status_response(503)).await;
    let targets = format!(r#"["{}", "{}"]"#, a.addr, b.addr);
    let extra = "    retries: { attempts: 1, on: [503], budget: 20%, backoff: 1ms }";
    let gw = Gateway::start(&gateway_config(&targets, extra)).await;
    for _ in 0..200 {
        get(&gw.url("/")).await;
    }
    let upstream_requests = a.count() + b.count();
    // Without a budget: 400. With 20% and a reserve of 10 tokens: at most 250.
    assert!(
        (200..=252).contains(&upstream_requests),
        "{upstream_requests} upstream requests for 200 client requests"
    );
}

#[tokio::test]
async fn a_request_timeout_bounds_the_whole_exchange() {
    let slow = Upstream::slow("slow", Duration::from_secs(3)).await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { svc: { targets: ["$U"], timeouts: { response: 30s } } }
routes: [{ name: svc, match: { path: / }, upstream: svc, timeouts: { request: 300ms } }]
"#,
        &[("U", slow.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    let started = Instant::now();
    get(&gw.url("/")).await.problem(504);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test(start_paused = true)]
async fn a_stopped_target_that_restarts_gets_traffic_again_after_its_ejection() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let a_addr = a.addr;
    let targets = format!(r#"["{}", "{}"]"#, a.addr, b.addr);
    let extra = "    health_check: { passive: { consecutive_failures: 1, eject_for: 300ms } }\n    retries: { attempts: 1, backoff: 1ms }";
    let gw = Gateway::start(&gateway_config(&targets, extra)).await;
    a.stop();
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/")).await.text(), "b");
    }
    let restarted = Upstream::start_with(a_addr, Duration::ZERO, |_| named_response("a")).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut seen = Vec::new();
    for _ in 0..10 {
        seen.push(get(&gw.url("/")).await.text());
    }
    assert!(
        seen.iter().any(|s| s == "a"),
        "tried again after the ejection: {seen:?}"
    );
    assert!(restarted.count() > 0);
}

#[tokio::test]
async fn an_exchange_that_breaks_before_an_answer_is_retried_for_idempotent_requests_only() {
    // Reads the request, then hangs up without answering.
    let breaking = scripted_upstream(b"", Duration::ZERO).await;
    let healthy = Upstream::named("healthy").await;
    let targets = format!(r#"["{breaking}", "{}"]"#, healthy.addr);
    let gw = Gateway::start(&gateway_config(&targets, "    retries: { attempts: 1, backoff: 1ms }")).await;
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/")).await.text(), "healthy");
    }
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let request = http::Request::post(gw.url("/")).body(http_body_util::Full::new(bytes::Bytes::from("x")));
        statuses.push(send(request.unwrap()).await.status.as_u16());
    }
    assert!(
        statuses.contains(&502),
        "a POST that may have been processed is not sent twice: {statuses:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_rejects_quickly_half_opens_and_closes() {
    let status = Arc::new(AtomicU16::new(500));
    let code = status.clone();
    let service = Upstream::start(move |_| status_response(code.load(Ordering::SeqCst))).await;
    let targets = format!(r#"["{}"]"#, service.addr);
    let extra = "    circuit_breaker: { failure_rate: 50%, min_requests: 5, window: 10s, open_for: 500ms, half_open_requests: 2 }";
    let gw = Gateway::start(&gateway_config(&targets, extra)).await;
    for _ in 0..5 {
        assert_eq!(
            get(&gw.url("/")).await.status,
            500,
            "the service's own answers pass until it opens"
        );
    }
    let started = Instant::now();
    let open = get(&gw.url("/")).await;
    open.problem(503);
    assert!(started.elapsed() < Duration::from_millis(200));
    assert_eq!(open.header("retry-after"), "1");
    assert_eq!(service.count(), 5, "an open breaker keeps requests off the service");

    status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Half-open: probes go through; their success closes the breaker.
    for _ in 0..6 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(service.count(), 11);
}

#[tokio::test(start_paused = true)]
async fn file_discovery_follows_the_file_and_keeps_the_last_good_targets() {
    let a = Upstream::named("a").await;
    let b = Upstream::named("b").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("targets.yaml");
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  svc:
    discovery: { file: "$FILE", refresh: 100ms }
routes: [{ name: svc, match: { path: / }, upstream: svc }]
"#,
        &[("FILE", file.display().to_string())],
    );
    // Missing at start: the gateway starts, and answers 503 until targets appear.
    let gw = Gateway::start(&yaml).await;
    get(&gw.url("/")).await.problem(503);

    std::fs::write(&file, format!("- {}\n", a.addr)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(get(&gw.url("/")).await.text(), "a");

    std::fs::write(&file, format!("- {{ addr: \"{}\", weight: 2 }}\n", b.addr)).unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..4 {
        assert_eq!(
            get(&gw.url("/")).await.text(),
            "b",
            "a removed target gets no new requests"
        );
    }

    std::fs::write(&file, "- not-an-address\n").unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        get(&gw.url("/")).await.text(),
        "b",
        "an invalid file keeps the last good targets"
    );
}

#[test]
fn discovery_config_errors_name_the_fix() {
    let text = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  both: { targets: ["127.0.0.1:1"], discovery: { file: t.yaml } }
  dns: { discovery: { dns: "orders.internal" } }
  none: { discovery: {} }
  two: { discovery: { file: t.yaml, dns_srv: _http._tcp.x } }
  fast: { discovery: { file: t.yaml, refresh: 0s } }
"#;
    let errors = match portico::config::build(text) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.to_string(),
    };
    for expected in [
        "upstreams.both.discovery: use either `targets` or `discovery`",
        "upstreams.dns.discovery.dns: \"orders.internal\" needs a port: write it as name:port",
        "upstreams.none.discovery: name one source",
        "upstreams.two.discovery: name one source",
        "upstreams.fast.discovery.refresh: must be longer than zero",
    ] {
        assert!(errors.contains(expected), "missing {expected:?} in:\n{errors}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_discovery_follows_the_records_of_a_real_dns_server() {
    // Two upstreams on one port, on different loopback addresses.
    let a = Upstream::start_with("127.0.0.2:0".parse().unwrap(), Duration::ZERO, |_| named_response("a")).await;
    let port = a.addr.port();
    let b = Upstream::start_with(format!("127.0.0.3:{port}").parse().unwrap(), Duration::ZERO, |_| {
        named_response("b")
    })
    .await;
    let dns = DnsServer::start().await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  svc:
    discovery: { dns: "svc.portico.test:$PORT", refresh: 100ms, nameservers: ["$DNS"] }
routes: [{ name: svc, match: { path: / }, upstream: svc }]
"#,
        &[("PORT", port.to_string()), ("DNS", dns.addr.to_string())],
    );
    // Not resolvable at start: the gateway starts and answers 503.
    let gw = Gateway::start(&yaml).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    get(&gw.url("/")).await.problem(503);

    dns.set("svc.portico.test", &["127.0.0.2".parse().unwrap()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&gw.url("/")).await.text(), "a");

    dns.set(
        "svc.portico.test",
        &["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..10 {
        seen.insert(get(&gw.url("/")).await.text());
    }
    assert_eq!(seen.len(), 2, "both addresses are targets: {seen:?}");

    dns.set("svc.portico.test", &["127.0.0.3".parse().unwrap()]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        assert_eq!(
            get(&gw.url("/")).await.text(),
            "b",
            "a removed address gets no new requests"
        );
    }
    assert!(b.count() > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srv_discovery_uses_ports_and_weights_and_keeps_worse_priorities_as_backups() {
    let a = Upstream::start_with("127.0.0.2:0".parse().unwrap(), Duration::ZERO, |_| named_response("a")).await;
    let b = Upstream::start_with("127.0.0.3:0".parse().unwrap(), Duration::ZERO, |_| named_response("b")).await;
    let dns = DnsServer::start().await;
    dns.set("a.portico.test", &["127.0.0.2".parse().unwrap()]);
    dns.set("b.portico.test", &["127.0.0.3".parse().unwrap()]);
    let service = "_http._tcp.svc.portico.test";
    dns.set_srv(
        service,
        &[
            (10, 5, a.addr.port(), "a.portico.test"),
            (20, 5, b.addr.port(), "b.portico.test"),
        ],
    );
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  svc:
    discovery: { dns_srv: "_http._tcp.svc.portico.test", refresh: 100ms, nameservers: ["$DNS"] }
routes: [{ name: svc, match: { path: / }, upstream: svc }]
"#,
        &[("DNS", dns.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        assert_eq!(
            get(&gw.url("/")).await.text(),
            "a",
            "the preferred priority takes the traffic"
        );
    }
    assert_eq!(b.count(), 0, "a worse priority stands by as a backup");
    dns.set_srv(
        service,
        &[
            (30, 5, a.addr.port(), "a.portico.test"),
            (20, 5, b.addr.port(), "b.portico.test"),
        ],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..5 {
        assert_eq!(get(&gw.url("/")).await.text(), "b");
    }
}

#[tokio::test]
async fn a_failing_target_is_cut_off_by_its_own_breaker_while_the_upstream_stays_closed() {
    let failing = Upstream::start(|_| status_response(500)).await;
    let healthy = Upstream::named("healthy").await;
    let targets = format!(r#"["{}", "{}"]"#, failing.addr, healthy.addr);
    // The failing target alone is 100% failures; the upstream as a whole at most 60%.
    let extra = "    circuit_breaker: { failure_rate: 75%, min_requests: 4, window: 10s, open_for: 1m }";
    let gw = Gateway::start(&gateway_config(&targets, extra)).await;
    for _ in 0..8 {
        get(&gw.url("/")).await;
    }
    let cut_off_at = failing.count();
    assert_eq!(cut_off_at, 4, "its breaker opened after its own 4 failures");
    for _ in 0..10 {
        assert_eq!(get(&gw.url("/")).await.text(), "healthy");
    }
    assert_eq!(failing.count(), cut_off_at, "no traffic while its breaker is open");
}
