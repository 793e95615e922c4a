//! Integration tests: real upstreams, a real gateway, real clients, on loopback.

mod support;

mod adversarial;
mod aggregate;
mod auth;
mod balancing;
mod binary;
mod cache;
mod compression;
mod dashboard;
mod docs;
mod explain_parity;
mod failures;
mod forwarding;
mod grpc;
mod hardening;
mod jwt;
mod limits;
mod limits_rate;
mod openapi;
mod operations;
mod request_size;
mod resilience;
mod routing;
mod schema;
mod smuggling;
mod streaming;
mod tls;
mod tracing;
mod transcode;
mod transform;
mod upstream_http1;
mod upstream_protocols;
mod waf;
mod waf_crs;
mod walkthrough;
mod websocket;
mod xml;

/// Fills `$NAME` placeholders in a YAML config, in one pass: a value that
/// itself holds a `$` (a bcrypt or argon2 hash) is never scanned again.
pub fn config(template: &str, values: &[(&str, String)]) -> String {
    let mut names: Vec<&(&str, String)> = values.iter().collect();
    // The longest name first, so that `$U` does not take `$UPSTREAM`'s place.
    names.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut text = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        text.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        match names.iter().find(|(name, _)| after.starts_with(name)) {
            Some((name, value)) => {
                text.push_str(value);
                rest = &after[name.len()..];
            }
            None => {
                text.push('$');
                rest = after;
            }
        }
    }
    text.push_str(rest);
    text
}
