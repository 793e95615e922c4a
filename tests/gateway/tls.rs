//! TLS termination: certificates by SNI (exact, wildcard, default), ALPN
//! `h2` and `http/1.1`, the minimum version, reloads with new files, and
//! HTTP/2 in clear (prior knowledge). Real rustls clients, certificates
//! made by rcgen.

use crate::config;
use crate::support::*;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A self-signed certificate for `names`, written as PEM files in `dir`.
fn certificate(dir: &Path, file: &str, names: &[&str]) -> (PathBuf, PathBuf, Vec<u8>) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let certified = rcgen::generate_simple_self_signed(names).unwrap();
    let (cert, key) = (dir.join(format!("{file}.pem")), dir.join(format!("{file}.key")));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key, certified.cert.der().to_vec())
}

/// Accepts any certificate: the tests look at which one was presented.
#[derive(Debug)]
struct AnyCertificate;

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        rustls::crypto::ring::default_provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A TLS connection to `addr` asking for `name`, offering `alpn`, with
/// only TLS 1.2 when `tls12_only`.
pub(crate) async fn connect(
    addr: std::net::SocketAddr,
    name: &str,
    alpn: &[&[u8]],
    tls12_only: bool,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
}

fn presented(stream: &tokio_rustls::client::TlsStream<tokio::net::TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// An upstream answering with the X-Forwarded-Proto it was sent.
async fn proto_echo() -> std::net::SocketAddr {
    serve(|request: http::Request<hyper::body::Incoming>| async move {
        let proto = request
            .headers()
            .get("x-forwarded-proto")
            .map(|v| v.to_str().unwrap().to_string());
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(proto.unwrap_or_default()))))
    })
    .await
}

fn tls_config(upstream: std::net::SocketAddr, certs: &[(&PathBuf, &PathBuf)], min: &str) -> String {
    let list: Vec<String> = certs
        .iter()
        .map(|(c, k)| format!("{{ cert: \"{}\", key: \"{}\" }}", c.display(), k.display()))
        .collect();
    config(
        r#"
listeners:
  - { name: secure, addr: "127.0.0.1:0", tls: { certificates: [ $CERTS ], min_version: "$MIN" } }
  - { name: plain, addr: "127.0.0.1:0" }
access_log: { enabled: false }
upstreams: { echo: { targets: [ "$U" ] } }
routes:
  - { name: proto, match: { path: /proto }, upstream: echo }
"#,
        &[
            ("CERTS", list.join(", ")),
            ("MIN", min.to_string()),
            ("U", upstream.to_string()),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_chosen_by_sni_and_both_http_versions_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let (api_cert, api_key, api_der) = certificate(dir.path(), "api", &["api.example.com"]);
    let (shop_cert, shop_key, shop_der) = certificate(dir.path(), "shop", &["*.example.org", "example.org"]);
    let gw = Gateway::start(&tls_config(
        proto_echo().await,
        &[(&api_cert, &api_key), (&shop_cert, &shop_key)],
        "1.2",
    ))
    .await;
    let addr = gw.addr;

    for (name, expected, why) in [
        ("api.example.com", &api_der, "exact"),
        ("www.example.org", &shop_der, "wildcard"),
        ("example.org", &shop_der, "the wildcard certificate's other name"),
        ("other.example.net", &api_der, "the first is the default"),
        ("a.b.example.org", &api_der, "a wildcard covers one label"),
    ] {
        let stream = connect(addr, name, &[], false).await.unwrap();
        assert_eq!(&presented(&stream), expected, "{name}: {why}");
    }
    let tls12 = connect(addr, "api.example.com", &[], true).await.unwrap();
    assert_eq!(
        tls12.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    // HTTP/2 by ALPN.
    let h2 = connect(addr, "api.example.com", &[b"h2", b"http/1.1"], false)
        .await
        .unwrap();
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(h2))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("https://api.example.com/proto")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), response.version()),
        (200, http::Version::HTTP_2)
    );
    assert_eq!(
        response.into_body().collect().await.unwrap().to_bytes(),
        "https",
        "the upstream is told the client used TLS"
    );

    // HTTP/1.1 by ALPN.
    let h1 = connect(addr, "api.example.com", &[b"http/1.1"], false).await.unwrap();
    assert_eq!(h1.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(h1)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/proto")
        .header("host", "api.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), response.version()),
        (200, http::Version::HTTP_11)
    );

    // HTTP/2 in clear, with prior knowledge, on the plain listener.
    let plain = gw
        .control
        .server()
        .addrs()
        .into_iter()
        .find(|(name, _)| &**name == "plain")
        .unwrap()
        .1;
    let tcp = tokio::net::TcpStream::connect(plain).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(connection);
    let response = sender
        .send_request(
            http::Request::get("http://api.example.com/proto")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        (response.status().as_u16(), response.version()),
        (200, http::Version::HTTP_2)
    );
    assert_eq!(response.into_body().collect().await.unwrap().to_bytes(), "http");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimum_version_holds_and_new_certificates_come_with_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first_der) = certificate(dir.path(), "api", &["api.example.com"]);
    let upstream = proto_echo().await;
    let gw = Gateway::start(&tls_config(upstream, &[(&cert, &key)], "1.3")).await;
    let addr = gw.addr;
    assert!(
        connect(addr, "api.example.com", &[], true).await.is_err(),
        "TLS 1.2 refused"
    );
    let tls13 = connect(addr, "api.example.com", &[], false).await.unwrap();
    assert_eq!(
        tls13.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(presented(&tls13), first_der);

    // New files under the same names; a reload takes them, and a
    // connection made before keeps working.
    let (_, _, second_der) = certificate(dir.path(), "api", &["api.example.com"]);
    let report = gw.reload(&tls_config(upstream, &[(&cert, &key)], "1.3")).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(
        presented(&connect(addr, "api.example.com", &[], false).await.unwrap()),
        second_der
    );
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls13))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/proto")
        .header("host", "api.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), 200);
}

#[tokio::test]
async fn tls_config_errors_name_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, _, _) = certificate(dir.path(), "a", &["a.example.com"]);
    let (_, other_key, _) = certificate(dir.path(), "b", &["b.example.com"]);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    let text = format!(
        "listeners:\n  - {{ name: a, addr: '127.0.0.1:0', tls: {{ certificates: [ {{ cert: {c}, key: {k} }}, {{ cert: {g}, key: {k} }}, {{ cert: /nowhere.pem, key: {k} }} ] }} }}\n  - {{ name: b, addr: '127.0.0.1:0', tls: {{ certificates: [], min_version: '1.1' }} }}\nroutes: []\n",
        c = cert.display(),
        k = other_key.display(),
        g = garbage.display()
    );
    let errors = match portico::config::build(&text) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>(),
    };
    for expected in [
        "listeners[0].tls.certificates[0].key: does not go with the certificate",
        "listeners[0].tls.certificates[1].cert: ",
        "listeners[0].tls.certificates[2].cert: cannot read /nowhere.pem",
        "listeners[1].tls.min_version: unknown value `1.1`",
    ] {
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "{expected}\n{errors:#?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_sent_to_https_and_https_answers_carry_hsts() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path(), "api", &["api.example.com"]);
    let gw = Gateway::start(&config(
        r#"
listeners:
  - { name: redirect, addr: "127.0.0.1:0", redirect_https: 8443 }
  - name: secure
    addr: "127.0.0.1:0"
    tls: { certificates: [ { cert: "$CERT", key: "$KEY" } ], hsts: { max_age: 365d, include_subdomains: true } }
access_log: { enabled: false }
routes:
  - { name: hello, match: { path: /hello }, respond: { body: hi } }
"#,
        &[("CERT", cert.display().to_string()), ("KEY", key.display().to_string())],
    ))
    .await;
    let moved = get_with(&gw.url("/hello?x=1"), &[("host", "api.example.com")]).await;
    assert_eq!(moved.status, 308);
    assert_eq!(moved.header("location"), "https://api.example.com:8443/hello?x=1");

    let secure = gw
        .control
        .server()
        .addrs()
        .into_iter()
        .find(|(name, _)| &**name == "secure")
        .unwrap()
        .1;
    let tls = connect(secure, "api.example.com", &[b"http/1.1"], false).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/hello")
        .header("host", "api.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_certificate_files_are_taken_without_touching_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, first) = certificate(dir.path(), "api", &["api.example.com"]);
    let gw = Gateway::start_watching(&tls_config(proto_echo().await, &[(&cert, &key)], "1.2")).await;
    assert_eq!(
        presented(&connect(gw.addr, "api.example.com", &[], false).await.unwrap()),
        first
    );
    let (_, _, renewed) = certificate(dir.path(), "api", &["api.example.com"]);
    // The watcher polls every second and waits for one quiet poll.
    let mut now = first.clone();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        now = presented(&connect(gw.addr, "api.example.com", &[], false).await.unwrap());
        if now == renewed {
            break;
        }
    }
    assert_eq!(now, renewed, "the renewed certificate is served");
    assert_eq!(gw.control.reload_status().1.unwrap().trigger, "certificate_changed");
}

/// Accepts any certificate and keeps the OCSP response stapled to it.
#[derive(Debug, Default)]
struct KeepsStaple(std::sync::Mutex<Vec<u8>>);

impl ServerCertVerifier for KeepsStaple {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.0.lock().unwrap() = ocsp_response.to_vec();
        AnyCertificate.verify_server_cert(end_entity, intermediates, name, ocsp_response, now)
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AnyCertificate.verify_tls12_signature(message, cert, dss)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        AnyCertificate.verify_tls13_signature(message, cert, dss)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        AnyCertificate.supported_verify_schemes()
    }
}

/// The OCSP response a TLS 1.2 or 1.3 handshake with `addr` staples.
async fn stapled(addr: std::net::SocketAddr, tls12_only: bool) -> Vec<u8> {
    let verifier = Arc::new(KeepsStaple::default());
    let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
        &[&rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS13]
    };
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("api.example.com").unwrap(), tcp)
        .await
        .unwrap();
    let staple = verifier.0.lock().unwrap().clone();
    staple
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ocsp_responses_are_stapled_and_taken_again_when_renewed() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path(), "api", &["api.example.com"]);
    let ocsp = dir.path().join("api.ocsp");
    // Portico staples the file as it is; checking it is the client's job.
    std::fs::write(&ocsp, b"first OCSP response").unwrap();
    let yaml = tls_config(proto_echo().await, &[(&cert, &key)], "1.2").replace(
        &format!("key: \"{}\" }}", key.display()),
        &format!("key: \"{}\", ocsp: \"{}\" }}", key.display(), ocsp.display()),
    );
    assert!(yaml.contains("ocsp:"), "{yaml}");
    let gw = Gateway::start_watching(&yaml).await;
    assert_eq!(stapled(gw.addr, false).await, b"first OCSP response");
    assert_eq!(stapled(gw.addr, true).await, b"first OCSP response");

    std::fs::write(&ocsp, b"renewed OCSP response").unwrap();
    let mut now = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        now = stapled(gw.addr, false).await;
        if now == b"renewed OCSP response" {
            break;
        }
    }
    assert_eq!(now, b"renewed OCSP response");

    // A missing file is a config error naming the field.
    let broken = yaml.replace(&ocsp.display().to_string(), "/nowhere.ocsp");
    let errors = match portico::config::build(&broken) {
        Ok(_) => panic!("accepted"),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"),
    };
    assert!(
        errors.contains("listeners[0].tls.certificates[0].ocsp: cannot read /nowhere.ocsp"),
        "{errors}"
    );
}

async fn connect_as(
    addr: std::net::SocketAddr,
    identity: Option<Identity>,
) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate));
    let config = match identity {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let mut stream = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("api.example.com").unwrap(), tcp)
        .await?;
    // TLS 1.3 reports a refused client certificate after the handshake:
    // one round trip shows it.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /whoami HTTP/1.1\r\nhost: api.example.com\r\nx-client-cert-subject: CN=forged\r\n\r\n")
        .await?;
    let mut first = [0u8; 1];
    stream.read_exact(&mut first).await?;
    Ok(stream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificates_are_checked_and_told_to_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path(), "api", &["api.example.com"]);
    let clients = TestCa::new(dir.path(), "clients");
    let (ca, issue) = (clients.path.clone(), |cn: &str, names: &[&str]| {
        clients.issue(cn, names)
    });
    let upstream = serve(|request: http::Request<hyper::body::Incoming>| async move {
        let header = |n: &str| {
            request
                .headers()
                .get(n)
                .map(|v| v.to_str().unwrap().to_string())
                .unwrap_or_default()
        };
        let body = format!(
            "{}|{}|consumer={}",
            header("x-client-cert-subject"),
            header("x-client-cert-names"),
            header("x-consumer-name")
        );
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(body))))
    })
    .await;
    let text = |required: bool| {
        config(
            r#"
listeners:
  - name: mtls
    addr: "127.0.0.1:0"
    tls: { certificates: [ { cert: "$CERT", key: "$KEY" } ], client_auth: { ca: "$CA", required: $REQUIRED } }
access_log: { enabled: false }
consumers:
  - { name: billing, groups: [internal], credentials: { certificates: [ "billing.internal" ] } }
upstreams: { who: { targets: [ "$U" ] } }
routes:
  - { name: whoami, match: { path: /whoami }, upstream: who }
  - { name: internal, match: { path: /internal }, upstream: who, plugins: { mtls: {}, acl: { allow: [internal] } } }
"#,
            &[
                ("CERT", cert.display().to_string()),
                ("KEY", key.display().to_string()),
                ("CA", ca.display().to_string()),
                ("REQUIRED", required.to_string()),
                ("U", upstream.to_string()),
            ],
        )
    };
    let required = Gateway::start(&text(true)).await;
    let whoami = |stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>| async move {
        use tokio::io::AsyncReadExt;
        let mut stream = stream;
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), stream.read_to_end(&mut rest)).await;
        String::from_utf8_lossy(&rest).into_owned()
    };
    let answer = whoami(
        connect_as(required.addr, Some(issue("billing-service", &["billing.internal"])))
            .await
            .unwrap(),
    )
    .await;
    assert!(
        answer.contains("CN=billing-service|billing.internal|consumer="),
        "{answer}"
    );
    assert!(
        !answer.contains("forged"),
        "a client's own header never passes: {answer}"
    );
    assert!(
        connect_as(required.addr, None).await.is_err(),
        "required: no certificate, no connection"
    );
    // A certificate from another CA is refused.
    let elsewhere = tempfile::tempdir().unwrap();
    let strangers = TestCa::new(elsewhere.path(), "strangers");
    let stranger = |cn: &str, names: &[&str]| strangers.issue(cn, names);
    assert!(connect_as(required.addr, Some(stranger("intruder", &["x.internal"])))
        .await
        .is_err());

    // As a consumer: `mtls` names who the certificate is, for ACLs and limits.
    let ask = |path: &'static str, identity| {
        let addr = required.addr;
        async move {
            let mut stream = connect_as(addr, identity).await.unwrap();
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            // The first request of connect_as was /whoami; this is the second.
            stream
                .write_all(
                    format!("GET {path} HTTP/1.1\r\nhost: api.example.com\r\nconnection: close\r\n\r\n").as_bytes(),
                )
                .await
                .unwrap();
            let mut all = Vec::new();
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), stream.read_to_end(&mut all)).await;
            String::from_utf8_lossy(&all).into_owned()
        }
    };
    let known = ask("/internal", Some(issue("billing-service", &["billing.internal"]))).await;
    assert!(known.contains("consumer=billing"), "{known}");
    let unknown = ask("/internal", Some(issue("reports", &["reports.internal"]))).await;
    assert!(
        unknown.contains("401 Unauthorized") && unknown.contains("belongs to no consumer"),
        "{unknown}"
    );

    // Optional: asked for, checked if given, not required.
    let optional = Gateway::start(&text(false)).await;
    let anonymous = whoami(connect_as(optional.addr, None).await.unwrap()).await;
    assert!(
        anonymous.contains("200 OK") && anonymous.ends_with("||consumer="),
        "{anonymous}"
    );
}

/// One request over HTTP/3 (quinn and h3, TLS 1.3, ALPN `h3`): the answer's
/// head and body.
async fn h3_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> (http::Response<()>, Vec<u8>) {
    h3_request_finishing_after(addr, method, path, body, std::time::Duration::ZERO).await
}

/// As `h3_request`, with the client's end of the request (its FIN) sent
/// `pause` after the rest: a server that answers without the body stops the
/// stream first.
async fn h3_request_finishing_after(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
    pause: std::time::Duration,
) -> (http::Response<()>, Vec<u8>) {
    use bytes::Buf;
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let quic = quinn::crypto::rustls::QuicClientConfig::try_from(tls).unwrap();
    let mut endpoint = quinn::Endpoint::client("127.0.0.1:0".parse().unwrap()).unwrap();
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(quic)));
    let connection = endpoint.connect(addr, "api.example.com").unwrap().await.unwrap();
    let (mut driver, mut sender) = h3::client::new(h3_quinn::Connection::new(connection)).await.unwrap();
    tokio::spawn(async move { std::future::poll_fn(|cx| driver.poll_close(cx)).await });
    let request = http::Request::builder()
        .method(method)
        .uri(format!("https://api.example.com{path}"))
        .body(())
        .unwrap();
    let mut stream = sender.send_request(request).await.unwrap();
    if !body.is_empty() {
        stream.send_data(Bytes::from(body)).await.unwrap();
    }
    tokio::time::sleep(pause).await;
    if let Err(error) = stream.finish().await {
        // A server that needs no more of the request may stop it, with
        // H3_NO_ERROR (RFC 9114 section 4.1), and still answer. h3 reports
        // the peer's STOP_SENDING as `RemoteTerminate`, which its own
        // `is_h3_no_error` does not cover; it comes when the answer is made
        // before the client's FIN is written (a GET to no route, on a busy
        // machine).
        let stopped_without_error = matches!(
            &error,
            h3::error::StreamError::RemoteTerminate { code, .. } if *code == h3::error::Code::H3_NO_ERROR
        );
        assert!(
            error.is_h3_no_error() || stopped_without_error,
            "the request stream was stopped with an error: {error}"
        );
    }
    let response = stream.recv_response().await.unwrap();
    let mut received = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.unwrap() {
        received.extend_from_slice(&chunk.copy_to_bytes(chunk.remaining()));
    }
    (response, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http3_is_served_on_the_same_port_and_announced_by_alt_svc() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, _) = certificate(dir.path(), "api", &["api.example.com"]);
    // An upstream that says what it got: method, protocol told, body length.
    let upstream = serve(|request: http::Request<hyper::body::Incoming>| async move {
        let method = request.method().to_string();
        let proto = request.headers().get("x-forwarded-proto").cloned();
        let via = request.headers().get("via").cloned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        let text = format!(
            "{method} {} {} {}",
            proto.map(|v| v.to_str().unwrap().to_string()).unwrap_or_default(),
            via.map(|v| v.to_str().unwrap().to_string()).unwrap_or_default(),
            body.len()
        );
        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(text))))
    })
    .await;
    let yaml = config(
        r#"
listeners:
  - { name: secure, addr: "127.0.0.1:0", tls: { certificates: [ { cert: "$C", key: "$K" } ], http3: true } }
access_log: { enabled: false }
upstreams: { echo: { targets: [ "$U" ] } }
routes:
  - { name: echo, match: { path: /echo }, upstream: echo }
"#,
        &[
            ("C", cert.display().to_string()),
            ("K", key.display().to_string()),
            ("U", upstream.to_string()),
        ],
    );
    let gw = Gateway::start(&yaml).await;

    // HTTPS over TCP announces HTTP/3 on the same port.
    let h1 = connect(gw.addr, "api.example.com", &[b"http/1.1"], false)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(h1)).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("/echo")
        .header("host", "api.example.com")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        response.headers()["alt-svc"],
        format!("h3=\":{}\"; ma=86400", gw.addr.port()).as_str()
    );

    // HTTP/3: a GET, and a POST whose 300 KiB body streams up.
    let (response, body) = h3_request(gw.addr, "GET", "/echo", Vec::new()).await;
    assert_eq!(response.status(), 200);
    assert_eq!(String::from_utf8(body).unwrap(), "GET https 3 portico 0");
    assert!(response.headers().contains_key("x-request-id"));
    let (response, body) = h3_request(gw.addr, "POST", "/echo", vec![b'x'; 300 * 1024]).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        format!("POST https 3 portico {}", 300 * 1024)
    );

    // The gateway's own answers too.
    let (response, body) = h3_request(gw.addr, "GET", "/nowhere", Vec::new()).await;
    assert_eq!(response.status(), 404);
    assert_eq!(response.headers()["content-type"], "application/problem+json");
    let problem: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(problem["status"], 404);
    // Answered before the client ends its request: the stream is stopped
    // with H3_NO_ERROR and the answer still arrives whole.
    let (response, body) = h3_request_finishing_after(
        gw.addr,
        "GET",
        "/nowhere",
        Vec::new(),
        std::time::Duration::from_millis(200),
    )
    .await;
    assert_eq!(response.status(), 404);
    assert!(!body.is_empty());
}
