//! Config errors: each names its place (path, and line and column when known) and the fix.

use super::source_map::{Location, SourceMap};
use std::fmt;

/// One problem in a config file.
#[derive(Debug, Clone)]
pub struct ConfigError {
    /// Config path such as `routes[2].upstream`; empty for the document itself.
    pub path: String,
    pub message: String,
    pub location: Option<Location>,
    /// The offending line with a caret, for errors the line itself explains
    /// (YAML syntax); printed under the message.
    pub excerpt: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)?;
        if let Some(place) = self.location {
            write!(f, " (line {}, column {})", place.line, place.column)?;
        }
        if let Some(excerpt) = &self.excerpt {
            // Indented to sit under the message when listed as `  {error}`.
            for line in excerpt.lines() {
                write!(f, "\n      {line}")?;
            }
        }
        Ok(())
    }
}

/// Every problem found in a config file, in document order.
#[derive(Debug, Default)]
pub struct ConfigErrors {
    pub errors: Vec<ConfigError>,
}

impl ConfigErrors {
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
            location: None,
            excerpt: None,
        });
    }

    pub fn push_error(&mut self, error: ConfigError) {
        self.errors.push(error);
    }

    /// Adds errors given relative to `prefix` as `(field, message)`.
    pub fn extend_at(&mut self, prefix: &str, errors: Vec<(String, String)>) {
        for (field, message) in errors {
            self.push(format!("{prefix}.{field}"), message);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn len(&self) -> usize {
        self.errors.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.errors.iter()
    }

    /// Fills in line and column for errors that do not have them yet, and puts
    /// the errors in the order they appear in the file.
    pub(crate) fn locate(&mut self, map: &SourceMap) {
        for error in &mut self.errors {
            if error.location.is_none() {
                error.location = map.locate(&error.path);
            }
        }
        self.errors
            .sort_by_key(|e| e.location.map_or((usize::MAX, 0), |l| (l.line, l.column)));
        // A global block checked once per route reports the same error each time.
        self.errors.dedup_by(|a, b| a.path == b.path && a.message == b.message);
    }

    pub(crate) fn into_result<T>(self, value: T) -> Result<T, ConfigErrors> {
        if self.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.errors.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{error}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Every name of `known` closest to `given`, when they are close enough to be
/// a typo: two names as close as each other are both offered, so the user
/// picks, not the gateway.
pub fn did_you_mean<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let close: Vec<(usize, &str)> = known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(given, k), k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 3))
        .collect();
    let Some(best) = close.iter().map(|(distance, _)| *distance).min() else {
        return Vec::new();
    };
    let mut names: Vec<&str> = close.into_iter().filter(|(d, _)| *d == best).map(|(_, k)| k).collect();
    names.sort_unstable();
    names.dedup();
    names
}

/// ` (did you mean "x"?)`, ` (did you mean "x" or "y"?)`, or nothing.
pub fn suggestion<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    let names = did_you_mean(given, known);
    match names.split_last() {
        None => String::new(),
        Some((last, [])) => format!(" (did you mean {last:?}?)"),
        Some((last, rest)) => {
            let rest: Vec<String> = rest.iter().map(|n| format!("{n:?}")).collect();
            format!(" (did you mean {} or {last:?}?)", rest.join(", "))
        }
    }
}

/// `a, b, c` sorted, or the first `limit` of them and how many more.
pub fn list_names<'a>(names: impl IntoIterator<Item = &'a str>, limit: usize) -> String {
    let mut names: Vec<&str> = names.into_iter().collect();
    names.sort_unstable();
    let more = names.len().saturating_sub(limit);
    names.truncate(limit);
    let mut out = names.join(", ");
    if more > 0 {
        out.push_str(&format!(" and {more} more"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equally_close_names_are_all_offered() {
        assert_eq!(
            suggestion("user", ["users", "usera", "orders"]),
            " (did you mean \"usera\" or \"users\"?)"
        );
        assert_eq!(suggestion("orderz", ["users", "orders"]), " (did you mean \"orders\"?)");
        assert_eq!(suggestion("zzzzzz", ["users", "orders"]), "");
    }

    #[test]
    fn long_lists_are_cut() {
        assert_eq!(list_names(["b", "a", "c"], 5), "a, b, c");
        assert_eq!(list_names(["b", "a", "c"], 2), "a, b and 1 more");
    }
}
