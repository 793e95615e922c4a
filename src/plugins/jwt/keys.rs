//! Where the `jwt` plugin's keys come from: an HMAC secret or a PEM public
//! key given inline, or a JWKS fetched from the identity provider and kept
//! fresh in the background. Each key carries the algorithms it may verify:
//! only those of its own family, and of its JWK's `alg` when it names one.

use crate::plugins::fetch;
use arc_swap::ArcSwapOption;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, DecodingKeyKind};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One verification key and the algorithms it may verify.
pub(super) struct Key {
    pub kid: Option<String>,
    pub decoding: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

pub(super) struct KeySet {
    pub keys: Vec<Key>,
    fetched_at: SystemTime,
}

/// Keys from a JWKS URL, kept fresh in the background.
pub(super) struct Jwks {
    url: http::Uri,
    allowed: Vec<Algorithm>,
    keys: ArcSwapOption<KeySet>,
    refresh: Duration,
    min_refresh: Duration,
    max_stale: Duration,
    /// Milliseconds since the epoch of the last fetch attempt.
    last_attempt: AtomicU64,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    started: AtomicBool,
}

pub(super) enum Keys {
    Inline(Vec<Key>),
    Jwks(Arc<Jwks>),
}

impl KeySet {
    /// Whether a token with this `kid` has a key here (any key, without one).
    pub fn knows(&self, kid: &Option<String>) -> bool {
        self.keys.iter().any(|k| kid.is_none() || k.kid == *kid)
    }
}

impl Key {
    /// An HMAC secret: it verifies the HS algorithms allowed.
    pub fn secret(secret: &[u8], allowed: &[Algorithm]) -> Key {
        Key {
            kid: None,
            decoding: DecodingKey::from_secret(secret),
            algorithms: of_family(allowed, &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512]),
        }
    }
}

pub(super) const ALL_ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

const RSA: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

fn of_family(allowed: &[Algorithm], family: &[Algorithm]) -> Vec<Algorithm> {
    allowed.iter().copied().filter(|a| family.contains(a)).collect()
}

/// RSA keys smaller than this never verify (ring refuses them, as RFC 7518
/// §3.3 requires), so an inline one is refused with the config.
const MIN_RSA_BITS: usize = 2048;

/// The size of an RSA public key's modulus, in bits.
fn rsa_bits(key: &DecodingKey) -> Option<usize> {
    use pkcs1::der::Decode;
    let DecodingKeyKind::SecretOrDer(der) = key.kind() else {
        return None;
    };
    let modulus = pkcs1::RsaPublicKey::from_der(der).ok()?.modulus;
    let bytes = modulus.as_bytes();
    let first = *bytes.first()?;
    Some(bytes.len() * 8 - first.leading_zeros() as usize)
}

/// A PEM public key: its type decides the algorithms it may verify.
pub(super) fn pem_key(pem: &[u8], allowed: &[Algorithm]) -> Result<Key, String> {
    let (decoding, family): (DecodingKey, &[Algorithm]) = if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        match rsa_bits(&key) {
            Some(bits) if bits >= MIN_RSA_BITS => {}
            Some(bits) => {
                return Err(format!(
                    "an RSA key of {bits} bits: RS and PS tokens need {MIN_RSA_BITS} or more (RFC 7518 3.3); give a larger key"
                ))
            }
            None => return Err("an RSA public key whose modulus cannot be read".into()),
        }
        (key, &RSA)
    } else if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        // The curve decides the algorithm; both are allowed and the
        // signature check refuses the wrong one.
        (key, &[Algorithm::ES256, Algorithm::ES384])
    } else if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        (key, &[Algorithm::EdDSA])
    } else {
        return Err("not a PEM public key (RSA, EC P-256/P-384 or Ed25519)".into());
    };
    Ok(Key {
        kid: None,
        decoding,
        algorithms: of_family(allowed, family),
    })
}

impl Jwks {
    pub fn new(url: http::Uri, allowed: Vec<Algorithm>, refresh: Duration, min_refresh: Duration, max_stale: Duration) -> Jwks {
        Jwks {
            url,
            allowed,
            keys: ArcSwapOption::empty(),
            refresh,
            min_refresh,
            max_stale,
            last_attempt: AtomicU64::new(0),
            fetching: tokio::sync::Mutex::new(()),
            started: AtomicBool::new(false),
        }
    }

    /// The live key set of the same URL and settings, if there is one, so
    /// that routes sharing an identity provider share its keys and a reload
    /// keeps them (the running config holds them while the next one builds).
    pub fn shared(new: Jwks) -> Arc<Jwks> {
        static LIVE: Mutex<Vec<Weak<Jwks>>> = Mutex::new(Vec::new());
        let mut live = LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        live.retain(|weak| weak.strong_count() > 0);
        let same = |old: &Jwks| {
            old.url == new.url
                && old.allowed == new.allowed
                && (old.refresh, old.min_refresh, old.max_stale) == (new.refresh, new.min_refresh, new.max_stale)
        };
        if let Some(existing) = live.iter().filter_map(Weak::upgrade).find(|old| same(old)) {
            return existing;
        }
        let jwks = Arc::new(new);
        live.push(Arc::downgrade(&jwks));
        jwks
    }

    pub fn usable(&self) -> Option<Arc<KeySet>> {
        let set = self.keys.load_full()?;
        let age = crate::clock::system_now().duration_since(set.fetched_at).unwrap_or_default();
        (age <= self.max_stale).then_some(set)
    }

    /// Fetches the key set now, unless another fetch ran within `min_refresh`
    /// (then waits for any fetch in progress). Keeps the last good keys on failure.
    pub async fn refresh_now(&self, forced_by_kid: bool) {
        let _one = self.fetching.lock().await;
        let now_ms = crate::clock::system_now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let last = self.last_attempt.load(Ordering::Relaxed);
        if forced_by_kid && now_ms.saturating_sub(last) < self.min_refresh.as_millis() as u64 {
            return;
        }
        self.last_attempt.store(now_ms, Ordering::Relaxed);
        match fetch::get_json::<JwkSet>(&self.url, FETCH_TIMEOUT).await {
            Ok(set) => {
                let keys: Vec<Key> = set.keys.iter().filter_map(|jwk| self.key(jwk)).collect();
                tracing::info!(url = %self.url, keys = keys.len(), "JWKS fetched");
                self.keys.store(Some(Arc::new(KeySet {
                    keys,
                    fetched_at: crate::clock::system_now(),
                })));
            }
            Err(error) => {
                tracing::warn!(url = %self.url, %error, "JWKS fetch failed; the last good keys stay");
            }
        }
    }

    fn key(&self, jwk: &jsonwebtoken::jwk::Jwk) -> Option<Key> {
        use jsonwebtoken::jwk::AlgorithmParameters as P;
        let decoding = DecodingKey::from_jwk(jwk).ok()?;
        let family: &[Algorithm] = match &jwk.algorithm {
            P::RSA(_) => &RSA,
            P::EllipticCurve(_) => &[Algorithm::ES256, Algorithm::ES384],
            P::OctetKeyPair(_) => &[Algorithm::EdDSA],
            P::OctetKey(_) => &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512],
        };
        let mut algorithms = of_family(&self.allowed, family);
        if let Some(named) = jwk
            .common
            .key_algorithm
            .and_then(|a| a.to_string().parse::<Algorithm>().ok())
        {
            algorithms.retain(|a| *a == named);
        }
        Some(Key {
            kid: jwk.common.key_id.clone(),
            decoding,
            algorithms,
        })
    }

    pub fn start(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::Relaxed) {
            return;
        }
        let jwks: Weak<Jwks> = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                let Some(this) = jwks.upgrade() else { return };
                this.refresh_now(false).await;
                // Sooner after a failure, so that keys arrive once the provider is back.
                let wait = if this.keys.load().is_some() {
                    this.refresh
                } else {
                    this.min_refresh
                };
                drop(this);
                tokio::time::sleep(wait).await;
            }
        });
    }
}

