//! Integration tests: real upstreams, a real gateway, real clients, on loopback.

mod support;

mod auth;
mod balancing;
mod binary;
mod failures;
mod forwarding;
mod jwt;
mod limits;
mod limits_rate;
mod operations;
mod resilience;
mod routing;
mod streaming;
mod tracing;

/// Fills `$NAME` placeholders in a YAML config.
pub fn config(template: &str, values: &[(&str, String)]) -> String {
    let mut text = template.to_string();
    for (name, value) in values {
        text = text.replace(&format!("${name}"), value);
    }
    assert!(!text.contains("$U"), "unfilled placeholder in:\n{text}");
    text
}
