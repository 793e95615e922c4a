//! Checks shared by the config's domains: names, positive durations, counts.

use crate::config::error::ConfigErrors;
use std::collections::HashSet;

pub(crate) fn at_least_one(path: &str, value: u32, errors: &mut ConfigErrors) {
    if value == 0 {
        errors.push(path, "must be at least 1");
    }
}

pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub(crate) fn check_name<'a>(
    path: &str,
    name: &'a str,
    seen: &mut HashSet<&'a str>,
    what: &str,
    errors: &mut ConfigErrors,
) {
    if !valid_name(name) {
        errors.push(path, format!("{what} names use letters, digits, `-`, `_` and `.`"));
    } else if !seen.insert(name) {
        errors.push(path, format!("duplicate {what} name {name:?}: names must be unique"));
    }
}

pub(crate) fn check_positive(path: &str, duration: super::Duration, errors: &mut ConfigErrors) {
    if duration.get().is_zero() {
        errors.push(path, "must be longer than zero");
    }
}
