//! `ip_restriction`: allow and deny lists of addresses and CIDR blocks,
//! IPv4 and IPv6. The client is the connection's peer, or, when the peer is
//! a configured trusted proxy, the last address in `X-Forwarded-For` that is
//! not a trusted proxy (nginx's `real_ip_recursive`): a client cannot pick
//! its address by sending the header itself.

use super::{Decision, Flow, Phase, PhaseFuture, Plugin, RequestContext, Setup};
use crate::error::{ErrorKind, ProxyError};
use ipnet::IpNet;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
}

pub struct IpRestriction {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    trusted: Vec<IpNet>,
}

pub fn build(value: &Value, setup: &Setup<'_>) -> Result<Arc<dyn Plugin>, super::BuildErrors> {
    let config: Config = setup.parse(value)?;
    let mut errors = Vec::new();
    let mut parse = |field: &str, list: &[String]| -> Vec<IpNet> {
        list.iter()
            .enumerate()
            .filter_map(|(i, text)| match parse_net(text) {
                Some(net) => Some(net),
                None => {
                    errors.push(setup.error(
                        &format!("{field}[{i}]"),
                        format!("{text:?} is not an address or CIDR block, like 10.0.0.0/8 or 2001:db8::/32"),
                    ));
                    None
                }
            })
            .collect()
    };
    let plugin = IpRestriction {
        allow: parse("allow", &config.allow),
        deny: parse("deny", &config.deny),
        trusted: parse("trusted_proxies", &config.trusted_proxies),
    };
    if config.allow.is_empty() && config.deny.is_empty() {
        errors.push(setup.error("", "list addresses to `allow`, to `deny`, or both"));
    }
    if errors.is_empty() {
        Ok(Arc::new(plugin))
    } else {
        Err(errors)
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or one address.
fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from))
        .map(|net| net.trunc())
}

impl IpRestriction {
    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address, looking through trusted proxies only.
    fn client(&self, request: &http::request::Parts, peer: IpAddr) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let chain: Vec<IpAddr> = request
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse::<IpAddr>().ok())
            .collect();
        chain.into_iter().rev().find(|ip| !self.trusted(*ip)).unwrap_or(peer)
    }

    fn check(&self, ip: IpAddr) -> Result<String, ProxyError> {
        // An IPv4 client on a dual-stack socket arrives as ::ffff:a.b.c.d.
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        let refused = |reason| {
            ProxyError::rejected(
                ErrorKind::Forbidden,
                "ip_restriction",
                reason,
                "this address may not reach this route",
            )
        };
        if self.deny.iter().any(|net| net.contains(&ip)) {
            return Err(refused("ip_denied"));
        }
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&ip)) {
            return Err(refused("ip_not_allowed"));
        }
        Ok(format!("{ip} may pass"))
    }
}

impl Plugin for IpRestriction {
    fn name(&self) -> &'static str {
        "ip_restriction"
    }

    fn phase(&self) -> Phase {
        Phase::Access
    }

    fn on_request<'a>(
        &'a self,
        request: &'a mut http::request::Parts,
        ctx: &'a mut RequestContext<'_>,
    ) -> PhaseFuture<'a> {
        let result = self
            .check(self.client(request, ctx.client.ip()))
            .map(|_| Flow::Continue);
        Box::pin(std::future::ready(result))
    }

    fn explain(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        let ip = self.client(request, ctx.client.ip());
        match self.check(ip) {
            Ok(detail) => Decision::pass(detail),
            Err(_) => Decision::deny(http::StatusCode::FORBIDDEN, format!("{ip} is refused")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(allow: &[&str], deny: &[&str], trusted: &[&str]) -> IpRestriction {
        let nets = |list: &[&str]| list.iter().map(|t| parse_net(t).unwrap()).collect();
        IpRestriction {
            allow: nets(allow),
            deny: nets(deny),
            trusted: nets(trusted),
        }
    }

    #[test]
    fn cidrs_of_both_families_and_deny_wins() {
        let p = plugin(&["10.0.0.0/8", "2001:db8::/32"], &["10.9.0.0/16"], &[]);
        assert!(p.check("10.1.2.3".parse().unwrap()).is_ok());
        assert!(p.check("::ffff:10.1.2.3".parse().unwrap()).is_ok());
        assert!(p.check("2001:db8:1::7".parse().unwrap()).is_ok());
        assert!(p.check("10.9.1.1".parse().unwrap()).is_err());
        assert!(p.check("2001:db9::1".parse().unwrap()).is_err());
        assert!(p.check("192.168.1.1".parse().unwrap()).is_err());
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let p = plugin(&["0.0.0.0/0"], &[], &["10.0.0.0/8"]);
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts
            .headers
            .insert("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.5".parse().unwrap());
        assert_eq!(
            p.client(&parts, "10.0.0.1".parse().unwrap()),
            "2.2.2.2".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            p.client(&parts, "8.8.8.8".parse().unwrap()),
            "8.8.8.8".parse::<IpAddr>().unwrap()
        );
    }
}
