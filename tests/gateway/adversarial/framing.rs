//! Checks independent of framing: a body is checked the same whether it
//! comes with `Content-Length`, chunked, or over HTTP/2 without a length.

use super::{h2, recording, status_of};
use crate::config;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;

fn validated(upstream: &Upstream) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - name: orders
    match: { path: /orders, methods: [POST] }
    upstream: app
    plugins:
      validate: { body: { type: object, required: [item], properties: { item: { type: string } } } }
"#,
        &[("U", upstream.addr.to_string())],
    )
}

/// Sends `request` over HTTP/2 with `body` as DATA frames and no
/// `Content-Length`, as HTTP/2 allows; the answer's status.
async fn h2_without_length(addr: std::net::SocketAddr, request: Request<()>, body: Option<&'static str>) -> u16 {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    tokio::spawn(connection);
    let mut client = client.ready().await.unwrap();
    let (response, mut send) = client.send_request(request, body.is_none()).unwrap();
    if let Some(body) = body {
        send.send_data(Bytes::from_static(body.as_bytes()), true).unwrap();
    }
    response.await.unwrap().status().as_u16()
}

/// A POST over HTTP/2 whose body has no `Content-Length` (a stream of DATA frames).
async fn h2_post(addr: std::net::SocketAddr, content_type: &str, body: &'static str) -> u16 {
    let request = Request::post(format!("http://{addr}/orders"))
        .header("content-type", content_type)
        .body(())
        .unwrap();
    h2_without_length(addr, request, Some(body)).await
}

#[tokio::test]
async fn validate_checks_bodies_of_every_framing() {
    let upstream = recording().await;
    let gw = Gateway::start(&validated(&upstream)).await;
    // HTTP/2 without Content-Length: neither the wrong type nor a bad body passes.
    assert_eq!(h2_post(gw.addr, "text/plain", "{\"no\": 1}").await, 415);
    assert_eq!(h2_post(gw.addr, "application/json", "{\"no\": 1}").await, 400);
    // Chunked HTTP/1.1: the same.
    for (content_type, expected) in [("text/plain", 415), ("application/json", 400)] {
        let request = format!(
            "POST /orders HTTP/1.1\r\nHost: a\r\nContent-Type: {content_type}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n9\r\n{{\"no\": 1}}\r\n0\r\n\r\n"
        );
        let answer = raw(gw.addr, request.as_bytes()).await;
        assert_eq!(status_of(&answer), expected, "{answer}");
    }
    assert_eq!(upstream.count(), 0, "no unchecked body reached the upstream");
    // A good body passes, whatever its framing.
    assert_eq!(h2_post(gw.addr, "application/json", "{\"item\": \"tea\"}").await, 200);
    let (status, _) = h2(Request::post(gw.url("/orders"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(b"{\"item\": \"tea\"}")))
        .unwrap())
    .await;
    assert_eq!(status, 200);
    assert_eq!(upstream.count(), 2);
    assert_eq!(&upstream.last().body[..], b"{\"item\": \"tea\"}");
}

/// The WAF's "GET with a body" rule goes by the body, not by its headers: an
/// HTTP/2 GET carrying DATA frames has no `Content-Length` to give it away.
#[tokio::test]
async fn the_waf_sees_a_get_body_in_every_framing() {
    let upstream = recording().await;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - name: search
    match: { path: /search }
    upstream: app
    plugins:
      waf: { threshold: 1 }
"#,
        &[("U", upstream.addr.to_string())],
    ))
    .await;
    let get = |body: Option<&'static str>| {
        let request = Request::get(format!("http://{}/search?q=tea", gw.addr))
            .body(())
            .unwrap();
        h2_without_length(gw.addr, request, body)
    };
    assert_eq!(get(None).await, 200);
    assert_eq!(get(Some("hidden=1")).await, 403, "a GET body over HTTP/2 is seen");
    assert_eq!(upstream.count(), 1, "only the bodyless GET reached the upstream");
}
