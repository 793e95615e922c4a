//! Listener limits and timeouts: header size and count, body size, slow and idle clients.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn gateway_with_limits(upstream: &Upstream) -> Gateway {
    let yaml = config(
        r#"
listeners:
  - name: public
    addr: "127.0.0.1:0"
    limits: { max_header_bytes: 4KiB, max_headers: 20, max_request_body: 1KiB }
    timeouts: { header_read: 1s, idle: 1s }
upstreams: { svc: { targets: ["$U"] } }
routes: [{ name: svc, match: { path: / }, upstream: svc }]
"#,
        &[("U", upstream.addr.to_string())],
    );
    Gateway::start(&yaml).await
}

#[tokio::test]
async fn oversize_and_too_many_headers_are_431_problems() {
    let upstream = Upstream::named("svc").await;
    let gw = gateway_with_limits(&upstream).await;
    let big = "x".repeat(5000);
    get_with(&gw.url("/"), &[("x-big", &big)]).await.problem(431);
    let names: Vec<String> = (0..25).map(|i| format!("x-h{i}")).collect();
    let many: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "1")).collect();
    get_with(&gw.url("/"), &many).await.problem(431);
    // Far past every limit, hyper's own guard still answers 431 (without a body).
    let huge = format!("GET / HTTP/1.1\r\nHost: x\r\nx-huge: {}\r\n\r\n", "y".repeat(200_000));
    let answer = raw(gw.addr, huge.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.100}");
    assert_eq!(upstream.count(), 0, "nothing reached the upstream");
    assert_eq!(get(&gw.url("/")).await.status, 200);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_whether_declared_or_streamed() {
    let upstream = Upstream::start(|r| http::Response::new(Full::new(r.body.clone()))).await;
    let gw = gateway_with_limits(&upstream).await;
    let reply = send(
        Request::post(gw.url("/"))
            .body(Full::new(Bytes::from(vec![b'a'; 2048])))
            .unwrap(),
    )
    .await;
    reply.problem(413);
    assert_eq!(
        upstream.count(),
        0,
        "a declared oversize body is refused before the upstream"
    );

    let chunk = "a".repeat(700);
    let chunked = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2bc\r\n{chunk}\r\n2bc\r\n{chunk}\r\n0\r\n\r\n"
    );
    let answer = raw(gw.addr, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"));

    let ok = send(
        Request::post(gw.url("/"))
            .body(Full::new(Bytes::from(vec![b'b'; 1024])))
            .unwrap(),
    )
    .await;
    assert_eq!(ok.body.len(), 1024, "a body at the limit passes");
}

#[tokio::test(start_paused = true)]
async fn a_client_sending_headers_slowly_is_cut_off() {
    let upstream = Upstream::named("svc").await;
    let gw = gateway_with_limits(&upstream).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let started = Instant::now();
    stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
    // One byte every 300 ms: never a complete head.
    let drip = async {
        loop {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if stream.write_all(b"X").await.is_err() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(8), drip).await;
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(8), "the slow client was never cut off");
    assert_eq!(upstream.count(), 0);
}

#[tokio::test]
async fn idle_keep_alive_connections_are_closed() {
    let upstream = Upstream::named("svc").await;
    let gw = gateway_with_limits(&upstream).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = vec![0u8; 4096];
    let mut seen = Vec::new();
    // Read the response, then wait for the server to close the idle connection.
    let closed = tokio::time::timeout(Duration::from_secs(8), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 200"));
    assert!(
        closed.is_ok(),
        "idle connection still open after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "closed too early: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_after_the_idle_timeout() {
    let upstream = Upstream::named("svc").await;
    let gw = gateway_with_limits(&upstream).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(8), stream.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
}

#[tokio::test(start_paused = true)]
async fn the_head_timeout_spares_slow_upstreams_and_slow_request_bodies() {
    let slow = Upstream::slow("slow", Duration::from_millis(2500)).await;
    let echo = Upstream::start(|r| http::Response::new(Full::new(r.body.clone()))).await;
    let yaml = config(
        r#"
listeners:
  - name: public
    addr: "127.0.0.1:0"
    timeouts: { header_read: 1s, idle: 1s }
upstreams:
  slow: { targets: ["$SLOW"] }
  echo: { targets: ["$ECHO"] }
routes:
  - { name: slow, match: { path: /slow }, upstream: slow }
  - { name: echo, match: { path: /echo }, upstream: echo }
"#,
        &[("SLOW", slow.addr.to_string()), ("ECHO", echo.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    assert_eq!(
        get(&gw.url("/slow")).await.text(),
        "slow",
        "a request in flight outlives header_read and idle"
    );

    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    for byte in b"abcdef" {
        tokio::time::sleep(Duration::from_millis(400)).await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("abcdef"),
        "{answer}"
    );
}
