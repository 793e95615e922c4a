//! `jwt`: Bearer tokens (RFC 7519, RFC 7515), checked with the
//! `jsonwebtoken` crate.
//!
//! Keys (`keys`) are inline (an HMAC secret, a PEM public key) or fetched from a
//! JWKS URL: in the background every `refresh`, and at once for a token
//! whose `kid` is unknown, at most once per `min_refresh` so that made-up
//! `kid`s cannot make Portico hammer the identity provider. When the provider
//! cannot be reached the last good keys keep serving for `max_stale`; with no
//! usable keys the answer is 503, since the client's token was not the problem.
//!
//! Each key allows only the algorithms of its own family (and of `alg`, when
//! a JWK names one): `alg: none` never parses, and an HS256 token cannot be
//! checked against an RSA public key used as an HMAC secret.
//!
//! A verified token is remembered by its SHA-256 until it expires (at most
//! `CACHE_TTL`), so a client's repeated token costs no signature check;
//! `exp` and `nbf` are checked again on every use. RSA signatures are
//! checked by ring (`ring_rsa`).

mod keys;
mod ring_rsa;

use super::{fetch, Auth, AuthFuture, Decision, Phase, Plugin, RequestContext, Setup, waiting};
use crate::config::units::Duration as ConfigDuration;
use crate::consumers::{Consumers, Identity};
use crate::error::{ErrorKind, ProxyError};
use keys::{pem_key, Jwks, Key, Keys, ALL_ALGORITHMS};
use http::{HeaderName, HeaderValue};
use indexmap::IndexMap;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// How long a verified token is trusted without checking its signature again.
const CACHE_TTL: u64 = 300;
/// Cache shards (a lock each) and entries per shard.
const SHARDS: usize = 16;
const SHARD_LIMIT: usize = 4096;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// HMAC secret (HS256/384/512).
    secret: Option<String>,
    /// A PEM public key (RSA, EC P-256/P-384, Ed25519).
    public_key: Option<String>,
    jwks_url: Option<String>,
    /// Algorithms accepted; default: every algorithm of the key's family.
    algorithms: Option<Vec<String>>,
    issuer: Option<String>,
    audience: Option<String>,
    #[serde(default = "default_leeway")]
    leeway: ConfigDuration,
    /// Claims a token must carry.
    #[serde(default)]
    required_claims: Vec<String>,
    /// The claim naming the consumer (matched against consumer names);
    /// without a match the identity is the claim's value.
    #[serde(default = "default_consumer_claim")]
    consumer_claim: String,
    /// Claims sent upstream as headers: `{ sub: X-User-Id }`.
    #[serde(default)]
    claims_to_headers: IndexMap<String, String>,
    #[serde(default)]
    jwks: JwksTimings,
    #[serde(default)]
    anonymous: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
struct JwksTimings {
    refresh: ConfigDuration,
    min_refresh: ConfigDuration,
    max_stale: ConfigDuration,
}

impl Default for JwksTimings {
    fn default() -> Self {
        JwksTimings {
            refresh: ConfigDuration::from_secs(300),
            min_refresh: ConfigDuration::from_secs(10),
            max_stale: ConfigDuration::from_secs(24 * 3600),
        }
    }
}

fn default_leeway() -> ConfigDuration {
    ConfigDuration::from_secs(30)
}

fn default_consumer_claim() -> String {
    "sub".into()
}

struct Verified {
    claims: Arc<Map<String, Json>>,
    exp: Option<u64>,
    nbf: Option<u64>,
    cached_at: u64,
}

pub struct Jwt {
    keys: Keys,
    validation: Validation,
    leeway: u64,
    required_claims: Vec<String>,
    consumer_claim: String,
    claims_to_headers: Vec<(String, HeaderName)>,
    header_names: Vec<HeaderName>,
    consumers: Arc<Consumers>,
    anonymous: bool,
    cache: Vec<Mutex<HashMap<[u8; 32], Arc<Verified>>>>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    ring_rsa::install();
    let mut errors = Vec::new();
    let allowed = match &config.algorithms {
        Some(names) => {
            let mut algorithms = Vec::new();
            for (i, name) in names.iter().enumerate() {
                match name.parse::<Algorithm>() {
                    Ok(alg) => algorithms.push(alg),
                    Err(_) => errors.push(setup.error(
                        &format!("algorithms[{i}]"),
                        format!("{name:?} is not a JWS algorithm: use HS256/384/512, RS256/384/512, PS256/384/512, ES256/384 or EdDSA"),
                    )),
                }
            }
            algorithms
        }
        None => ALL_ALGORITHMS.to_vec(),
    };
    let sources = [
        config.secret.is_some(),
        config.public_key.is_some(),
        config.jwks_url.is_some(),
    ];
    if sources.iter().filter(|s| **s).count() != 1 {
        errors.push(setup.error("", "give the keys one way: `secret`, `public_key` (PEM) or `jwks_url`"));
    }
    let keys = if let Some(secret) = &config.secret {
        if secret.len() < 32 {
            errors.push(setup.error("secret", "an HMAC secret must be at least 32 bytes (RFC 7518 3.2)"));
        }
        Some(Keys::Inline(vec![Key::secret(secret.as_bytes(), &allowed)]))
    } else if let Some(pem) = &config.public_key {
        match pem_key(pem.as_bytes(), &allowed) {
            Ok(key) => Some(Keys::Inline(vec![key])),
            Err(e) => {
                errors.push(setup.error("public_key", e));
                None
            }
        }
    } else if let Some(url) = &config.jwks_url {
        match fetch::parse_url(url) {
            Ok(url) => Some(Keys::Jwks(Jwks::shared(Jwks::new(
                url,
                allowed.clone(),
                config.jwks.refresh.get(),
                config.jwks.min_refresh.get(),
                config.jwks.max_stale.get(),
            )))),
            Err(e) => {
                errors.push(setup.error("jwks_url", e));
                None
            }
        }
    } else {
        None
    };
    if let Some(Keys::Inline(keys)) = &keys {
        if keys.iter().any(|k| k.algorithms.is_empty()) {
            errors.push(setup.error(
                "algorithms",
                "none of these algorithms can be verified with the key given",
            ));
        }
    }
    let mut claims_to_headers = Vec::new();
    for (claim, header) in &config.claims_to_headers {
        match HeaderName::from_bytes(header.as_bytes()) {
            Ok(name) => claims_to_headers.push((claim.clone(), name)),
            Err(_) => errors.push(setup.error(
                &format!("claims_to_headers.{claim}"),
                format!("{header:?} is not a header name"),
            )),
        }
    }
    if config.jwks.min_refresh.get().is_zero() || config.jwks.refresh.get().is_zero() {
        errors.push(setup.error("jwks", "`refresh` and `min_refresh` must be above zero"));
    }
    let Some(keys) = keys.filter(|_| errors.is_empty()) else {
        return Err(errors);
    };
    let mut validation = Validation::new(Algorithm::RS256);
    validation.leeway = config.leeway.get().as_secs();
    validation.validate_nbf = true;
    validation.required_spec_claims = ["exp"].into_iter().map(str::to_string).collect();
    if let Some(issuer) = &config.issuer {
        validation.set_issuer(&[issuer]);
    }
    match &config.audience {
        Some(audience) => validation.set_audience(&[audience]),
        None => validation.validate_aud = false,
    }
    let header_names = claims_to_headers.iter().map(|(_, h)| h.clone()).collect();
    Ok(Arc::new(Jwt {
        keys,
        validation,
        leeway: config.leeway.get().as_secs(),
        required_claims: config.required_claims,
        consumer_claim: config.consumer_claim,
        claims_to_headers,
        header_names,
        consumers: setup.context.consumers.clone(),
        anonymous: config.anonymous,
        cache: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
    }))
}

fn now() -> u64 {
    crate::clock::since_epoch().as_secs()
}

/// Why a token was refused, for the client and the metrics.
struct Refusal {
    reason: &'static str,
    detail: String,
    unavailable: bool,
}

impl Refusal {
    fn invalid(reason: &'static str, detail: impl Into<String>) -> Refusal {
        Refusal {
            reason,
            detail: detail.into(),
            unavailable: false,
        }
    }
}

fn describe(error: &jsonwebtoken::errors::Error) -> Refusal {
    use jsonwebtoken::errors::ErrorKind as K;
    match error.kind() {
        K::ExpiredSignature => Refusal::invalid("expired", "the token has expired"),
        K::ImmatureSignature => Refusal::invalid("not_yet_valid", "the token is not valid yet (nbf)"),
        K::InvalidIssuer => Refusal::invalid("wrong_issuer", "the token's issuer is not accepted"),
        K::InvalidAudience => Refusal::invalid("wrong_audience", "the token is not for this audience"),
        K::InvalidSignature => Refusal::invalid("bad_signature", "the token's signature does not verify"),
        K::InvalidAlgorithm | K::MissingAlgorithm => Refusal::invalid(
            "algorithm_not_allowed",
            "the token's algorithm is not allowed for this key",
        ),
        K::MissingRequiredClaim(claim) => {
            Refusal::invalid("missing_claim", format!("the token lacks the required claim {claim:?}"))
        }
        _ => Refusal::invalid("malformed", "the token is not a well-formed JWT"),
    }
}

impl Jwt {
    fn bearer<'r>(&self, request: &'r http::request::Parts) -> Option<&'r str> {
        crate::consumers::bearer(&request.headers)
    }

    fn shard(&self, digest: &[u8; 32]) -> &Mutex<HashMap<[u8; 32], Arc<Verified>>> {
        &self.cache[usize::from(digest[0]) % SHARDS]
    }

    /// The token's claims, from the cache or by verifying it.
    async fn verify(&self, token: &str) -> Result<Arc<Map<String, Json>>, Refusal> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now();
        let cached = self
            .shard(&digest)
            .lock()
            .ok()
            .and_then(|shard| shard.get(&digest).cloned());
        if let Some(hit) = cached.filter(|v| now < v.cached_at + CACHE_TTL) {
            if hit.exp.is_some_and(|exp| now > exp.saturating_add(self.leeway)) {
                return Err(Refusal::invalid("expired", "the token has expired"));
            }
            if hit.nbf.is_some_and(|nbf| nbf > now.saturating_add(self.leeway)) {
                return Err(Refusal::invalid("not_yet_valid", "the token is not valid yet (nbf)"));
            }
            return Ok(hit.claims.clone());
        }
        let header = jsonwebtoken::decode_header(token).map_err(|e| {
            // `alg: none` and unknown algorithms fail here, before any key is tried.
            let mut refusal = describe(&e);
            if matches!(
                e.kind(),
                jsonwebtoken::errors::ErrorKind::Json(_) | jsonwebtoken::errors::ErrorKind::InvalidAlgorithmName
            ) {
                refusal = Refusal::invalid("algorithm_not_allowed", "the token's algorithm is not allowed");
            }
            refusal
        })?;
        let claims = match &self.keys {
            Keys::Inline(keys) => self.check_with(token, &header, keys)?,
            Keys::Jwks(jwks) => {
                let mut set = jwks.usable();
                if !set.as_ref().is_some_and(|set| set.knows(&header.kid)) {
                    // A new key the provider has just rotated in, or a made-up kid.
                    jwks.refresh_now(true).await;
                    set = jwks.usable();
                }
                let Some(set) = set else {
                    return Err(Refusal {
                        reason: "keys_unavailable",
                        detail: "the identity provider's keys are not available; try again later".into(),
                        unavailable: true,
                    });
                };
                self.check_with(token, &header, &set.keys)?
            }
        };
        let verified = Arc::new(Verified {
            exp: claims.get("exp").map(|v| numeric_date(v).unwrap_or(0)),
            nbf: claims.get("nbf").map(|v| numeric_date(v).unwrap_or(u64::MAX)),
            claims: Arc::new(claims),
            cached_at: now,
        });
        if let Ok(mut shard) = self.shard(&digest).lock() {
            if shard.len() >= SHARD_LIMIT {
                shard.clear();
            }
            shard.insert(digest, verified.clone());
        }
        Ok(verified.claims.clone())
    }

    fn check_with(
        &self,
        token: &str,
        header: &jsonwebtoken::Header,
        keys: &[Key],
    ) -> Result<Map<String, Json>, Refusal> {
        let candidates = keys
            .iter()
            .filter(|k| header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            .filter(|k| k.algorithms.contains(&header.alg));
        let mut last = None;
        for key in candidates {
            let mut validation = self.validation.clone();
            validation.algorithms = key.algorithms.clone();
            match jsonwebtoken::decode::<Map<String, Json>>(token, &key.decoding, &validation) {
                Ok(data) => {
                    // The library checks only registered claims for presence.
                    if let Some(claim) = self.required_claims.iter().find(|c| !data.claims.contains_key(*c)) {
                        return Err(Refusal::invalid(
                            "missing_claim",
                            format!("the token lacks the required claim {claim:?}"),
                        ));
                    }
                    return Ok(data.claims);
                }
                Err(e) => last = Some(describe(&e)),
            }
        }
        Err(last.unwrap_or_else(|| match &header.kid {
            Some(_) if keys.iter().all(|k| k.kid != header.kid) => {
                Refusal::invalid("unknown_kid", "no key of the identity provider has the token's kid")
            }
            _ => Refusal::invalid(
                "algorithm_not_allowed",
                "the token's algorithm is not allowed for this key",
            ),
        }))
    }

    fn identity(&self, claims: Arc<Map<String, Json>>) -> Identity {
        Identity::of_token(&self.consumers, claims, &self.consumer_claim, "jwt")
    }

    fn refuse(&self, refusal: Refusal) -> Auth {
        let kind = if refusal.unavailable {
            ErrorKind::AuthUnavailable
        } else {
            ErrorKind::Unauthorized
        };
        let mut error = ProxyError::rejected(kind, "jwt", refusal.reason, refusal.detail.clone());
        if !refusal.unavailable {
            // RFC 6750 3: the description is ours, never the token's content.
            error.challenge = HeaderValue::from_str(&format!(
                "Bearer error=\"invalid_token\", error_description=\"{}\"",
                refusal.detail
            ))
            .ok();
        }
        Auth::Failed(error)
    }
}

impl Plugin for Jwt {
    fn name(&self) -> &'static str {
        "jwt"
    }

    fn phase(&self) -> Phase {
        Phase::Authenticate
    }

    fn start(&self) {
        if let Keys::Jwks(jwks) = &self.keys {
            jwks.start();
        }
    }

    fn authenticate<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        _ctx: &'a RequestContext<'_>,
    ) -> AuthFuture<'a> {
        waiting(async move {
            let Some(token) = self.bearer(request) else {
                return Auth::NoCredentials;
            };
            let claims = match self.verify(token).await {
                Ok(claims) => claims,
                Err(refusal) => return self.refuse(refusal),
            };
            for (claim, header) in &self.claims_to_headers {
                let value = match claims.get(claim) {
                    Some(Json::String(text)) => HeaderValue::from_str(text).ok(),
                    Some(other) => HeaderValue::from_str(&other.to_string()).ok(),
                    None => None,
                };
                if let Some(value) = value {
                    request.headers.insert(header, value);
                }
            }
            Auth::Authenticated(self.identity(claims))
        })
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(HeaderValue::from_static("Bearer"))
    }

    fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    fn trusted_headers(&self) -> &[HeaderName] {
        &self.header_names
    }

    fn identify(&self, request: &http::request::Parts) -> Option<Identity> {
        match self.explain_token(request)? {
            Ok(claims) => Some(self.identity(Arc::new(claims))),
            Err(_) => None,
        }
    }

    fn explain(&self, request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        let Some(token) = self.bearer(request) else {
            return Decision::pass("no Bearer token");
        };
        let header = match jsonwebtoken::decode_header(token) {
            Ok(header) => header,
            Err(_) => {
                return Decision::deny(
                    http::StatusCode::UNAUTHORIZED,
                    "not a JWT, or its algorithm is not allowed",
                )
            }
        };
        if let Keys::Jwks(jwks) = &self.keys {
            let known = jwks
                .usable()
                .is_some_and(|set| set.knows(&header.kid));
            return Decision::pass(format!(
                "{:?} token, kid {:?}: {}; checked with the JWKS when sent",
                header.alg,
                header.kid.as_deref().unwrap_or("none"),
                if known {
                    "a known key"
                } else {
                    "not among the keys held now"
                }
            ));
        }
        match self.explain_token(request) {
            Some(Ok(claims)) => {
                let expiry = claims
                    .get("exp")
                    .and_then(Json::as_u64)
                    .map_or("no exp".to_string(), |exp| {
                        format!("exp in {} min", exp.saturating_sub(now()) / 60)
                    });
                Decision::pass(format!("signature ok ({:?}), {expiry}", header.alg))
            }
            Some(Err(refusal)) => Decision::deny(http::StatusCode::UNAUTHORIZED, refusal.detail),
            None => Decision::pass("no Bearer token"),
        }
    }
}

impl Jwt {
    /// Checks a token against inline keys without the cache: for `explain`.
    /// `None` without a Bearer token, or with keys from a JWKS.
    fn explain_token(&self, request: &http::request::Parts) -> Option<Result<Map<String, Json>, Refusal>> {
        let token = self.bearer(request)?;
        let Keys::Inline(keys) = &self.keys else { return None };
        Some(
            jsonwebtoken::decode_header(token)
                .map_err(|e| describe(&e))
                .and_then(|header| self.check_with(token, &header, keys)),
        )
    }
}

/// A NumericDate (RFC 7519 section 2): seconds, possibly with a fraction,
/// taken to the whole second below. `None` for anything else, which the
/// cache then reads as expired (`exp`) or not yet valid (`nbf`).
fn numeric_date(value: &Json) -> Option<u64> {
    value.as_u64().or_else(|| {
        let seconds = value.as_f64()?;
        (seconds.is_finite() && seconds >= 0.0).then(|| seconds.floor() as u64)
    })
}

#[cfg(test)]
mod numeric_date_tests {
    use super::*;

    #[test]
    fn numeric_dates_may_have_fractions_and_anything_else_is_refused() {
        assert_eq!(numeric_date(&serde_json::json!(1_700_000_000)), Some(1_700_000_000));
        assert_eq!(numeric_date(&serde_json::json!(1_700_000_000.9)), Some(1_700_000_000));
        assert_eq!(numeric_date(&serde_json::json!(-1.0)), None);
        assert_eq!(numeric_date(&serde_json::json!("1700000000")), None);
        assert_eq!(numeric_date(&serde_json::json!(1e300)), Some(u64::MAX));
    }
}
