//! `ip_restriction`: allow and deny lists of addresses and CIDR blocks,
//! IPv4 and IPv6. The client is the connection's peer, or, when the peer is
//! a configured trusted proxy, the last address in `X-Forwarded-For` that is
//! not a trusted proxy (nginx's `real_ip_recursive`): a client cannot pick
//! its address by sending the header itself.

use super::{Decision, Flow, Phase, PhaseFuture, Plugin, RequestContext, Setup, at_once};
use crate::error::{ErrorKind, ProxyError};
use ipnet::IpNet;
use serde::Deserialize;
use serde_yaml_ng::Value;
use std::net::IpAddr;
use std::sync::Arc;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
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

use crate::config::units::parse_network as parse_net;

impl IpRestriction {
    fn trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    /// The client's address, looking through trusted proxies only; `None`
    /// when the hop where the client should be is not an address (a chain
    /// a proxy did not write): then the client is unknown, and refused.
    /// An IPv4 address on a dual-stack socket (`::ffff:a.b.c.d`) is its IPv4.
    fn client(&self, request: &http::request::Parts, peer: IpAddr) -> Option<IpAddr> {
        let peer = peer.to_canonical();
        if !self.trusted(peer) {
            return Some(peer);
        }
        let mut hops: Vec<&str> = request
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .map(|v| v.to_str().unwrap_or(""))
            .flat_map(|v| v.split(','))
            .collect();
        let mut client = peer;
        while let Some(hop) = hops.pop() {
            let ip = hop.trim().parse::<IpAddr>().ok()?.to_canonical();
            client = ip;
            if !self.trusted(ip) {
                break;
            }
        }
        Some(client)
    }

    fn check(&self, ip: Option<IpAddr>) -> Result<String, ProxyError> {
        let refused = |reason| {
            ProxyError::rejected(
                ErrorKind::Forbidden,
                "ip_restriction",
                reason,
                "this address may not reach this route",
            )
        };
        let Some(ip) = ip.map(|ip| ip.to_canonical()) else {
            return Err(refused("ip_unknown"));
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
        at_once(result)
    }

    fn explain(&self, request: &http::request::Parts, ctx: &RequestContext<'_>) -> Decision {
        let ip = self.client(request, ctx.client.ip());
        match self.check(ip) {
            Ok(detail) => Decision::pass(detail),
            Err(_) => Decision::deny(
                http::StatusCode::FORBIDDEN,
                match ip {
                    Some(ip) => format!("{ip} is refused"),
                    None => "the client's address in X-Forwarded-For is not an address: refused".into(),
                },
            ),
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
        let check = |ip: &str| p.check(Some(ip.parse().unwrap()));
        assert!(check("10.1.2.3").is_ok());
        assert!(check("::ffff:10.1.2.3").is_ok());
        assert!(check("2001:db8:1::7").is_ok());
        assert!(check("10.9.1.1").is_err());
        assert!(check("::ffff:10.9.1.1").is_err());
        assert!(check("2001:db9::1").is_err());
        assert!(check("192.168.1.1").is_err());
        assert!(p.check(None).is_err());
    }

    #[test]
    fn forwarded_for_counts_only_behind_trusted_proxies() {
        let p = plugin(&["0.0.0.0/0"], &[], &["10.0.0.0/8"]);
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts
            .headers
            .insert("x-forwarded-for", "1.1.1.1, 2.2.2.2, 10.0.0.5".parse().unwrap());
        let ip = |text: &str| Some(text.parse::<IpAddr>().unwrap());
        assert_eq!(p.client(&parts, "10.0.0.1".parse().unwrap()), ip("2.2.2.2"));
        assert_eq!(p.client(&parts, "8.8.8.8".parse().unwrap()), ip("8.8.8.8"));
        // A trusted proxy on a dual-stack socket is still trusted.
        assert_eq!(p.client(&parts, "::ffff:10.0.0.1".parse().unwrap()), ip("2.2.2.2"));
        // A hop that is not an address, where the client should be: unknown.
        parts
            .headers
            .insert("x-forwarded-for", "1.1.1.1, evil, 10.0.0.5".parse().unwrap());
        assert_eq!(p.client(&parts, "10.0.0.1".parse().unwrap()), None);
    }
}
