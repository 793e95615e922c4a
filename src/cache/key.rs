//! Cache keys: the method, host, path and query (all, sorted, or only
//! some parameters), chosen request headers and, optionally, the consumer;
//! hashed. Answers with `Vary` are stored under a variant key that adds
//! the values of the headers they vary on.

use crate::context::RequestContext;
use http::HeaderName;
use std::borrow::Cow;
use xxhash_rust::xxh3::xxh3_128;

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

pub fn primary(
    route: &str,
    request: &http::request::Parts,
    ctx: &RequestContext<'_>,
    settings: &KeySettings,
) -> String {
    let host = crate::router::request_host(&request.uri, &request.headers).unwrap_or_default();
    let query = request.uri.query().unwrap_or("");
    // Pieces pushed one by one, not `format!`: the key is made on every request of a cached route.
    let mut text = String::with_capacity(route.len() + request.uri.path().len() + host.len() + query.len() + 64);
    for piece in [route, request.method.as_str(), request.uri.path(), &host] {
        text.push_str(piece);
        text.push('\n');
    }
    text.push_str(&keyed_query(query, &settings.query));
    for name in &settings.headers {
        text.push('\n');
        for value in request.headers.get_all(name) {
            text.push_str(&String::from_utf8_lossy(value.as_bytes()));
            text.push(',');
        }
    }
    if settings.consumer {
        // The method too: a token's subject and a consumer may share a name.
        if let Some(identity) = &ctx.identity {
            text.push_str("\nconsumer:");
            text.push_str(identity.method);
            text.push(':');
            text.push_str(&identity.name);
        }
    }
    hex(xxh3_128(text.as_bytes()))
}

/// The key of the variant an answer with `Vary: names` is stored under.
pub fn variant(primary: &str, names: &[String], headers: &http::HeaderMap) -> String {
    let mut text = primary.to_string();
    for name in names {
        text.push('\n');
        for value in headers.get_all(name.as_str()) {
            text.push_str(&String::from_utf8_lossy(value.as_bytes()));
            text.push(',');
        }
    }
    hex(xxh3_128(text.as_bytes()))
}

/// The hash as 32 lower-case hex digits, as `format!("{:032x}")` writes it
/// but without the formatter: a key is made on every request of a cached route.
fn hex(hash: u128) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (at, digit) in text.iter_mut().enumerate() {
        *digit = DIGITS[(hash >> (124 - 4 * at)) as usize & 0xf];
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_what_the_formatter_writes() {
        for hash in [0, 1, 0xabc, u128::MAX, 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210] {
            assert_eq!(super::hex(hash), format!("{hash:032x}"));
        }
    }
}
