//! Upstream protocols: HTTP/1.1 over TLS checked against a test CA, client
//! certificates for upstreams that require them, HTTP/2 over TLS and h2c
//! with every request on one connection. Real rustls and hyper servers.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// What the upstream saw of each request: HTTP version, authority, path,
/// whether the connection had a client certificate.
fn describe(request: &http::Request<Incoming>, client_cert: bool) -> String {
    let authority = request
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| request.headers().get("host").map(|h| h.to_str().unwrap().to_string()))
        .unwrap_or_default();
    serde_json::json!({
        "version": format!("{:?}", request.version()),
        "authority": authority,
        "path": request.uri().path_and_query().map(|p| p.to_string()),
        "client_cert": client_cert,
        "te": request.headers().get("te").map(|v| v.to_str().unwrap().to_string()),
    })
    .to_string()
}

/// A test upstream: HTTP/1.1 and HTTP/2 (by ALPN over TLS, by prior
/// knowledge in clear), counting the connections it accepts.
struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl Backend {
    async fn start(tls: Option<rustls::ServerConfig>) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        let acceptor = tls.map(|mut config| {
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        None => {
                            let service = service_fn(|r| answer(r, false));
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                        Some(acceptor) => {
                            // A refused handshake (no or bad client certificate) ends here.
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let client_cert = stream.get_ref().1.peer_certificates().is_some();
                            let service = service_fn(move |r| answer(r, client_cert));
                            let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                        }
                    }
                });
            }
        });
        Backend { addr, connections }
    }
}

/// Describes the request, after reading its body as a service would (so an
/// answer never comes before the body has been sent, or failed).
async fn answer(
    request: http::Request<Incoming>,
    client_cert: bool,
) -> Result<http::Response<Full<Bytes>>, Infallible> {
    let body = describe(&request, client_cert);
    let _ = http_body_util::BodyExt::collect(request.into_body()).await;
    Ok(http::Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

/// A server certificate for `backend.internal` and 127.0.0.1 signed by `ca`;
/// client certificates are required and checked against `clients` if given.
fn server_config(ca: &TestCa, clients: Option<&TestCa>) -> rustls::ServerConfig {
    let (chain, key) = ca.issue("backend", &["backend.internal", "127.0.0.1"]);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(clients) => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = std::fs::read(&clients.path).unwrap();
            use rustls::pki_types::pem::PemObject;
            for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    builder.with_single_cert(chain, key).unwrap()
}

/// A gateway with one route, `/`, to an upstream with `upstream` as its block.
fn gateway_config(upstream: &str) -> String {
    config(
        r#"
listeners: [ { name: main, addr: "127.0.0.1:0" } ]
access_log: { enabled: false }
upstreams:
  backend: $UPSTREAM
routes:
  - { name: all, match: { path: / }, upstream: backend }
"#,
        &[("UPSTREAM", upstream.to_string())],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_upstreams_are_checked_against_their_ca_and_name() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "services");
    let backend = Backend::start(Some(server_config(&ca, None))).await;
    let ca_path = ca.path.display();
    let target = backend.addr;

    // The CA signed it, and 127.0.0.1 is one of its names.
    let gw = Gateway::start(&gateway_config(&format!(
        r#"{{ targets: ["{target}"], tls: {{ ca: "{ca_path}" }} }}"#
    )))
    .await;
    let reply = get(&gw.url("/orders?page=2")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let seen = reply.json();
    assert_eq!(seen["version"], "HTTP/1.1");
    assert_eq!(seen["path"], "/orders?page=2");
    assert_eq!(seen["client_cert"], false);

    // Asked for by another name it holds.
    let named = Gateway::start(&gateway_config(&format!(
        r#"{{ targets: ["{target}"], tls: {{ ca: "{ca_path}", server_name: backend.internal }} }}"#
    )))
    .await;
    assert_eq!(get(&named.url("/")).await.status, 200);

    // A name the certificate does not hold, or the public roots that never
    // signed it: the handshake fails and the client learns no more than that.
    for tls in [
        format!(r#"{{ ca: "{ca_path}", server_name: other.internal }}"#),
        "{}".to_string(),
    ] {
        let gw = Gateway::start(&gateway_config(&format!(r#"{{ targets: ["{target}"], tls: {tls} }}"#))).await;
        let reply = get(&gw.url("/")).await;
        let problem = reply.problem(502);
        assert!(
            problem["detail"].as_str().unwrap().contains("TLS handshake"),
            "{problem}"
        );
    }

    // `verify: false` takes any certificate.
    let unchecked = Gateway::start(&gateway_config(&format!(
        r#"{{ targets: ["{target}"], tls: {{ verify: false }} }}"#
    )))
    .await;
    assert_eq!(get(&unchecked.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstreams_that_require_a_client_certificate_get_one() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "services");
    let clients = TestCa::new(dir.path(), "gateways");
    let backend = Backend::start(Some(server_config(&ca, Some(&clients)))).await;
    let (cert, key) = clients.write(dir.path(), "portico-client", "portico", &["portico.internal"]);
    let (target, ca_path) = (backend.addr, ca.path.display());

    let without = Gateway::start(&gateway_config(&format!(
        r#"{{ targets: ["{target}"], tls: {{ ca: "{ca_path}" }} }}"#
    )))
    .await;
    let refused = get(&without.url("/")).await;
    assert_eq!(refused.status, 502, "{}", refused.text());

    let with = Gateway::start(&gateway_config(&format!(
        r#"{{ targets: ["{target}"], tls: {{ ca: "{ca_path}", client_cert: "{}", client_key: "{}" }} }}"#,
        cert.display(),
        key.display()
    )))
    .await;
    let reply = get(&with.url("/")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["client_cert"], true);
}

/// Sends `count` requests at once to `url`; every answer must be a 200.
async fn concurrently(url: &str, count: usize) -> Vec<serde_json::Value> {
    let replies = get_many(url, count, 1).await;
    replies
        .iter()
        .map(|reply| {
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply.json()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_upstreams_carry_every_request_on_one_connection() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "services");

    // Over TLS, agreed by ALPN.
    let secure = Backend::start(Some(server_config(&ca, None))).await;
    let gw = Gateway::start(&gateway_config(&format!(
        r#"{{ targets: ["{}"], protocol: http2, tls: {{ ca: "{}", server_name: backend.internal }} }}"#,
        secure.addr,
        ca.path.display()
    )))
    .await;
    for seen in concurrently(&gw.url("/items?q=1"), 32).await {
        assert_eq!(seen["version"], "HTTP/2.0");
        assert_eq!(seen["path"], "/items?q=1");
        assert_eq!(seen["authority"], secure.addr.to_string());
    }
    assert_eq!(secure.connections.load(Ordering::SeqCst), 1);

    // In clear, by prior knowledge; the client's Host is kept when asked.
    let clear = Backend::start(None).await;
    let gw = Gateway::start(&config(
        r#"
listeners: [ { name: main, addr: "127.0.0.1:0" } ]
access_log: { enabled: false }
upstreams:
  backend: { targets: ["$T"], protocol: h2c }
routes:
  - { name: kept, match: { path: /kept }, upstream: backend, preserve_host: true }
  - { name: all, match: { path: / }, upstream: backend }
"#,
        &[("T", clear.addr.to_string())],
    ))
    .await;
    for seen in concurrently(&gw.url("/"), 32).await {
        assert_eq!(seen["version"], "HTTP/2.0");
        assert_eq!(seen["authority"], clear.addr.to_string());
    }
    let kept = get_with(&gw.url("/kept"), &[("host", "shop.example"), ("te", "trailers")]).await;
    assert_eq!(kept.json()["authority"], "shop.example");
    assert_eq!(kept.json()["te"], "trailers", "TE: trailers is passed on for gRPC");
    assert_eq!(clear.connections.load(Ordering::SeqCst), 1);

    // A client body over the listener's limit is the client's 413, though
    // HTTP/2 tells the gateway only of a reset stream; the target stays healthy.
    let limited = Gateway::start(&config(
        r#"
listeners: [ { name: main, addr: "127.0.0.1:0", limits: { max_request_body: 1KiB } } ]
access_log: { enabled: false }
upstreams:
  backend: { targets: ["$T"], protocol: h2c, health_check: { passive: { consecutive_failures: 1, eject_for: 1m } } }
routes:
  - { name: all, match: { path: / }, upstream: backend }
"#,
        &[("T", clear.addr.to_string())],
    ))
    .await;
    let chunks: Vec<Result<http_body::Frame<Bytes>, Infallible>> = (0..4)
        .map(|_| Ok(http_body::Frame::data(Bytes::from(vec![b'x'; 512]))))
        .collect();
    let streamed = http_body_util::StreamBody::new(futures_util::stream::iter(chunks));
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http();
    let response = client
        .request(http::Request::post(limited.url("/upload")).body(streamed).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    assert_eq!(get(&limited.url("/")).await.status, 200, "the target was not blamed");

    // The HTTP/2 connection that goes away is made again.
    let reload = gw
        .reload(&gateway_config(&format!(
            r#"{{ targets: ["{}"], protocol: h2c, timeouts: {{ response: 5s }} }}"#,
            clear.addr
        )))
        .await;
    assert!(reload.errors.is_empty(), "{:?}", reload.errors);
    assert_eq!(get(&gw.url("/")).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_protocol_and_tls_errors_name_the_field_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let cases = [
        (
            "{ targets: [\"127.0.0.1:1\"], protocol: http2 }",
            "upstreams.backend.protocol",
            "h2c",
        ),
        (
            "{ targets: [\"127.0.0.1:1\"], protocol: h2c, tls: {} }",
            "upstreams.backend.protocol",
            "http2",
        ),
        (
            &format!(
                "{{ targets: [\"127.0.0.1:1\"], tls: {{ ca: \"{}\" }} }}",
                missing.display()
            ),
            "upstreams.backend.tls.ca",
            "cannot read",
        ),
        (
            "{ targets: [\"127.0.0.1:1\"], tls: { client_cert: c.pem } }",
            "upstreams.backend.tls.client_key",
            "needs its `client_key`",
        ),
        (
            "{ targets: [\"127.0.0.1:1\"], tls: { verify: false, ca: x.pem } }",
            "upstreams.backend.tls.verify",
            "only used to verify",
        ),
        (
            "{ targets: [\"127.0.0.1:1\"], timeouts: { websocket_idle: 0s } }",
            "upstreams.backend.timeouts.websocket_idle",
            "longer than zero",
        ),
        (
            "{ targets: [\"127.0.0.1:1\"], protocol: http3 }",
            "upstreams.backend.protocol",
            "h2c",
        ),
    ];
    for (upstream, place, fix) in cases {
        let errors = match portico::config::build(&gateway_config(upstream)) {
            Ok(_) => panic!("accepted: {upstream}"),
            Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
        };
        assert!(errors.contains(place), "{upstream}: {errors}");
        assert!(errors.contains(fix), "{upstream}: {errors}");
    }
}
