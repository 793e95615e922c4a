//! How connections to a pool's targets are made: TCP, then TLS when the
//! upstream has `tls:`, then the HTTP/1.1 or HTTP/2 handshake.

use super::http1;
use super::Incoming;
use crate::body::RequestBody;
use crate::config::model::{UpstreamProtocol, UpstreamTlsConfig};
use crate::proxy::tls::ca_roots;
use http::uri::{Authority, Scheme};
use http::{Request, Response, Uri, Version};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use xxhash_rust::xxh3::xxh3_64;

/// Why a request could not be exchanged with a target.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    #[error("{0}")]
    Protocol(&'static str),
    #[error("HTTP/2 exchange failed: {0}")]
    Http(#[source] hyper::Error),
    #[error("HTTP/1.1 exchange failed: {0}")]
    Http1(#[source] http1::Error),
}

/// A pool's way to its targets. Equal when made from the same config and
/// the same file contents: a reload keeps the connections only then.
pub struct Transport {
    pub protocol: UpstreamProtocol,
    tls: Option<UpstreamTls>,
    source: Option<UpstreamTlsConfig>,
    /// Of the CA, certificate and key files' bytes.
    fingerprint: u64,
}

struct UpstreamTls {
    connector: tokio_rustls::TlsConnector,
    /// `server_name:`, else each target's host.
    server_name: Option<ServerName<'static>>,
}

impl PartialEq for Transport {
    fn eq(&self, other: &Self) -> bool {
        self.protocol == other.protocol && self.source == other.source && self.fingerprint == other.fingerprint
    }
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Default for Transport {
    /// HTTP/1.1 over plain TCP.
    fn default() -> Transport {
        Transport {
            protocol: UpstreamProtocol::Http1,
            tls: None,
            source: None,
            fingerprint: 0,
        }
    }
}

/// The way HTTP/2 requests are sent upstream: one connection, multiplexed.
/// Windows larger than HTTP/2's 64 KiB default, so one stream can fill a
/// fast link (a streaming download, a large gRPC message).
const STREAM_WINDOW: u32 = 1 << 20;
const CONNECTION_WINDOW: u32 = 4 << 20;
/// Pings on an idle HTTP/2 connection find a target that vanished without
/// closing it, before a request is sent into the void.
const PING_INTERVAL: Duration = Duration::from_secs(30);
const PING_TIMEOUT: Duration = Duration::from_secs(10);

impl Transport {
    /// Reads the files `tls` names; errors are `(field under tls, message)`.
    pub fn compile(
        protocol: UpstreamProtocol,
        tls: Option<&UpstreamTlsConfig>,
    ) -> Result<Transport, Vec<(String, String)>> {
        let mut errors = Vec::new();
        match (protocol, tls) {
            (UpstreamProtocol::Http2, None) => errors.push((
                "protocol".into(),
                "`http2` is HTTP/2 over TLS: add `tls: {}` (with `ca:` for a private CA), or use `h2c` for cleartext HTTP/2".into(),
            )),
            (UpstreamProtocol::H2c, Some(_)) => errors.push((
                "protocol".into(),
                "`h2c` is cleartext HTTP/2: use `http2` for HTTP/2 over TLS".into(),
            )),
            _ => {}
        }
        let Some(config) = tls else {
            return match errors.is_empty() {
                true => Ok(Transport {
                    protocol,
                    ..Transport::default()
                }),
                false => Err(errors),
            };
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut fingerprint = 0u64;
        let mut read = |field: &str, path: &str, errors: &mut Vec<(String, String)>| match std::fs::read(path) {
            Ok(bytes) => {
                fingerprint = fingerprint.rotate_left(17) ^ xxh3_64(&bytes);
                Some(bytes)
            }
            Err(e) => {
                errors.push((format!("tls.{field}"), format!("cannot read {path}: {e}")));
                None
            }
        };

        let roots = match &config.ca {
            Some(path) => read("ca", path, &mut errors).and_then(|bytes| match ca_roots(path, &bytes) {
                Ok(roots) => Some(roots),
                Err(e) => {
                    errors.push(("tls.ca".into(), e));
                    None
                }
            }),
            None => Some(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        };
        if !config.verify && config.ca.is_some() {
            errors.push((
                "tls.verify".into(),
                "`ca` is only used to verify: remove `verify: false`, or remove `ca`".into(),
            ));
        }
        let identity = match (&config.client_cert, &config.client_key) {
            (Some(cert), Some(key)) => {
                let chain = read("client_cert", cert, &mut errors);
                let key_bytes = read("client_key", key, &mut errors);
                match (chain, key_bytes) {
                    (Some(chain), Some(key_bytes)) => match client_identity(cert, &chain, key, &key_bytes) {
                        Ok(identity) => Some(identity),
                        Err(e) => {
                            errors.push(e);
                            None
                        }
                    },
                    _ => None,
                }
            }
            (None, None) => None,
            (Some(_), None) => {
                errors.push(("tls.client_key".into(), "`client_cert` needs its `client_key`".into()));
                None
            }
            (None, Some(_)) => {
                errors.push(("tls.client_cert".into(), "`client_key` needs its `client_cert`".into()));
                None
            }
        };
        let server_name = match &config.server_name {
            Some(name) => match ServerName::try_from(name.clone()) {
                Ok(name) => Some(name),
                Err(_) => {
                    errors.push((
                        "tls.server_name".into(),
                        format!("{name:?} is not a DNS name or IP address"),
                    ));
                    None
                }
            },
            None => None,
        };
        let (Some(roots), true) = (roots, errors.is_empty()) else {
            return Err(errors);
        };

        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![("tls".to_string(), e.to_string())])?;
        let builder = match config.verify {
            true => builder.with_root_certificates(roots),
            false => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider))),
        };
        let mut client = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| vec![("tls.client_key".to_string(), format!("cannot be used: {e}"))])?,
            None => builder.with_no_client_auth(),
        };
        client.alpn_protocols = match protocol {
            UpstreamProtocol::Http2 => vec![b"h2".to_vec()],
            _ => vec![b"http/1.1".to_vec()],
        };
        Ok(Transport {
            protocol,
            tls: Some(UpstreamTls {
                connector: tokio_rustls::TlsConnector::from(Arc::new(client)),
                server_name,
            }),
            source: Some(config.clone()),
            fingerprint,
        })
    }

    pub fn is_multiplexed(&self) -> bool {
        self.protocol != UpstreamProtocol::Http1
    }

    /// A new connection to `target`, made within `timeout` (TCP, TLS and
    /// the HTTP handshake together).
    pub async fn connect(&self, target: &super::Target, timeout: Duration) -> Result<Sender, SendError> {
        let connecting = async {
            let stream = match target.socket_addr {
                Some(addr) => TcpStream::connect(addr).await,
                None => TcpStream::connect(target.authority.as_str()).await,
            }
            .map_err(SendError::Connect)?;
            let _ = stream.set_nodelay(true);
            let http1 = self.protocol == UpstreamProtocol::Http1;
            match &self.tls {
                None if http1 => Ok(Sender::Http1(http1::Connection::new(http1::Stream::Plain(stream)))),
                None => self.handshake_http2(stream).await,
                Some(tls) => {
                    let name = match &tls.server_name {
                        Some(name) => name.clone(),
                        None => host_name(&target.authority)?,
                    };
                    let stream = tls.connector.connect(name, stream).await.map_err(SendError::Tls)?;
                    if http1 {
                        return Ok(Sender::Http1(http1::Connection::new(http1::Stream::Tls(Box::new(
                            stream,
                        )))));
                    }
                    if stream.get_ref().1.alpn_protocol() != Some(b"h2") {
                        return Err(SendError::Protocol("the target did not agree to HTTP/2 (ALPN h2)"));
                    }
                    self.handshake_http2(stream).await
                }
            }
        };
        // Boxed: a connection is made rarely, and its state (DNS, TCP, TLS
        // and HTTP/2 handshakes, about 7.8 KB) would otherwise be part of
        // every request's future, which hyper and tokio move whole.
        tokio::time::timeout(timeout, Box::pin(connecting))
            .await
            .map_err(|_| SendError::ConnectTimeout(timeout))?
    }

    /// HTTP/2's handshake; its connection is driven by a task of its own,
    /// since every request shares it.
    async fn handshake_http2<S>(&self, stream: S) -> Result<Sender, SendError>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = TokioIo::new(stream);
        let (sender, connection) = http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .initial_stream_window_size(STREAM_WINDOW)
            .initial_connection_window_size(CONNECTION_WINDOW)
            .keep_alive_interval(PING_INTERVAL)
            .keep_alive_timeout(PING_TIMEOUT)
            .handshake(io)
            .await
            .map_err(SendError::Http)?;
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%error, "upstream HTTP/2 connection ended with an error");
            }
        });
        let scheme = match self.tls {
            Some(_) => Scheme::HTTPS,
            None => Scheme::HTTP,
        };
        Ok(Sender::Http2(sender, scheme))
    }
}

/// A new connection: an HTTP/1.1 connection to lend to one request at a
/// time, or an HTTP/2 connection's sending half.
pub enum Sender {
    Http1(Box<http1::Connection>),
    /// With the scheme its requests carry.
    Http2(http2::SendRequest<RequestBody>, Scheme),
}

impl Sender {
    /// Sends on this connection (for requests outside the pool: health checks).
    pub async fn send_request(self, mut request: Request<RequestBody>) -> Result<Response<Incoming>, SendError> {
        match self {
            Sender::Http1(connection) => {
                let response = connection.send(request, None).await.map_err(SendError::Http1)?;
                Ok(response.map(Incoming::Http1))
            }
            Sender::Http2(mut sender, scheme) => {
                to_http2(&mut request, scheme, None);
                let response = sender.send_request(request).await.map_err(SendError::Http)?;
                Ok(response.map(Incoming::Http2))
            }
        }
    }
}

/// HTTP/2 carries the host in the request's `:authority` and the scheme in
/// `:scheme`: the Host header becomes the URI's authority (the target's when
/// there is none).
pub fn to_http2<B>(request: &mut Request<B>, scheme: Scheme, target: Option<&Authority>) {
    let host = request.headers_mut().remove(http::header::HOST);
    let authority = host
        .and_then(|host| Authority::try_from(host.as_bytes()).ok())
        .or_else(|| request.uri().authority().cloned())
        .or_else(|| target.cloned());
    let mut parts = std::mem::take(request.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = authority;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    if let Ok(uri) = Uri::from_parts(parts) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = Version::HTTP_2;
}

/// The name a target is checked against when the upstream sets no
/// `server_name`: its host, a DNS name or an IP address.
fn host_name(authority: &Authority) -> Result<ServerName<'static>, SendError> {
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|_| SendError::Protocol("the target's host is not a name TLS can check: set `tls.server_name`"))
}

type Identity = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

fn client_identity(cert: &str, chain: &[u8], key: &str, key_bytes: &[u8]) -> Result<Identity, (String, String)> {
    let chain = CertificateDer::pem_slice_iter(chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            (
                "tls.client_cert".to_string(),
                format!("{cert} is not PEM certificates: {e}"),
            )
        })?;
    if chain.is_empty() {
        return Err(("tls.client_cert".into(), format!("{cert} holds no PEM certificate")));
    }
    let key = PrivateKeyDer::from_pem_slice(key_bytes).map_err(|e| {
        (
            "tls.client_key".to_string(),
            format!("{key} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    Ok((chain, key))
}

/// `verify: false`: any certificate is taken, though the handshake's
/// signatures are still checked, so the connection is at least encrypted
/// to whoever holds the certificate's key.
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http2_requests_carry_the_host_as_authority() {
        let mut request = Request::get("/a?b=1")
            .header("host", "api.example:8443")
            .body(())
            .unwrap();
        to_http2(&mut request, Scheme::HTTPS, None);
        assert_eq!(request.uri().to_string(), "https://api.example:8443/a?b=1");
        assert!(request.headers().get("host").is_none());
        // Sent again (a retry): the authority stays; without one, the target's.
        to_http2(&mut request, Scheme::HTTPS, None);
        assert_eq!(request.uri().to_string(), "https://api.example:8443/a?b=1");
        let mut bare = Request::get("/x").body(()).unwrap();
        to_http2(&mut bare, Scheme::HTTP, Some(&"10.0.0.1:50051".parse().unwrap()));
        assert_eq!(bare.uri().to_string(), "http://10.0.0.1:50051/x");
    }

    #[test]
    fn protocol_and_tls_must_agree() {
        let http2 = Transport::compile(UpstreamProtocol::Http2, None).unwrap_err();
        assert!(http2[0].1.contains("h2c"), "{http2:?}");
        let tls = UpstreamTlsConfig {
            ca: None,
            client_cert: Some("c.pem".into()),
            client_key: None,
            server_name: Some("not a name!".into()),
            verify: true,
        };
        let errors = Transport::compile(UpstreamProtocol::H2c, Some(&tls)).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["protocol", "tls.client_key", "tls.server_name"], "{errors:?}");
    }
}
