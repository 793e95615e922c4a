//! Compiles `listeners[]`: addresses, timeouts, limits, TLS, the path
//! policy and trusted proxies, into the settings each listener starts with.

use crate::config::check::{check_name, check_positive};
use crate::config::error::ConfigErrors;
use crate::config::model::*;
use crate::config::units::parse_network;
use crate::gateway::ListenerSettings;
use crate::proxy::admission::AdmissionLimits;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

pub(crate) fn compile_listeners(listeners: &[ListenerConfig], errors: &mut ConfigErrors) -> Vec<ListenerSettings> {
    let mut names = HashSet::new();
    let mut addrs = HashSet::new();
    let mut out = Vec::new();
    for (i, listener) in listeners.iter().enumerate() {
        let path = format!("listeners[{i}]");
        check_name(&format!("{path}.name"), &listener.name, &mut names, "listener", errors);
        let addr = match listener.addr.parse::<SocketAddr>() {
            Ok(addr) => addr,
            Err(_) => {
                errors.push(
                    format!("{path}.addr"),
                    format!(
                        "{:?} is not ip:port: write it like 127.0.0.1:8080 or [::]:8080",
                        listener.addr
                    ),
                );
                continue;
            }
        };
        if addr.port() != 0 && !addrs.insert(addr) {
            errors.push(format!("{path}.addr"), format!("{addr} is used by another listener"));
        }
        check_positive(
            &format!("{path}.timeouts.header_read"),
            listener.timeouts.header_read,
            errors,
        );
        check_positive(&format!("{path}.timeouts.idle"), listener.timeouts.idle, errors);
        check_positive(
            &format!("{path}.timeouts.body_read"),
            listener.timeouts.body_read,
            errors,
        );
        let limits = &listener.limits;
        let admission = compile_admission(limits, &path, errors);
        if limits.max_headers == 0 {
            errors.push(format!("{path}.limits.max_headers"), "must be at least 1");
        }
        if limits.max_header_bytes.get() < 1024 {
            errors.push(format!("{path}.limits.max_header_bytes"), "must be at least 1KiB");
        }
        if limits.max_uri_bytes.get() < 256 {
            errors.push(format!("{path}.limits.max_uri_bytes"), "must be at least 256 bytes");
        }
        if limits.http2_max_streams == 0 {
            errors.push(format!("{path}.limits.http2_max_streams"), "must be at least 1");
        }
        let min_rate = limits.min_body_rate.map(|rate| {
            let at = format!("{path}.limits.min_body_rate");
            if rate.per_second.get() == 0 {
                errors.push(
                    format!("{at}.per_second"),
                    "must be more than 0; to turn the check off, set min_body_rate: null",
                );
            }
            check_positive(&format!("{at}.grace"), rate.grace, errors);
            crate::body::pace::MinRate {
                per_second: rate.per_second.get(),
                grace: rate.grace.get(),
            }
        });
        let tls = listener.tls.as_ref().and_then(|tls| {
            crate::proxy::tls::compile(tls)
                .map_err(|field_errors| errors.extend_at(&format!("{path}.tls"), field_errors))
                .ok()
                .map(Arc::new)
        });
        out.push(ListenerSettings {
            name: listener.name.as_str().into(),
            addr,
            header_read_timeout: listener.timeouts.header_read.get(),
            idle_timeout: listener.timeouts.idle.get(),
            max_header_bytes: usize::try_from(limits.max_header_bytes.get()).unwrap_or(usize::MAX),
            max_headers: limits.max_headers,
            max_request_body: limits.max_request_body.map(|size| size.get()),
            max_uri_bytes: usize::try_from(limits.max_uri_bytes.get()).unwrap_or(usize::MAX),
            pace: crate::body::pace::Pace {
                body_read: listener.timeouts.body_read.get(),
                min_rate,
            },
            admission,
            http2_max_streams: limits.http2_max_streams,
            tls,
            hsts: listener.tls.as_ref().and_then(|t| t.hsts.as_ref()).and_then(|hsts| {
                let mut value = format!("max-age={}", hsts.max_age.get().as_secs());
                if hsts.include_subdomains {
                    value.push_str("; includeSubDomains");
                }
                if hsts.preload {
                    value.push_str("; preload");
                }
                http::HeaderValue::from_str(&value).ok()
            }),
            redirect_https: listener.redirect_https,
            path: crate::router::PathPolicy::from(&listener.path),
            trusted_proxies: compile_networks(&listener.trusted_proxies, &format!("{path}.trusted_proxies"), errors),
        });
        if listener.redirect_https.is_some() && listener.tls.is_some() {
            errors.push(
                format!("{path}.redirect_https"),
                "a TLS listener is HTTPS already: set it on a plain one",
            );
        }
    }
    out
}

/// Addresses and CIDR blocks (`10.0.0.0/8`, `2001:db8::/32`, `10.1.0.1`).
pub fn compile_networks(list: &[String], at: &str, errors: &mut ConfigErrors) -> Vec<ipnet::IpNet> {
    list.iter()
        .enumerate()
        .filter_map(|(i, text)| match parse_network(text) {
            Some(net) => Some(net),
            None => {
                errors.push(
                    format!("{at}[{i}]"),
                    format!("{text:?} is not an address or CIDR block, like 10.0.0.0/8 or 2001:db8::/32"),
                );
                None
            }
        })
        .collect()
}

/// A listener's connection caps and per-IP rates.
fn compile_admission(limits: &ListenerLimits, path: &str, errors: &mut ConfigErrors) -> AdmissionLimits {
    use crate::proxy::admission::Rate;
    for (field, value) in [
        ("max_connections", limits.max_connections),
        ("max_connections_per_ip", limits.max_connections_per_ip),
    ] {
        if value == Some(0) {
            errors.push(
                format!("{path}.limits.{field}"),
                "must be at least 1; leave it out for no limit",
            );
        }
    }
    let mut rate = |field: &str, counted: &str, count: u32, per: crate::config::units::Duration| {
        if count == 0 {
            errors.push(format!("{path}.limits.{field}.{counted}"), "must be at least 1");
        }
        check_positive(&format!("{path}.limits.{field}.per"), per, errors);
        Rate { count, per: per.get() }
    };
    AdmissionLimits {
        max_connections: limits.max_connections,
        max_connections_per_ip: limits.max_connections_per_ip,
        connection_rate_per_ip: limits
            .connection_rate_per_ip
            .map(|r| rate("connection_rate_per_ip", "connections", r.connections, r.per)),
        request_rate_per_ip: limits
            .request_rate_per_ip
            .map(|r| rate("request_rate_per_ip", "requests", r.requests, r.per)),
    }
}
