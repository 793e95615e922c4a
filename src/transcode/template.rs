//! `google.api.http` path templates: `/v1/{name=shelves/*}/books/{book_id}:publish`.
//!
//! ```text
//! Template = "/" Segments [ ":" Verb ]
//! Segment  = "*" | "**" | LITERAL | "{" FieldPath [ "=" Segments ] "}"
//! ```
//! `*` is one segment, `**` any number (last only); a variable without a
//! pattern is one segment.

use percent_encoding::percent_decode_str;

#[derive(Debug, Clone, PartialEq)]
enum Segment {
    Literal(String),
    One,
    Rest,
}

/// One segment of the flattened template, and the variable it is part of.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    segment: Segment,
    variable: Option<usize>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    steps: Vec<Step>,
    /// Field paths of the variables, in order: `["shelf", "book.id"]`.
    pub variables: Vec<Vec<String>>,
    verb: Option<String>,
}

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| format!("{text:?} does not start with `/`"))?;
        // The verb follows the last `:` outside braces.
        let (body, verb) = match rest.rfind(':') {
            Some(at) if !rest[at..].contains('}') => (&rest[..at], Some(rest[at + 1..].to_string())),
            _ => (rest, None),
        };
        let mut template = Template {
            steps: Vec::new(),
            variables: Vec::new(),
            verb,
        };
        let mut chars = body;
        while !chars.is_empty() {
            if let Some(inner) = chars.strip_prefix('{') {
                let end = inner
                    .find('}')
                    .ok_or_else(|| format!("{text:?}: a `{{` is not closed"))?;
                let (field, pattern) = match inner[..end].split_once('=') {
                    Some((field, pattern)) => (field, pattern),
                    None => (&inner[..end], "*"),
                };
                let path: Vec<String> = field.split('.').map(str::to_string).collect();
                if path
                    .iter()
                    .any(|p| p.is_empty() || !p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                {
                    return Err(format!("{text:?}: {field:?} is not a field path"));
                }
                let index = template.variables.len();
                template.variables.push(path);
                for segment in pattern.split('/') {
                    template.steps.push(Step {
                        segment: segment_of(segment, text)?,
                        variable: Some(index),
                    });
                }
                chars = &inner[end + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                template.steps.push(Step {
                    segment: segment_of(&chars[..end], text)?,
                    variable: None,
                });
                chars = &chars[end..];
            }
            chars = match chars.strip_prefix('/') {
                Some("") => return Err(format!("{text:?} ends with `/`")),
                Some(next) => next,
                None if chars.is_empty() => chars,
                None => return Err(format!("{text:?}: expected `/` before {chars:?}")),
            };
        }
        if let Some(at) = template.steps.iter().position(|s| s.segment == Segment::Rest) {
            if at + 1 != template.steps.len() {
                return Err(format!("{text:?}: `**` may only be last"));
            }
        }
        Ok(template)
    }

    /// The variables' values (percent-decoded) when `path` matches.
    pub fn matches(&self, path: &str) -> Option<Vec<String>> {
        let path = path.strip_prefix('/')?;
        let path = match &self.verb {
            Some(verb) => path.strip_suffix(verb.as_str())?.strip_suffix(':')?,
            None => path,
        };
        let segments: Vec<&str> = if path.is_empty() {
            Vec::new()
        } else {
            path.split('/').collect()
        };
        let mut values: Vec<Vec<&str>> = vec![Vec::new(); self.variables.len()];
        for (i, step) in self.steps.iter().enumerate() {
            match &step.segment {
                Segment::Rest => {
                    if let Some(variable) = step.variable {
                        values[variable].extend(segments.get(i..).unwrap_or_default());
                    }
                    return Some(decoded(values));
                }
                Segment::Literal(literal) if segments.get(i) != Some(&literal.as_str()) => return None,
                Segment::One if segments.get(i).is_none_or(|s| s.is_empty()) => return None,
                _ => {}
            }
            if let Some(variable) = step.variable {
                values[variable].push(segments[i]);
            }
        }
        (segments.len() == self.steps.len()).then(|| decoded(values))
    }
}

fn segment_of(text: &str, template: &str) -> Result<Segment, String> {
    match text {
        "*" => Ok(Segment::One),
        "**" => Ok(Segment::Rest),
        "" => Err(format!("{template:?} has an empty segment")),
        literal if literal.contains(['{', '}', '=', '*']) => Err(format!("{template:?}: {literal:?} is not a segment")),
        literal => Ok(Segment::Literal(literal.to_string())),
    }
}

fn decoded(values: Vec<Vec<&str>>) -> Vec<String> {
    values
        .into_iter()
        .map(|parts| {
            let joined = parts.join("/");
            percent_decode_str(&joined).decode_utf8_lossy().into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_take_one_segment_or_their_pattern() {
        let t = Template::parse("/v1/users/{id}").unwrap();
        assert_eq!(t.matches("/v1/users/42"), Some(vec!["42".to_string()]));
        assert_eq!(t.matches("/v1/users/a%20b"), Some(vec!["a b".to_string()]));
        assert_eq!(t.matches("/v1/users"), None);
        assert_eq!(t.matches("/v1/users/42/x"), None);
        assert_eq!(t.matches("/v1/users/"), None);

        let t = Template::parse("/v1/{name=shelves/*}/books/{book.id}").unwrap();
        assert_eq!(
            t.variables,
            vec![vec!["name".to_string()], vec!["book".to_string(), "id".to_string()]]
        );
        assert_eq!(
            t.matches("/v1/shelves/7/books/9"),
            Some(vec!["shelves/7".to_string(), "9".to_string()])
        );
        assert_eq!(t.matches("/v1/racks/7/books/9"), None);
    }

    #[test]
    fn rest_and_verbs() {
        let t = Template::parse("/v1/files/{path=**}").unwrap();
        assert_eq!(t.matches("/v1/files/a/b/c.txt"), Some(vec!["a/b/c.txt".to_string()]));
        assert_eq!(t.matches("/v1/files"), Some(vec![String::new()]));
        let t = Template::parse("/v1/users/{id}:activate").unwrap();
        assert_eq!(t.matches("/v1/users/5:activate"), Some(vec!["5".to_string()]));
        assert_eq!(t.matches("/v1/users/5"), None);
    }

    #[test]
    fn malformed_templates_are_refused() {
        for bad in [
            "v1/users",
            "/v1/{id",
            "/v1/**/x",
            "/v1//x",
            "/v1/",
            "/v1/{a b}",
            "/v1/x{id}",
        ] {
            assert!(Template::parse(bad).is_err(), "{bad}");
        }
    }
}
