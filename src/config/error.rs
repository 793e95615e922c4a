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
        });
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

/// The closest of `known` to `given`, when it is close enough to be a typo.
pub fn did_you_mean<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (strsim::damerau_levenshtein(given, k), k))
        .filter(|(distance, k)| *distance <= 2.max(k.len() / 3))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, k)| k)
}

/// ` (did you mean "x"?)` or nothing.
pub fn suggestion<'a>(given: &str, known: impl IntoIterator<Item = &'a str>) -> String {
    did_you_mean(given, known)
        .map(|k| format!(" (did you mean {k:?}?)"))
        .unwrap_or_default()
}
