//! 1 GiB up and 1 GiB down through the real binary, with its memory measured.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http::Response;
use http_body::{Body, Frame};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const GIB: u64 = 1 << 30;
const CHUNK: usize = 64 * 1024;

/// A body of `remaining` bytes made on the fly, never held in memory.
struct Generated {
    remaining: u64,
    chunk: Bytes,
}

impl Body for Generated {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(CHUNK as u64) as usize;
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
    fn size_hint(&self) -> http_body::SizeHint {
        http_body::SizeHint::with_exact(self.remaining)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_up_and_down_with_flat_gateway_memory() {
    let received = Arc::new(AtomicU64::new(0));
    let sink = received.clone();
    let upstream = serve(move |request: http::Request<hyper::body::Incoming>| {
        let sink = sink.clone();
        async move {
            let download = request.uri().path() == "/download";
            let mut body = request.into_body();
            while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                if let Ok(data) = frame.map(|f| f.into_data()) {
                    sink.fetch_add(data.map_or(0, |d| d.len() as u64), Ordering::Relaxed);
                }
            }
            let remaining = if download { GIB } else { 0 };
            let chunk = Bytes::from(vec![b'z'; CHUNK]);
            Ok::<_, Infallible>(Response::new(Generated { remaining, chunk }))
        }
    })
    .await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { files: { targets: ["$U"] } }
routes: [{ name: files, match: { path: / }, upstream: files }]
access_log: { enabled: false }
"#,
        &[("U", upstream.to_string())],
    );
    let gateway = Process::start(&yaml);
    let baseline = gateway.peak_rss();

    // Upload: 1 GiB with a declared length, written in 64 KiB pieces.
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'u'; CHUNK];
    let upload = async {
        for _ in 0..(GIB / CHUNK as u64) {
            stream.write_all(&chunk).await.unwrap();
        }
        let mut answer = [0u8; 1024];
        let n = stream.read(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    let answer = tokio::time::timeout(Duration::from_secs(240), upload)
        .await
        .expect("upload finishes");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(received.load(Ordering::Relaxed), GIB, "every byte reached the upstream");

    // Download: 1 GiB streamed from the upstream.
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"GET /download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let download = bytes_until_closed(&mut stream);
    let total = tokio::time::timeout(Duration::from_secs(240), download)
        .await
        .expect("download finishes");
    assert!(
        total > GIB && total < GIB + 1024,
        "head plus 1 GiB of body, got {total}"
    );

    let peak = gateway.peak_rss();
    eprintln!(
        "gateway peak RSS: {:.1} MiB at start, {:.1} MiB after 1 GiB up and 1 GiB down",
        baseline as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
    assert!(
        peak < baseline + 64 * 1024 * 1024,
        "memory grew with the body: {peak} bytes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_a_transform_need_not_change_still_stream_with_flat_memory() {
    const SIZE: u64 = 256 << 20;
    let received = Arc::new(AtomicU64::new(0));
    let sink = received.clone();
    let upstream = serve(move |request: http::Request<hyper::body::Incoming>| {
        let sink = sink.clone();
        async move {
            let mut body = request.into_body();
            while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                if let Ok(data) = frame.map(|f| f.into_data()) {
                    sink.fetch_add(data.map_or(0, |d| d.len() as u64), Ordering::Relaxed);
                }
            }
            let chunk = Bytes::from(vec![b'z'; CHUNK]);
            // No Content-Type: not JSON, so the response transform leaves the body alone.
            Ok::<_, Infallible>(Response::new(Generated { remaining: SIZE, chunk }))
        }
    })
    .await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { files: { targets: ["$U"] } }
routes:
  - name: files
    match: { path: / }
    upstream: files
    plugins:
      request_transform: { json: { remove: [ secret ] }, headers: { set: { x-seen: "yes" } } }
      response_transform: { json: { allow: [ id ] } }
access_log: { enabled: false }
"#,
        &[("U", upstream.to_string())],
    );
    let gateway = Process::start(&yaml);
    let baseline = gateway.peak_rss();
    let mut stream = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let head = format!(
        "POST /files HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: {SIZE}\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'u'; CHUNK];
    let exchange = async {
        for _ in 0..(SIZE / CHUNK as u64) {
            stream.write_all(&chunk).await.unwrap();
        }
        bytes_until_closed(&mut stream).await
    };
    let total = tokio::time::timeout(Duration::from_secs(240), exchange)
        .await
        .expect("the exchange finishes");
    assert_eq!(
        received.load(Ordering::Relaxed),
        SIZE,
        "every byte reached the upstream"
    );
    assert!(
        total > SIZE && total < SIZE + 1024,
        "head plus the whole body, got {total}"
    );
    let peak = gateway.peak_rss();
    assert!(
        peak < baseline + 48 * 1024 * 1024,
        "memory grew with the body: {} MiB from {} MiB",
        peak >> 20,
        baseline >> 20
    );
}

/// Reads a connection until the peer closes it; returns how many bytes came.
async fn bytes_until_closed(stream: &mut tokio::net::TcpStream) -> u64 {
    let mut total = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match stream.read(&mut buf).await.unwrap() {
            0 => return total,
            n => total += n as u64,
        }
    }
}
