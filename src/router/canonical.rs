//! The canonical path: the one spelling of a request path that routes
//! match, plugins see and the upstream receives (after the route's rewrite).
//!
//! A path that a gateway reads one way and a service another is how a
//! protected route is bypassed: `/api//admin` (nginx's `merge_slashes`),
//! `/api/admin;x` and `/api/x/..;/admin` (Tomcat and Spring drop `;` path
//! parameters), `/api/x\..\admin` (IIS reads `\` as `/`). So, by default:
//!
//! - escapes of unreserved characters are decoded (`%61dmin` is `admin`),
//!   others kept and upper-cased (`%2f` is `%2F`);
//! - dot segments are resolved (RFC 3986 section 5.2.4); a path that climbs
//!   above the root is refused;
//! - empty segments are merged (`//` is `/`), as nginx does;
//! - `\` and `%5C` are refused: no service needs them, and some read them
//!   as separators;
//! - `;` and `%3B` are refused: Tomcat, Jetty and Spring read what follows
//!   as path parameters and drop it, so `/admin;x` would reach `/admin`
//!   (and `/api%3B/admin` `/api/admin`, where a service decodes first);
//! - `%00` is refused: some services end the path there;
//! - encoded slashes (`%2F`) are kept as they are (or refused, or decoded,
//!   as the listener says), but never around a dot segment
//!   (`/a/x%2F..%2Fadmin` is refused whatever the setting): a service that
//!   decodes them would climb.
//!
//! Each knob has a listener setting ([`PathPolicy`]), documented with its
//! risk in the book's security model (docs/src/security.md).

pub use crate::config::model::{EscapedSlashes, Semicolons};
use std::borrow::Cow;

/// How a listener makes request paths canonical.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PathPolicy {
    pub merge_slashes: bool,
    pub escaped_slashes: EscapedSlashes,
    pub semicolons: Semicolons,
}

impl Default for PathPolicy {
    fn default() -> PathPolicy {
        PathPolicy {
            merge_slashes: true,
            escaped_slashes: EscapedSlashes::Keep,
            semicolons: Semicolons::Reject,
        }
    }
}

impl From<&crate::config::model::PathConfig> for PathPolicy {
    fn from(config: &crate::config::model::PathConfig) -> PathPolicy {
        PathPolicy {
            merge_slashes: config.merge_slashes,
            escaped_slashes: config.escaped_slashes,
            semicolons: config.semicolons,
        }
    }
}

/// Why a path has no canonical form; said to the client in the 400.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    NotAbsolute,
    BadEscape,
    AboveRoot,
    Backslash,
    Semicolon,
    Nul,
    EscapedSlash,
    EscapedDotSegment,
}

impl PathError {
    pub fn detail(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the request path is not an absolute path",
            PathError::BadEscape => "the request path has a malformed percent-escape",
            PathError::AboveRoot => "the request path climbs above the root",
            PathError::Backslash => "the request path has a backslash; separate segments with /",
            PathError::Semicolon => "the request path has a ';' (path parameters are not accepted here)",
            PathError::Nul => "the request path has an escaped NUL (%00)",
            PathError::EscapedSlash => "the request path has an escaped slash (%2F), which this listener refuses",
            PathError::EscapedDotSegment => "the request path has a dot segment next to an escaped slash",
        }
    }
}

/// The canonical form of `path` under `policy`. Borrowed when the path is
/// canonical already, which is the common case and costs one scan.
pub fn canonical_path<'a>(path: &'a str, policy: &PathPolicy) -> Result<Cow<'a, str>, PathError> {
    if !path.starts_with('/') {
        return Err(PathError::NotAbsolute);
    }
    let bytes = path.as_bytes();
    let mut previous = 0u8;
    let mut needs_work = false;
    for &byte in bytes {
        match byte {
            b'\\' => return Err(PathError::Backslash),
            b';' if policy.semicolons == Semicolons::Reject => return Err(PathError::Semicolon),
            b'%' => needs_work = true,
            b'/' if previous == b'/' && policy.merge_slashes => needs_work = true,
            b'.' if previous == b'/' => needs_work = true,
            _ => {}
        }
        previous = byte;
    }
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode(path, policy)?;
    resolve_segments(&decoded, policy).map(Cow::Owned)
}

/// Decodes escapes of unreserved characters (and `%2F` when asked to);
/// others stay escaped, upper-cased. An escaped `;` is refused as a bare one
/// is: a service that decodes before it splits off path parameters would
/// read `/api%3B/admin` as `/api/admin`.
fn decode(path: &str, policy: &PathPolicy) -> Result<String, PathError> {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            // hyper accepts only ASCII in a request target; copy by char anyway.
            let ch = path[i..].chars().next().ok_or(PathError::BadEscape)?;
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        let hex = path.get(i + 1..i + 3).ok_or(PathError::BadEscape)?;
        // `from_str_radix` alone would take a sign (`%+1`).
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(PathError::BadEscape);
        }
        let value = u8::from_str_radix(hex, 16).map_err(|_| PathError::BadEscape)?;
        match value {
            0 => return Err(PathError::Nul),
            b'\\' => return Err(PathError::Backslash),
            b';' if policy.semicolons == Semicolons::Reject => return Err(PathError::Semicolon),
            b'/' => match policy.escaped_slashes {
                EscapedSlashes::Keep => out.push_str("%2F"),
                EscapedSlashes::Reject => return Err(PathError::EscapedSlash),
                EscapedSlashes::Decode => out.push('/'),
            },
            v if v.is_ascii_alphanumeric() || b"-._~".contains(&v) => out.push(v as char),
            _ => {
                out.push('%');
                out.push_str(&hex.to_ascii_uppercase());
            }
        }
        i += 3;
    }
    Ok(out)
}

/// Merges empty segments, resolves dot segments (RFC 3986 section 5.2.4)
/// and refuses what a service could still read as one.
fn resolve_segments(path: &str, policy: &PathPolicy) -> Result<String, PathError> {
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = path[1..].split('/').collect();
    let last = segments.len() - 1;
    let mut trailing_slash = false;
    for (i, segment) in segments.iter().enumerate() {
        if hides_dot_segment(segment) {
            return Err(PathError::EscapedDotSegment);
        }
        match *segment {
            "." => trailing_slash = i == last,
            ".." => {
                out.pop().ok_or(PathError::AboveRoot)?;
                trailing_slash = i == last;
            }
            "" if policy.merge_slashes => trailing_slash = i == last,
            other => {
                out.push(other);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    for segment in &out {
        result.push('/');
        result.push_str(segment);
    }
    if trailing_slash || result.is_empty() {
        result.push('/');
    }
    Ok(result)
}

/// A segment that is not a dot segment here but becomes one where a
/// service splits it: at an escaped slash (`x%2F..`), or before `;`
/// parameters (`..;x` or `..%3Bx`, when semicolons are kept).
fn hides_dot_segment(segment: &str) -> bool {
    if !segment.contains("%2F") && !segment.contains(';') && !segment.contains("%3B") {
        return false;
    }
    segment
        .split("%2F")
        .map(|part| part.split(';').next().unwrap_or(part))
        .map(|part| part.split("%3B").next().unwrap_or(part))
        .any(|part| part == "." || part == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(path: &str) -> Result<String, PathError> {
        canonical_path(path, &PathPolicy::default()).map(Cow::into_owned)
    }

    fn with(policy: PathPolicy, path: &str) -> Result<String, PathError> {
        canonical_path(path, &policy).map(Cow::into_owned)
    }

    #[test]
    fn canonical_paths_are_borrowed() {
        assert!(matches!(
            canonical_path("/api/v1/users", &PathPolicy::default()),
            Ok(Cow::Borrowed(_))
        ));
        assert!(matches!(
            canonical_path("/a/b.json?x", &PathPolicy::default()),
            Ok(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn dots_and_unreserved_escapes_are_resolved() {
        assert_eq!(canon("/a/b").unwrap(), "/a/b");
        assert_eq!(canon("/a/./b/../c").unwrap(), "/a/c");
        assert_eq!(canon("/a/b/..").unwrap(), "/a/");
        assert_eq!(canon("/%61dmin").unwrap(), "/admin");
        assert_eq!(canon("/a/%2e%2E/b").unwrap(), "/b");
        assert_eq!(canon("/a%2fb").unwrap(), "/a%2Fb");
        assert_eq!(canon("/a%20b").unwrap(), "/a%20b");
        assert_eq!(canon("/../etc/passwd"), Err(PathError::AboveRoot));
        assert_eq!(canon("/a/%zz"), Err(PathError::BadEscape));
        assert_eq!(canon("/a/%+1"), Err(PathError::BadEscape));
        assert_eq!(canon("*"), Err(PathError::NotAbsolute));
    }

    #[test]
    fn empty_segments_are_merged() {
        assert_eq!(canon("/api//admin/users").unwrap(), "/api/admin/users");
        assert_eq!(canon("//admin").unwrap(), "/admin");
        assert_eq!(canon("/a///").unwrap(), "/a/");
        assert_eq!(canon("/a/.//b").unwrap(), "/a/b");
        let kept = PathPolicy {
            merge_slashes: false,
            ..PathPolicy::default()
        };
        assert_eq!(with(kept, "/api//admin").unwrap(), "/api//admin");
    }

    #[test]
    fn what_services_read_as_separators_is_refused() {
        assert_eq!(canon("/api/x\\..\\admin"), Err(PathError::Backslash));
        assert_eq!(canon("/api/x%5C..%5Cadmin"), Err(PathError::Backslash));
        assert_eq!(canon("/api/admin;x/users"), Err(PathError::Semicolon));
        assert_eq!(canon("/api%3B/admin"), Err(PathError::Semicolon));
        assert_eq!(canon("/api%3b/admin"), Err(PathError::Semicolon));
        assert_eq!(canon("/api/public/..;/admin"), Err(PathError::Semicolon));
        assert_eq!(canon("/a%00.json"), Err(PathError::Nul));
        assert_eq!(canon("/api/x%2F..%2Fadmin"), Err(PathError::EscapedDotSegment));
        assert_eq!(canon("/api/x%2f%2e%2e%2fadmin"), Err(PathError::EscapedDotSegment));
    }

    #[test]
    fn escaped_slashes_follow_the_policy() {
        let policy = |escaped_slashes| PathPolicy {
            escaped_slashes,
            ..PathPolicy::default()
        };
        assert_eq!(
            with(policy(EscapedSlashes::Keep), "/p/@s%2fname").unwrap(),
            "/p/@s%2Fname"
        );
        assert_eq!(
            with(policy(EscapedSlashes::Reject), "/p/@s%2fname"),
            Err(PathError::EscapedSlash)
        );
        assert_eq!(
            with(policy(EscapedSlashes::Decode), "/api/x%2F..%2Fadmin").unwrap(),
            "/api/admin"
        );
    }

    #[test]
    fn kept_semicolons_never_hide_a_dot_segment() {
        let keep = PathPolicy {
            semicolons: Semicolons::Keep,
            ..PathPolicy::default()
        };
        assert_eq!(with(keep, "/a;jsessionid=1/b").unwrap(), "/a;jsessionid=1/b");
        assert_eq!(with(keep, "/api/public/..;/admin"), Err(PathError::EscapedDotSegment));
        assert_eq!(with(keep, "/api/public/..%3B/admin"), Err(PathError::EscapedDotSegment));
        assert_eq!(with(keep, "/a%3bx/b").unwrap(), "/a%3Bx/b");
    }

    /// How a lenient service reads a path (Tomcat, Spring, nginx with
    /// `merge_slashes`, IIS together): `\` and `%5C` as `/`, `%2F` decoded,
    /// `;` parameters dropped, empty segments merged, dot segments resolved.
    fn lenient_reading(path: &str) -> Option<String> {
        let mut decoded = String::new();
        let bytes = path.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let value = u8::from_str_radix(path.get(i + 1..i + 3)?, 16).ok()?;
                decoded.push(if value == b'\\' { '/' } else { value as char });
                i += 3;
            } else {
                decoded.push(if bytes[i] == b'\\' { '/' } else { bytes[i] as char });
                i += 1;
            }
        }
        let mut out: Vec<&str> = Vec::new();
        for segment in decoded.split('/') {
            match segment.split(';').next().unwrap_or("") {
                "" | "." => {}
                ".." => {
                    out.pop();
                }
                other => out.push(other),
            }
        }
        Some(format!("/{}", out.join("/")))
    }

    fn under(path: &str, prefix: &str) -> bool {
        path == prefix || path.starts_with(&format!("{prefix}/"))
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(4096))]

        /// For any path built from the pieces bypasses are made of: the
        /// canonical form is a fixed point, has no piece a service could
        /// read differently, and is under the protected prefix whenever a
        /// lenient service would read the path as under it.
        #[test]
        fn no_spelling_escapes_the_canonical_form(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "/", "//", "api", "admin", "users", ".", "..", "%2e", "%2E%2e", "%2F", "%2f", "%5C",
                    "\\", ";", ";x=1", "%3B", "%61dmin", "%00", "%zz", "x", "%20", "~", "%7E",
                ]),
                0..12,
            )
        ) {
            let path = format!("/{}", pieces.concat());
            for policy in [
                PathPolicy::default(),
                PathPolicy { escaped_slashes: EscapedSlashes::Decode, ..PathPolicy::default() },
                PathPolicy { semicolons: Semicolons::Keep, ..PathPolicy::default() },
            ] {
                let Ok(canonical) = canonical_path(&path, &policy) else { continue };
                let again = canonical_path(&canonical, &policy);
                proptest::prop_assert_eq!(again.as_deref(), Ok(&*canonical), "{} is not a fixed point", path);
                proptest::prop_assert!(!canonical.contains("//") && !canonical.contains('\\'), "{canonical}");
                proptest::prop_assert!(
                    !canonical.split('/').any(|s| s == "." || s == ".."),
                    "{canonical} keeps a dot segment"
                );
                if policy.semicolons == Semicolons::Reject {
                    proptest::prop_assert!(!canonical.contains(';'));
                }
                // Kept escaped slashes and kept semicolons are the documented
                // risks of their settings; every other spelling is covered.
                let escaped_slash = path.to_ascii_lowercase().contains("%2f");
                let covered = policy.semicolons == Semicolons::Reject
                    && (policy.escaped_slashes == EscapedSlashes::Decode || !escaped_slash);
                if covered {
                    if let Some(reading) = lenient_reading(&path) {
                        if under(&reading, "/api/admin") {
                            proptest::prop_assert!(
                                under(&canonical, "/api/admin"),
                                "{path}: a service reads {reading}, Portico routes {canonical}"
                            );
                        }
                    }
                }
            }
        }
    }
}
