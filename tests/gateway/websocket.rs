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
