//! Route matching, pure and lock-free: a table compiled once per config and
//! read by every request.
//!
//! Precedence when several routes match one request, highest first:
//! 1. explicit `priority` (higher wins);
//! 2. host: exact name, then wildcard (longer suffix first), then no host;
//! 3. path kind: exact (`= /p`), template (`/users/{id}`), catch-all template
//!    (`/files/{*rest}`), regex (`~ ...`), prefix (`/users`);
//! 4. longer literal path first;
//! 5. more conditions first (methods, headers, query parameters);
//! 6. declaration order.

pub mod canonical;
mod host;
pub mod path;

pub use canonical::{canonical_path, EscapedSlashes, PathError, PathPolicy, Semicolons};
pub use host::{request_host, HostPattern};
pub use path::{Params, PathKind, PathPattern};

use crate::config::model::MatchConfig;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use path::first_segment;
use std::cmp::Reverse;
use std::collections::HashMap;

/// What a route matches, compiled from `match:`.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub path: PathPattern,
    methods: Option<Vec<Method>>,
    host: Option<HostPattern>,
    headers: Vec<(HeaderName, HeaderValue)>,
    query: Vec<(String, String)>,
    priority: i32,
}

/// The parts of a request that routing looks at. `path` is already normalised
/// and `host` lowercased without its port.
pub struct RequestHead<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub host: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub query: Option<&'a str>,
}

impl<'a> RequestHead<'a> {
    /// The head of `parts`, with its path already normalised and its host found.
    pub fn of(parts: &'a http::request::Parts, path: &'a str, host: Option<&'a str>) -> RequestHead<'a> {
        RequestHead {
            method: &parts.method,
            path,
            host,
            headers: &parts.headers,
            query: parts.uri.query(),
        }
    }
}

/// The answer of [`RouteTable::find`].
#[derive(Debug)]
pub enum Lookup<'a, T> {
    Found {
        route: &'a T,
        params: Params,
    },
    /// Some route matches everything but the method: answer 405 with `Allow`.
    MethodNotAllowed {
        allow: Vec<Method>,
    },
    NotFound,
}

impl Matcher {
    /// Compiles a `match:` block; each error is `(field, message)` relative to it.
    pub fn compile(config: &MatchConfig, priority: i32) -> Result<Matcher, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let path = PathPattern::parse(&config.path).map_err(|e| errors.push(("path".to_string(), e)));
        let methods = config.methods.as_ref().map(|methods| {
            let mut parsed: Vec<Method> = Vec::new();
            for (i, name) in methods.iter().enumerate() {
                match parse_method(name) {
                    Ok(method) => {
                        if method == Method::GET && !methods.iter().any(|m| m == "HEAD") {
                            // A resource that answers GET answers HEAD (RFC 9110 9.3.2).
                            parsed.push(Method::HEAD);
                        }
                        parsed.push(method);
                    }
                    Err(e) => errors.push((format!("methods[{i}]"), e)),
                }
            }
            if methods.is_empty() {
                errors.push((
                    "methods".into(),
                    "empty list: leave `methods` out to match every method".into(),
                ));
            }
            parsed
        });
        let host = config
            .host
            .as_deref()
            .map(HostPattern::parse)
            .transpose()
            .map_err(|e| errors.push(("host".into(), e)))
            .ok()
            .flatten();
        let mut headers = Vec::new();
        for (name, value) in &config.headers {
            let field = format!("headers.{name}");
            match (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
                (Ok(name), Ok(value)) => headers.push((name, value)),
                (Err(_), _) => errors.push((field, format!("{name:?} is not a valid header name"))),
                (_, Err(_)) => errors.push((field, "header values must be visible ASCII".into())),
            }
        }
        let query = config.query.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        match path {
            Ok(path) if errors.is_empty() => Ok(Matcher {
                path,
                methods,
                host,
                headers,
                query,
                priority,
            }),
            _ => Err(errors),
        }
    }

    /// The methods this route accepts, for the `Allow` header.
    pub fn methods(&self) -> Option<&[Method]> {
        self.methods.as_deref()
    }

    /// Sort key implementing the documented precedence (greater goes first).
    fn rank(&self) -> impl Ord {
        let conditions = usize::from(self.methods.is_some()) + self.headers.len() + self.query.len();
        (
            self.priority,
            self.host.as_ref().map(HostPattern::rank),
            self.path.kind(),
            self.path.literal_len(),
            conditions,
        )
    }

    /// Everything but the method; on success the path's parameters are in `params`.
    fn matches_resource(&self, req: &RequestHead<'_>, params: &mut Params) -> bool {
        if let Some(host) = &self.host {
            if !req.host.is_some_and(|h| host.matches(h)) {
                return false;
            }
        }
        let headers_ok = self
            .headers
            .iter()
            .all(|(name, value)| req.headers.get_all(name).iter().any(|v| v == value));
        if !headers_ok {
            return false;
        }
        let query_ok = self.query.iter().all(|(key, value)| {
            req.query.is_some_and(|q| {
                form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == key.as_str() && v == value.as_str())
            })
        });
        query_ok && self.path.matches(req.path, params)
    }

    fn matches_method(&self, method: &Method) -> bool {
        self.methods.as_ref().is_none_or(|m| m.contains(method))
    }

    /// Every condition the request fails (empty when it matches), and the
    /// path parameters when the path matches. For `explain`, not the hot path.
    pub fn misses(&self, req: &RequestHead<'_>) -> (Vec<Condition>, Option<Params>) {
        let mut misses = Vec::new();
        let mut params = Params::new();
        let path_ok = self.path.matches(req.path, &mut params);
        if !path_ok {
            misses.push(Condition::Path);
        }
        if let Some(host) = &self.host {
            if !req.host.is_some_and(|h| host.matches(h)) {
                misses.push(Condition::Host);
            }
        }
        for (name, value) in &self.headers {
            if !req.headers.get_all(name).iter().any(|v| v == value) {
                misses.push(Condition::Header(name.clone()));
            }
        }
        for (key, value) in &self.query {
            let found = req.query.is_some_and(|q| {
                form_urlencoded::parse(q.as_bytes()).any(|(k, v)| k == key.as_str() && v == value.as_str())
            });
            if !found {
                misses.push(Condition::Query(key.clone()));
            }
        }
        if !self.matches_method(req.method) {
            misses.push(Condition::Method);
        }
        (misses, path_ok.then_some(params))
    }
}

/// A part of `match:` that a request can fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Condition {
    Path,
    Host,
    Header(HeaderName),
    Query(String),
    Method,
}

fn parse_method(name: &str) -> Result<Method, String> {
    if name.bytes().any(|b| b.is_ascii_lowercase()) {
        return Err(format!(
            "method {name:?} is lowercase: methods are case-sensitive, write {:?}",
            name.to_ascii_uppercase()
        ));
    }
    Method::from_bytes(name.as_bytes()).map_err(|_| format!("{name:?} is not a valid HTTP method"))
}

/// Routes in precedence order, indexed by the first segment of the paths
/// they can match, so that a request is tried against the routes for its
/// first segment and those that fix none, not against every route: lookup
/// cost stays flat as tables grow to thousands of routes. The order they are
/// tried in, and so the route chosen, is the same as trying them all.
#[derive(Debug)]
pub struct RouteTable<T> {
    entries: Vec<(Matcher, T)>,
    /// Positions in `entries`, ascending, of the routes for each first segment.
    /// foldhash, seeded per process: the keys are the config's, a client
    /// only looks them up, so there is no table for it to flood.
    by_segment: HashMap<Box<str>, Vec<u32>, foldhash::fast::RandomState>,
    /// Positions, ascending, of the routes that may match any first segment.
    any_segment: Vec<u32>,
    /// Whether any route names a host: if none does, a request's host is
    /// not looked for.
    matches_hosts: bool,
}

impl<T> RouteTable<T> {
    pub fn new(mut entries: Vec<(Matcher, T)>) -> RouteTable<T> {
        // A stable sort keeps declaration order among equals.
        entries.sort_by_cached_key(|(matcher, _)| Reverse(matcher.rank()));
        let mut by_segment: HashMap<Box<str>, Vec<u32>, _> = HashMap::default();
        let mut any_segment = Vec::new();
        for (position, (matcher, _)) in entries.iter().enumerate() {
            let position = position as u32;
            match matcher.path.first_segment() {
                Some(segment) => by_segment.entry(segment.into()).or_default().push(position),
                None => any_segment.push(position),
            }
        }
        let matches_hosts = entries.iter().any(|(matcher, _)| matcher.host.is_some());
        RouteTable {
            entries,
            by_segment,
            any_segment,
            matches_hosts,
        }
    }

    /// Whether any route names a host, so that a request's host matters.
    pub fn matches_hosts(&self) -> bool {
        self.matches_hosts
    }

    /// The positions of the routes that may match `path`, in precedence order.
    fn candidates<'a>(&'a self, path: &str) -> impl Iterator<Item = usize> + 'a {
        let keyed = self.by_segment.get(first_segment(path)).map_or(&[][..], Vec::as_slice);
        let (mut keyed, mut any) = (keyed.iter().peekable(), self.any_segment.iter().peekable());
        std::iter::from_fn(move || {
            let next = match (keyed.peek(), any.peek()) {
                (Some(k), Some(a)) if k < a => keyed.next(),
                (Some(_), Some(_)) | (None, Some(_)) => any.next(),
                (Some(_), None) => keyed.next(),
                (None, None) => None,
            };
            next.map(|&position| position as usize)
        })
    }

    /// Routes in the order they are tried.
    pub fn iter(&self) -> impl Iterator<Item = &(Matcher, T)> {
        self.entries.iter()
    }

    /// The first route, in precedence order, that matches the request.
    pub fn find(&self, req: &RequestHead<'_>) -> Lookup<'_, T> {
        let mut params = Params::new();
        let mut allow: Vec<Method> = Vec::new();
        for position in self.candidates(req.path) {
            let (matcher, route) = &self.entries[position];
            params.clear();
            if !matcher.matches_resource(req, &mut params) {
                continue;
            }
            if matcher.matches_method(req.method) {
                return Lookup::Found { route, params };
            }
            for method in matcher.methods().unwrap_or_default() {
                if !allow.contains(method) {
                    allow.push(method.clone());
                }
            }
        }
        if allow.is_empty() {
            Lookup::NotFound
        } else {
            Lookup::MethodNotAllowed { allow }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(routes: &[(&str, &str)]) -> RouteTable<String> {
        let entries = routes
            .iter()
            .map(|(name, yaml)| {
                let config: MatchConfig = serde_yaml_ng::from_str(yaml).unwrap();
                let priority = if name.starts_with('!') { 10 } else { 0 };
                (Matcher::compile(&config, priority).unwrap(), name.to_string())
            })
            .collect();
        RouteTable::new(entries)
    }

    fn find(
        table: &RouteTable<String>,
        method: &str,
        uri: &str,
        host: Option<&str>,
        headers: &[(&str, &str)],
    ) -> String {
        let uri: http::Uri = uri.parse().unwrap();
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let head = RequestHead {
            method: &method,
            path: uri.path(),
            host,
            headers: &map,
            query: uri.query(),
        };
        match table.find(&head) {
            Lookup::Found { route, .. } => route.clone(),
            Lookup::MethodNotAllowed { allow } => {
                format!("405 {}", allow.iter().map(Method::as_str).collect::<Vec<_>>().join(","))
            }
            Lookup::NotFound => "404".into(),
        }
    }

    #[test]
    fn precedence_is_exact_then_template_then_prefix_then_longer() {
        let t = table(&[
            ("prefix", "path: /users"),
            ("longer-prefix", "path: /users/admin"),
            ("template", "path: /users/{id}"),
            ("exact", "path: = /users/me"),
            ("regex", "path: ~ ^/users/[0-9]+/orders$"),
            ("catch-all", "path: /users/{id}/{*rest}"),
        ]);
        assert_eq!(find(&t, "GET", "/users/me", None, &[]), "exact");
        assert_eq!(find(&t, "GET", "/users/7", None, &[]), "template");
        assert_eq!(find(&t, "GET", "/users/admin", None, &[]), "template");
        assert_eq!(find(&t, "GET", "/users/admin/x", None, &[]), "catch-all");
        assert_eq!(find(&t, "GET", "/users", None, &[]), "prefix");
        assert_eq!(find(&t, "GET", "/usersx", None, &[]), "404");
        let t = table(&[
            ("short", "path: /a"),
            ("long", "path: /a/b"),
            ("regex", "path: ~ ^/a/b/c"),
        ]);
        assert_eq!(find(&t, "GET", "/a/b/c", None, &[]), "regex");
        assert_eq!(find(&t, "GET", "/a/b/d", None, &[]), "long");
        assert_eq!(find(&t, "GET", "/a/c", None, &[]), "short");
    }

    #[test]
    fn priority_overrides_everything() {
        let t = table(&[("exact", "path: = /x"), ("!catch", "path: /")]);
        assert_eq!(find(&t, "GET", "/x", None, &[]), "!catch");
    }

    #[test]
    fn equal_routes_keep_declaration_order() {
        let t = table(&[("first", "path: /a"), ("second", "path: /a")]);
        assert_eq!(find(&t, "GET", "/a", None, &[]), "first");
    }

    #[test]
    fn methods_give_405_with_allow() {
        let t = table(&[
            ("read", "{path: /u, methods: [GET]}"),
            ("write", "{path: /u, methods: [POST, PUT]}"),
        ]);
        assert_eq!(find(&t, "POST", "/u", None, &[]), "write");
        assert_eq!(find(&t, "HEAD", "/u", None, &[]), "read");
        assert_eq!(find(&t, "DELETE", "/u", None, &[]), "405 HEAD,GET,POST,PUT");
        assert_eq!(find(&t, "DELETE", "/v", None, &[]), "404");
    }

    #[test]
    fn host_exact_beats_wildcard_beats_none() {
        let t = table(&[
            ("any", "path: /"),
            ("wild", "{path: /, host: '*.example.com'}"),
            ("exact", "{path: /, host: api.example.com}"),
        ]);
        assert_eq!(find(&t, "GET", "/", Some("api.example.com"), &[]), "exact");
        assert_eq!(find(&t, "GET", "/", Some("www.example.com"), &[]), "wild");
        assert_eq!(find(&t, "GET", "/", Some("example.com"), &[]), "any");
        assert_eq!(find(&t, "GET", "/", None, &[]), "any");
    }

    #[test]
    fn headers_and_query_select_versions() {
        let t = table(&[
            ("v1-header", "{path: /items, headers: {x-api-version: '1'}}"),
            ("v2-query", "{path: /items, query: {version: '2'}}"),
            ("default", "path: /items"),
        ]);
        assert_eq!(find(&t, "GET", "/items", None, &[("x-api-version", "1")]), "v1-header");
        assert_eq!(find(&t, "GET", "/items?a=b&version=2", None, &[]), "v2-query");
        assert_eq!(find(&t, "GET", "/items?version=3", None, &[]), "default");
    }

    #[test]
    fn bad_match_blocks_name_each_field() {
        let config: MatchConfig =
            serde_yaml_ng::from_str("{path: 'nope', methods: [get, 'B@D'], host: 'a.*.com'}").unwrap();
        let errors = Matcher::compile(&config, 0).unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(fields, ["path", "methods[0]", "methods[1]", "host"]);
        assert!(errors[1].1.contains("write \"GET\""));
    }

    /// The index changes which routes are tried, never which one wins: for
    /// a mixed table and many paths, the indexed lookup gives what trying
    /// every route in order gives.
    #[test]
    fn the_index_chooses_what_trying_every_route_chooses() {
        let t = table(&[
            ("root", "path: /"),
            ("prefix", "path: /users"),
            ("deep-prefix", "path: /users/admin"),
            ("template", "path: /users/{id}"),
            ("param-first", "path: /{tenant}/users"),
            ("catch-all", "path: /files/{*rest}"),
            ("root-catch-all", "path: /{*rest}\nmethods: [DELETE]"),
            ("exact", "path: = /users/me"),
            ("exact-root", "path: = /"),
            ("anchored", "path: ~ ^/v[0-9]+/items$"),
            ("anchored-fixed", "path: ~ ^/items/[0-9]+$"),
            ("alternation", "path: ~ ^/(orders|carts)/[0-9]+$"),
            ("unanchored", "path: ~ /reports/"),
            ("case", "path: ~ (?i)^/Docs/.*"),
            ("multi-line", "path: ~ (?m)^/notes/x$"),
            ("hosted", "path: /users\nhost: api.example.com"),
            ("post-only", "path: /users/{id}/orders\nmethods: [POST]"),
        ]);
        let paths = [
            "/",
            "/users",
            "/users/",
            "/users/me",
            "/users/7",
            "/users/7/orders",
            "/users/admin/x",
            "/acme/users",
            "/files",
            "/files/a/b",
            "/v2/items",
            "/v2/items/x",
            "/items/9",
            "/items/x",
            "/orders/1",
            "/carts/2",
            "/x/reports/1",
            "/reports/",
            "/docs/a",
            "/DOCS/a",
            "/notes/x",
            "/other",
            "/usersx",
            "/%75sers",
        ];
        for path in paths {
            for (method, host) in [("GET", None), ("POST", Some("api.example.com")), ("DELETE", None)] {
                let uri: http::Uri = path.parse().unwrap();
                let method = Method::from_bytes(method.as_bytes()).unwrap();
                let head = RequestHead {
                    method: &method,
                    path: uri.path(),
                    host,
                    headers: &HeaderMap::new(),
                    query: None,
                };
                let linear = t
                    .entries
                    .iter()
                    .find(|(m, _)| m.matches_resource(&head, &mut Params::new()) && m.matches_method(&method));
                let indexed = match t.find(&head) {
                    Lookup::Found { route, .. } => Some(route),
                    _ => None,
                };
                assert_eq!(indexed, linear.map(|(_, r)| r), "{method} {path} host {host:?}");
            }
        }
        // Regexes that provably fix their first segment are indexed; others are tried for every path.
        let fixed: Vec<&str> = t
            .entries
            .iter()
            .filter(|(m, _)| matches!(m.path, PathPattern::Regex(_)) && m.path.first_segment().is_some())
            .map(|(_, r)| r.as_str())
            .collect();
        assert_eq!(fixed, ["anchored-fixed"]);
    }
}
