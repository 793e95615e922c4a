//! Requests with ambiguous framing, sent as raw bytes to a listener without
//! any plugin: refused, never forwarded, never letting a second request
//! ride in a body.

use crate::config;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_and_never_forwarded() {
    let upstream = Upstream::named("app").await;
    let gw = Gateway::start(&config(
        r#"
listeners: [ { name: main, addr: "127.0.0.1:0" } ]
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: app, match: { path: / }, upstream: app }
"#,
        &[("U", upstream.addr.to_string())],
    ))
    .await;
    // Both lengths (in either order, in any case): refused with a 400 and
    // the connection closed, so the bytes after the chunked body are never
    // read as a request of their own; nothing reaches the upstream.
    for head in [
        &b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"POST /a HTTP/1.1\r\nHost: x\r\ntransfer-encoding: chunked\r\nCONTENT-LENGTH: 5\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    ] {
        let answer = raw(gw.addr, head).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(answer.contains("both Content-Length and Transfer-Encoding"), "{answer}");
        assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    }
    assert_eq!(upstream.count(), 0, "{:?}", upstream.requests());
    // A request after a good one on the same connection is watched too, and
    // chunked bodies alone are fine.
    let answer = raw(
        gw.addr,
        b"POST /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let forwarded = upstream.count();
    assert_eq!(forwarded, 1);

    let cases: &[(&str, &[u8])] = &[
        (
            "two different Content-Lengths",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nContent-Length: 40\r\n\r\nabcd",
        ),
        (
            "a malformed Content-Length",
            b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 4, 5\r\n\r\nabcd",
        ),
        (
            "an unknown transfer coding",
            b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "obsolete line folding",
            b"GET /a HTTP/1.1\r\nHost: x\r\nX-Folded: a\r\n b\r\n\r\n",
        ),
        (
            "a space before the colon",
            b"GET /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\n\r\n",
        ),
    ];
    for (what, bytes) in cases {
        let answer = raw(gw.addr, bytes).await;
        let status = answer.split(' ').nth(1).unwrap_or("");
        assert!(status.starts_with('4'), "{what}: {answer}");
    }
    assert_eq!(upstream.count(), forwarded, "nothing ambiguous reached the upstream");
}

#[tokio::test]
async fn a_body_left_unread_is_never_read_as_a_request() {
    let upstream = Upstream::start(|request| {
        named_response(if request.uri.path() == "/smuggled" {
            "smuggled"
        } else {
            "app"
        })
    })
    .await;
    let gw = Gateway::start(&config(
        r#"
listeners: [ { name: main, addr: "127.0.0.1:0" } ]
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: refuse, match: { path: /refuse }, respond: { status: 403, body: "no" } }
  - { name: app, match: { path: / }, upstream: app }
"#,
        &[("U", upstream.addr.to_string())],
    ))
    .await;
    // A route that answers without reading the body: the body, a request
    // in its own right, is dropped, and the request after it is served.
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let sent = format!(
        "POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{hidden}GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        hidden.len()
    );
    let answer = raw(gw.addr, sent.as_bytes()).await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 2, "{answer}");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.ends_with("app"), "{answer}");
    let seen: Vec<String> = upstream.requests().iter().map(|r| r.uri.path().to_string()).collect();
    assert_eq!(seen, ["/after"]);

    // A body still on its way when the answer is ready: the answer says the
    // connection closes, and it does.
    let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut client,
        b"POST /refuse HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\nGET /smuggled",
    )
    .await
    .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        tokio::io::AsyncReadExt::read_to_end(&mut client, &mut answer),
    )
    .await
    .expect("the gateway closes the connection")
    .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("connection: close\r\n"), "{answer}");
    assert_eq!(upstream.count(), 1);
}
