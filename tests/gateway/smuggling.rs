//! Requests with ambiguous framing, sent as raw bytes to a listener without
//! any plugin: refused, or (both lengths) read the one safe way, never
//! letting a second request ride in a body.

use crate::config;
use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_is_refused_or_read_the_one_safe_way() {
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
    // Both lengths: read by Transfer-Encoding as RFC 9112 says, Content-Length
    // dropped, and the connection closed after the answer, so the bytes
    // after the chunked body are never read as a request of their own.
    let answer = raw(
        gw.addr,
        b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    let seen = upstream.requests();
    assert!(seen.iter().all(|r| r.uri.path() != "/smuggled"), "{seen:?}");
    assert!(
        seen.iter().all(|r| !r.headers.contains_key("content-length")),
        "{seen:?}"
    );
    let forwarded = seen.len();

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
