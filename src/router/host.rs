//! Host patterns: `api.example.com` or `*.example.com`.

/// A `match.host` value. Names compare case-insensitively and without port.
#[derive(Debug, Clone)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com`: any name ending in `.example.com`, not `example.com` itself.
    Wildcard {
        suffix: String,
    },
}

impl HostPattern {
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let text = text.trim().to_ascii_lowercase();
        let valid = |name: &str| {
            !name.is_empty()
                && name
                    .split('.')
                    .all(|label| !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        };
        if let Some(suffix) = text.strip_prefix("*.") {
            if valid(suffix) {
                return Ok(HostPattern::Wildcard {
                    suffix: format!(".{suffix}"),
                });
            }
        } else if valid(&text) {
            return Ok(HostPattern::Exact(text));
        }
        Err(format!(
            "host {text:?} is not a host name: write `api.example.com` or `*.example.com` (no port, `*` only as the first label)"
        ))
    }

    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(name) => name == host,
            HostPattern::Wildcard { suffix } => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
        }
    }

    /// Exact names rank above wildcards; longer wildcards above shorter ones.
    pub fn rank(&self) -> (bool, usize) {
        match self {
            HostPattern::Exact(name) => (true, name.len()),
            HostPattern::Wildcard { suffix } => (false, suffix.len()),
        }
    }
}

/// The request's host, lowercased and without port, from the URI authority
/// (HTTP/2, absolute-form) or the Host header.
pub fn request_host<'a>(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> Option<std::borrow::Cow<'a, str>> {
    let host = match uri.host() {
        Some(host) => host,
        None => {
            let value = headers.get(http::header::HOST)?.to_str().ok()?;
            strip_port(value)
        }
    };
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Some(std::borrow::Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(std::borrow::Cow::Borrowed(host))
    }
}

fn strip_port(authority: &str) -> &str {
    if authority.starts_with('[') {
        // IPv6 literal: keep the brackets, drop `:port` after them.
        return authority.find(']').map_or(authority, |end| &authority[..=end]);
    }
    authority.rsplit_once(':').map_or(authority, |(host, _)| host)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_subdomains_only() {
        let wild = HostPattern::parse("*.Example.com").unwrap();
        assert!(wild.matches("a.example.com"));
        assert!(wild.matches("a.b.example.com"));
        assert!(!wild.matches("example.com"));
        assert!(!wild.matches("badexample.com"));
        assert!(HostPattern::parse("a.*.com").is_err());
        assert!(HostPattern::parse("api.example.com:80").is_err());
    }

    #[test]
    fn request_host_strips_port_and_case() {
        let uri: http::Uri = "/x".parse().unwrap();
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::HOST, "API.example.com:8080".parse().unwrap());
        assert_eq!(request_host(&uri, &headers).unwrap(), "api.example.com");
        headers.insert(http::header::HOST, "[::1]:8080".parse().unwrap());
        assert_eq!(request_host(&uri, &headers).unwrap(), "[::1]");
    }
}
