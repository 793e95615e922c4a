//! `oauth2_introspection`: opaque Bearer tokens checked with the
//! authorization server (RFC 7662), authenticating as a client (HTTP Basic
//! with the client's id and secret). Answers are remembered by the token's
//! SHA-256: active ones until the token's `exp` and at most `cache`,
//! inactive ones briefly, so that a replayed bad token does not reach the
//! server each time. An unreachable server is a 503: the client's token was
//! not the problem.

use super::{fetch, Auth, AuthFuture, Decision, Phase, Plugin, RequestContext, Setup, waiting};
use crate::config::units::Duration as ConfigDuration;
use crate::consumers::{Consumers, Identity};
use crate::error::{ErrorKind, ProxyError};
use base64::Engine;
use bytes::Bytes;
use http::HeaderValue;
use http_body_util::Full;
use serde::Deserialize;
use serde_json::{Map, Value as Json};
use serde_yaml_ng::Value;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

/// Inactive answers are remembered this long at most.
const NEGATIVE_TTL: u64 = 30;
const CACHE_LIMIT: usize = 50_000;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    url: String,
    client_id: String,
    client_secret: String,
    /// The longest an active answer is trusted (less if the token expires sooner).
    #[serde(default = "default_cache")]
    cache: ConfigDuration,
    #[serde(default = "default_timeout")]
    timeout: ConfigDuration,
    /// The answer's member naming the consumer.
    #[serde(default = "default_consumer_claim")]
    consumer_claim: String,
    #[serde(default)]
    anonymous: bool,
}

fn default_cache() -> ConfigDuration {
    ConfigDuration::from_secs(300)
}
fn default_timeout() -> ConfigDuration {
    ConfigDuration::from_secs(5)
}
fn default_consumer_claim() -> String {
    "sub".into()
}

struct Answer {
    /// `None`: inactive.
    claims: Option<Arc<Map<String, Json>>>,
    until: u64,
}

pub struct Introspection {
    url: http::Uri,
    authorization: HeaderValue,
    cache_for: u64,
    timeout: Duration,
    consumer_claim: String,
    consumers: Arc<Consumers>,
    anonymous: bool,
    answers: Mutex<HashMap<[u8; 32], Arc<Answer>>>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let url = fetch::parse_url(&config.url).map_err(|e| vec![setup.error("url", e)])?;
    // RFC 6749 2.3.1: the id and secret are form-encoded, then joined for Basic.
    let encode = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let credentials = format!("{}:{}", encode(&config.client_id), encode(&config.client_secret));
    let authorization = HeaderValue::from_str(&format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(credentials)
    ))
    .map_err(|_| vec![setup.error("client_id", "the client id and secret must be text")])?;
    if config.timeout.get().is_zero() {
        return Err(vec![setup.error("timeout", "must be above zero")]);
    }
    Ok(Arc::new(Introspection {
        url,
        authorization,
        cache_for: config.cache.get().as_secs(),
        timeout: config.timeout.get(),
        consumer_claim: config.consumer_claim,
        consumers: setup.context.consumers.clone(),
        anonymous: config.anonymous,
        answers: Mutex::new(HashMap::new()),
    }))
}

fn now() -> u64 {
    crate::clock::system_now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn bearer(request: &http::request::Parts) -> Option<&str> {
    crate::consumers::bearer(&request.headers)
}

impl Introspection {
    async fn ask(&self, token: &str) -> Result<Arc<Answer>, String> {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("token", token)
            .append_pair("token_type_hint", "access_token")
            .finish();
        let request = http::Request::post(self.url.clone())
            .header(http::header::AUTHORIZATION, self.authorization.clone())
            .header(http::header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let (status, body) = fetch::send(request, self.timeout).await?;
        if !status.is_success() {
            return Err(format!("the introspection endpoint answered {status}"));
        }
        let answer: Map<String, Json> =
            serde_json::from_slice(&body).map_err(|e| format!("the introspection answer is not JSON: {e}"))?;
        let now = now();
        if answer.get("active") != Some(&Json::Bool(true)) {
            return Ok(Arc::new(Answer {
                claims: None,
                until: now + NEGATIVE_TTL.min(self.cache_for),
            }));
        }
        let exp = answer.get("exp").and_then(Json::as_u64);
        Ok(Arc::new(Answer {
            until: exp.map_or(now + self.cache_for, |exp| exp.min(now + self.cache_for)),
            claims: Some(Arc::new(answer)),
        }))
    }

    async fn answer(&self, token: &str) -> Result<Arc<Answer>, String> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = now();
        let cached = self.answers.lock().ok().and_then(|a| a.get(&digest).cloned());
        if let Some(answer) = cached.filter(|a| now < a.until) {
            return Ok(answer);
        }
        let answer = self.ask(token).await?;
        if let Ok(mut answers) = self.answers.lock() {
            if answers.len() >= CACHE_LIMIT {
                answers.retain(|_, a| now < a.until);
                if answers.len() >= CACHE_LIMIT {
                    answers.clear();
                }
            }
            answers.insert(digest, answer.clone());
        }
        Ok(answer)
    }
}

impl Plugin for Introspection {
    fn name(&self) -> &'static str {
        "oauth2_introspection"
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
            let Some(token) = bearer(request) else {
                return Auth::NoCredentials;
            };
            match self.answer(token).await {
                Ok(answer) => match &answer.claims {
                    Some(claims) => Auth::Authenticated(Identity::of_token(
                        &self.consumers,
                        claims.clone(),
                        &self.consumer_claim,
                        "oauth2_introspection",
                    )),
                    None => {
                        let mut error = ProxyError::rejected(
                            ErrorKind::Unauthorized,
                            "oauth2_introspection",
                            "inactive_token",
                            "the token is not active",
                        );
                        error.challenge = Some(HeaderValue::from_static(
                            "Bearer error=\"invalid_token\", error_description=\"the token is not active\"",
                        ));
                        Auth::Failed(error)
                    }
                },
                Err(why) => {
                    tracing::warn!(url = %self.url, error = %why, "token introspection failed");
                    Auth::Failed(ProxyError::rejected(
                        ErrorKind::AuthUnavailable,
                        "oauth2_introspection",
                        "introspection_unavailable",
                        "the token cannot be checked now; try again later",
                    ))
                }
            }
        })
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(HeaderValue::from_static("Bearer"))
    }

    fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    fn explain(&self, request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        match bearer(request) {
            None => Decision::pass("no Bearer token"),
            Some(_) => Decision::pass(format!("the token would be checked with {}", self.url)),
        }
    }
}
