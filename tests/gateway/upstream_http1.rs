//! Portico's own HTTP/1.1 client, held to what the upstream received and to
//! upstreams that misbehave: answers it cannot frame are 502s, an answer can
//! never leak into the next request on the same connection, and request
//! bodies reach the upstream framed exactly.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a scripted upstream saw: connections accepted, and each request's raw bytes.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    requests: Mutex<Vec<String>>,
}

/// Reads one request (head, then a body by its length or to its last chunk)
/// from `stream`; `None` once the peer closes.
async fn read_request(stream: &mut TcpStream, pending: &mut Vec<u8>) -> Option<String> {
    loop {
        if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&pending[..end + 4]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length: "))
                .map(|n| n.trim().parse::<usize>().unwrap());
            let total = match length {
                Some(n) => end + 4 + n,
                None if head.contains("transfer-encoding: chunked") => {
                    match pending[end..].windows(5).position(|w| w == b"0\r\n\r\n") {
                        Some(at) => end + at + 5,
                        None => usize::MAX,
                    }
                }
                None => end + 4,
            };
            if pending.len() >= total {
                let request: Vec<u8> = pending.drain(..total).collect();
                return Some(String::from_utf8_lossy(&request).into_owned());
            }
        }
        let mut buf = [0u8; 65536];
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => pending.extend_from_slice(&buf[..n]),
        }
    }
}

/// An upstream that answers every request on every connection with `answer`
/// (raw bytes), keeping the connection open, or closing it after each
/// answer when `close` is set.
async fn scripted(answer: &'static [u8], close: bool) -> (std::net::SocketAddr, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let counted = seen.clone();
    let addr = tcp_server(move |mut stream| {
        let seen = counted.clone();
        async move {
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let mut pending = Vec::new();
            while let Some(request) = read_request(&mut stream, &mut pending).await {
                seen.requests.lock().unwrap().push(request);
                if stream.write_all(answer).await.is_err() || close {
                    return;
                }
            }
        }
    })
    .await;
    (addr, seen)
}

async fn gateway_to(upstream: std::net::SocketAddr) -> Gateway {
    Gateway::start(&config(
        r#"
listeners: [ { name: main, addr: "127.0.0.1:0" } ]
access_log: { enabled: false }
upstreams: { app: { targets: [ "$U" ], timeouts: { response: 5s } } }
routes:
  - { name: app, match: { path: / }, upstream: app }
"#,
        &[("U", upstream.to_string())],
    ))
    .await
}

/// `count` requests (GET, or HEAD) in turn through a gateway to an upstream
/// that answers each with `answer`: the replies, and how many connections
/// the upstream saw.
async fn through(answer: &'static [u8], close: bool, method: http::Method, count: usize) -> (Vec<Reply>, usize) {
    let (upstream, seen) = scripted(answer, close).await;
    let gw = gateway_to(upstream).await;
    let mut replies = Vec::new();
    for _ in 0..count {
        let request = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}/x", gw.addr));
        replies.push(send(request.body(Full::default()).unwrap()).await);
    }
    (replies, seen.connections.load(Ordering::SeqCst))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_cannot_be_framed_are_502s() {
    for answer in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"[..],
        b"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n folded: value\r\n\r\nhello",
        b"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ] {
        let (replies, _) = through(answer, true, http::Method::GET, 1).await;
        replies[0].problem(502);
    }
    // A head past 64 KiB is refused, not buffered without end.
    let huge: &'static [u8] = format!("HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n", "a".repeat(70_000))
        .into_bytes()
        .leak();
    let (replies, _) = through(huge, false, http::Method::GET, 1).await;
    replies[0].problem(502);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_past_an_answer_never_answer_the_next_request() {
    // The upstream sends a second, unasked answer after the first: on a
    // reused connection it would answer the next client's request.
    let (replies, connections) = through(
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\ninjected",
        false,
        http::Method::GET,
        3,
    )
    .await;
    assert!(replies.iter().all(|r| r.status == 200 && r.text() == "ok"));
    assert_eq!(connections, 3, "each answer's connection was dropped");

    // Both framings in one answer: read as chunked (RFC 9112 §6.3), and the
    // connection is not reused.
    let (replies, connections) = through(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        false,
        http::Method::GET,
        2,
    )
    .await;
    assert!(replies
        .iter()
        .all(|r| r.text() == "hello" && !r.headers.contains_key("content-length")));
    assert_eq!(connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn well_framed_answers_reuse_their_connection() {
    // Chunks with extensions, then trailers; interim answers read past.
    let (replies, connections) = through(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n",
        false,
        http::Method::GET,
        3,
    )
    .await;
    assert!(replies.iter().all(|r| r.status == 200 && r.text() == "hello world"));
    assert_eq!(connections, 1);
    // A HEAD's answer has no body whatever its length says; the connection goes on.
    let (replies, connections) = through(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
        false,
        http::Method::HEAD,
        2,
    )
    .await;
    assert!(replies
        .iter()
        .all(|r| r.status == 200 && r.header("content-length") == "100"));
    assert_eq!(connections, 1);
    // An answer read to the close: whole, and its connection not kept.
    let (replies, connections) = through(b"HTTP/1.1 200 OK\r\n\r\nuntil the close", true, http::Method::GET, 2).await;
    assert!(replies.iter().all(|r| r.text() == "until the close"));
    assert_eq!(connections, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_upstream_closed_while_idle_is_not_used() {
    // Answers one request per connection, then closes it shortly after,
    // though it said nothing of closing.
    let seen = Arc::new(Seen::default());
    let counted = seen.clone();
    let upstream = tcp_server(move |mut stream| {
        let seen = counted.clone();
        async move {
            seen.connections.fetch_add(1, Ordering::SeqCst);
            let mut pending = Vec::new();
            if read_request(&mut stream, &mut pending).await.is_some() {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    })
    .await;
    let gw = gateway_to(upstream).await;
    for _ in 0..3 {
        let reply = get(&format!("http://{}/x", gw.addr)).await;
        assert_eq!((reply.status.as_u16(), reply.text().as_str()), (200, "ok"));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_reach_the_upstream_framed_exactly() {
    let (upstream, seen) = scripted(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let gw = gateway_to(upstream).await;
    let url = format!("http://{}/x", gw.addr);
    // A body with a length keeps it.
    let reply = send(Request::post(&url).body(Full::new(Bytes::from_static(b"abc"))).unwrap()).await;
    assert_eq!(reply.status, 200);
    // An empty POST says so; a GET has no framing at all.
    send(Request::post(&url).body(Full::default()).unwrap()).await;
    get(&url).await;
    // A chunked client body goes on chunked, its trailers with it.
    let answer = raw(
        gw.addr,
        b"POST /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let requests = seen.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 4, "{requests:?}");
    let lower: Vec<String> = requests.iter().map(|r| r.to_ascii_lowercase()).collect();
    assert!(lower[0].starts_with("post /x http/1.1\r\n"), "{}", requests[0]);
    assert!(
        lower[0].contains("\r\ncontent-length: 3\r\n") && lower[0].ends_with("\r\n\r\nabc"),
        "{}",
        requests[0]
    );
    assert!(!lower[0].contains("transfer-encoding"), "{}", requests[0]);
    assert!(lower[1].contains("\r\ncontent-length: 0\r\n"), "{}", requests[1]);
    assert!(
        !lower[2].contains("content-length") && !lower[2].contains("transfer-encoding"),
        "{}",
        requests[2]
    );
    assert!(
        lower[3].contains("\r\ntransfer-encoding: chunked\r\n"),
        "{}",
        requests[3]
    );
    assert!(!lower[3].contains("content-length"), "{}", requests[3]);
    assert!(
        requests[3].ends_with("\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
        "{:?}",
        requests[3]
    );
    // Every request went on one connection: each was framed so the next could follow.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_whole_body_is_passed_on_at_once() {
    // Refuses after the head, without reading the body (as a server enforcing
    // its own size limit does), and keeps the connection open.
    let upstream = tcp_server(|mut stream| async move {
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        let _ = stream
            .write_all(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\n\r\ntoo big!")
            .await;
        tokio::time::sleep(Duration::from_secs(10)).await;
    })
    .await;
    let gw = gateway_to(upstream).await;
    // A raw client: it reads the answer while its body is still unsent.
    let mut client = TcpStream::connect(gw.addr).await.unwrap();
    let started = std::time::Instant::now();
    client
        .write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 33554432\r\n\r\n")
        .await
        .unwrap();
    let _ = client.write_all(&vec![b'x'; 256 << 10]).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&answer).contains("too big!") && started.elapsed() < Duration::from_secs(5) {
        match tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.ends_with("too big!"), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_whose_body_breaks_before_any_of_it_is_sent_is_a_502_of_portico_s_own() {
    // The head and a first chunk that is not one, in one write: the body
    // fails before the gateway has written anything of the answer.
    for answer in [
        &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    ] {
        let (upstream, _) = scripted(answer, false).await;
        let gw = gateway_to(upstream).await;
        let reply = raw(gw.addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
        let head = head.to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 502"), "{reply:?}");
        assert!(head.contains("content-type: application/problem+json"), "{reply:?}");
        assert!(head.contains("connection: close"), "{reply:?}");
        assert!(head.contains("x-request-id: "), "{reply:?}");
        let problem: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(problem["status"], 502, "{body}");
        assert!(
            problem["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{body}"
        );
        assert!(
            !reply.contains("hello"),
            "none of the broken answer reaches the client: {reply:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_chunked_body_is_never_passed_on_as_whole_and_its_connection_is_dropped() {
    let long_size_line: &'static [u8] = format!(
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;{}",
        "a".repeat(2_000)
    )
    .into_bytes()
    .leak();
    for (answer, close) in [
        // Not a hexadecimal size.
        (
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\nworld\r\n0\r\n\r\n"[..],
            false,
        ),
        // The data is longer than its size says: no CRLF where one must be.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello, world\r\n0\r\n\r\n",
            false,
        ),
        // A size line that never ends.
        (long_size_line, false),
        // The upstream closes in the middle of a chunk.
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n9\r\nwor",
            true,
        ),
    ] {
        let (upstream, seen) = scripted(answer, close).await;
        let gw = gateway_to(upstream).await;
        for _ in 0..2 {
            let reply = raw(gw.addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
            let text = String::from_utf8_lossy(answer);
            // Refused, or cut off (before its head went out, or after): never
            // ended with the last chunk, so the client cannot take it for whole.
            let cut_off = reply.is_empty() || (reply.starts_with("HTTP/1.1 200") && !reply.ends_with("0\r\n\r\n"));
            assert!(
                reply.starts_with("HTTP/1.1 502") || cut_off,
                "{text:?} reached the client as {reply:?}"
            );
        }
        // The connection that carried a broken body is never reused.
        assert_eq!(
            seen.connections.load(Ordering::SeqCst),
            2,
            "{:?}",
            String::from_utf8_lossy(answer)
        );
    }
}
