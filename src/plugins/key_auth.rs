//! `key_auth`: an API key in a header (default `X-API-Key`) or a query
//! parameter, looked up among the consumers' keys (kept as SHA-256 digests,
//! compared in constant time). The key is removed before the request goes
//! upstream unless `keep_key` says otherwise.

use super::{Auth, AuthFuture, Decision, Phase, Plugin, RequestContext, Setup, at_once};
use crate::consumers::{Consumers, Identity};
use crate::error::{ErrorKind, ProxyError};
use http::{HeaderName, HeaderValue};
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    #[serde(default = "default_header")]
    header: String,
    /// Also look for the key in this query parameter.
    query: Option<String>,
    /// Send the key upstream too.
    #[serde(default)]
    keep_key: bool,
    /// Let requests without a key in, as the `anonymous` consumer.
    #[serde(default)]
    anonymous: bool,
}

fn default_header() -> String {
    "x-api-key".into()
}

pub struct KeyAuth {
    header: HeaderName,
    query: Option<String>,
    keep_key: bool,
    anonymous: bool,
    consumers: Arc<Consumers>,
    challenge: HeaderValue,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let header = HeaderName::from_bytes(config.header.as_bytes())
        .map_err(|_| vec![setup.error("header", format!("{:?} is not a header name", config.header))])?;
    if config.query.as_deref() == Some("") {
        return Err(vec![
            setup.error("query", "name the query parameter, or leave `query` out")
        ]);
    }
    let challenge = HeaderValue::from_str(&format!("ApiKey header=\"{header}\""))
        .unwrap_or_else(|_| HeaderValue::from_static("ApiKey"));
    Ok(Arc::new(KeyAuth {
        header,
        query: config.query,
        keep_key: config.keep_key,
        anonymous: config.anonymous,
        consumers: setup.context.consumers.clone(),
        challenge,
    }))
}

impl KeyAuth {
    /// The key the request carries, header first (borrowed: no copy).
    fn presented<'r>(&self, request: &'r http::request::Parts) -> Option<Cow<'r, [u8]>> {
        if let Some(value) = request.headers.get(&self.header) {
            return Some(Cow::Borrowed(value.as_bytes()));
        }
        let name = self.query.as_deref()?;
        let query = request.uri.query()?;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| Cow::Owned(v.into_owned().into_bytes()))
    }

    fn remove_key(&self, request: &mut http::request::Parts) {
        request.headers.remove(&self.header);
        let (Some(name), Some(query)) = (self.query.as_deref(), request.uri.query()) else {
            return;
        };
        if !form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == name) {
            return;
        }
        let kept: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form_urlencoded::parse(query.as_bytes()).filter(|(k, _)| k != name))
            .finish();
        let path_and_query = if kept.is_empty() {
            request.uri.path().to_string()
        } else {
            format!("{}?{kept}", request.uri.path())
        };
        let mut parts = request.uri.clone().into_parts();
        parts.path_and_query = path_and_query.parse().ok();
        if let Ok(uri) = http::Uri::from_parts(parts) {
            request.uri = uri;
        }
    }
}

impl Plugin for KeyAuth {
    fn name(&self) -> &'static str {
        "key_auth"
    }

    fn phase(&self) -> Phase {
        Phase::Authenticate
    }

    fn authenticate<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        _ctx: &'a RequestContext<'_>,
    ) -> AuthFuture<'a> {
        // The consumer is found before the key is removed from the request.
        let found = self.presented(request).map(|key| self.consumers.by_api_key(&key));
        let outcome = match found {
            None => Auth::NoCredentials,
            Some(found) => match found {
                Some(consumer) => {
                    if !self.keep_key {
                        self.remove_key(request);
                    }
                    Auth::Authenticated(Identity::of(consumer, "key_auth"))
                }
                None => {
                    let mut error = ProxyError::rejected(
                        ErrorKind::Unauthorized,
                        "key_auth",
                        "invalid_key",
                        "the API key is not valid",
                    );
                    error.challenge = Some(self.challenge.clone());
                    Auth::Failed(error)
                }
            },
        };
        at_once(outcome)
    }

    fn challenge(&self) -> Option<HeaderValue> {
        Some(self.challenge.clone())
    }

    fn identify(&self, request: &http::request::Parts) -> Option<Identity> {
        let key = self.presented(request)?;
        self.consumers.by_api_key(&key).map(|c| Identity::of(c, "key_auth"))
    }

    fn allows_anonymous(&self) -> bool {
        self.anonymous
    }

    fn explain(&self, request: &http::request::Parts, _ctx: &RequestContext<'_>) -> Decision {
        match self.presented(request) {
            None if self.anonymous => Decision::pass("no key: goes on as `anonymous`"),
            None => Decision::pass(format!("no key in {} (another method may authenticate)", self.header)),
            Some(key) => match self.consumers.by_api_key(&key) {
                Some(consumer) => Decision::pass(format!("key of consumer {:?}", &*consumer.name)),
                None => Decision::deny(http::StatusCode::UNAUTHORIZED, "the key matches no consumer"),
            },
        }
    }
}
