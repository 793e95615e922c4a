//! RSA token signatures (RS256/384/512, PS256/384/512) checked by `ring`, every
//! other algorithm by jsonwebtoken's own `rust_crypto` backend.
//!
//! `rust_crypto` verifies RSA with the pure-Rust `rsa` crate, whose big-number
//! arithmetic made a 2048-bit RS256 check cost about eight times ring's
//! (`bench/rsa_verify.sh`): with a new token on every request (no cache hit)
//! that check was most of a `jwt` route's CPU. ring is the library rustls
//! already runs on.
//!
//! ring refuses moduli under 2048 bits, which RFC 7518 §3.3 forbids for these
//! algorithms anyway: a token signed with a smaller key reads as a bad signature.

use jsonwebtoken::crypto::{rust_crypto, CryptoProvider, JwtVerifier};
use jsonwebtoken::errors::{ErrorKind, Result};
use jsonwebtoken::signature::{self, Verifier};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};
use ring::signature::{RsaParameters, RsaPublicKeyComponents, UnparsedPublicKey};
use std::sync::LazyLock;

static PROVIDER: LazyLock<CryptoProvider> = LazyLock::new(|| CryptoProvider {
    verifier_factory: verifier,
    ..rust_crypto::DEFAULT_PROVIDER.clone()
});

/// Makes this the process's jsonwebtoken backend; before any token is checked,
/// since jsonwebtoken fixes its backend at first use. Later calls change nothing.
pub fn install() {
    let _ = LazyLock::force(&PROVIDER).install_default();
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>> {
    let parameters: &'static RsaParameters = match algorithm {
        Algorithm::RS256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &ring::signature::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &ring::signature::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &ring::signature::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &ring::signature::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &ring::signature::RSA_PSS_2048_8192_SHA512,
        _ => return (rust_crypto::DEFAULT_PROVIDER.verifier_factory)(algorithm, key),
    };
    if key.family() != AlgorithmFamily::Rsa {
        return Err(ErrorKind::InvalidKeyFormat.into());
    }
    Ok(Box::new(RsaVerifier {
        algorithm: *algorithm,
        parameters,
        key: key.kind().clone(),
    }))
}

struct RsaVerifier {
    algorithm: Algorithm,
    parameters: &'static RsaParameters,
    key: DecodingKeyKind,
}

impl Verifier<Vec<u8>> for RsaVerifier {
    fn verify(&self, message: &[u8], signature: &Vec<u8>) -> std::result::Result<(), signature::Error> {
        let checked = match &self.key {
            // jsonwebtoken keeps a PEM or DER key as its PKCS#1 RSAPublicKey, the form ring reads.
            DecodingKeyKind::SecretOrDer(der) => UnparsedPublicKey::new(self.parameters, der).verify(message, signature),
            DecodingKeyKind::RsaModulusExponent { n, e } => {
                RsaPublicKeyComponents { n, e }.verify(self.parameters, message, signature)
            }
        };
        checked.map_err(|_| signature::Error::new())
    }
}

impl JwtVerifier for RsaVerifier {
    fn algorithm(&self) -> Algorithm {
        self.algorithm
    }
}
