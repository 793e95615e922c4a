//! One 2048-bit RS256 signature check, as jsonwebtoken's `rust_crypto`
//! backend makes it (the pure-Rust `rsa` crate) and as ring makes it (what
//! `plugins/jwt/ring_rsa.rs` gives the `jwt` plugin): the cost behind a `jwt`
//! route whose tokens are all new. Usage: bench/rsa_verify.sh [CHECKS]

use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind, EncodingKey, Header, Validation};
use std::time::Instant;

fn main() {
    let checks: u32 = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(2_000);
    let fixture = |name: &str| {
        let path = format!("{}/tests/fixtures/jwt/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    };
    let signing = EncodingKey::from_rsa_pem(&fixture("rsa1.key")).expect("the test key signs");
    let key = DecodingKey::from_rsa_pem(&fixture("rsa1.pub")).expect("the test key verifies");
    let claims = serde_json::json!({ "sub": "user-42", "exp": 4_000_000_000u64 });
    let token = jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &signing).expect("signed");

    // jsonwebtoken's own backend: nothing installed in this process, so `rust_crypto`.
    let validation = Validation::new(Algorithm::RS256);
    let started = Instant::now();
    for _ in 0..checks {
        jsonwebtoken::decode::<serde_json::Value>(&token, &key, &validation).expect("verifies");
    }
    let rust_crypto = started.elapsed() / checks;

    let DecodingKeyKind::SecretOrDer(der) = key.kind() else {
        unreachable!("a PEM key is kept as DER")
    };
    let (message, signature) = token.rsplit_once('.').expect("a JWS has three parts");
    let signature = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(signature)
        .expect("base64url");
    let public = ring::signature::UnparsedPublicKey::new(&ring::signature::RSA_PKCS1_2048_8192_SHA256, der);
    let started = Instant::now();
    for _ in 0..checks {
        public.verify(message.as_bytes(), &signature).expect("verifies");
    }
    let ring = started.elapsed() / checks;

    println!("RS256, 2048-bit key, {checks} checks each:");
    println!("  jsonwebtoken rust_crypto (rsa crate), the whole decode: {rust_crypto:?} a check");
    println!("  ring, the signature alone: {ring:?} a check");
}
