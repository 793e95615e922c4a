//! gRPC through the gateway: a real tonic client calls a real tonic service
//! (served by hyper over h2c) through Portico. Unary and bidirectional
//! streaming calls with their trailers, and the errors the gateway makes
//! itself told as gRPC statuses.
//!
//! The service is written as tonic's generated code would be, by hand, so
//! that the build needs no `protoc`.

use crate::config;
use crate::support::*;
use http::uri::PathAndQuery;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::{Duration, Instant};
use tonic::server::{StreamingService, UnaryService};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

#[derive(Clone, PartialEq, prost::Message)]
struct Hello {
    #[prost(string, tag = "1")]
    name: String,
}

fn hello(name: &str) -> Hello {
    Hello { name: name.into() }
}

type Answer<T> = Pin<Box<dyn Future<Output = Result<Response<T>, Status>> + Send>>;
type Replies = Pin<Box<dyn futures_util::Stream<Item = Result<Hello, Status>> + Send>>;

/// `/test.Echo/Say`: "hello NAME"; `missing` is NOT_FOUND; `slow` answers
/// after 2 s.
struct Say;

impl UnaryService<Hello> for Say {
    type Response = Hello;
    type Future = Answer<Hello>;
    fn call(&mut self, request: Request<Hello>) -> Self::Future {
        Box::pin(async move {
            let name = request.into_inner().name;
            match name.as_str() {
                "missing" => Err(Status::not_found("no user named missing")),
                "slow" => {
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    Ok(Response::new(hello("hello, eventually")))
                }
                _ => Ok(Response::new(hello(&format!("hello {name}")))),
            }
        })
    }
}

/// `/test.Echo/Chat`: answers each message as it comes ("echo NAME"); a
/// message `fail` ends the call with ABORTED after the answers so far.
struct Chat;

impl StreamingService<Hello> for Chat {
    type Response = Hello;
    type ResponseStream = Replies;
    type Future = Answer<Replies>;
    fn call(&mut self, request: Request<Streaming<Hello>>) -> Self::Future {
        let incoming = request.into_inner();
        let replies = futures_util::stream::unfold(Some(incoming), |state| async move {
            let mut incoming = state?;
            match incoming.message().await {
                Ok(Some(m)) if m.name == "fail" => Some((Err(Status::aborted("asked to fail")), None)),
                Ok(Some(m)) => Some((Ok(hello(&format!("echo {}", m.name))), Some(incoming))),
                Ok(None) => None,
                Err(status) => Some((Err(status), None)),
            }
        });
        Box::pin(async move { Ok(Response::new(Box::pin(replies) as Replies)) })
    }
}

/// The service, on h2c (HTTP/2 by prior knowledge, as gRPC services run).
async fn echo_service() -> SocketAddr {
    serve_h2(|request: http::Request<hyper::body::Incoming>| async move {
        let mut grpc = tonic::server::Grpc::new(ProstCodec::<Hello, Hello>::default());
        let response = match request.uri().path() {
            "/test.Echo/Say" => grpc.unary(Say, request).await,
            "/test.Echo/Chat" => grpc.streaming(Chat, request).await,
            _ => Status::unimplemented("not here").into_http(),
        };
        Ok::<_, std::convert::Infallible>(response)
    })
    .await
}

async fn client(gateway: SocketAddr) -> tonic::client::Grpc<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{gateway}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    tonic::client::Grpc::new(channel)
}

async fn say(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    path: &'static str,
    request: Request<Hello>,
) -> Result<Response<Hello>, Status> {
    grpc.ready().await.unwrap();
    grpc.unary(request, PathAndQuery::from_static(path), ProstCodec::default())
        .await
}

fn gateway_config(service: SocketAddr, gone: SocketAddr) -> String {
    config(
        r#"
listeners: [ { name: main, addr: "127.0.0.1:0" } ]
access_log: { enabled: false }
consumers:
  - { name: app, credentials: { api_keys: [ "grpc-key-0123456789" ] } }
upstreams:
  echo: { targets: ["$S"], protocol: h2c }
  gone: { targets: ["$GONE"], protocol: h2c }
routes:
  - { name: echo, match: { path: /test.Echo }, upstream: echo }
  - name: secure
    match: { path: /test.Secure }
    upstream: echo
    rewrite: { path: /test.Echo/Say }
    plugins: { key_auth: {} }
  - name: limited
    match: { path: /test.Limited }
    upstream: echo
    rewrite: { path: /test.Echo/Say }
    plugins: { rate_limit: { limits: [ { requests: 1, per: 1h, algorithm: sliding_window } ], by: route } }
  - { name: gone, match: { path: /test.Gone }, upstream: gone }
"#,
        &[("S", service.to_string()), ("GONE", gone.to_string())],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unary_and_streaming_calls_pass_with_their_trailers() {
    let service = echo_service().await;
    let gone = refusing_addr().await;
    let gw = Gateway::start(&gateway_config(service, gone)).await;
    let mut grpc = client(gw.addr).await;

    let reply = say(&mut grpc, "/test.Echo/Say", Request::new(hello("ada")))
        .await
        .unwrap();
    assert_eq!(reply.get_ref().name, "hello ada");
    assert!(
        reply.metadata().get("x-request-id").is_some(),
        "the gateway's headers are there"
    );

    // The service's own error status comes through, message intact.
    let status = say(&mut grpc, "/test.Echo/Say", Request::new(hello("missing")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::NotFound);
    assert_eq!(status.message(), "no user named missing");

    // Bidirectional: each answer arrives before the next message is sent,
    // so nothing is buffered on the way in either direction.
    let (send, mut replies) = chat(&mut grpc).await;
    for name in ["one", "two", "three"] {
        send.send(hello(name)).await.unwrap();
        let answer = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("an answer before the next message")
            .unwrap()
            .unwrap();
        assert_eq!(answer.name, format!("echo {name}"));
    }
    drop(send);
    assert!(replies.message().await.unwrap().is_none(), "ends with status OK");

    // A status in the trailers after messages.
    let (send, mut replies) = chat(&mut grpc).await;
    for name in ["a", "fail"] {
        send.send(hello(name)).await.unwrap();
    }
    assert_eq!(replies.message().await.unwrap().unwrap().name, "echo a");
    let status = replies.message().await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted);
    assert_eq!(status.message(), "asked to fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateways_own_errors_are_grpc_statuses() {
    let service = echo_service().await;
    let gone = refusing_addr().await;
    let gw = Gateway::start(&gateway_config(service, gone)).await;
    let mut grpc = client(gw.addr).await;

    let status = say(&mut grpc, "/test.Nowhere/Say", Request::new(hello("x")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented, "{status:?}");

    let status = say(&mut grpc, "/test.Secure/Say", Request::new(hello("x")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let mut keyed = Request::new(hello("key holder"));
    keyed
        .metadata_mut()
        .insert("x-api-key", "grpc-key-0123456789".parse().unwrap());
    let reply = say(&mut grpc, "/test.Secure/Say", keyed).await.unwrap();
    assert_eq!(reply.get_ref().name, "hello key holder");

    assert!(say(&mut grpc, "/test.Limited/Say", Request::new(hello("first")))
        .await
        .is_ok());
    let status = say(&mut grpc, "/test.Limited/Say", Request::new(hello("second")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");

    let status = say(&mut grpc, "/test.Gone/Say", Request::new(hello("x")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(status.message().contains("gone"), "{status:?}");

    // The client's deadline is the gateway's: the service would answer in
    // 2 s. (Sent by hand: tonic's client would give up on its own at the
    // same moment, and the test would not know who did.)
    let started = Instant::now();
    let answer = raw_call(gw.addr, "/test.Echo/Say", &hello("slow"), &[("grpc-timeout", "300m")]).await;
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.headers()["content-type"], "application/grpc");
    assert_eq!(answer.headers()["grpc-status"], "4", "DEADLINE_EXCEEDED: {answer:?}");
    let message = answer.headers()["grpc-message"].to_str().unwrap();
    assert!(
        message.contains("did not answer within the client's deadline (300ms)"),
        "{message}"
    );
    assert!(started.elapsed() < Duration::from_millis(1500));

    // Plain HTTP clients still get problem documents.
    let plain = get(&gw.url("/test.Nowhere/Say")).await;
    plain.problem(404);
}

/// One unary call over a plain HTTP/2 connection: the answer's head.
async fn raw_call(
    addr: SocketAddr,
    path: &str,
    message: &Hello,
    headers: &[(&str, &str)],
) -> http::Response<hyper::body::Incoming> {
    use prost::Message;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    // A gRPC message: uncompressed flag, 4-byte length, the protobuf bytes.
    let encoded = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(encoded.len() as u32).to_be_bytes());
    frame.extend_from_slice(&encoded);
    let mut request = http::Request::post(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(http_body_util::Full::new(bytes::Bytes::from(frame)))
        .unwrap();
    sender.send_request(request).await.unwrap()
}

/// Opens a `Chat` call: what is sent on the channel goes out as it is sent.
async fn chat(
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
) -> (tokio::sync::mpsc::Sender<Hello>, Streaming<Hello>) {
    let (send, mut outgoing) = tokio::sync::mpsc::channel::<Hello>(4);
    let messages = futures_util::stream::poll_fn(move |cx| outgoing.poll_recv(cx));
    grpc.ready().await.unwrap();
    let replies = grpc
        .streaming(
            Request::new(messages),
            PathAndQuery::from_static("/test.Echo/Chat"),
            ProstCodec::<Hello, Hello>::default(),
        )
        .await
        .unwrap()
        .into_inner();
    (send, replies)
}

/// A gRPC message as gRPC-Web frames it: flag, 4-byte length, bytes.
fn framed(flag: u8, bytes: &[u8]) -> Vec<u8> {
    let mut frame = vec![flag];
    frame.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    frame.extend_from_slice(bytes);
    frame
}

/// The messages of a gRPC-Web body: `Ok(name)` for each answer, then
/// `Err(trailers)` for the trailer message.
fn read_web_body(mut body: &[u8]) -> Vec<Result<String, String>> {
    use prost::Message;
    let mut messages = Vec::new();
    while !body.is_empty() {
        let (flag, length) = (body[0], u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize);
        let bytes = &body[5..5 + length];
        messages.push(match flag {
            0x80 => Err(String::from_utf8(bytes.to_vec()).unwrap()),
            _ => Ok(Hello::decode(bytes).unwrap().name),
        });
        body = &body[5 + length..];
    }
    messages
}

/// A gRPC-Web call over HTTP/1.1, as a browser makes it.
async fn web_call(gw: &Gateway, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
    send(
        http::Request::post(gw.url(path))
            .header("content-type", content_type)
            .header("x-grpc-web", "1")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .unwrap(),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_web_calls_from_http1_clients_reach_grpc_services() {
    use base64::Engine;
    use prost::Message;
    let b64 = base64::engine::general_purpose::STANDARD;
    let service = echo_service().await;
    let gone = refusing_addr().await;
    let gw = Gateway::start(&gateway_config(service, gone)).await;

    // Binary mode: the answer, then the trailers as the last message.
    let reply = web_call(
        &gw,
        "/test.Echo/Say",
        "application/grpc-web+proto",
        framed(0, &hello("browser").encode_to_vec()),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/grpc-web+proto");
    let messages = read_web_body(&reply.body);
    assert_eq!(messages.len(), 2, "{reply:?}");
    assert_eq!(messages[0], Ok("hello browser".to_string()));
    let trailers = messages[1].clone().unwrap_err();
    assert!(trailers.contains("grpc-status: 0\r\n"), "{trailers:?}");
    assert_eq!(messages.len(), 2);

    // Text mode: base64 both ways; several messages in, a status after them.
    let mut body = framed(0, &hello("a").encode_to_vec());
    body.extend(framed(0, &hello("fail").encode_to_vec()));
    let reply = web_call(
        &gw,
        "/test.Echo/Chat",
        "application/grpc-web-text",
        b64.encode(&body).into_bytes(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-type"), "application/grpc-web-text+proto");
    let messages = read_web_body(&b64.decode(&reply.body).expect("one base64 text"));
    assert_eq!(messages.len(), 2, "{reply:?}");
    assert_eq!(messages[0], Ok("echo a".to_string()));
    let trailers = messages[1].clone().unwrap_err();
    assert!(trailers.contains("grpc-status: 10\r\n"), "ABORTED: {trailers:?}");
    assert!(trailers.contains("grpc-message: asked%20to%20fail\r\n"), "{trailers:?}");

    // A trailers-only answer keeps its status in the head, where gRPC-Web reads it.
    let reply = web_call(
        &gw,
        "/test.Echo/Say",
        "application/grpc-web+proto",
        framed(0, &hello("missing").encode_to_vec()),
    )
    .await;
    assert_eq!(reply.header("grpc-status"), "5", "NOT_FOUND");
    assert_eq!(reply.header("content-type"), "application/grpc-web+proto");

    // The gateway's own errors, in gRPC-Web's content type.
    let reply = web_call(&gw, "/test.Nowhere/Say", "application/grpc-web-text", Vec::new()).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("grpc-status"), "12", "UNIMPLEMENTED");
    assert_eq!(reply.header("content-type"), "application/grpc-web-text+proto");

    // A text body that is not base64 is the client's error.
    let reply = web_call(
        &gw,
        "/test.Echo/Say",
        "application/grpc-web-text",
        b"!!!! not base64".to_vec(),
    )
    .await;
    assert_eq!(reply.header("grpc-status"), "3", "INVALID_ARGUMENT: {reply:?}");
}
