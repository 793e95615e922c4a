//! Cache keys: the method, host, path and query (all, sorted, or only
//! some parameters), chosen request headers and, optionally, the consumer;
//! hashed. Answers with `Vary` are stored under a variant key that adds
//! the values of the headers they vary on.
//!
//! The key is the only thing that makes a stored answer a request's: two
//! requests with one key are served one answer. So it is a SHA-256 of the
//! request's parts (as Varnish's is), which no client can make another
//! request's by choosing its path, query or headers; a fast hash such as
//! xxh3 promises nothing against inputs chosen to collide, and its mixing can
//! be solved for chosen blocks. The parts go into the hash as they are read
//! (no key text is built), header values as their bytes (two values that
//! differ only in bytes that are not UTF-8 are two keys).

use crate::context::RequestContext;
use http::HeaderName;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::fmt;

/// A stored answer's key: the SHA-256 of the request's parts. Compared
/// whole; written as 64 hex digits where it names something (a Redis key).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl std::hash::Hash for Key {
    /// Eight of its bytes: they are a digest's, spread already (equality
    /// still compares all 32).
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut text = [0u8; 64];
        f.write_str(base16ct::lower::encode_str(&self.0, &mut text).map_err(|_| fmt::Error)?)
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum QueryKey {
    /// The query string as sent.
    All,
    /// Parameters sorted, so `?a=1&b=2` and `?b=2&a=1` are one answer.
    Sorted,
    /// Only these parameters, sorted.
    Only(Vec<String>),
    /// The query does not count.
    Ignore,
}

#[derive(Debug, Clone)]
pub struct KeySettings {
    pub query: QueryKey,
    pub headers: Vec<HeaderName>,
    /// One answer per consumer: per-user answers are then safe to keep.
    pub consumer: bool,
}

/// `host/path?query` of the request, as invalidation and purges name it.
pub fn url(request: &http::request::Parts) -> String {
    let host = crate::router::request_host(&request.uri, &request.headers).unwrap_or_default();
    let path = request.uri.path_and_query().map_or("/", |p| p.as_str());
    format!("{host}{path}")
}

/// The query as the key reads it: as sent, sorted, only some parameters
/// (sorted), or none.
fn keyed_query<'a>(query: &'a str, keyed: &QueryKey) -> Cow<'a, str> {
    let only = match keyed {
        QueryKey::All => return Cow::Borrowed(query),
        QueryKey::Ignore => return Cow::Borrowed(""),
        QueryKey::Sorted => None,
        QueryKey::Only(names) => Some(names),
    };
    let mut pairs: Vec<(Cow<str>, Cow<str>)> = form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| only.is_none_or(|names| names.iter().any(|n| n == name)))
        .collect();
    pairs.sort();
    Cow::Owned(
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish(),
    )
}

/// The request's URI with the query as the key reads it: what the cache's
/// policy is given, so that the policy's "same request" is the key's
/// (`?b=2&a=1` finds what `?a=1&b=2` stored when the key sorts the query).
pub fn keyed_uri(uri: &http::Uri, keyed: &QueryKey) -> Option<http::Uri> {
    if *keyed == QueryKey::All {
        return None;
    }
    let query = keyed_query(uri.query().unwrap_or(""), keyed);
    let path_and_query = if query.is_empty() {
        uri.path().to_string()
    } else {
        format!("{}?{query}", uri.path())
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    http::Uri::from_parts(parts).ok()
}

pub fn primary(route: &str, request: &http::request::Parts, ctx: &RequestContext<'_>, settings: &KeySettings) -> Key {
    let host = crate::router::request_host(&request.uri, &request.headers).unwrap_or_default();
    let mut key = Sha256::new();
    for piece in [route, request.method.as_str(), request.uri.path(), &host] {
        key.update(piece);
        key.update("\n");
    }
    key.update(keyed_query(request.uri.query().unwrap_or(""), &settings.query).as_bytes());
    add_header_values(&mut key, settings.headers.iter(), &request.headers);
    if settings.consumer {
        // The method too: a token's subject and a consumer may share a name.
        if let Some(identity) = &ctx.identity {
            for piece in ["\nconsumer:", identity.method, ":", &identity.name] {
                key.update(piece);
            }
        }
    }
    Key(key.finalize().into())
}

/// The key of the variant an answer with `Vary: names` is stored under.
pub fn variant(primary: &Key, names: &[String], headers: &http::HeaderMap) -> Key {
    let mut key = Sha256::new();
    key.update(primary.0);
    add_header_values(&mut key, names.iter().map(String::as_str), headers);
    Key(key.finalize().into())
}

/// For each header named: a line of its values, each followed by a comma.
/// (No value holds a newline: `http` refuses one.)
fn add_header_values<N: http::header::AsHeaderName>(
    key: &mut Sha256,
    names: impl Iterator<Item = N>,
    headers: &http::HeaderMap,
) {
    for name in names {
        key.update("\n");
        for value in headers.get_all(name) {
            key.update(value.as_bytes());
            key.update(",");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_the_sha256_of_the_request_s_parts() {
        let request = http::Request::get("http://api.example.com/users?b=2&a=1")
            .body(())
            .unwrap();
        let (parts, ()) = request.into_parts();
        let settings = KeySettings {
            query: QueryKey::Sorted,
            headers: vec![HeaderName::from_static("accept-language")],
            consumer: false,
        };
        let request_id = http::HeaderValue::from_static("id");
        let ctx = RequestContext::arrived(&request_id, "127.0.0.1:1".parse().unwrap());
        let expected = Sha256::digest("users\nGET\n/users\napi.example.com\na=1&b=2\n");
        let key = primary("users", &parts, &ctx, &settings);
        assert_eq!(key.0[..], expected[..]);
        assert_eq!(key.to_string(), base16ct::lower::encode_string(&expected));
    }

    #[test]
    fn header_values_count_by_their_bytes() {
        // Both would read as one U+FFFD if taken as text.
        let mut first = http::HeaderMap::new();
        first.insert("accept-language", http::HeaderValue::from_bytes(b"\xff").unwrap());
        let mut second = http::HeaderMap::new();
        second.insert("accept-language", http::HeaderValue::from_bytes(b"\xfe").unwrap());
        let names = ["accept-language".to_string()];
        let primary = Key([7; 32]);
        assert_ne!(variant(&primary, &names, &first), variant(&primary, &names, &second));
    }
}
