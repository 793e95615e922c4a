//! One authority: routing, `preserve_host`, `X-Forwarded-Host` and the
//! cache all use the same one, and a request whose Host is missing, doubled
//! or invalid is refused.

use super::{recording, status_of};
use crate::config;
use crate::support::*;

/// `www.example.com` public, `admin.example.com` behind a key; both keep the
/// client's Host.
fn by_host(upstream: &Upstream) -> String {
    config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
consumers:
  - { name: ops, credentials: { api_keys: [ "admin-key-0123456789abcdef" ] } }
upstreams: { app: { targets: [ "$U" ] } }
routes:
  - { name: www, match: { path: /, host: www.example.com }, upstream: app, preserve_host: true }
  - { name: admin, match: { path: /, host: admin.example.com }, upstream: app, preserve_host: true, plugins: { key_auth: {} } }
"#,
        &[("U", upstream.addr.to_string())],
    )
}

#[tokio::test]
async fn absolute_form_routes_by_its_authority_and_that_authority_goes_upstream() {
    let upstream = recording().await;
    let gw = Gateway::start(&by_host(&upstream)).await;
    let answer = raw(
        gw.addr,
        b"GET http://www.example.com/site HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
    let seen = upstream.last();
    assert_eq!(
        seen.headers["host"], "www.example.com",
        "the authority, never the other Host"
    );
    assert_eq!(seen.headers["x-forwarded-host"], "www.example.com");
    assert_eq!(seen.uri.to_string(), "/site", "origin-form upstream");
    // The other way round: the admin authority needs the key, whatever Host says.
    let answer = raw(
        gw.addr,
        b"GET http://admin.example.com/site HTTP/1.1\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 401, "{answer}");
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn missing_doubled_or_invalid_host_is_a_400() {
    let upstream = recording().await;
    let gw = Gateway::start(&by_host(&upstream)).await;
    for request in [
        &b"GET /site HTTP/1.1\r\nConnection: close\r\n\r\n"[..],
        b"GET /site HTTP/1.1\r\nHost: www.example.com\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
        b"GET /site HTTP/1.1\r\nHost: www.example.com\r\nHost: www.example.com\r\nConnection: close\r\n\r\n",
        b"GET /site HTTP/1.1\r\nHost: user@www.example.com\r\nConnection: close\r\n\r\n",
        b"GET /site HTTP/1.1\r\nHost: www.example.com/x\r\nConnection: close\r\n\r\n",
        b"GET /site HTTP/1.1\r\nHost: www.example.com:\r\nConnection: close\r\n\r\n",
        b"GET /site HTTP/1.1\r\nHost: www.example.com:80x\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw(gw.addr, request).await;
        assert_eq!(
            status_of(&answer),
            400,
            "{}\n{answer}",
            String::from_utf8_lossy(request)
        );
        assert!(answer.contains("application/problem+json"), "{answer}");
    }
    assert_eq!(upstream.count(), 0);
    // HTTP/1.0 may leave Host out: no host route matches, and nothing crashes.
    let answer = raw(gw.addr, b"GET /site HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&answer), 404, "{answer}");
    // Case and port do not make another authority.
    let answer = raw(
        gw.addr,
        b"GET /site HTTP/1.1\r\nHost: WWW.Example.com:80\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&answer), 200, "{answer}");
}

#[tokio::test]
async fn an_http2_host_that_names_another_authority_is_refused() {
    // RFC 9113 section 8.3.1, sent as raw frames: hyper's client would not send it.
    let upstream = recording().await;
    let gw = Gateway::start(&by_host(&upstream)).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut client, connection) = h2_client(stream).await;
    tokio::spawn(connection);
    let mut request = http::Request::get("http://www.example.com/site").body(()).unwrap();
    request
        .headers_mut()
        .insert("host", http::HeaderValue::from_static("admin.example.com"));
    let (response, _) = client.send_request(request, true).unwrap();
    let response = response.await.unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(upstream.count(), 0);
}

async fn h2_client(
    stream: tokio::net::TcpStream,
) -> (
    h2::client::SendRequest<bytes::Bytes>,
    impl std::future::Future<Output = Result<(), h2::Error>>,
) {
    let (client, connection) = h2::client::handshake(stream).await.unwrap();
    (client.ready().await.unwrap(), connection)
}
