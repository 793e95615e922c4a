//! WebSocket through the gateway: the HTTP/1.1 upgrade passed on, frames
//! both ways, authentication at the handshake, a long quiet connection kept.

use crate::config;
use crate::support::*;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

/// A WebSocket echo server: every text message comes back upper-cased.
async fn echo_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut socket) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = socket.next().await {
                    let reply = match message {
                        Message::Text(text) => Message::text(text.to_uppercase()),
                        Message::Close(_) => break,
                        // Answered with a pong by tungstenite itself.
                        Message::Ping(_) => continue,
                        other => other,
                    };
                    if socket.send(reply).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_frames_cross_the_gateway_after_the_handshake_is_checked() {
    let upstream = echo_server().await;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0", timeouts: { header_read: 1s, idle: 2s } }]
access_log: { enabled: false }
consumers: [ { name: app, credentials: { api_keys: [ "ws-key-0123456789abcdef" ] } } ]
upstreams: { chat: { targets: [ "$U" ] } }
routes:
  - { name: chat, match: { path: /chat }, upstream: chat, plugins: { key_auth: { query: key } } }
"#,
        &[("U", upstream.to_string())],
    ))
    .await;
    let url = format!("ws://{}/chat?key=ws-key-0123456789abcdef", gw.addr);
    let (mut socket, response) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    assert_eq!(response.status(), 101);
    for word in ["hello", "world"] {
        socket.send(Message::text(word)).await.unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::text(word.to_uppercase())
        );
    }
    // Quiet for longer than the listener's idle and header timeouts: the
    // upgraded connection is not an idle HTTP connection.
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    socket.send(Message::text("still here")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("STILL HERE"));
    socket.send(Message::binary(vec![0u8, 1, 2])).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::binary(vec![0u8, 1, 2]));
    socket.close(None).await.unwrap();

    // The handshake is a request like any other: no key, no upgrade.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/chat", gw.addr).as_str()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 401),
        other => panic!("expected a 401, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_websockets_are_closed_and_counted_and_handshakes_are_rate_limited() {
    let upstream = echo_server().await;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
admin: { addr: "127.0.0.1:0", token: "$TOKEN" }
upstreams: { chat: { targets: [ "$U" ] } }
routes:
  - name: quiet
    match: { path: /quiet }
    upstream: chat
    timeouts: { websocket_idle: 2s }
    plugins: { rate_limit: { limits: [ { requests: 1, per: 1h, algorithm: sliding_window } ], by: route } }
"#,
        &[("U", upstream.to_string()), ("TOKEN", ADMIN_TOKEN.to_string())],
    ))
    .await;
    let url = format!("ws://{}/quiet", gw.addr);
    let (mut socket, _) = tokio_tungstenite::connect_async(url.as_str()).await.unwrap();
    socket.send(Message::text("hi")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("HI"));
    socket.send(Message::Ping(b"beat".to_vec().into())).await.unwrap();
    assert_eq!(
        socket.next().await.unwrap().unwrap(),
        Message::Pong(b"beat".to_vec().into())
    );
    let metrics = gw.admin("GET", "/metrics", "").await.text();
    assert!(
        metrics.contains(r#"portico_upgraded_connections{route="quiet"} 1"#),
        "{metrics}"
    );

    // A second handshake is a second request: over the route's limit.
    match tokio_tungstenite::connect_async(url.as_str()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("expected a 429, got {other:?}"),
    }

    // Traffic within the idle timeout keeps it open; 2 s of silence closes it.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    socket.send(Message::text("still")).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::text("STILL"));
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await;
    assert!(matches!(end, Ok(None) | Ok(Some(Err(_)))), "closed: {end:?}");
    let quiet = started.elapsed();
    assert!(
        quiet >= std::time::Duration::from_millis(1500),
        "closed after {quiet:?}"
    );

    let metrics = gw.admin("GET", "/metrics", "").await.text();
    for line in [
        r#"portico_upgraded_connections{route="quiet"} 0"#,
        r#"portico_upgraded_connections_total{end="idle_timeout",route="quiet"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }
    let relayed = |direction: &str| -> u64 {
        let prefix = format!(r#"portico_upgraded_bytes_total{{direction="{direction}",route="quiet"}} "#);
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{prefix}"));
        line[prefix.len()..].parse().unwrap()
    };
    // Client frames are masked (4 bytes more each): hi, ping, still.
    assert_eq!(relayed("client_to_upstream"), (2 + 4 + 2) + (2 + 4 + 4) + (2 + 4 + 5));
    assert_eq!(relayed("upstream_to_client"), (2 + 2) + (2 + 4) + (2 + 5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_http2_streams_reach_http1_services() {
    let upstream = echo_server().await;
    let gw = Gateway::start(&config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
access_log: { enabled: false }
upstreams: { chat: { targets: [ "$U" ] } }
routes:
  - { name: chat, match: { path: /chat, methods: [GET] }, upstream: chat }
"#,
        &[("U", upstream.to_string())],
    ))
    .await;
    // An HTTP/2 client (h2c), as a browser opens a WebSocket on an HTTP/2 connection.
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    websocket_over_http2(stream, &format!("http://{}", gw.addr)).await;
}

/// The same over TLS, HTTP/2 chosen by ALPN (a browser's way): such
/// connections are served by an HTTP/2-only connection of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websockets_over_http2_on_tls_reach_http1_services() {
    let upstream = echo_server().await;
    let certs = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/certs");
    let gw = Gateway::start(&config(
        r#"
listeners:
  - { name: secure, addr: "127.0.0.1:0", tls: { certificates: [ { cert: "$C/localhost.pem", key: "$C/localhost.key" } ] } }
access_log: { enabled: false }
upstreams: { chat: { targets: [ "$U" ] } }
routes:
  - { name: chat, match: { path: /chat, methods: [GET] }, upstream: chat }
"#,
        &[("U", upstream.to_string()), ("C", certs.to_string())],
    ))
    .await;
    let stream = crate::tls::connect(gw.addr, "localhost", &[b"h2", b"http/1.1"], false)
        .await
        .unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    websocket_over_http2(stream, "https://localhost").await;
}

/// Opens a WebSocket by extended CONNECT (RFC 8441) on an HTTP/2 connection
/// over `io` and exchanges text and binary frames through the gateway.
async fn websocket_over_http2<S>(io: S, base: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(connection);
    // One exchange first, so the server's SETTINGS (with ENABLE_CONNECT_PROTOCOL) are in.
    let first = http::Request::get(format!("{base}/nowhere"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(first).await.unwrap().status(), 404);

    let mut connect = http::Request::connect(format!("{base}/chat"))
        .header("sec-websocket-version", "13")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    connect
        .extensions_mut()
        .insert(hyper::ext::Protocol::from_static("websocket"));
    let mut response = sender.send_request(connect).await.unwrap();
    assert_eq!(response.status(), 200, "{response:?}");
    assert!(response.headers().get("sec-websocket-accept").is_none());
    let upgraded = hyper::upgrade::on(&mut response).await.unwrap();
    let mut socket = tokio_tungstenite::WebSocketStream::from_raw_socket(
        TokioIo::new(upgraded),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    for word in ["over", "http/2"] {
        socket.send(Message::text(word)).await.unwrap();
        assert_eq!(
            socket.next().await.unwrap().unwrap(),
            Message::text(word.to_uppercase())
        );
    }
    socket.send(Message::binary(vec![7u8; 3])).await.unwrap();
    assert_eq!(socket.next().await.unwrap().unwrap(), Message::binary(vec![7u8; 3]));
    socket.close(None).await.unwrap();
}
