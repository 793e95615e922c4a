//! `compression`: what the client receives for each Accept-Encoding, what is
//! left alone (small, other types, already encoded, no-transform, ranges),
//! HEAD, and a gibibyte compressed as it streams through the real binary.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use std::convert::Infallible;
use std::io::Read;
use std::time::Duration;

/// A JSON document of about 20 KB that compresses well.
fn document() -> Bytes {
    let item = r#"{"id":1,"name":"portico","tags":["gateway","proxy"]},"#;
    Bytes::from(format!("[{}{{}}]", item.repeat(400)))
}

/// An upstream answering each path with its own kind of answer.
async fn upstream() -> Upstream {
    Upstream::start(|request| {
        let mut response = Response::builder()
            .header("etag", "\"v1\"")
            .header("accept-ranges", "bytes");
        let body = match request.uri.path() {
            "/small" => Bytes::from_static(b"{\"ok\":true}"),
            "/image" => {
                response = response.header("content-type", "image/png");
                document()
            }
            "/encoded" => {
                response = response.header("content-encoding", "gzip");
                document()
            }
            "/no-transform" => {
                response = response.header("cache-control", "public, no-transform");
                document()
            }
            "/range" => {
                response = response.status(206).header("content-range", "bytes 0-99/20000");
                document().slice(..100)
            }
            _ => document(),
        };
        if !matches!(request.uri.path(), "/image") {
            response = response.header("content-type", "application/json; charset=utf-8");
        }
        response.body(Full::new(body)).unwrap()
    })
    .await
}

async fn gateway(upstream: &Upstream, plugin: &str) -> Gateway {
    gateway_with(upstream, &format!("{{ compression: {plugin} }}")).await
}

/// A gateway whose one route to `upstream` has `plugins`.
async fn gateway_with(upstream: &Upstream, plugins: &str) -> Gateway {
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { api: { targets: ["$U"] } }
routes:
  - name: api
    match: { path: / }
    upstream: api
    plugins: $PLUGINS
"#,
        &[("U", upstream.addr.to_string()), ("PLUGINS", plugins.to_string())],
    );
    Gateway::start(&yaml).await
}

fn decode(coding: &str, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match coding {
        "gzip" => flate2::read::GzDecoder::new(body).read_to_end(&mut out).unwrap(),
        "br" => brotli::Decompressor::new(body, 4096).read_to_end(&mut out).unwrap(),
        "zstd" => zstd::stream::read::Decoder::new(body)
            .unwrap()
            .read_to_end(&mut out)
            .unwrap(),
        other => panic!("unexpected coding {other}"),
    };
    out
}

#[tokio::test]
async fn each_coding_is_chosen_by_accept_encoding_and_decodes_to_the_upstream_s_bytes() {
    let upstream = upstream().await;
    let gateway = gateway(&upstream, "{}").await;
    for (accept, coding) in [
        ("gzip", "gzip"),
        ("gzip, deflate, br", "br"),
        ("br;q=0.5, zstd", "zstd"),
        ("*", "zstd"),
        ("br;q=0, gzip;q=0.2", "gzip"),
    ] {
        let reply = get_with(&gateway.url("/doc"), &[("accept-encoding", accept)]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("content-encoding"), coding, "for {accept}");
        assert_eq!(reply.header("vary"), "accept-encoding");
        assert!(
            reply.headers.get("content-length").is_none(),
            "the length is the encoded one's, unknown ahead"
        );
        assert!(
            reply.headers.get("accept-ranges").is_none(),
            "ranges of the encoded form are not offered"
        );
        assert_eq!(reply.header("etag"), "W/\"v1\"", "a strong validator is weakened");
        assert!(
            reply.body.len() * 10 < document().len(),
            "{coding}: {} bytes",
            reply.body.len()
        );
        assert_eq!(decode(coding, &reply.body), document(), "{coding}");
    }
    // The upstream is asked as the client asked: Accept-Encoding passes on.
    assert_eq!(upstream.last().headers["accept-encoding"], "br;q=0, gzip;q=0.2");
}

#[tokio::test]
async fn answers_the_choice_does_not_apply_to_pass_unchanged() {
    let upstream = upstream().await;
    let gateway = gateway(&upstream, "{ encodings: [gzip], min_size: 1KiB }").await;
    let accept = [("accept-encoding", "gzip, br, zstd")];

    // A client that accepts nothing: as the upstream sent it, with Vary for caches.
    let plain = get(&gateway.url("/doc")).await;
    assert!(plain.headers.get("content-encoding").is_none());
    assert_eq!(plain.header("vary"), "accept-encoding");
    assert_eq!(plain.header("content-length"), document().len().to_string());
    assert_eq!(plain.header("etag"), "\"v1\"");
    assert_eq!(plain.body, document());

    // Only the offered coding is used.
    let reply = get_with(&gateway.url("/doc"), &[("accept-encoding", "br, zstd")]).await;
    assert!(reply.headers.get("content-encoding").is_none());

    for path in ["/small", "/image", "/no-transform"] {
        let reply = get_with(&gateway.url(path), &accept).await;
        assert!(reply.headers.get("content-encoding").is_none(), "{path}");
        assert!(
            reply.headers.get("vary").is_none(),
            "{path}: the answer does not depend on Accept-Encoding"
        );
        assert!(reply.headers.get("content-length").is_some(), "{path}");
    }

    // Already encoded: never encoded twice.
    let reply = get_with(&gateway.url("/encoded"), &accept).await;
    assert_eq!(reply.header("content-encoding"), "gzip");
    assert_eq!(reply.body, document(), "the upstream's bytes, untouched");

    // Ranges: a 206, and any request with Range, keep the upstream's bytes.
    let reply = get_with(
        &gateway.url("/range"),
        &[("accept-encoding", "gzip"), ("range", "bytes=0-99")],
    )
    .await;
    assert_eq!(reply.status, 206);
    assert!(reply.headers.get("content-encoding").is_none());
    assert_eq!(reply.header("content-range"), "bytes 0-99/20000");
    assert_eq!(reply.body, document().slice(..100));
    let reply = get_with(
        &gateway.url("/doc"),
        &[("accept-encoding", "gzip"), ("range", "bytes=0-99")],
    )
    .await;
    assert!(reply.headers.get("content-encoding").is_none());
    assert_eq!(reply.header("accept-ranges"), "bytes");
}

#[tokio::test]
async fn head_says_what_get_would_without_a_body() {
    let upstream = upstream().await;
    let gateway = gateway(&upstream, "{}").await;
    let reply = send(
        Request::head(gateway.url("/doc"))
            .header("accept-encoding", "gzip")
            .body(Full::default())
            .unwrap(),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-encoding"), "gzip");
    assert_eq!(reply.header("vary"), "accept-encoding");
    assert!(reply.body.is_empty());
}

#[test]
fn bad_settings_are_named() {
    let errors = match portico::config::build(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { api: { targets: ["127.0.0.1:9"] } }
routes:
  - { name: a, match: { path: /a }, upstream: api, plugins: { compression: { encodings: [gzip, deflate] } } }
  - { name: b, match: { path: /b }, upstream: api, plugins: { compression: { encodings: [], content_types: ["json", "text/*"] } } }
"#,
    ) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
    };
    assert!(errors.contains("routes[0].plugins.compression.encodings"), "{errors}");
    assert!(errors.contains("deflate"), "{errors}");
    assert!(
        errors.contains("routes[1].plugins.compression.encodings: lists no coding"),
        "{errors}"
    );
    assert!(
        errors.contains("routes[1].plugins.compression.content_types[0]"),
        "{errors}"
    );
    assert!(
        !errors.contains("content_types[1]"),
        "`text/*` is a media range: {errors}"
    );
}

#[tokio::test]
async fn content_types_are_matched_without_parameters_and_by_whole_type() {
    let upstream = Upstream::start(|_| {
        Response::builder()
            .header("content-type", "Text/CSV; charset=utf-8")
            .body(Full::new(document()))
            .unwrap()
    })
    .await;
    let gateway = gateway(&upstream, r#"{ content_types: ["text/*"] }"#).await;
    let reply = get_with(&gateway.url("/"), &[("accept-encoding", "gzip")]).await;
    assert_eq!(reply.header("content-encoding"), "gzip");
    assert_eq!(decode("gzip", &reply.body), document());
}

/// A gibibyte of JSON-typed text, generated and compressed as it streams:
/// the gateway's memory stays flat and the client decodes every byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_is_compressed_as_it_streams_with_flat_memory() {
    const GIB: usize = 1 << 30;
    const CHUNK: usize = 64 * 1024;
    let upstream = serve(|_request: http::Request<hyper::body::Incoming>| async {
        let chunk = Bytes::from(b"{\"a\":1234567890}\n".repeat(CHUNK / 17 + 1)).slice(..CHUNK);
        let frames =
            futures_util::stream::iter((0..GIB / CHUNK).map(move |_| Ok::<_, Infallible>(Frame::data(chunk.clone()))));
        let mut response = Response::new(StreamBody::new(frames));
        response
            .headers_mut()
            .insert("content-type", "application/json".parse().unwrap());
        Ok::<_, Infallible>(response)
    })
    .await;
    let yaml = config(
        r#"
listeners: [{ name: public, addr: "127.0.0.1:0" }]
upstreams: { files: { targets: ["$U"] } }
routes: [{ name: files, match: { path: / }, upstream: files, plugins: { compression: { encodings: [gzip] } } }]
access_log: { enabled: false }
"#,
        &[("U", upstream.to_string())],
    );
    let gateway = Process::start(&yaml);
    let baseline = gateway.peak_rss();

    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let request = Request::get(format!("http://{}/big", gateway.addr))
        .header("accept-encoding", "gzip")
        .body(Full::default())
        .unwrap();
    let download = async {
        let response = client.request(request).await.unwrap();
        assert_eq!(response.headers()["content-encoding"], "gzip");
        let mut body = response.into_body();
        let mut decoder = flate2::write::GzDecoder::new(Counted::default());
        let mut encoded = 0;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                encoded += data.len();
                std::io::Write::write_all(&mut decoder, &data).unwrap();
            }
        }
        (encoded, decoder.finish().unwrap().0)
    };
    let (encoded, decoded) = tokio::time::timeout(Duration::from_secs(300), download)
        .await
        .expect("the download finishes");
    assert_eq!(decoded, GIB, "every byte, decoded");
    assert!(encoded < GIB / 20, "compressed to {encoded} bytes");

    let peak = gateway.peak_rss();
    eprintln!(
        "gateway peak RSS: {:.1} MiB at start, {:.1} MiB after compressing 1 GiB",
        baseline as f64 / 1048576.0,
        peak as f64 / 1048576.0
    );
    assert!(
        peak < baseline + 64 * 1024 * 1024,
        "memory grew with the body: {peak} bytes"
    );
}

/// Counts what is written, keeping nothing.
#[derive(Default)]
struct Counted(usize);

impl std::io::Write for Counted {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A route with a cache and gzip, in front of an upstream answering JSON
/// with `cache_control`.
async fn cached_behind_compression(cache_control: &'static str) -> (Upstream, Gateway) {
    let upstream = Upstream::start(move |_| {
        Response::builder()
            .header("content-type", "application/json")
            .header("cache-control", cache_control)
            .body(Full::new(document()))
            .unwrap()
    })
    .await;
    let gateway = gateway_with(&upstream, "{ compression: { encodings: [gzip] }, cache: {} }").await;
    (upstream, gateway)
}

/// The cache keeps what clients get: a compressed answer is stored under
/// its Accept-Encoding, and never served to a client that did not ask for it.
#[tokio::test]
async fn a_cached_compressed_answer_goes_only_to_clients_that_accept_it() {
    let (upstream, gateway) = cached_behind_compression("max-age=60").await;
    let gzip = [("accept-encoding", "gzip")];
    let first = get_with(&gateway.url("/doc"), &gzip).await;
    assert_eq!(first.header("content-encoding"), "gzip");
    let plain = get(&gateway.url("/doc")).await;
    assert!(plain.headers.get("content-encoding").is_none(), "{:?}", plain.headers);
    assert_eq!(plain.body, document());
    let again = get_with(&gateway.url("/doc"), &gzip).await;
    assert_eq!(again.header("content-encoding"), "gzip");
    assert_eq!(decode("gzip", &again.body), document());
    let plain_again = get(&gateway.url("/doc")).await;
    assert_eq!(plain_again.body, document());
    assert_eq!(again.header("x-cache"), "HIT");
    assert_eq!(plain_again.header("x-cache"), "HIT");
    assert_eq!(upstream.count(), 2, "one fill per encoding");
}

/// A stale answer refreshed in the background is stored as the request that
/// triggered it would have had it: compressed for a client that accepts it.
#[tokio::test(start_paused = true)]
async fn a_background_refresh_keeps_the_encoding() {
    let (upstream, gateway) = cached_behind_compression("max-age=1, stale-while-revalidate=60").await;
    let gzip = [("accept-encoding", "gzip")];
    get_with(&gateway.url("/doc"), &gzip).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let stale = get_with(&gateway.url("/doc"), &gzip).await;
    assert_eq!(stale.header("x-cache"), "STALE");
    // The refresh runs in the background; wait for its fill.
    for _ in 0..100 {
        if upstream.count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(upstream.count(), 2, "refreshed once");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let refreshed = get_with(&gateway.url("/doc"), &gzip).await;
    assert_eq!(refreshed.header("x-cache"), "HIT");
    assert_eq!(refreshed.header("content-encoding"), "gzip");
    assert_eq!(decode("gzip", &refreshed.body), document());
    let plain = get(&gateway.url("/doc")).await;
    assert!(plain.headers.get("content-encoding").is_none(), "{:?}", plain.headers);
}

/// HTTP/2 clients get the same: the coding, Vary, and bytes that decode.
#[tokio::test]
async fn http2_clients_get_compressed_answers_too() {
    let upstream = upstream().await;
    let gateway = gateway(&upstream, "{ encodings: [br] }").await;
    let client: hyper_util::client::legacy::Client<_, Full<Bytes>> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let request = Request::get(gateway.url("/doc"))
        .header("accept-encoding", "br")
        .body(Full::default())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.headers()["content-encoding"], "br");
    assert_eq!(response.headers()["vary"], "accept-encoding");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(decode("br", &body), document());
}
