//! Listener hardening under hostile traffic, whatever the routes' plugins:
//! slow clients (slowloris, slow POST) held off while others are served,
//! connection caps and per-IP rates, long targets, a route's body limit,
//! HTTP/2 stream limits.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A connection from a chosen loopback address (127.0.0.2 is another client).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends a keep-alive GET on `stream` and reads its answer's status line
/// (the answers here are short and come in one read).
async fn request_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return String::new();
    }
    let mut buf = vec![0u8; 4096];
    match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
        Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        _ => String::new(),
    }
}

/// Everything the gateway says on a fresh connection before it closes it.
async fn told_on_connect(stream: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn metric(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find(|line| line.starts_with(line_start))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_while_normal_clients_are_served() {
    let upstream = Upstream::start(|r| http::Response::new(Full::new(Bytes::from(r.body.len().to_string())))).await;
    let gw = Gateway::start(&config(
        r#"
listeners:
  - name: public
    addr: "127.0.0.1:0"
    timeouts: { header_read: 1s, body_read: 10s, idle: 10s }
    limits: { min_body_rate: { per_second: 1KiB, grace: 1s } }
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: app, match: { path: / }, upstream: app }
"#,
        &[("U", upstream.addr.to_string()), ("TOKEN", ADMIN_TOKEN.to_string())],
    ))
    .await;
    let addr = gw.addr;

    // Slowloris: heads that never end, a byte at a time.
    let slow_heads: Vec<_> = (0..40)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let started = Instant::now();
                stream
                    .write_all(b"GET /slowloris HTTP/1.1\r\nHost: x\r\n")
                    .await
                    .unwrap();
                loop {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    if stream.write_all(b"X").await.is_err() || started.elapsed() > Duration::from_secs(15) {
                        break;
                    }
                    // The gateway closing shows as EOF on a read that does not wait.
                    let mut byte = [0u8; 1];
                    if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut byte)).await {
                        break;
                    }
                }
                started.elapsed()
            })
        })
        .collect();
    // Slow POST: a large declared body sent at 50 bytes a second.
    let slow_bodies: Vec<_> = (0..20)
        .map(|_| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.unwrap();
                let started = Instant::now();
                stream
                    .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n")
                    .await
                    .unwrap();
                let mut answer = Vec::new();
                let mut buf = [0u8; 4096];
                while started.elapsed() < Duration::from_secs(15) {
                    let _ = stream.write_all(&[b'x'; 10]).await;
                    match tokio::time::timeout(Duration::from_millis(200), stream.read(&mut buf)).await {
                        Ok(Ok(0)) | Ok(Err(_)) => break,
                        Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                        Err(_) => {}
                    }
                }
                (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
            })
        })
        .collect();

    // Meanwhile, normal clients: keep-alive GETs and whole POSTs.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let normal: Vec<_> = (0..8)
        .map(|client| {
            let url = gw.url("/normal");
            tokio::spawn(async move {
                let mut slowest = Duration::ZERO;
                for i in 0..25 {
                    let asked = Instant::now();
                    let reply = if i % 5 == 0 {
                        send(
                            http::Request::post(&url)
                                .body(Full::new(Bytes::from(vec![b'a'; 64 * 1024])))
                                .unwrap(),
                        )
                        .await
                    } else {
                        get(&url).await
                    };
                    slowest = slowest.max(asked.elapsed());
                    assert_eq!(reply.status, 200, "client {client}, request {i}");
                    let expected = if i % 5 == 0 { "65536" } else { "0" };
                    assert_eq!(reply.text(), expected);
                }
                slowest
            })
        })
        .collect();
    for client in normal {
        let slowest = client.await.unwrap();
        assert!(slowest < Duration::from_secs(3), "a normal request took {slowest:?}");
    }
    let normal_took = started.elapsed();

    for slow in slow_heads {
        let held = slow.await.unwrap();
        assert!(held < Duration::from_secs(5), "a slowloris client was held {held:?}");
    }
    for slow in slow_bodies {
        let (held, answer) = slow.await.unwrap();
        assert!(held < Duration::from_secs(8), "a slow POST was held {held:?}");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(
            answer.contains("application/problem+json") && answer.contains("too slowly"),
            "{answer}"
        );
        assert!(answer.to_ascii_lowercase().contains("connection: close"), "{answer}");
    }
    assert!(
        upstream.requests().iter().all(|r| r.uri.path() != "/slowloris"),
        "no unfinished head reached the upstream"
    );
    assert!(
        normal_took < Duration::from_secs(20),
        "normal clients took {normal_took:?}"
    );
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert_eq!(
        metric(
            &metrics,
            r#"portico_listener_refusals_total{listener="public",reason="request_timeout"}"#
        ),
        20,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_ip_and_overall() {
    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&config(
        r#"
listeners:
  - name: public
    addr: "127.0.0.1:0"
    limits: { max_connections: 5, max_connections_per_ip: 3 }
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: app, match: { path: / }, upstream: app }
"#,
        &[("U", upstream.addr.to_string()), ("TOKEN", ADMIN_TOKEN.to_string())],
    ))
    .await;
    let mut first = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from([127, 0, 0, 1], gw.addr).await;
        assert!(request_on(&mut stream, "/").await.starts_with("HTTP/1.1 200"));
        first.push(stream);
    }
    let mut fourth = connect_from([127, 0, 0, 1], gw.addr).await;
    let told = told_on_connect(&mut fourth).await;
    assert!(told.starts_with("HTTP/1.1 429"), "{told}");
    assert!(told.contains("too many connections from your address"), "{told}");

    // Another address has its own count, up to the listener's total.
    let mut second = Vec::new();
    for _ in 0..2 {
        let mut stream = connect_from([127, 0, 0, 2], gw.addr).await;
        assert!(request_on(&mut stream, "/").await.starts_with("HTTP/1.1 200"));
        second.push(stream);
    }
    let mut sixth = connect_from([127, 0, 0, 2], gw.addr).await;
    let told = told_on_connect(&mut sixth).await;
    assert!(told.starts_with("HTTP/1.1 503"), "{told}");

    // A connection closed frees its place.
    drop(first.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = connect_from([127, 0, 0, 1], gw.addr).await;
        if request_on(&mut again, "/").await.starts_with("HTTP/1.1 200") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the closed connection's place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connections admitted are still served.
    for stream in first.iter_mut().chain(second.iter_mut()) {
        assert!(request_on(stream, "/").await.starts_with("HTTP/1.1 200"));
    }
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert!(
        metric(
            &metrics,
            r#"portico_listener_refusals_total{listener="public",reason="max_connections_per_ip"}"#
        ) >= 1,
        "{metrics}"
    );
    assert!(
        metric(
            &metrics,
            r#"portico_listener_refusals_total{listener="public",reason="max_connections"}"#
        ) >= 1,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_and_request_rates_are_limited_per_ip() {
    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&config(
        r#"
listeners:
  - name: connections
    addr: "127.0.0.1:0"
    limits: { connection_rate_per_ip: { connections: 3, per: 1m } }
  - name: requests
    addr: "127.0.0.1:0"
    limits: { request_rate_per_ip: { requests: 5, per: 1m } }
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: app, match: { path: / }, upstream: app }
"#,
        &[("U", upstream.addr.to_string())],
    ))
    .await;
    let connections = gw.listener("connections").unwrap();
    for i in 0..3 {
        let mut stream = connect_from([127, 0, 0, 1], connections).await;
        assert!(
            request_on(&mut stream, "/").await.starts_with("HTTP/1.1 200"),
            "connection {i}"
        );
    }
    let mut over = connect_from([127, 0, 0, 1], connections).await;
    let told = told_on_connect(&mut over).await;
    assert!(told.starts_with("HTTP/1.1 429"), "{told}");
    let mut elsewhere = connect_from([127, 0, 0, 2], connections).await;
    assert!(request_on(&mut elsewhere, "/").await.starts_with("HTTP/1.1 200"));

    let requests = gw.listener("requests").unwrap();
    let before = upstream.count();
    let mut stream = connect_from([127, 0, 0, 1], requests).await;
    for i in 0..5 {
        assert!(
            request_on(&mut stream, "/").await.starts_with("HTTP/1.1 200"),
            "request {i}"
        );
    }
    let refused = request_on(&mut stream, "/").await;
    assert!(refused.starts_with("HTTP/1.1 429"), "{refused}");
    assert!(refused.contains("application/problem+json"), "{refused}");
    assert!(refused.to_ascii_lowercase().contains("retry-after: "), "{refused}");
    // A new connection from the same address is the same client.
    let mut fresh = connect_from([127, 0, 0, 1], requests).await;
    assert!(request_on(&mut fresh, "/").await.starts_with("HTTP/1.1 429"));
    let mut other = connect_from([127, 0, 0, 2], requests).await;
    assert!(request_on(&mut other, "/").await.starts_with("HTTP/1.1 200"));
    assert_eq!(
        upstream.count(),
        before + 6,
        "refused requests never reach the upstream"
    );
}

#[tokio::test]
async fn long_targets_are_414_and_a_route_has_its_own_body_limit() {
    let upstream = Upstream::start(|r| http::Response::new(Full::new(Bytes::from(r.body.len().to_string())))).await;
    let gw = Gateway::start(&config(
        r#"
listeners:
  - name: public
    addr: "127.0.0.1:0"
    limits: { max_uri_bytes: 1KiB, max_request_body: 4KiB }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: small, match: { path: /small }, upstream: app, max_request_body: 1KiB }
  - { name: large, match: { path: /large }, upstream: app, max_request_body: 16KiB }
  - { name: app, match: { path: / }, upstream: app }
"#,
        &[("U", upstream.addr.to_string())],
    ))
    .await;
    let long = format!("/?q={}", "a".repeat(1100));
    let reply = get(&gw.url(&long)).await;
    assert_eq!(
        reply.problem(414)["detail"],
        "the request target is 1104 bytes; the limit is 1024"
    );
    assert_eq!(get(&gw.url(&format!("/?q={}", "a".repeat(900)))).await.status, 200);

    let post = |path: &str, size: usize| {
        send(
            http::Request::post(gw.url(path))
                .body(Full::new(Bytes::from(vec![b'b'; size])))
                .unwrap(),
        )
    };
    post("/small", 2048).await.problem(413);
    assert_eq!(post("/small", 1024).await.text(), "1024");
    assert_eq!(
        post("/other", 2048).await.text(),
        "2048",
        "the listener's limit elsewhere"
    );
    post("/other", 5000).await.problem(413);
    assert_eq!(post("/large", 10_000).await.text(), "10000", "a route may allow more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_gets_no_more_streams_than_the_limit() {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let (in_flight_seen, most_seen) = (in_flight.clone(), most.clone());
    let upstream = serve(move |_request| {
        let (in_flight, most) = (in_flight_seen.clone(), most_seen.clone());
        async move {
            let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(200)).await;
            in_flight.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
        }
    })
    .await;
    let gw = Gateway::start(&config(
        r#"
listeners:
  - name: public
    addr: "127.0.0.1:0"
    limits: { http2_max_streams: 2 }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: app, match: { path: / }, upstream: app }
"#,
        &[("U", upstream.to_string())],
    ))
    .await;
    let tcp = TcpStream::connect(gw.addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    // One request first, so the client has the server's SETTINGS: streams
    // opened before them, past the limit, are refused (REFUSED_STREAM).
    let mut first = sender.clone();
    let warm = first
        .send_request(http::Request::get(gw.url("/")).body(Empty::<Bytes>::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(warm.into_body().collect().await.unwrap().to_bytes(), "ok");
    let calls: Vec<_> = (0..6)
        .map(|_| {
            let mut sender = sender.clone();
            let url = gw.url("/");
            tokio::spawn(async move {
                let response = sender
                    .send_request(http::Request::get(url).body(Empty::<Bytes>::new()).unwrap())
                    .await
                    .unwrap();
                response.into_body().collect().await.unwrap().to_bytes()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), "ok");
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "the client kept to the 2 streams it was given"
    );
}

#[test]
fn hardening_config_errors_name_the_fix() {
    let errors = match portico::config::build(
        r#"
listeners:
  - name: p
    addr: "127.0.0.1:0"
    timeouts: { body_read: 0s }
    limits:
      max_connections: 0
      max_connections_per_ip: 0
      min_body_rate: { per_second: 0 }
      connection_rate_per_ip: { connections: 0, per: 1s }
      request_rate_per_ip: { requests: 5, per: 0s }
      max_uri_bytes: 10
      http2_max_streams: 0
routes:
  - { name: r, match: { path: / }, respond: { body: x } }
"#,
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    for expected in [
        "listeners[0].timeouts.body_read: must be longer than zero",
        "listeners[0].limits.max_connections: must be at least 1; leave it out for no limit",
        "listeners[0].limits.max_connections_per_ip: must be at least 1",
        "listeners[0].limits.min_body_rate.per_second: must be more than 0; to turn the check off, set min_body_rate: null",
        "listeners[0].limits.connection_rate_per_ip.connections: must be at least 1",
        "listeners[0].limits.request_rate_per_ip.per: must be longer than zero",
        "listeners[0].limits.max_uri_bytes: must be at least 256 bytes",
        "listeners[0].limits.http2_max_streams: must be at least 1",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\n{errors:#?}"
        );
    }
}
