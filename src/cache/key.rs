//! Cache keys: the method, host, path and query (all, sorted, or only
//! some parameters), chosen request headers and, optionally, the consumer;
//! hashed. Answers with `Vary` are stored under a variant key that adds
//! the values of the headers they vary on.

use crate::context::RequestContext;
use http::HeaderName;
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
    match &settings.query {
        QueryKey::All => text.push_str(query),
        QueryKey::Ignore => {}
        QueryKey::Sorted | QueryKey::Only(_) => {
            let mut pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .filter(|(k, _)| match &settings.query {
                    QueryKey::Only(names) => names.contains(k),
                    _ => true,
                })
                .collect();
            pairs.sort();
            for (k, v) in pairs {
                for piece in [k.as_str(), "=", v.as_str(), "&"] {
                    text.push_str(piece);
                }
            }
        }
    }
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
    format!("{:032x}", xxh3_128(text.as_bytes()))
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
    format!("{:032x}", xxh3_128(text.as_bytes()))
}
