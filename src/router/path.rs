//! Path patterns (`/prefix`, `= /exact`, `/users/{id}`, `/files/{*rest}`, `~ regex`),
//! matched against canonical paths (`canonical`).

use regex::Regex;
use std::sync::{Arc, OnceLock};

/// Values captured from the path, in pattern order: `{id}` gives `("id", "7")`.
pub type Params = Vec<(Arc<str>, String)>;

#[derive(Debug, Clone)]
pub enum PathPattern {
    /// Segment-aware prefix: `/users` matches `/users` and `/users/7`, never `/usersx`.
    Prefix(String),
    /// `= /health`: this path only.
    Exact(String),
    /// `/users/{id}`, `/files/{*rest}`.
    Template(Vec<Segment>),
    /// `~ ^/v[0-9]+/items$`: named groups become parameters.
    Regex(PathRegex),
}

/// A route's regex, checked when the config is read and compiled for
/// matching the first time a request's path is tried against it.
///
/// A compiled `regex::Regex` holds about 11 KB (its engines, their caches'
/// pool); a config of 1,000 regex routes kept 11 MB for them whether or not
/// they were ever asked. Kept as text until needed, a route costs its
/// pattern; one that is tried compiles once (tens of microseconds, shared
/// by every thread) and keeps its engines from then on.
#[derive(Debug, Clone)]
pub struct PathRegex {
    pattern: Box<str>,
    /// The named groups, in pattern order: they become parameters.
    names: Box<[Arc<str>]>,
    compiled: OnceLock<Option<Regex>>,
}

impl PathRegex {
    /// Compiles the pattern once to check it (syntax and size limits) and to
    /// read its group names; what matching needs is compiled again on first
    /// use.
    fn new(pattern: &str) -> Result<PathRegex, String> {
        let checked = Regex::new(pattern).map_err(|e| format!("invalid regex: {}", one_line(&e.to_string())))?;
        Ok(PathRegex {
            pattern: pattern.into(),
            names: checked.capture_names().flatten().map(Arc::from).collect(),
            compiled: OnceLock::new(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// The compiled regex. `None` cannot happen for a pattern `new` accepted
    /// (the same text, the same limits); if it did, the route matches nothing.
    fn regex(&self) -> Option<&Regex> {
        self.compiled.get_or_init(|| Regex::new(&self.pattern).ok()).as_ref()
    }

    fn matches(&self, path: &str, params: &mut Params) -> bool {
        let Some(regex) = self.regex() else {
            return false;
        };
        // Without named groups there is nothing to capture: the cheaper search.
        if self.names.is_empty() {
            return regex.is_match(path);
        }
        let Some(captures) = regex.captures(path) else {
            return false;
        };
        for name in self.names.iter() {
            if let Some(value) = captures.name(name) {
                params.push((name.clone(), value.as_str().to_string()));
            }
        }
        true
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// One non-empty segment.
    Param(Arc<str>),
    /// The rest of the path, zero or more segments; last only.
    CatchAll(Arc<str>),
}

/// How a path pattern ranks against others matching the same request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PathKind {
    Prefix = 0,
    Regex = 1,
    CatchAll = 2,
    Template = 3,
    Exact = 4,
}

impl PathPattern {
    /// Parses the `match.path` syntax; the error says what is wrong and how to write it.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        let text = text.trim();
        if let Some(exact) = text.strip_prefix('=') {
            let path = exact.trim();
            check_absolute(path)?;
            return Ok(PathPattern::Exact(path.to_string()));
        }
        if let Some(pattern) = text.strip_prefix('~') {
            return PathRegex::new(pattern.trim()).map(PathPattern::Regex);
        }
        check_absolute(text)?;
        if !text.contains(['{', '}']) {
            let trimmed = text.trim_end_matches('/');
            let prefix = if trimmed.is_empty() { "/" } else { trimmed };
            return Ok(PathPattern::Prefix(prefix.to_string()));
        }
        let raw: Vec<&str> = text[1..].split('/').collect();
        let mut segments = Vec::with_capacity(raw.len());
        let mut names: Vec<&str> = Vec::new();
        for (i, part) in raw.iter().enumerate() {
            let segment = match part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
                Some(inner) => {
                    let (catch_all, name) = match inner.strip_prefix('*') {
                        Some(name) => (true, name),
                        None => (false, inner),
                    };
                    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                        return Err(format!(
                            "parameter {{{inner}}} needs a name of letters, digits and `_`, like {{id}}"
                        ));
                    }
                    if names.contains(&name) {
                        return Err(format!("parameter {{{name}}} appears twice: give each its own name"));
                    }
                    names.push(name);
                    if catch_all && i != raw.len() - 1 {
                        return Err(format!("catch-all {{*{name}}} must be the last segment"));
                    }
                    if catch_all {
                        Segment::CatchAll(name.into())
                    } else {
                        Segment::Param(name.into())
                    }
                }
                None if part.contains(['{', '}']) => {
                    return Err(format!(
                        "segment {part:?} mixes text and a parameter: a parameter takes a whole segment, like /users/{{id}}"
                    ))
                }
                None => Segment::Literal((*part).to_string()),
            };
            segments.push(segment);
        }
        Ok(PathPattern::Template(segments))
    }

    pub fn kind(&self) -> PathKind {
        match self {
            PathPattern::Prefix(_) => PathKind::Prefix,
            PathPattern::Exact(_) => PathKind::Exact,
            PathPattern::Regex(_) => PathKind::Regex,
            PathPattern::Template(segments) => {
                if matches!(segments.last(), Some(Segment::CatchAll(_))) {
                    PathKind::CatchAll
                } else {
                    PathKind::Template
                }
            }
        }
    }

    /// Length of the literal text, for "longer before shorter" (0 for regexes,
    /// which keep their declaration order).
    pub fn literal_len(&self) -> usize {
        match self {
            PathPattern::Prefix(p) | PathPattern::Exact(p) => p.len(),
            PathPattern::Regex(_) => 0,
            PathPattern::Template(segments) => segments
                .iter()
                .map(|s| match s {
                    Segment::Literal(text) => text.len() + 1,
                    _ => 1,
                })
                .sum(),
        }
    }

    /// Names of the parameters this pattern captures.
    pub fn param_names(&self) -> Vec<String> {
        match self {
            PathPattern::Template(segments) => segments
                .iter()
                .filter_map(|s| match s {
                    Segment::Param(n) | Segment::CatchAll(n) => Some(n.to_string()),
                    Segment::Literal(_) => None,
                })
                .collect(),
            PathPattern::Regex(regex) => regex.names.iter().map(|name| name.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    /// The first segment of every path this pattern matches, when the
    /// pattern fixes it: the route table looks only at routes whose first
    /// segment is the request's, and at those that fix none. `None` is
    /// always safe; a wrong `Some` would hide a route, so a regex gives one
    /// only when every match provably starts with `/that-segment/`.
    pub fn first_segment(&self) -> Option<String> {
        match self {
            PathPattern::Prefix(prefix) if prefix == "/" => None,
            PathPattern::Prefix(path) | PathPattern::Exact(path) => Some(first_segment(path).to_string()),
            PathPattern::Template(segments) => match segments.first() {
                Some(Segment::Literal(text)) => Some(text.clone()),
                _ => None,
            },
            PathPattern::Regex(regex) => regex_first_segment(regex.as_str()),
        }
    }

    /// Matches a normalised path, adding captured parameters to `params`.
    pub fn matches(&self, path: &str, params: &mut Params) -> bool {
        match self {
            PathPattern::Prefix(prefix) => prefix_matches(prefix, path),
            PathPattern::Exact(exact) => exact == path,
            PathPattern::Template(segments) => template_matches(segments, path, params),
            PathPattern::Regex(regex) => regex.matches(path, params),
        }
    }
}

/// The first segment of an absolute path: `users` for `/users/7`, empty for `/`.
pub fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split('/').next().unwrap_or_default()
}

/// The segment every match of `pattern` starts with, read from the regex's
/// own syntax tree (`regex-syntax`): the regex must be anchored at the
/// start (`^`, not multi-line), and every literal each match must begin
/// with must be `/segment/` for one and the same segment.
fn regex_first_segment(pattern: &str) -> Option<String> {
    use regex_syntax::hir::literal::Extractor;
    use regex_syntax::hir::Look;
    let hir = regex_syntax::parse(pattern).ok()?;
    if !hir.properties().look_set_prefix().contains(Look::Start) {
        return None;
    }
    let prefixes = Extractor::new().extract(&hir);
    let mut found: Option<&[u8]> = None;
    for literal in prefixes.literals()? {
        let bytes = literal.as_bytes().strip_prefix(b"/")?;
        let end = bytes.iter().position(|&b| b == b'/')?;
        match found {
            Some(segment) if segment != &bytes[..end] => return None,
            _ => found = Some(&bytes[..end]),
        }
    }
    std::str::from_utf8(found?).ok().map(str::to_string)
}

/// `/users` matches `/users`, `/users/` and `/users/7`; `/` matches everything.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

fn template_matches(segments: &[Segment], path: &str, params: &mut Params) -> bool {
    let start = params.len();
    let mut rest = path.strip_prefix('/').unwrap_or(path);
    for (i, segment) in segments.iter().enumerate() {
        if let Segment::CatchAll(name) = segment {
            params.push((name.clone(), rest.to_string()));
            return true;
        }
        let (part, tail) = match rest.find('/') {
            Some(at) => (&rest[..at], Some(&rest[at + 1..])),
            None => (rest, None),
        };
        let ok = match segment {
            Segment::Literal(text) => part == text,
            Segment::Param(name) if !part.is_empty() => {
                params.push((name.clone(), part.to_string()));
                true
            }
            _ => false,
        };
        let last = i == segments.len() - 1;
        // A catch-all after this segment may match an empty rest (`/files` for `/files/{*rest}`).
        let next_is_catch_all = matches!(segments.get(i + 1), Some(Segment::CatchAll(_)));
        match (ok, tail) {
            (true, Some(tail)) if !last => rest = tail,
            (true, None) if last => return true,
            (true, None) if next_is_catch_all => rest = "",
            _ => {
                params.truncate(start);
                return false;
            }
        }
    }
    params.truncate(start);
    false
}

fn check_absolute(path: &str) -> Result<(), String> {
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(format!(
            "path {path:?} must start with `/` (prefix `/api`, exact `= /health`, template `/users/{{id}}`, regex `~ ^/v[0-9]+/`)"
        ))
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(pattern: &str, path: &str) -> Option<Params> {
        let mut params = Params::new();
        PathPattern::parse(pattern)
            .unwrap()
            .matches(path, &mut params)
            .then_some(params)
    }

    fn param(params: &Params, name: &str) -> String {
        params
            .iter()
            .find(|(n, _)| &**n == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    }

    #[test]
    fn prefix_is_segment_aware() {
        assert!(matches("/users", "/users").is_some());
        assert!(matches("/users", "/users/7").is_some());
        assert!(matches("/users/", "/users/7").is_some());
        assert!(matches("/users", "/usersx").is_none());
        assert!(matches("/", "/anything/at/all").is_some());
    }

    #[test]
    fn exact_matches_only_itself() {
        assert!(matches("= /health", "/health").is_some());
        assert!(matches("= /health", "/health/").is_none());
        assert!(matches("= /health", "/healthz").is_none());
    }

    #[test]
    fn templates_capture_parameters() {
        let params = matches("/users/{id}", "/users/7").unwrap();
        assert_eq!(param(&params, "id"), "7");
        assert!(matches("/users/{id}", "/users/").is_none());
        assert!(matches("/users/{id}", "/users/7/orders").is_none());
        let params = matches("/users/{id}/orders/{order}", "/users/7/orders/9").unwrap();
        assert_eq!(param(&params, "order"), "9");
    }

    #[test]
    fn catch_all_takes_the_rest() {
        assert_eq!(
            param(&matches("/files/{*rest}", "/files/a/b.txt").unwrap(), "rest"),
            "a/b.txt"
        );
        assert_eq!(param(&matches("/files/{*rest}", "/files").unwrap(), "rest"), "");
        assert!(matches("/files/{*rest}", "/filesx").is_none());
    }

    #[test]
    fn regex_captures_named_groups() {
        let params = matches("~ ^/v(?P<version>[0-9]+)/items$", "/v2/items").unwrap();
        assert_eq!(param(&params, "version"), "2");
        assert!(matches("~ ^/v[0-9]+/items$", "/vx/items").is_none());
    }

    #[test]
    fn a_regex_is_checked_when_read_and_compiled_when_first_tried() {
        let pattern = PathPattern::parse("~ ^/v(?P<version>[0-9]+)/(?P<item>[a-z]+)$").unwrap();
        let PathPattern::Regex(regex) = &pattern else {
            panic!("a regex pattern: {pattern:?}")
        };
        assert!(regex.compiled.get().is_none(), "compiled before any request");
        assert_eq!(pattern.param_names(), ["version", "item"]);
        let mut params = Params::new();
        assert!(!pattern.matches("/v2", &mut params));
        assert!(regex.compiled.get().is_some_and(|compiled| compiled.is_some()));
        assert!(pattern.matches("/v2/items", &mut params));
        assert_eq!(
            (param(&params, "version"), param(&params, "item")),
            ("2".into(), "items".into())
        );
        // Past the size limit: refused when read, not at the first request.
        let huge = "~ ^/(a{1000}){1000}$";
        assert!(PathPattern::parse(huge).unwrap_err().contains("invalid regex"));
    }

    #[test]
    fn bad_patterns_explain_the_fix() {
        assert!(PathPattern::parse("users").unwrap_err().contains("must start with `/`"));
        assert!(PathPattern::parse("/files/{*rest}/x")
            .unwrap_err()
            .contains("last segment"));
        assert!(PathPattern::parse("/u/{id}/{id}").unwrap_err().contains("twice"));
        assert!(PathPattern::parse("/u/x{id}").unwrap_err().contains("whole segment"));
        assert!(PathPattern::parse("~ ^/(").unwrap_err().contains("invalid regex"));
    }
}
