//! Secrets out of what the admin API shows: any value under a key that names
//! a secret is replaced, wherever it sits (admin token, plugin credentials,
//! consumers' keys, passwords).

use crate::config::model::ConfigFile;
use serde_json::Value;

pub const REDACTED: &str = "[redacted]";

/// Parts of key names that mark their values as secret.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "password",
    "passwd",
    "credential",
    "api_key",
    "apikey",
    "private",
    "authorization",
    "cookie",
];

/// The config as JSON, with every secret replaced.
pub fn config(config: &ConfigFile) -> Value {
    let mut value = serde_json::to_value(config).unwrap_or(Value::Null);
    redact(&mut value);
    value
}

/// Replaces, in place, the values of secret-named keys.
pub fn redact(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, value) in map.iter_mut() {
                if is_secret(key) {
                    *value = Value::String(REDACTED.into());
                } else {
                    redact(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        Value::String(text) => {
            if let Some(redacted) = without_userinfo(text) {
                *text = redacted;
            }
        }
        _ => {}
    }
}

/// A URL with credentials in it (`redis://:pass@host:6379/0`) without
/// them: `redis://[redacted]@host:6379/0`. `None` for anything else.
fn without_userinfo(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let at = rest[..authority_end].rfind('@')?;
    Some(format!("{scheme}://{REDACTED}{}", &rest[at..]))
}

/// A key names a secret; header names count with `-` as `_`
/// (`X-Api-Key` in a transform's `set`).
fn is_secret(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('-', "_");
    key == "key" || key.ends_with("_key") || key.ends_with("_keys") || SECRET_WORDS.iter().any(|w| key.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_replaced_at_any_depth() {
        let mut value = serde_json::json!({
            "admin": { "addr": "127.0.0.1:9901", "token": "s3cret-s3cret-s3cret" },
            "consumers": [{ "name": "app", "credentials": { "api_keys": ["k1"] } }],
            "plugins": { "jwt": { "issuer": "https://id", "client_secret": "x" }, "basic": { "password": "p" } },
            "tls": { "cert": "a.pem", "key": "a.key" },
            "cluster": { "redis": "redis://:hunter2@127.0.0.1:6379/0" },
            "routes": [{ "plugins": { "request_transform": { "headers": { "set": { "X-Api-Key": "k2", "Authorization": "Bearer k3" } } } } }],
        });
        redact(&mut value);
        let text = value.to_string();
        for secret in ["s3cret", "k1", "k2", "k3", "hunter2", "\"x\"", "\"p\"", "a.key"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert_eq!(value["admin"]["addr"], "127.0.0.1:9901");
        assert_eq!(value["plugins"]["jwt"]["issuer"], "https://id");
        assert_eq!(value["tls"]["cert"], "a.pem");
        assert_eq!(value["cluster"]["redis"], "redis://[redacted]@127.0.0.1:6379/0");
    }
}
