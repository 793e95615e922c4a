//! TLS termination with rustls: certificates chosen by SNI from the names
//! they hold (exact and wildcard, checked by webpki as a client would),
//! the first as the default; TLS 1.2 and 1.3; ALPN `h2` and `http/1.1`;
//! session resumption by tickets and a session cache; OCSP responses
//! stapled from files.

use crate::config::model::{TlsConfig, TlsVersion};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::sync::Arc;
use xxhash_rust::xxh3::xxh3_64;

/// A listener's compiled TLS. Equal when made from the same config and the
/// same file contents, so that a reload with new files takes them.
#[derive(Debug)]
pub struct TlsSettings {
    source: TlsConfig,
    /// Of the files' bytes.
    fingerprint: u64,
    pub server: Arc<ServerConfig>,
    /// HTTP/3's, when the listener has `http3: true`.
    pub quic: Option<quinn::ServerConfig>,
}

impl PartialEq for TlsSettings {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source && self.fingerprint == other.fingerprint
    }
}

/// Certificates by the names they are valid for.
#[derive(Debug)]
struct BySni {
    certificates: Vec<Arc<CertifiedKey>>,
}

impl ResolvesServerCert for BySni {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let default = self.certificates.first().cloned();
        let Some(name) = hello
            .server_name()
            .and_then(|n| ServerName::try_from(n.to_string()).ok())
        else {
            return default;
        };
        self.certificates
            .iter()
            .find(|key| {
                key.end_entity_cert()
                    .ok()
                    .and_then(|der| webpki::EndEntityCert::try_from(der).ok())
                    .is_some_and(|cert| cert.verify_is_valid_for_subject_name(&name).is_ok())
            })
            .cloned()
            .or(default)
    }
}

/// Reads the certificates and keys; errors are `(field, message)`.
pub fn compile(config: &TlsConfig) -> Result<TlsSettings, Vec<(String, String)>> {
    let mut errors = Vec::new();
    if config.certificates.is_empty() {
        errors.push(("certificates".into(), "give at least one { cert, key }".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut certificates = Vec::new();
    let mut fingerprint = 0u64;
    for (i, pair) in config.certificates.iter().enumerate() {
        let at = |field: &str| format!("certificates[{i}].{field}");
        let cert_bytes = std::fs::read(&pair.cert).map_err(|e| format!("cannot read {}: {e}", pair.cert));
        let key_bytes = std::fs::read(&pair.key).map_err(|e| format!("cannot read {}: {e}", pair.key));
        let (cert_bytes, key_bytes) = match (cert_bytes, key_bytes) {
            (Ok(c), Ok(k)) => (c, k),
            (c, k) => {
                if let Err(e) = c {
                    errors.push((at("cert"), e));
                }
                if let Err(e) = k {
                    errors.push((at("key"), e));
                }
                continue;
            }
        };
        fingerprint ^= xxh3_64(&cert_bytes).rotate_left(i as u32) ^ xxh3_64(&key_bytes).rotate_left(i as u32 + 17);
        let chain: Vec<CertificateDer<'static>> =
            match CertificateDer::pem_slice_iter(&cert_bytes).collect::<Result<Vec<_>, _>>() {
                Ok(chain) if !chain.is_empty() => chain,
                Ok(_) => {
                    errors.push((at("cert"), format!("{} holds no PEM certificate", pair.cert)));
                    continue;
                }
                Err(e) => {
                    errors.push((at("cert"), format!("{} is not PEM certificates: {e}", pair.cert)));
                    continue;
                }
            };
        let key = match PrivateKeyDer::from_pem_slice(&key_bytes) {
            Ok(key) => key,
            Err(e) => {
                errors.push((
                    at("key"),
                    format!("{} holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}", pair.key),
                ));
                continue;
            }
        };
        let ocsp = match &pair.ocsp {
            Some(path) => match std::fs::read(path) {
                Ok(bytes) if bytes.is_empty() => {
                    errors.push((at("ocsp"), format!("{path} is empty: give a DER OCSP response")));
                    continue;
                }
                Ok(bytes) => {
                    fingerprint ^= xxh3_64(&bytes).rotate_left(i as u32 + 31);
                    Some(bytes)
                }
                Err(e) => {
                    errors.push((at("ocsp"), format!("cannot read {path}: {e}")));
                    continue;
                }
            },
            None => None,
        };
        match CertifiedKey::from_der(chain, key, &provider) {
            Ok(mut certified) => {
                certified.ocsp = ocsp;
                certificates.push(Arc::new(certified))
            }
            Err(e) => errors.push((
                at("key"),
                format!("does not go with the certificate, or is of no supported kind: {e}"),
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match config.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let verifier = match &config.client_auth {
        None => None,
        Some(client_auth) => {
            let (verifier, ca_bytes) = client_verifier(&client_auth.ca, client_auth.required, provider.clone())
                .map_err(|e| vec![("client_auth.ca".to_string(), e)])?;
            fingerprint ^= xxh3_64(&ca_bytes).rotate_left(7);
            Some(verifier)
        }
    };
    let resolver = Arc::new(BySni { certificates });
    let server_config = |versions: &[&'static rustls::SupportedProtocolVersion], alpn: &[&[u8]]| {
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .map_err(|e| vec![("min_version".to_string(), e.to_string())])?;
        let builder = match &verifier {
            None => builder.with_no_client_auth(),
            Some(verifier) => builder.with_client_cert_verifier(verifier.clone()),
        };
        let mut server = builder.with_cert_resolver(resolver.clone());
        server.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        // Resumption: the in-memory session cache is rustls's default; tickets too.
        if let Ok(ticketer) = rustls::crypto::ring::Ticketer::new() {
            server.ticketer = ticketer;
        }
        Ok::<_, Vec<(String, String)>>(server)
    };
    let server = server_config(versions, &[b"h2", b"http/1.1"])?;
    // QUIC is TLS 1.3 only, and speaks h3.
    let quic = match config.http3 {
        false => None,
        true => {
            let tls = server_config(&[&rustls::version::TLS13], &[b"h3"])?;
            let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
                .map_err(|e| vec![("http3".to_string(), e.to_string())])?;
            Some(quinn::ServerConfig::with_crypto(Arc::new(crypto)))
        }
    };
    Ok(TlsSettings {
        source: config.clone(),
        fingerprint,
        server: Arc::new(server),
        quic,
    })
}

/// The CA certificates of a PEM bundle (`path` names it in errors).
pub fn ca_roots(path: &str, bytes: &[u8]) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in CertificateDer::pem_slice_iter(bytes) {
        let certificate = certificate.map_err(|e| format!("{path} is not PEM certificates: {e}"))?;
        roots
            .add(certificate)
            .map_err(|e| format!("{path}: a CA certificate cannot be used: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(roots)
}

/// Checks client certificates against the CA bundle in `path`.
fn client_verifier(
    path: &str,
    required: bool,
    provider: Arc<rustls::crypto::CryptoProvider>,
) -> Result<(Arc<dyn rustls::server::danger::ClientCertVerifier>, Vec<u8>), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let roots = ca_roots(path, &bytes)?;
    let builder = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
    let builder = if required {
        builder
    } else {
        builder.allow_unauthenticated()
    };
    let verifier = builder.build().map_err(|e| format!("{path}: {e}"))?;
    Ok((verifier, bytes))
}

/// A verified client certificate: what upstreams and plugins may know of it.
#[derive(Debug, Clone)]
pub struct ClientCertificate {
    /// The subject, RFC 4514 style: `CN=app,O=Example`.
    pub subject: String,
    /// The subject alternative names: DNS names, URIs, e-mail addresses.
    pub names: Vec<String>,
}

impl ClientCertificate {
    /// Reads the end-entity certificate rustls verified.
    pub fn of(der: &[u8]) -> Option<ClientCertificate> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let names = cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(n) => Some(n.to_string()),
                        x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                        x509_parser::extensions::GeneralName::RFC822Name(m) => Some(m.to_string()),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Some(ClientCertificate {
            subject: distinguished_name(cert.subject()),
            names,
        })
    }
}

/// A name as RFC 4514 writes it (`CN=app,O=Example`, `+` inside a
/// multi-valued RDN), each value escaped: a CN of `app,O=Example` is
/// `CN=app\,O\=Example`, never the two attributes it spells.
fn distinguished_name(name: &x509_parser::x509::X509Name<'_>) -> String {
    use x509_parser::objects::{oid2abbrev, oid_registry};
    let mut out = String::new();
    for (i, rdn) in name.iter_rdn().enumerate() {
        if i > 0 {
            out.push(',');
        }
        for (j, attribute) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            match oid2abbrev(attribute.attr_type(), oid_registry()) {
                Ok(abbreviation) => out.push_str(abbreviation),
                Err(_) => out.push_str(&attribute.attr_type().to_id_string()),
            }
            out.push('=');
            match attribute.as_str() {
                Ok(value) => escape_dn_value(value, &mut out),
                // Not a string type: its bytes in hex, as RFC 4514 section 2.4 writes them.
                Err(_) => {
                    out.push('#');
                    for byte in attribute.attr_value().data.iter() {
                        out.push_str(&format!("{byte:02x}"));
                    }
                }
            }
        }
    }
    out
}

/// RFC 4514 section 2.4: the characters that would end or split a value.
fn escape_dn_value(value: &str, out: &mut String) {
    let last = value.chars().count().saturating_sub(1);
    for (i, ch) in value.chars().enumerate() {
        let special = matches!(ch, ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=')
            || (i == 0 && matches!(ch, ' ' | '#'))
            || (i == last && ch == ' ');
        if special {
            out.push('\\');
        }
        if ch == '\0' {
            out.push_str("\\00");
        } else {
            out.push(ch);
        }
    }
}

#[cfg(test)]
mod distinguished_name_tests {
    use super::*;

    #[test]
    fn values_are_escaped_so_they_cannot_spell_other_attributes() {
        let escaped = |value: &str| {
            let mut out = String::new();
            escape_dn_value(value, &mut out);
            out
        };
        assert_eq!(escaped("app"), "app");
        assert_eq!(escaped("app,O=Example"), "app\\,O\\=Example");
        assert_eq!(escaped("a+b"), "a\\+b");
        assert_eq!(escaped(" lead"), "\\ lead");
        assert_eq!(escaped("#x"), "\\#x");
        assert_eq!(escaped("trail "), "trail\\ ");
    }

    #[test]
    fn a_certificate_subject_is_written_as_rfc_4514_does() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "app,O=Example");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Example");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let read = ClientCertificate::of(cert.der()).unwrap();
        assert_eq!(read.subject, "CN=app\\,O\\=Example,O=Example");
    }
}
