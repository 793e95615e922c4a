//! Broken upstreams get a clean 502 or 504, never a hang or a panic.

use crate::config;
use crate::support::*;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn to(addr: SocketAddr, response_timeout: &str) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  svc: { targets: ["$U"], timeouts: { connect: 2s, response: $T } }
routes:
  - { name: svc, match: { path: / }, upstream: svc }
  - { name: ok, match: { path: "= /ok" }, respond: { body: still-serving } }
"#,
        &[("U", addr.to_string()), ("T", response_timeout.to_string())],
    )
}

#[tokio::test]
async fn refused_connection_is_502() {
    let gw = Gateway::start(&to(refusing_addr().await, "5s")).await;
    let problem = get(&gw.url("/x")).await.problem(502);
    assert!(problem["detail"].as_str().unwrap().contains("refused"), "{problem}");
    assert!(
        !problem.to_string().contains("127.0.0.1"),
        "target addresses stay out of client answers"
    );
}

#[tokio::test]
async fn upstream_that_hangs_is_504_after_the_response_timeout() {
    let addr = scripted_upstream(b"", Duration::from_secs(60)).await;
    let gw = Gateway::start(&to(addr, "500ms")).await;
    let started = Instant::now();
    get(&gw.url("/x")).await.problem(504);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    assert_eq!(get(&gw.url("/ok")).await.text(), "still-serving");
}

#[tokio::test]
async fn upstream_that_closes_mid_body_cuts_the_client_response_without_hanging() {
    // Closing after this leaves 991 promised bytes unsent.
    let addr = scripted_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly-part",
        Duration::ZERO,
    )
    .await;
    let gw = Gateway::start(&to(addr, "5s")).await;
    let answer = raw(gw.addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("content-length: 1000"), "{answer}");
    assert!(
        answer.ends_with("only-part"),
        "the client sees a short body and a closed connection: {answer}"
    );
    assert_eq!(get(&gw.url("/ok")).await.text(), "still-serving");
}

#[tokio::test]
async fn upstream_that_stalls_mid_body_is_cut_after_the_response_timeout() {
    let addr = scripted_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nstart",
        Duration::from_secs(60),
    )
    .await;
    let gw = Gateway::start(&to(addr, "500ms")).await;
    let started = Instant::now();
    let answer = raw(gw.addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(answer.ends_with("start"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "cut, not hung: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn upstream_that_answers_garbage_is_502() {
    let addr = scripted_upstream(b"SMTP ready\r\n\r\n", Duration::ZERO).await;
    let gw = Gateway::start(&to(addr, "5s")).await;
    get(&gw.url("/x")).await.problem(502);
}

#[tokio::test]
async fn upstream_that_closes_before_answering_is_502() {
    let addr = scripted_upstream(b"", Duration::ZERO).await;
    let gw = Gateway::start(&to(addr, "5s")).await;
    get(&gw.url("/x")).await.problem(502);
}

#[tokio::test(start_paused = true)]
async fn a_keep_alive_connection_the_upstream_closed_is_not_reused() {
    // Answers one request per connection as keep-alive, then hangs up shortly after.
    let addr = scripted_upstream(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        Duration::from_millis(50),
    )
    .await;
    let gw = Gateway::start(&to(addr, "5s")).await;
    for _ in 0..3 {
        assert_eq!(get(&gw.url("/x")).await.text(), "ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_route_overrides_the_upstream_response_timeout() {
    let slow = Upstream::slow("slow", Duration::from_secs(3)).await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { svc: { targets: ["$U"], timeouts: { response: 30s } } }
routes:
  - { name: impatient, match: { path: /impatient }, upstream: svc, timeouts: { response: 300ms } }
"#,
        &[("U", slow.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    let started = Instant::now();
    get(&gw.url("/impatient")).await.problem(504);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_kept_connection_bounds_each_answer_by_its_own_request_s_deadline() {
    // Fast everywhere but /slow: the requests share one kept connection, and
    // each sets the head deadline its route asks for, shorter or longer.
    let upstream = serve(|request: http::Request<hyper::body::Incoming>| async move {
        if request.uri().path().ends_with("/slow") {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
        Ok::<_, std::convert::Infallible>(named_response("svc"))
    })
    .await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { svc: { targets: ["$U"], timeouts: { response: 30s } } }
routes:
  - { name: impatient, match: { path: /impatient }, upstream: svc, timeouts: { response: 300ms } }
  - { name: patient, match: { path: /patient }, upstream: svc }
"#,
        &[("U", upstream.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..2 {
        assert_eq!(get(&gw.url("/patient/fast")).await.status, 200);
        let started = Instant::now();
        get(&gw.url("/impatient/slow")).await.problem(504);
        assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
        assert_eq!(get(&gw.url("/impatient/fast")).await.status, 200);
    }
    // A longer deadline after a shorter one: the slow answer is waited for.
    let slow = get(&gw.url("/patient/slow")).await;
    assert_eq!((slow.status.as_u16(), slow.body.as_ref()), (200, &b"svc"[..]));
}

#[tokio::test]
async fn a_connect_that_never_completes_is_504_after_the_connect_timeout() {
    // A listener that never accepts and has a full accept queue: the kernel
    // drops further SYNs, so a connect hangs instead of being refused.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket
        .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), tokio::net::TcpStream::connect(addr)).await
        {
            fillers.push(stream);
        }
    }
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { svc: { targets: ["$U"], timeouts: { connect: 300ms, response: 10s } } }
routes: [{ name: svc, match: { path: / }, upstream: svc }]
"#,
        &[("U", addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    let started = Instant::now();
    let problem = get(&gw.url("/")).await.problem(504);
    assert!(problem["detail"].as_str().unwrap().contains("connecting"), "{problem}");
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    drop(socket);
}
