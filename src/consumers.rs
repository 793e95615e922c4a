//! Consumers: the named identities of the config, looked up by credential,
//! and the [`Identity`] an authenticated request carries through the later
//! phases (ACLs, rate limits by consumer, identity headers upstream).
//!
//! API keys are kept only as SHA-256 digests: a key from the config is
//! hashed when the config is compiled, and a presented key is hashed and
//! looked up by digest, then compared in constant time.

use crate::config::model::ConsumerConfig;
use http::HeaderName;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// The consumer name of requests a route lets through unauthenticated.
pub const ANONYMOUS: &str = "anonymous";

pub static X_CONSUMER_NAME: HeaderName = HeaderName::from_static("x-consumer-name");
pub static X_CONSUMER_GROUPS: HeaderName = HeaderName::from_static("x-consumer-groups");
pub static X_AUTHENTICATED_SCOPE: HeaderName = HeaderName::from_static("x-authenticated-scope");
pub static X_ANONYMOUS_CONSUMER: HeaderName = HeaderName::from_static("x-anonymous-consumer");

/// What the upstream is told of a verified client certificate (mTLS).
pub static X_CLIENT_CERT_SUBJECT: HeaderName = HeaderName::from_static("x-client-cert-subject");
pub static X_CLIENT_CERT_NAMES: HeaderName = HeaderName::from_static("x-client-cert-names");

/// Headers Portico sets for upstreams to trust on every route; a client's
/// own are removed.
pub static IDENTITY_HEADERS: [&HeaderName; 6] = [
    &X_CONSUMER_NAME,
    &X_CONSUMER_GROUPS,
    &X_AUTHENTICATED_SCOPE,
    &X_ANONYMOUS_CONSUMER,
    &X_CLIENT_CERT_SUBJECT,
    &X_CLIENT_CERT_NAMES,
];

/// The gateway's one list of trusted headers: the identity headers and
/// every header a plugin of any route sets for upstreams to trust
/// (`claims_to_headers`), each once. Computed once per config.
pub fn trusted_headers<'a>(from_plugins: impl Iterator<Item = &'a HeaderName>) -> Vec<HeaderName> {
    let mut names: Vec<HeaderName> = IDENTITY_HEADERS.iter().map(|name| (*name).clone()).collect();
    for name in from_plugins {
        if !names.contains(name) {
            names.push(name.clone());
        }
    }
    names
}

/// One consumer, compiled.
#[derive(Debug)]
pub struct Consumer {
    pub name: Arc<str>,
    pub groups: Arc<[String]>,
    /// `basic` credential: the username and the password's PHC hash.
    pub basic: Option<(String, String)>,
    /// `X-Consumer-Name` and `X-Consumer-Groups`, made once here rather
    /// than for every request.
    name_header: Option<http::HeaderValue>,
    groups_header: Option<http::HeaderValue>,
}

/// Every consumer, indexed by credential.
#[derive(Debug, Default)]
pub struct Consumers {
    all: Vec<Arc<Consumer>>,
    /// By the key's digest. foldhash, seeded per process, not SipHash: a
    /// client chooses keys, not digests, so it cannot aim at one bucket.
    by_key_digest: HashMap<[u8; 32], usize, foldhash::fast::RandomState>,
    by_username: HashMap<String, usize>,
    /// By certificate subject (RFC 4514, spaces around separators dropped).
    by_subject: HashMap<String, usize>,
    /// By subject alternative name (DNS name, URI, e-mail address).
    by_certificate_name: HashMap<String, usize>,
}

impl Consumers {
    /// Compiles the `consumers` list; errors are `(path, message)`.
    pub fn compile(configs: &[ConsumerConfig]) -> Result<Consumers, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let mut consumers = Consumers::default();
        for (i, config) in configs.iter().enumerate() {
            let at = format!("consumers[{i}]");
            if config.name.is_empty() || config.name == ANONYMOUS {
                errors.push((
                    format!("{at}.name"),
                    format!("{:?} cannot name a consumer: give it a name of its own", config.name),
                ));
            }
            if consumers.find(&config.name).is_some() {
                errors.push((
                    format!("{at}.name"),
                    format!("consumer {:?} is declared twice", config.name),
                ));
            }
            let index = consumers.all.len();
            for (k, key) in config.credentials.api_keys.iter().enumerate() {
                let key_at = format!("{at}.credentials.api_keys[{k}]");
                match key_digest(key) {
                    Ok(digest) => {
                        if consumers.by_key_digest.insert(digest, index).is_some() {
                            // Never say which other consumer holds it: the message may be logged.
                            errors.push((
                                key_at,
                                "this key is listed twice, or given to another consumer too".into(),
                            ));
                        }
                    }
                    Err(e) => errors.push((key_at, e)),
                }
            }
            let basic = config
                .credentials
                .basic
                .as_ref()
                .map(|b| (b.username.clone(), b.password.clone()));
            if let Some((username, hash)) = &basic {
                let basic_at = format!("{at}.credentials.basic");
                if username.is_empty() || username.contains(':') {
                    errors.push((
                        format!("{basic_at}.username"),
                        "a username is not empty and has no `:` (RFC 7617)".into(),
                    ));
                }
                if let Err(e) = crate::password::check_hash(hash) {
                    errors.push((format!("{basic_at}.password"), e));
                }
                if consumers.by_username.insert(username.clone(), index).is_some() {
                    errors.push((
                        format!("{basic_at}.username"),
                        format!("username {username:?} belongs to another consumer too"),
                    ));
                }
            }
            for (i, name) in config.credentials.certificates.iter().enumerate() {
                let at = format!("consumers[{index}].credentials.certificates[{i}]");
                let taken = match name.trim() {
                    "" => {
                        errors.push((at, "a certificate subject or name is not empty".into()));
                        continue;
                    }
                    subject if is_subject(subject) => consumers.by_subject.insert(tidy_subject(subject), index),
                    other => consumers.by_certificate_name.insert(other.to_string(), index),
                };
                if taken.is_some() {
                    errors.push((at, format!("{name:?} belongs to another consumer too")));
                }
            }
            consumers.all.push(Arc::new(Consumer {
                name: config.name.as_str().into(),
                groups: config.groups.clone().into(),
                basic,
                name_header: http::HeaderValue::from_str(&config.name).ok(),
                groups_header: (!config.groups.is_empty())
                    .then(|| http::HeaderValue::from_str(&config.groups.join(",")).ok())
                    .flatten(),
            }));
        }
        if errors.is_empty() {
            Ok(consumers)
        } else {
            Err(errors)
        }
    }

    pub fn find(&self, name: &str) -> Option<&Arc<Consumer>> {
        self.all.iter().find(|c| &*c.name == name)
    }

    /// The consumer holding this API key.
    pub fn by_api_key(&self, key: &[u8]) -> Option<&Arc<Consumer>> {
        let digest: [u8; 32] = Sha256::digest(key).into();
        let (stored, index) = self.by_key_digest.get_key_value(&digest)?;
        bool::from(digests_equal(stored, &digest)).then(|| &self.all[*index])
    }

    /// The consumer a verified client certificate names: by subject, then
    /// by each subject alternative name.
    /// Subjects and names are looked up apart: a SAN that spells a subject
    /// is not that subject.
    pub fn by_certificate(&self, subject: &str, names: &[String]) -> Option<&Arc<Consumer>> {
        self.by_subject
            .get(subject)
            .or_else(|| names.iter().find_map(|name| self.by_certificate_name.get(name)))
            .map(|i| &self.all[*i])
    }

    /// Some consumer's password hash, to spend on an unknown username the
    /// time a known one costs.
    pub fn any_password_hash(&self) -> Option<String> {
        self.all
            .iter()
            .find_map(|c| c.basic.as_ref())
            .map(|(_, hash)| hash.clone())
    }

    pub fn by_username(&self, username: &str) -> Option<&Arc<Consumer>> {
        self.by_username.get(username).map(|i| &self.all[*i])
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// A key as written in the config: as issued, or `sha256:<hex>`.
fn key_digest(key: &str) -> Result<[u8; 32], String> {
    match key.strip_prefix("sha256:") {
        Some(hex) => {
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .filter_map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
                .collect();
            <[u8; 32]>::try_from(bytes.as_slice())
                .ok()
                .filter(|_| hex.len() == 64)
                .ok_or_else(|| "a hashed key is `sha256:` and 64 hex digits (`printf %s KEY | sha256sum`)".to_string())
        }
        None if key.len() < 16 => {
            Err("API keys must be at least 16 characters; generate one with `openssl rand -hex 32`".into())
        }
        None => Ok(Sha256::digest(key.as_bytes()).into()),
    }
}

/// Whether two digests are equal, in constant time: a word at a time (a
/// byte at a time, as `subtle` compares slices, cost some 400 instructions
/// a request).
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> subtle::Choice {
    let words = |digest: &[u8; 32]| {
        let mut words = [0u64; 4];
        for (word, bytes) in words.iter_mut().zip(digest.chunks_exact(8)) {
            let mut eight = [0u8; 8];
            eight.copy_from_slice(bytes);
            *word = u64::from_le_bytes(eight);
        }
        words
    };
    words(a)
        .iter()
        .zip(words(b))
        .fold(subtle::Choice::from(1), |all, (a, b)| all & a.ct_eq(&b))
}

/// A certificate credential that is a subject (`CN=app,O=Example`), not a
/// subject alternative name: it starts with an attribute type and `=`.
fn is_subject(text: &str) -> bool {
    text.split_once('=').is_some_and(|(kind, _)| {
        !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    })
}

/// A configured subject as certificates' subjects are written: no spaces
/// around the `,` and `+` that separate attributes (escaped ones are values).
fn tidy_subject(subject: &str) -> String {
    let mut out = String::with_capacity(subject.len());
    let mut chars = subject.trim().chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => {
                out.push(ch);
                out.extend(chars.next());
            }
            ',' | '+' => {
                while out.ends_with(' ') {
                    out.pop();
                }
                out.push(ch);
                chars = chars.as_str().trim_start().chars();
            }
            _ => out.push(ch),
        }
    }
    out
}

/// Who a request is, once authenticated.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The consumer's name, or for a token with no consumer, its subject.
    pub name: Arc<str>,
    pub groups: Arc<[String]>,
    /// Scopes granted by a token (JWT `scope`/`scp`, introspection).
    pub scopes: Vec<String>,
    /// The verified token's claims, when a token authenticated the request.
    pub claims: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    /// The plugin that authenticated it.
    pub method: &'static str,
    pub anonymous: bool,
    /// The configured consumer, when there is one.
    consumer: Option<Arc<Consumer>>,
}

impl Identity {
    pub fn of(consumer: &Arc<Consumer>, method: &'static str) -> Identity {
        Identity {
            name: consumer.name.clone(),
            groups: consumer.groups.clone(),
            scopes: Vec::new(),
            claims: None,
            method,
            anonymous: false,
            consumer: Some(consumer.clone()),
        }
    }

    /// The identity a verified token (JWT claims, an introspection answer)
    /// names: the consumer called by its `consumer_claim`, or else the
    /// claim's value with no groups; its scopes from `scope` or `scp`.
    pub fn of_token(
        consumers: &Consumers,
        claims: Arc<serde_json::Map<String, serde_json::Value>>,
        consumer_claim: &str,
        method: &'static str,
    ) -> Identity {
        let subject = claims.get(consumer_claim).and_then(|v| v.as_str()).unwrap_or_default();
        let mut identity = match consumers.find(subject) {
            Some(consumer) => Identity::of(consumer, method),
            None => Identity {
                name: subject.into(),
                groups: Arc::from(Vec::new()),
                scopes: Vec::new(),
                claims: None,
                method,
                anonymous: false,
                consumer: None,
            },
        };
        identity.scopes = scopes(&claims);
        identity.claims = Some(claims);
        identity
    }

    pub fn anonymous() -> Identity {
        Identity {
            name: ANONYMOUS.into(),
            groups: Arc::from(Vec::new()),
            scopes: Vec::new(),
            claims: None,
            method: "anonymous",
            anonymous: true,
            consumer: None,
        }
    }

    /// Sets the identity headers upstreams may trust.
    pub fn write_headers(&self, headers: &mut http::HeaderMap) {
        let value = |text: &str| http::HeaderValue::from_str(text).ok();
        let (name, groups) = match &self.consumer {
            Some(consumer) => (consumer.name_header.clone(), consumer.groups_header.clone()),
            // A token's subject with no consumer has no groups.
            None => (value(&self.name), None),
        };
        if let Some(name) = name {
            headers.insert(&X_CONSUMER_NAME, name);
        }
        if let Some(groups) = groups {
            headers.insert(&X_CONSUMER_GROUPS, groups);
        }
        if !self.scopes.is_empty() {
            if let Some(scopes) = value(&self.scopes.join(" ")) {
                headers.insert(&X_AUTHENTICATED_SCOPE, scopes);
            }
        }
        if self.anonymous {
            headers.insert(&X_ANONYMOUS_CONSUMER, http::HeaderValue::from_static("true"));
        }
    }
}

/// OAuth scopes: `scope` (space-separated) or `scp` (a list or a string).
pub fn scopes(claims: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    use serde_json::Value;
    let from = |value: &Value| -> Vec<String> {
        match value {
            Value::String(text) => text.split_whitespace().map(str::to_string).collect(),
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(str::to_string).collect(),
            _ => Vec::new(),
        }
    };
    claims
        .get("scope")
        .or_else(|| claims.get("scp"))
        .map(from)
        .unwrap_or_default()
}

/// The token of `Authorization: Bearer <token>` (RFC 6750), if there is one.
pub fn bearer(headers: &http::HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{ConsumerConfig, CredentialsConfig};

    #[test]
    fn digests_are_equal_only_when_every_byte_is() {
        let digest: [u8; 32] = Sha256::digest(b"key").into();
        assert!(bool::from(digests_equal(&digest, &digest)));
        for at in 0..32 {
            for bit in 0..8 {
                let mut other = digest;
                other[at] ^= 1 << bit;
                assert!(!bool::from(digests_equal(&digest, &other)), "byte {at}, bit {bit}");
            }
        }
    }

    fn consumer(name: &str, keys: &[&str]) -> ConsumerConfig {
        ConsumerConfig {
            name: name.into(),
            groups: vec!["partners".into()],
            credentials: CredentialsConfig {
                api_keys: keys.iter().map(|k| k.to_string()).collect(),
                basic: None,
                certificates: Vec::new(),
            },
        }
    }

    #[test]
    fn keys_are_found_plain_or_by_their_sha256() {
        let plain = "k-0123456789abcdef";
        let hashed = "another-key-0123456789";
        let digest: String = Sha256::digest(hashed.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let consumers =
            Consumers::compile(&[consumer("a", &[plain]), consumer("b", &[&format!("sha256:{digest}")])]).unwrap();
        assert_eq!(&*consumers.by_api_key(plain.as_bytes()).unwrap().name, "a");
        assert_eq!(&*consumers.by_api_key(hashed.as_bytes()).unwrap().name, "b");
        assert!(consumers.by_api_key(b"k-0123456789abcdeX").is_none());
    }

    #[test]
    fn certificate_subjects_and_names_are_looked_up_apart() {
        let mut admin = consumer("admin", &[]);
        admin.credentials.certificates = vec!["CN=admin, O=Example".into()];
        let mut app = consumer("app", &[]);
        app.credentials.certificates = vec!["app.internal".into()];
        let consumers = Consumers::compile(&[admin, app]).unwrap();
        let found = |subject: &str, names: &[&str]| {
            let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            consumers.by_certificate(subject, &names).map(|c| c.name.to_string())
        };
        assert_eq!(found("CN=admin,O=Example", &[]).as_deref(), Some("admin"));
        // A CN that spells two attributes is escaped, so it is another subject.
        assert_eq!(found("CN=admin\\,O\\=Example", &[]), None);
        // A SAN that spells the subject is a name, not that subject.
        assert_eq!(found("CN=mallory", &["CN=admin,O=Example"]), None);
        assert_eq!(found("CN=anything", &["app.internal"]).as_deref(), Some("app"));
    }

    #[test]
    fn bad_consumers_are_named() {
        let errors = Consumers::compile(&[
            consumer("anonymous", &["short"]),
            consumer("x", &["sha256:abc"]),
            consumer("x", &["dup-0123456789abcdef", "dup-0123456789abcdef"]),
        ])
        .unwrap_err();
        let text = format!("{errors:?}");
        for expected in [
            "consumers[0].name",
            "at least 16",
            "64 hex",
            "declared twice",
            "another consumer",
        ] {
            assert!(text.contains(expected), "{expected}: {text}");
        }
    }
}
