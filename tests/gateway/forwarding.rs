//! What crosses the proxy: headers, request ids, rewrites, bodies, fixed answers.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use std::time::Duration;

fn single_upstream(upstream: &Upstream, route_extra: &str) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  users: { targets: ["$U"] }
routes:
  - name: users
    match: { path: /api/users }
    upstream: users
$EXTRA
"#,
        &[("U", upstream.addr.to_string()), ("EXTRA", route_extra.to_string())],
    )
}

#[tokio::test]
async fn hop_by_hop_headers_stay_and_forwarding_headers_are_set() {
    let upstream = Upstream::start(|_| {
        http::Response::builder()
            .header("connection", "x-upstream-hop")
            .header("x-upstream-hop", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-kept", "yes")
            .body(Full::new(Bytes::from("ok")))
            .unwrap()
    })
    .await;
    let gw = Gateway::start(&single_upstream(&upstream, "")).await;
    let reply = get_with(
        &gw.url("/api/users"),
        &[
            ("connection", "x-client-hop"),
            ("x-client-hop", "1"),
            ("proxy-authorization", "Basic c2VjcmV0"),
            ("te", "trailers, gzip"),
            ("x-forwarded-for", "203.0.113.9"),
            ("host", "api.example.com"),
            ("x-end-to-end", "kept"),
        ],
    )
    .await;
    assert_eq!(reply.status, 200);
    let seen = upstream.last();
    for hop in ["x-client-hop", "proxy-authorization"] {
        assert!(!seen.headers.contains_key(hop), "{hop} was forwarded");
    }
    assert_eq!(seen.headers["te"], "trailers", "only `trailers` of TE is passed on");
    assert_eq!(seen.headers["x-end-to-end"], "kept");
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], "api.example.com");
    assert_eq!(seen.headers["via"], "1.1 portico");
    assert_eq!(
        seen.headers["host"],
        upstream.addr.to_string().as_str(),
        "Host is the target's by default"
    );
    assert!(!reply.headers.contains_key("x-upstream-hop"));
    assert!(!reply.headers.contains_key("keep-alive"));
    assert_eq!(reply.header("x-kept"), "yes");
    assert_eq!(reply.header("via"), "1.1 portico");
}

#[tokio::test]
async fn preserve_host_sends_the_clients_host() {
    let upstream = Upstream::named("users").await;
    let gw = Gateway::start(&single_upstream(&upstream, "    preserve_host: true")).await;
    get_with(&gw.url("/api/users"), &[("host", "api.example.com")]).await;
    assert_eq!(upstream.last().headers["host"], "api.example.com");
}

#[tokio::test]
async fn request_ids_are_kept_when_sane_generated_otherwise_and_seen_on_both_sides() {
    let upstream = Upstream::named("users").await;
    let gw = Gateway::start(&single_upstream(&upstream, "")).await;
    let reply = get_with(&gw.url("/api/users"), &[("x-request-id", "trace-abc-123")]).await;
    assert_eq!(reply.header("x-request-id"), "trace-abc-123");
    assert_eq!(upstream.last().headers["x-request-id"], "trace-abc-123");

    let reply = get_with(&gw.url("/api/users"), &[("x-request-id", "bad id with spaces")]).await;
    let generated = reply.header("x-request-id").to_string();
    assert_eq!(generated.len(), 36, "a UUID: {generated}");
    assert_eq!(upstream.last().headers["x-request-id"], generated.as_str());

    let other = get(&gw.url("/api/users")).await;
    assert_ne!(other.header("x-request-id"), generated);
}

#[tokio::test]
async fn rewrites_strip_add_and_template_keep_the_query() {
    let upstream = Upstream::named("users").await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams:
  users: { targets: ["$U"] }
routes:
  - { name: strip, match: { path: /api/v1 }, upstream: users, rewrite: { strip_prefix: /api/v1, add_prefix: /internal } }
  - { name: template, match: { path: "/users/{id}" }, upstream: users, rewrite: { path: "/v2/accounts/{id}" } }
  - { name: plain, match: { path: /plain }, upstream: users }
  - { name: fixed, match: { path: /old }, upstream: users, rewrite: { path: /new/place } }
"#,
        &[("U", upstream.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    // A fixed path is made once; each request still gets its own query.
    get(&gw.url("/old/a?first=1")).await;
    assert_eq!(upstream.last().uri.to_string(), "/new/place?first=1");
    get(&gw.url("/old")).await;
    assert_eq!(upstream.last().uri.to_string(), "/new/place");
    get(&gw.url("/old?second=%20")).await;
    assert_eq!(upstream.last().uri.to_string(), "/new/place?second=%20");
    get(&gw.url("/api/v1/users/7?expand=orders&x=1")).await;
    assert_eq!(upstream.last().uri.to_string(), "/internal/users/7?expand=orders&x=1");
    get(&gw.url("/users/42?fields=name")).await;
    assert_eq!(upstream.last().uri.to_string(), "/v2/accounts/42?fields=name");
    get(&gw.url("/plain/a%2Fb?q=%20x")).await;
    assert_eq!(
        upstream.last().uri.to_string(),
        "/plain/a%2Fb?q=%20x",
        "untouched paths go as sent"
    );
}

#[tokio::test]
async fn request_bodies_pass_with_length_or_chunked() {
    let upstream = Upstream::start(|r| http::Response::new(Full::new(r.body.clone()))).await;
    let gw = Gateway::start(&single_upstream(&upstream, "")).await;
    let reply = send(
        Request::post(gw.url("/api/users"))
            .body(Full::new(Bytes::from("{\"userId\":1}")))
            .unwrap(),
    )
    .await;
    assert_eq!(reply.text(), "{\"userId\":1}");
    assert_eq!(upstream.last().headers["content-length"], "12");

    let chunked = "POST /api/users HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let answer = raw(gw.addr, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("hello world"), "{answer}");
    assert_eq!(upstream.last().body, "hello world");
}

#[tokio::test]
async fn respond_routes_answer_without_an_upstream() {
    let yaml = r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
routes:
  - name: health
    match: { path: "= /healthz" }
    respond: { status: 200, json: { status: ok } }
  - name: teapot
    match: { path: /tea }
    respond: { status: 418, headers: { x-brew: green }, body: "short and stout" }
"#;
    let gw = Gateway::start(yaml).await;
    let reply = get(&gw.url("/healthz")).await;
    assert_eq!(reply.header("content-type"), "application/json");
    assert_eq!(reply.json(), serde_json::json!({"status": "ok"}));
    let reply = get(&gw.url("/tea")).await;
    assert_eq!(reply.status, 418);
    assert_eq!(reply.header("x-brew"), "green");
    assert_eq!(reply.header("content-type"), "text/plain; charset=utf-8");
    assert_eq!(reply.text(), "short and stout");
}

#[tokio::test]
async fn keep_alive_connections_to_upstreams_are_reused() {
    let connections = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = connections.clone();
    let addr = tcp_server(move |stream| {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(
                    hyper_util::rt::TokioIo::new(stream),
                    hyper::service::service_fn(|_| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
                    }),
                )
                .await;
        }
    })
    .await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { svc: { targets: ["$U"] } }
routes: [{ name: svc, match: { path: / }, upstream: svc }]
"#,
        &[("U", addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    for _ in 0..20 {
        assert_eq!(get(&gw.url("/")).await.status, 200);
    }
    assert_eq!(
        connections.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "one pooled connection served all 20"
    );
}

#[tokio::test(start_paused = true)]
async fn a_client_that_disconnects_cancels_the_upstream_request() {
    // Requests Portico's own HTTP/1.1 side serves (no body, a body of
    // declared length) and one hyper serves (chunked): either way the
    // upstream sees the gateway hang up.
    for request in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ] {
        let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
        let closed_tx = std::sync::Mutex::new(Some(closed_tx));
        let addr = tcp_server(move |mut stream| {
            let tx = closed_tx.lock().unwrap().take();
            async move {
                use tokio::io::AsyncReadExt;
                let mut buf = vec![0u8; 4096];
                let _ = stream.read(&mut buf).await; // the request head
                                                     // Never answer; report when the gateway hangs up.
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                if let Some(tx) = tx {
                    let _ = tx.send(());
                }
            }
        })
        .await;
        let yaml = config(
            r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { slow: { targets: ["$U"], timeouts: { response: 1m } } }
routes: [{ name: slow, match: { path: / }, upstream: slow }]
"#,
            &[("U", addr.to_string())],
        );
        let gw = Gateway::start(&yaml).await;
        let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut client, request).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(client);
        tokio::time::timeout(Duration::from_secs(10), closed_rx)
            .await
            .expect("the upstream request is cancelled when the client leaves")
            .unwrap();
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_whoever_serves_them() {
    let upstream = Upstream::start(|request| {
        let name = format!("{} {}", request.method, request.uri.path());
        Response::builder()
            .header("x-seen", name.clone())
            .body(Full::new(Bytes::from(name)))
            .unwrap()
    })
    .await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { svc: { targets: ["$U"] } }
routes: [{ name: svc, match: { path: / }, upstream: svc }]
"#,
        &[("U", upstream.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    // Portico's own side first (no body, HEAD, a declared length), then a
    // chunked body, after which hyper serves the rest of the connection; all
    // sent at once.
    let sent = "GET /one HTTP/1.1\r\nHost: x\r\n\r\n\
                HEAD /two HTTP/1.1\r\nHost: x\r\n\r\n\
                POST /three HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
                POST /four HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
                GET /five HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut client, sent.as_bytes())
        .await
        .unwrap();
    let mut received = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut received),
    )
    .await
    .expect("the gateway closes after the request that asked it to")
    .unwrap();
    let received = String::from_utf8(received).unwrap();
    let answers: Vec<&str> = received.split("HTTP/1.1 200 OK\r\n").skip(1).collect();
    assert_eq!(answers.len(), 5, "{received}");
    for (answer, seen) in answers
        .iter()
        .zip(["GET /one", "HEAD /two", "POST /three", "POST /four", "GET /five"])
    {
        assert!(answer.contains(&format!("x-seen: {seen}\r\n")), "{seen}: {answer}");
    }
    assert!(answers[0].ends_with("\r\n\r\nGET /one"), "{}", answers[0]);
    assert!(answers[1].ends_with("\r\n\r\n"), "HEAD has no body: {}", answers[1]);
    assert!(answers[4].contains("connection: close\r\n"), "{}", answers[4]);
    let bodies: Vec<Bytes> = upstream.requests().into_iter().map(|r| r.body).collect();
    assert_eq!(
        bodies,
        [
            Bytes::new(),
            Bytes::new(),
            Bytes::from("hello"),
            Bytes::from("abc"),
            Bytes::new()
        ]
    );
}

#[tokio::test]
async fn http2_clients_are_served_by_prior_knowledge() {
    let upstream = Upstream::named("users").await;
    let gw = Gateway::start(&single_upstream(&upstream, "")).await;
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let response = client
        .request(Request::get(gw.url("/api/users")).body(Full::default()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    let seen = upstream.last();
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "upstreams are spoken to in HTTP/1.1"
    );
    assert_eq!(seen.headers["via"], "2 portico");
    assert_eq!(seen.headers["x-forwarded-host"], gw.addr.to_string().as_str());
}

#[tokio::test]
async fn bodies_buffered_for_retry_pass_on_fresh_and_pooled_connections() {
    let upstream = Upstream::start(|r| http::Response::new(Full::new(r.body.clone()))).await;
    let yaml = crate::config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { u: { targets: ["$U"] } }
routes:
  - { name: retrying, match: { path: /retrying }, upstream: u, retries: { attempts: 1, on: [503], idempotent_only: false } }
  - { name: plain, match: { path: /plain }, upstream: u }
"#,
        &[("U", upstream.addr.to_string())],
    );
    let gw = Gateway::start(&yaml).await;
    for path in ["/retrying", "/retrying", "/plain", "/retrying"] {
        let reply = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            send(Request::post(gw.url(path)).body(Full::new(Bytes::from("abc"))).unwrap()),
        )
        .await
        .expect("answers");
        assert_eq!(reply.text(), "abc");
    }
}
