//! What the cache reads from HTTP headers: `Cache-Control` (and `Pragma`)
//! directives, `Vary`, purge tags, validators, and the client's conditions.

use http::header;
use std::time::Duration;

/// What the cache needs of a request's (or an answer's) `Cache-Control`.
#[derive(Default)]
pub(super) struct Directives {
    /// Any `Cache-Control` directive, or a `Pragma`: without one, nothing
    /// the request asks can change whether a stored answer is fresh.
    pub(super) any: bool,
    pub(super) no_store: bool,
    pub(super) no_cache: bool,
    pub(super) only_if_cached: bool,
    pub(super) max_age: bool,
    pub(super) must_revalidate: bool,
    pub(super) stale_while_revalidate: Option<Duration>,
    pub(super) stale_if_error: Option<Duration>,
}

impl Directives {
    pub(super) fn of(headers: &http::HeaderMap, honored: bool) -> Directives {
        let mut out = Directives {
            any: honored && (headers.contains_key(header::CACHE_CONTROL) || headers.contains_key(header::PRAGMA)),
            ..Directives::default()
        };
        if !out.any {
            return out;
        }
        let mut cache_control = false;
        for value in headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
        {
            for directive in value.split(',') {
                cache_control = true;
                let (name, argument) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim().to_ascii_lowercase(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim().to_ascii_lowercase(), None),
                };
                let seconds = || argument.and_then(|a| a.parse::<u64>().ok()).map(Duration::from_secs);
                match name.as_str() {
                    "no-store" => out.no_store = true,
                    "no-cache" => out.no_cache = true,
                    "only-if-cached" => out.only_if_cached = true,
                    "max-age" | "s-maxage" => out.max_age = true,
                    "must-revalidate" | "proxy-revalidate" => out.must_revalidate = true,
                    "stale-while-revalidate" => out.stale_while_revalidate = seconds(),
                    "stale-if-error" => out.stale_if_error = seconds(),
                    _ => {}
                }
            }
        }
        // `Pragma: no-cache` counts only without `Cache-Control` (RFC 9111 §5.4).
        if !cache_control
            && headers
                .get_all(header::PRAGMA)
                .iter()
                .any(|v| v.to_str().is_ok_and(|v| v.to_ascii_lowercase().contains("no-cache")))
        {
            out.no_cache = true;
        }
        out.must_revalidate |= out.no_cache;
        out
    }
}

/// The greatest `Age` a cache counts with (RFC 9111 section 1.2.2).
const MAX_AGE_SECONDS: u64 = 1 << 31;

/// Caps an answer's `Age` at 2^31 seconds, as RFC 9111 section 1.2.2 says a
/// cache takes a larger one: an upstream's `Age` of 2^64 - 1 would
/// otherwise overflow the policy's arithmetic once the answer had been
/// stored for a second.
pub(super) fn cap_age(headers: &mut http::HeaderMap) {
    let Some(age) = headers.get(header::AGE).and_then(|v| v.to_str().ok()) else {
        return;
    };
    let digits = age.trim();
    let too_old = !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && digits.parse::<u64>().map_or(true, |seconds| seconds > MAX_AGE_SECONDS);
    if too_old {
        headers.insert(header::AGE, http::HeaderValue::from(MAX_AGE_SECONDS));
    }
}

/// The answer can be revalidated (`ETag` or `Last-Modified`).
pub(super) fn has_validators(headers: &http::HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// The request headers the answer varies on, lower-case, sorted, once each.
pub(super) fn vary_names(headers: &http::HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// The answer's purge tags (`Surrogate-Key`, `Cache-Tag`), sorted, once each.
pub(super) fn tags(headers: &http::HeaderMap) -> Vec<String> {
    let mut tags: Vec<String> = ["surrogate-key", "cache-tag"]
        .iter()
        .flat_map(|name| headers.get_all(*name).iter())
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([' ', ',']))
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

/// Do the client's `If-None-Match` / `If-Modified-Since` hold against
/// this answer (RFC 9110 §13.1.2, §13.1.3; weak comparison)?
pub(super) fn not_modified(request: &http::HeaderMap, response: &http::HeaderMap) -> bool {
    if let Some(wanted) = request.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = response.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let opaque = |tag: &str| tag.trim().trim_start_matches("W/").to_string();
        return wanted.trim() == "*" || wanted.split(',').any(|tag| opaque(tag) == opaque(etag));
    }
    let since = request
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    let modified = response
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v).ok());
    matches!((since, modified), (Some(since), Some(modified)) if modified <= since)
}

/// A copy of `headers` whose values share one buffer of their own. Heads
/// are parsed in place: each value is a slice of the 16 KiB buffer its
/// connection read into, and a stored answer holding one would keep that
/// whole buffer (the weight counts the few hundred bytes of the values).
pub(super) fn detached(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut values = bytes::BytesMut::with_capacity(headers.values().map(|v| v.len()).sum());
    for value in headers.values() {
        values.extend_from_slice(value.as_bytes());
    }
    let mut values = values.freeze();
    let mut out = http::HeaderMap::with_capacity(headers.len());
    for (name, value) in headers {
        let own = values.split_to(value.len());
        // The same bytes, checked again: never fails.
        if let Ok(mut own) = header::HeaderValue::from_maybe_shared(own) {
            own.set_sensitive(value.is_sensitive());
            out.append(name.clone(), own);
        }
    }
    out
}

/// `uri` with its own copy of the path and authority, for the same reason.
pub(super) fn detached_uri(uri: &http::Uri) -> http::Uri {
    let mut parts = uri.clone().into_parts();
    parts.authority = parts.authority.and_then(|a| {
        http::uri::Authority::from_maybe_shared(bytes::Bytes::copy_from_slice(a.as_str().as_bytes())).ok()
    });
    parts.path_and_query = parts.path_and_query.and_then(|p| {
        http::uri::PathAndQuery::from_maybe_shared(bytes::Bytes::copy_from_slice(p.as_str().as_bytes())).ok()
    });
    http::Uri::from_parts(parts).unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn directives_are_read_as_the_rfc_says() {
        let d = Directives::of(
            &headers(&[(
                "cache-control",
                "max-age=0, Stale-While-Revalidate=30, stale-if-error=\"60\"",
            )]),
            true,
        );
        assert!(d.max_age && !d.no_cache);
        assert_eq!(
            (d.stale_while_revalidate, d.stale_if_error),
            (Some(Duration::from_secs(30)), Some(Duration::from_secs(60)))
        );
        assert!(Directives::of(&headers(&[("pragma", "no-cache")]), true).no_cache);
        assert!(
            !Directives::of(
                &headers(&[("pragma", "no-cache"), ("cache-control", "max-age=5")]),
                true
            )
            .no_cache,
            "Pragma counts only alone"
        );
        assert!(
            !Directives::of(&headers(&[("cache-control", "no-store")]), false).no_store,
            "ignored"
        );
        assert!(Directives::of(&headers(&[("cache-control", "no-cache")]), true).must_revalidate);
    }

    #[test]
    fn client_conditions_compare_weakly_and_by_date() {
        let stored = headers(&[("etag", "W/\"v1\""), ("last-modified", "Tue, 24 Nov 2026 10:00:00 GMT")]);
        assert!(not_modified(&headers(&[("if-none-match", "\"v0\", \"v1\"")]), &stored));
        assert!(not_modified(&headers(&[("if-none-match", "*")]), &stored));
        assert!(!not_modified(&headers(&[("if-none-match", "\"v2\"")]), &stored));
        // If-None-Match wins over If-Modified-Since.
        assert!(!not_modified(
            &headers(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Wed, 25 Nov 2026 10:00:00 GMT")
            ]),
            &stored
        ));
        assert!(not_modified(
            &headers(&[("if-modified-since", "Tue, 24 Nov 2026 10:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(
            &headers(&[("if-modified-since", "Mon, 23 Nov 2026 10:00:00 GMT")]),
            &stored
        ));
        assert!(!not_modified(&headers(&[("if-modified-since", "yesterday")]), &stored));
    }
}
