//! `request_size`: limits by declared length and as bodies stream, over
//! HTTP/1.1 and HTTP/2, per consumer, and on what compressed bodies expand
//! to. Each refusal is asserted at the upstream too: nothing reached it.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use std::convert::Infallible;
use std::io::Write;

const UPLOADER_KEY: &str = "uploader-key-0123456789";
const VISITOR_KEY: &str = "visitor-key-0123456789";

async fn echo() -> Upstream {
    Upstream::start(|r| http::Response::new(Full::new(Bytes::from(r.body.len().to_string())))).await
}

async fn gateway(upstream: &Upstream) -> Gateway {
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
consumers:
  - { name: uploader, credentials: { api_keys: ["$UPLOADER"] } }
  - { name: visitor, credentials: { api_keys: ["$VISITOR"] } }
upstreams: { api: { targets: ["$U"] } }
routes:
  - name: plain
    match: { path: /plain }
    upstream: api
    plugins: { request_size: { max: 1KiB } }
  - name: compressed
    match: { path: /compressed }
    upstream: api
    plugins: { request_size: { max: 64KiB, max_decompressed: 1MiB } }
  - name: keyed
    match: { path: /keyed }
    upstream: api
    plugins:
      key_auth: {}
      request_size: { max: 1KiB, consumers: { uploader: { max: 64KiB } } }
"#,
        &[
            ("U", upstream.addr.to_string()),
            ("UPLOADER", UPLOADER_KEY.to_string()),
            ("VISITOR", VISITOR_KEY.to_string()),
        ],
    );
    Gateway::start(&yaml).await
}

fn post(url: String, body: Vec<u8>, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut request = Request::post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.body(Full::new(Bytes::from(body))).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[tokio::test]
async fn a_declared_length_over_the_limit_is_refused_before_the_upstream() {
    let upstream = echo().await;
    let gw = gateway(&upstream).await;
    let problem = send(post(gw.url("/plain"), vec![b'a'; 2000], &[])).await.problem(413);
    assert_eq!(
        problem["detail"],
        "the request body (2000 bytes) is larger than the limit of 1024 bytes"
    );
    assert_eq!(upstream.count(), 0);

    let at_limit = send(post(gw.url("/plain"), vec![b'a'; 1024], &[])).await;
    assert_eq!(at_limit.status, 200);
    assert_eq!(at_limit.text(), "1024", "every byte reached the upstream");
}

#[tokio::test]
async fn a_body_without_a_length_is_cut_off_where_it_passes_the_limit() {
    let upstream = echo().await;
    let gw = gateway(&upstream).await;
    let chunk = "a".repeat(700);
    let chunked = format!(
        "POST /plain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2bc\r\n{chunk}\r\n2bc\r\n{chunk}\r\n0\r\n\r\n"
    );
    let answer = raw(gw.addr, chunked.as_bytes()).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("application/problem+json"), "{answer}");
    // The body streams: the upstream may have seen its start, never more than the limit.
    let within = |upstream: &Upstream| upstream.requests().iter().all(|r| r.body.len() <= 1024);
    assert!(within(&upstream));

    // HTTP/2: DATA frames with no content-length.
    let client: hyper_util::client::legacy::Client<_, StreamBody<_>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let frames = (0..4).map(|_| Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'b'; 700]))));
    let request = Request::post(gw.url("/plain"))
        .body(StreamBody::new(futures_util::stream::iter(frames)))
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 413);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let _ = response.into_body().collect().await;
    assert!(within(&upstream));
}

#[tokio::test]
async fn a_consumer_s_own_limit_replaces_the_route_s() {
    let upstream = echo().await;
    let gw = gateway(&upstream).await;
    let body = vec![b'u'; 8 * 1024];
    let uploader = send(post(gw.url("/keyed"), body.clone(), &[("x-api-key", UPLOADER_KEY)])).await;
    assert_eq!(uploader.status, 200);
    assert_eq!(uploader.text(), "8192");
    send(post(gw.url("/keyed"), body, &[("x-api-key", VISITOR_KEY)]))
        .await
        .problem(413);
    assert_eq!(upstream.count(), 1, "only the uploader's body reached the upstream");
}

#[tokio::test]
async fn a_compressed_body_is_measured_by_what_it_expands_to() {
    let upstream = echo().await;
    let gw = gateway(&upstream).await;

    // 512 KiB of JSON in gzip: within the limit, sent on as the client sent it.
    let fine = gzip(&b"{\"a\":1}".repeat(512 * 1024 / 7));
    let reply = send(post(
        gw.url("/compressed"),
        fine.clone(),
        &[("content-encoding", "gzip")],
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(upstream.last().body, fine, "the compressed bytes, untouched");
    assert_eq!(upstream.last().headers["content-encoding"], "gzip");

    // A bomb: 64 MiB of zeros in about 64 KiB, and the same split into
    // gzip members and sent without a length.
    let bomb = gzip(&vec![0u8; 64 << 20]);
    assert!(bomb.len() < 64 * 1024, "{}", bomb.len());
    let problem = send(post(
        gw.url("/compressed"),
        bomb.clone(),
        &[("content-encoding", "gzip")],
    ))
    .await
    .problem(413);
    assert_eq!(
        problem["detail"],
        "the request body, decompressed, is larger than this route accepts"
    );
    let members = [gzip(&vec![0u8; 800 << 10]), gzip(&vec![0u8; 800 << 10])].concat();
    let mut chunked = b"POST /compressed HTTP/1.1\r\nHost: x\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", members.len()).as_bytes());
    chunked.extend_from_slice(&members);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let answer = raw(gw.addr, &chunked).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");

    // A body that is not the coding it claims.
    send(post(
        gw.url("/compressed"),
        b"plain".to_vec(),
        &[("content-encoding", "gzip")],
    ))
    .await
    .problem(400);
    assert_eq!(
        upstream.count(),
        1,
        "only the body within the limit reached the upstream"
    );
}

#[tokio::test]
async fn codings_that_cannot_be_measured_are_415_with_the_ones_that_can() {
    let upstream = echo().await;
    let gw = gateway(&upstream).await;
    for coding in ["compress", "gzip, gzip", "br, gzip"] {
        let reply = send(post(
            gw.url("/compressed"),
            b"x".to_vec(),
            &[("content-encoding", coding)],
        ))
        .await;
        reply.problem(415);
        assert_eq!(reply.header("accept-encoding"), "gzip, deflate, br, zstd", "{coding}");
    }
    // Where nothing is measured decompressed, a coding is the upstream's business.
    let reply = send(post(
        gw.url("/plain"),
        b"x".to_vec(),
        &[("content-encoding", "compress")],
    ))
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(upstream.count(), 1);
}

#[test]
fn unknown_consumers_and_empty_blocks_are_named() {
    let errors = match portico::config::build(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { api: { targets: ["127.0.0.1:9"] } }
routes:
  - { name: a, match: { path: /a }, upstream: api, plugins: { request_size: {} } }
  - { name: b, match: { path: /b }, upstream: api, plugins: { request_size: { consumers: { nobody: { max: 1MB } } } } }
"#,
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
    };
    assert!(
        errors.contains("routes[0].plugins.request_size: sets no limit"),
        "{errors}"
    );
    assert!(
        errors.contains("routes[1].plugins.request_size.consumers.nobody"),
        "{errors}"
    );
}

/// A client that asks before sending (`Expect: 100-continue`) is told 413
/// from the head: no `100 Continue`, and the body is never read.
#[tokio::test]
async fn an_expecting_client_over_the_limit_gets_413_and_no_continue() {
    let upstream = echo().await;
    let gw = gateway(&upstream).await;
    let answer = raw(
        gw.addr,
        b"POST /plain HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(!answer.contains("100 Continue"), "{answer}");
    assert_eq!(upstream.count(), 0);
}
