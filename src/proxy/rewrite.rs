//! Path rewrites on the way upstream: `strip_prefix`, `add_prefix`, or a new
//! path built from the route's parameters (`/users/{id}` to `/v2/accounts/{id}`).
//! The query string is kept as it came.

use crate::config::model::RewriteConfig;
use crate::router::{path::prefix_matches, Params};
use http::uri::PathAndQuery;
use std::borrow::Cow;
use std::sync::Arc;

#[derive(Debug, Clone, Default)]
pub struct Rewrite {
    strip_prefix: Option<String>,
    add_prefix: Option<String>,
    template: Option<Vec<Part>>,
    /// A `path` without parameters, as the request target it makes for a
    /// request without a query: parsed once here, not for every request.
    fixed: Option<PathAndQuery>,
}

#[derive(Debug, Clone)]
enum Part {
    Text(String),
    Param(Arc<str>),
}

impl Rewrite {
    /// Compiles a `rewrite:` block for a route capturing `params`; errors are
    /// `(field, message)`.
    pub fn compile(config: &RewriteConfig, params: &[String]) -> Result<Rewrite, Vec<(String, String)>> {
        let mut errors = Vec::new();
        for (field, value) in [
            ("strip_prefix", &config.strip_prefix),
            ("add_prefix", &config.add_prefix),
        ] {
            if let Some(value) = value {
                if !value.starts_with('/') {
                    errors.push((field.to_string(), format!("{value:?} must start with `/`")));
                } else if let Err(message) = check_path(value, value) {
                    errors.push((field.to_string(), message));
                }
            }
        }
        let template = config.path.as_deref().map(|path| {
            if config.strip_prefix.is_some() || config.add_prefix.is_some() {
                errors.push((
                    "path".to_string(),
                    "`path` replaces the whole path: use it without `strip_prefix` and `add_prefix`".to_string(),
                ));
            }
            if !path.starts_with('/') {
                errors.push(("path".to_string(), format!("{path:?} must start with `/`")));
            }
            parse_template(path, params).unwrap_or_else(|e| {
                errors.push(("path".to_string(), e));
                Vec::new()
            })
        });
        if !errors.is_empty() {
            return Err(errors);
        }
        let fixed = match template.as_deref() {
            Some([Part::Text(text)]) => PathAndQuery::from_maybe_shared(bytes::Bytes::from(text.clone()))
                .ok()
                .filter(|target| target.as_str() == text && target.query().is_none()),
            _ => None,
        };
        Ok(Rewrite {
            fixed,
            strip_prefix: config
                .strip_prefix
                .as_ref()
                .map(|p| p.trim_end_matches('/').to_string()),
            add_prefix: config.add_prefix.as_ref().map(|p| p.trim_end_matches('/').to_string()),
            template,
        })
    }

    /// The upstream path for a request path.
    pub fn apply<'a>(&self, path: &'a str, params: &Params) -> Cow<'a, str> {
        if let Some(parts) = &self.template {
            let mut out = String::with_capacity(path.len());
            for part in parts {
                match part {
                    Part::Text(text) => out.push_str(text),
                    Part::Param(name) => {
                        if let Some((_, value)) = params.iter().find(|(n, _)| n == name) {
                            out.push_str(value);
                        }
                    }
                }
            }
            return Cow::Owned(out);
        }
        let mut path = Cow::Borrowed(path);
        if let Some(prefix) = &self.strip_prefix {
            if prefix_matches(prefix, &path) {
                let rest = &path[prefix.len()..];
                path = Cow::Owned(if rest.starts_with('/') {
                    rest.to_string()
                } else {
                    format!("/{rest}")
                });
            }
        }
        if let Some(prefix) = &self.add_prefix {
            path = Cow::Owned(if &*path == "/" {
                format!("{prefix}/")
            } else {
                format!("{prefix}{path}")
            });
        }
        path
    }
}

impl Rewrite {
    /// The path when it is fixed (a `path` without parameters).
    pub fn fixed_path(&self) -> Option<&str> {
        self.fixed.as_ref().map(PathAndQuery::path)
    }

    /// The request target for `rewritten` (the path this rewrite made) and
    /// the client's query: the fixed path's own when there is no query.
    pub fn target(&self, rewritten: &str, query: Option<&str>) -> Option<PathAndQuery> {
        match (&self.fixed, query) {
            (Some(fixed), None) if fixed.path() == rewritten => Some(fixed.clone()),
            (_, Some(query)) => PathAndQuery::try_from(format!("{rewritten}?{query}")).ok(),
            (_, None) => PathAndQuery::try_from(rewritten).ok(),
        }
    }
}

fn parse_template(path: &str, params: &[String]) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find('{') {
        if open > 0 {
            parts.push(Part::Text(rest[..open].to_string()));
        }
        let close = rest[open..]
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in {path:?}"))?
            + open;
        let name = rest[open + 1..close].trim_start_matches('*');
        if !params.iter().any(|p| p == name) {
            let known = if params.is_empty() {
                "the route's path captures no parameters".to_string()
            } else {
                format!(
                    "the route captures {}",
                    params.iter().map(|p| format!("{{{p}}}")).collect::<Vec<_>>().join(", ")
                )
            };
            return Err(format!("{{{name}}} is not a parameter of this route: {known}"));
        }
        parts.push(Part::Param(name.into()));
        rest = &rest[close + 1..];
    }
    if !rest.is_empty() {
        parts.push(Part::Text(rest.to_string()));
    }
    // Whole, with each parameter as a sample value: a piece such as
    // `.json` alone is no path.
    let sample: String = parts
        .iter()
        .map(|part| match part {
            Part::Text(text) => text.as_str(),
            Part::Param(_) => "x",
        })
        .collect();
    check_path(&sample, path)?;
    Ok(parts)
}

/// Whether `text` is valid in a URI path (`shown` being what the config
/// said): checked when the config is built, not refused on every request.
fn check_path(text: &str, shown: &str) -> Result<(), String> {
    PathAndQuery::try_from(text)
        .map(|_| ())
        .map_err(|_| format!("{shown:?} holds characters a URI path may not: percent-encode them (a space is %20)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(yaml: &str, params: &[&str]) -> Result<Rewrite, Vec<(String, String)>> {
        let config: RewriteConfig = serde_yaml_ng::from_str(yaml).unwrap();
        Rewrite::compile(&config, &params.iter().map(|p| p.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn strip_and_add_prefix() {
        let r = rewrite("{strip_prefix: /api/v1, add_prefix: /internal}", &[]).unwrap();
        assert_eq!(r.apply("/api/v1/users/7", &Params::new()), "/internal/users/7");
        assert_eq!(r.apply("/api/v1", &Params::new()), "/internal/");
        assert_eq!(r.apply("/api/v10", &Params::new()), "/internal/api/v10");
    }

    #[test]
    fn template_uses_captured_parameters() {
        let r = rewrite("{path: '/v2/accounts/{id}'}", &["id"]).unwrap();
        let params = vec![(Arc::from("id"), "7".to_string())];
        assert_eq!(r.apply("/users/7", &params), "/v2/accounts/7");
    }

    #[test]
    fn a_fixed_path_is_one_target_made_once() {
        let r = rewrite("{path: /small}", &[]).unwrap();
        assert_eq!(r.fixed_path(), Some("/small"));
        assert_eq!(r.apply("/policies", &Params::new()), "/small");
        let target = r.target("/small", None).unwrap();
        assert_eq!(target, "/small");
        assert!(std::ptr::eq(
            target.as_str().as_ptr(),
            r.target("/small", None).unwrap().as_str().as_ptr()
        ));
        assert_eq!(r.target("/small", Some("a=1&b")).unwrap(), "/small?a=1&b");
        // A query in the rewritten path, or a parameter: made per request.
        assert_eq!(rewrite("{path: '/x?a=1'}", &[]).unwrap().fixed_path(), None);
        assert_eq!(rewrite("{path: '/v2/{id}'}", &["id"]).unwrap().fixed_path(), None);
        let r = rewrite("{path: '/v2/{id}'}", &["id"]).unwrap();
        assert_eq!(r.target("/v2/7", None).unwrap(), "/v2/7");
    }

    #[test]
    fn template_naming_an_unknown_parameter_is_refused() {
        let errors = rewrite("{path: '/v2/{user}'}", &["id"]).unwrap_err();
        assert!(errors[0].1.contains("{user} is not a parameter"), "{errors:?}");
        assert!(errors[0].1.contains("{id}"));
        assert!(rewrite("{path: /x, strip_prefix: /y}", &[]).is_err());
        assert!(rewrite("{strip_prefix: y}", &[]).is_err());
        let errors = rewrite("{path: '/a b/{id}'}", &["id"]).unwrap_err();
        assert_eq!(errors[0].0, "path");
        assert!(errors[0].1.contains("percent-encode"), "{errors:?}");
        assert!(rewrite("{path: '/a%20b/{id}'}", &["id"]).is_ok());
        assert!(rewrite("{path: '/users/{id}.json'}", &["id"]).is_ok());
        let errors = rewrite("{add_prefix: '/in ternal'}", &[]).unwrap_err();
        assert_eq!(errors[0].0, "add_prefix");
    }
}
