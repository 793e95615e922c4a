//! `basic_auth`: RFC 7617 `Authorization: Basic`, checked against the
//! consumers' bcrypt or argon2 password hashes.
//!
//! A hash check costs tens of milliseconds of CPU by design, so it runs on
//! the blocking pool, never on a thread that serves requests, and a
//! successful check is remembered (by a SHA-256 of the credentials, never the
//! password itself) so that a client's next requests cost a lookup.

use super::{Auth, AuthFuture, Decision, Phase, Plugin, RequestContext, Setup, waiting};
use crate::consumers::{Consumer, Consumers, Identity};
use crate::error::{ErrorKind, ProxyError};
use crate::password::verify;
use base64::Engine;
use http::HeaderValue;
use serde::Deserialize;
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Verified credentials remembered; the cache is emptied when it is full.
const CACHE_LIMIT: usize = 10_000;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default = "default_realm")]
    realm: String,
    /// Send the Authorization header upstream too.
    #[serde(default)]
    keep_credentials: bool,
    #[serde(default)]
    anonymous: bool,
}

fn default_realm() -> String {
    "portico".into()
}

pub struct BasicAuth {
    consumers: Arc<Consumers>,
    keep_credentials: bool,
    anonymous: bool,
    challenge: HeaderValue,
    verified: Mutex<HashMap<[u8; 32], Arc<Consumer>>>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let challenge = HeaderValue::from_str(&format!("Basic realm=\"{}\", charset=\"UTF-8\"", config.realm))
        .map_err(|_| vec![setup.error("realm", "the realm must be visible ASCII without quotes")])?;
    if config.realm.contains('"') {
        return Err(vec![
            setup.error("realm", "the realm must be visible ASCII without quotes")
        ]);
    }
    Ok(Arc::new(BasicAuth {
        consumers: setup.context.consumers.clone(),
        keep_credentials: config.keep_credentials,
        anonymous: config.anonymous,
        challenge,
        verified: Mutex::new(HashMap::new()),
    }))
}

/// `Basic <base64(user:password)>`, decoded.
fn credentials(value: &HeaderValue) -> Option<(String, Vec<u8>)> {
    let text = value.to_str().ok()?;
    let (scheme, encoded) = text.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(encoded.trim()).ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    let user = String::from_utf8(decoded[..colon].to_vec()).ok()?;
    Some((user, decoded[colon + 1..].to_vec()))
}

impl BasicAuth {
    fn fail(&self, reason: &'static str, detail: &'static str) -> Auth {
        let mut error = ProxyError::rejected(ErrorKind::Unauthorized, "basic_auth", reason, detail);
        error.challenge = Some(self.challenge.clone());
        Auth::Failed(error)
    }

    fn remember(&self, digest: [u8; 32], consumer: Arc<Consumer>) {
        if let Ok(mut verified) = self.verified.lock() {
            if verified.len() >= CACHE_LIMIT {
                verified.clear();
            }
            verified.insert(digest, consumer);
        }
    }
}

/// Is this `Authorization` header a Basic one at all?
fn is_basic(request: &http::request::Parts) -> Option<&HeaderValue> {
    let value = request.headers.get(http::header::AUTHORIZATION)?;
    let scheme = value.as_bytes().split(|b| *b == b' ').next()?;
    scheme.eq_ignore_ascii_case(b"basic").then_some(value)
}

impl Plugin for BasicAuth {
    fn name(&self) -> &'static str {
        "basic_auth"
    }

    fn phase(&self) -> Phase {
        Phase::Authenticate
    }

    fn authenticate<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        _ctx: &'a RequestContext<'_>,
    ) -> AuthFuture<'a> {
        waiting(async move {
            let Some(value) = is_basic(request) else {
                return Auth::NoCredentials;
            };
            let Some((user, password)) = credentials(value) else {
                return self.fail("malformed", "the Basic credentials are not base64 of user:password");
            };
            let digest: [u8; 32] = Sha256::new()
                .chain_update(user.as_bytes())
                .chain_update([0])
                .chain_update(&password)
                .finalize()
                .into();
            let cached = self.verified.lock().ok().and_then(|v| v.get(&digest).cloned());
            let consumer = match cached {
                Some(consumer) => consumer,
                None => {
                    let found = self.consumers.by_username(&user).cloned();
                    let hash = found
                        .as_ref()
                        .and_then(|c| c.basic.as_ref())
                        .map(|(_, hash)| hash.clone());
                    // An unknown user costs a hash too, another consumer's: the
                    // answer's time does not tell which usernames exist.
                    let (known, hash) = match hash.or_else(|| self.consumers.any_password_hash()) {
                        Some(hash) => (found.is_some(), hash),
                        None => return self.fail("invalid_credentials", "the username or password is wrong"),
                    };
                    let ok = tokio::task::spawn_blocking(move || verify(&password, &hash))
                        .await
                        .unwrap_or(false);
                    let (true, true, Some(consumer)) = (ok, known, found) else {
                        return self.fail("invalid_credentials", "the username or password is wrong");
                    };
                    self.remember(digest, consumer.clone());
                    consumer
                }
            };
            if !self.keep_credentials {
                request.headers.remove(http::header::AUTHORIZATION);
            }
            Auth::Authenticated(Identity::of(&consumer, "basic_auth"))
        })
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    fn identify(&self, request: &http::request::Parts) -> Option<Identity> {
        // The user's consumer; `explain` checks no password.
        let (user, _) = credentials(is_basic(request)?)?;
        self.consumers.by_username(&user).map(|c| Identity::of(c, "basic_auth"))
    }

    fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    fn explain(&self, request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        let Some(value) = is_basic(request) else {
            return Decision::pass("no Basic credentials");
        };
        match credentials(value) {
            None => Decision::deny(http::StatusCode::UNAUTHORIZED, "malformed Basic credentials"),
            Some((user, _)) => match self.consumers.by_username(&user) {
                // The password is not checked here: explain runs no hash.
                Some(consumer) => Decision::pass(format!(
                    "user {user:?} of consumer {:?} (password checked when sent)",
                    &*consumer.name
                )),
                None => Decision::deny(http::StatusCode::UNAUTHORIZED, format!("no consumer has user {user:?}")),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_decode() {
        let value = HeaderValue::from_static("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
        assert_eq!(credentials(&value), Some(("Aladdin".into(), b"open sesame".to_vec())));
        assert_eq!(credentials(&HeaderValue::from_static("Basic !!!")), None);
        assert_eq!(credentials(&HeaderValue::from_static("Basic bm9jb2xvbg==")), None);
    }
}
