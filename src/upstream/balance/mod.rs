//! Load-balancing algorithms. Each picks an index into a pool's targets;
//! everything they need is computed when the config is compiled.

mod ewma;
mod maglev;
mod round_robin;

pub use ewma::PeakEwma;
pub use maglev::Maglev;
pub use round_robin::RoundRobin;

use super::Target;
use crate::config::model::Balance;
use http::{HeaderMap, HeaderName};
use std::net::IpAddr;
use std::sync::Arc;

/// What a balancer may look at in a request.
pub struct PickContext<'a> {
    pub headers: &'a HeaderMap,
    pub client_ip: IpAddr,
}

/// Where `consistent_hash` takes its key from.
#[derive(Debug, Clone)]
pub enum HashOn {
    Header(HeaderName),
    Cookie(String),
    ClientIp,
}

impl HashOn {
    pub fn parse(text: &str) -> Result<HashOn, String> {
        let fix = "write `header:NAME`, `cookie:NAME` or `client_ip`";
        match text.split_once(':') {
            None if text == "client_ip" => Ok(HashOn::ClientIp),
            Some(("header", name)) => HeaderName::from_bytes(name.as_bytes())
                .map(HashOn::Header)
                .map_err(|_| format!("{name:?} is not a valid header name")),
            Some(("cookie", name)) if !name.is_empty() => Ok(HashOn::Cookie(name.to_string())),
            _ => Err(format!("invalid hash key {text:?}: {fix}")),
        }
    }

    /// The key's bytes in this request, if it has one.
    fn key<'a>(&self, ctx: &'a PickContext<'_>, ip_buf: &'a mut [u8; 16]) -> Option<&'a [u8]> {
        match self {
            HashOn::Header(name) => ctx.headers.get(name).map(|v| v.as_bytes()),
            HashOn::Cookie(name) => ctx
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_bytes()),
            HashOn::ClientIp => match ctx.client_ip {
                IpAddr::V4(ip) => {
                    ip_buf[..4].copy_from_slice(&ip.octets());
                    Some(&ip_buf[..4])
                }
                IpAddr::V6(ip) => {
                    *ip_buf = ip.octets();
                    Some(&ip_buf[..])
                }
            },
        }
    }
}

#[derive(Debug)]
pub enum Balancer {
    RoundRobin(RoundRobin),
    LeastRequest,
    Ewma,
    Random { cumulative: Vec<u64> },
    ConsistentHash { table: Maglev, on: HashOn },
}

impl Balancer {
    pub fn new(kind: Balance, targets: &[Arc<Target>], hash_on: Option<HashOn>) -> Balancer {
        let weights: Vec<u32> = targets.iter().map(|t| t.weight).collect();
        match (kind, hash_on) {
            (Balance::RoundRobin, _) => Balancer::RoundRobin(RoundRobin::new(&weights)),
            (Balance::LeastRequest, _) => Balancer::LeastRequest,
            (Balance::Ewma, _) => Balancer::Ewma,
            (Balance::ConsistentHash, Some(on)) => {
                let names: Vec<&str> = targets.iter().map(|t| &*t.addr).collect();
                Balancer::ConsistentHash {
                    table: Maglev::new(&names, &weights),
                    on,
                }
            }
            (Balance::Random | Balance::ConsistentHash, _) => Balancer::Random {
                cumulative: weights
                    .iter()
                    .scan(0u64, |sum, w| {
                        *sum += u64::from(*w);
                        Some(*sum)
                    })
                    .collect(),
            },
        }
    }

    /// Index of the target for this request; `targets` is never empty.
    pub fn pick(&self, targets: &[Arc<Target>], ctx: &PickContext<'_>) -> usize {
        if targets.len() == 1 {
            return 0;
        }
        match self {
            Balancer::RoundRobin(rr) => rr.next(),
            Balancer::LeastRequest => least_request(targets),
            Balancer::Ewma => {
                let (a, b) = two_distinct(targets.len());
                let load = |i: usize| targets[i].latency.load(targets[i].in_flight());
                if load(a) <= load(b) {
                    a
                } else {
                    b
                }
            }
            Balancer::Random { cumulative } => weighted_random(cumulative),
            Balancer::ConsistentHash { table, on } => {
                let mut ip_buf = [0u8; 16];
                match on.key(ctx, &mut ip_buf) {
                    Some(key) => table.pick(key),
                    // No key in this request: spread it rather than pile every
                    // keyless request onto one target.
                    None => fastrand::usize(..targets.len()),
                }
            }
        }
    }
}

/// Power of two choices: of two random targets, the one with fewer requests
/// in flight relative to its weight.
fn least_request(targets: &[Arc<Target>]) -> usize {
    let (a, b) = two_distinct(targets.len());
    let (ta, tb) = (&targets[a], &targets[b]);
    // in_flight(a) / weight(a) <= in_flight(b) / weight(b), without division.
    let load_a = ta.in_flight() as u64 * u64::from(tb.weight);
    let load_b = tb.in_flight() as u64 * u64::from(ta.weight);
    if load_a <= load_b {
        a
    } else {
        b
    }
}

/// Two different random indexes below `n` (at least 2).
fn two_distinct(n: usize) -> (usize, usize) {
    let a = fastrand::usize(..n);
    let mut b = fastrand::usize(..n - 1);
    if b >= a {
        b += 1;
    }
    (a, b)
}

fn weighted_random(cumulative: &[u64]) -> usize {
    let total = cumulative.last().copied().unwrap_or(1);
    let point = fastrand::u64(..total);
    cumulative.partition_point(|&edge| edge <= point)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(weights: &[u32]) -> Vec<Arc<Target>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| Arc::new(Target::new(&format!("127.0.0.1:{}", 9000 + i), *w).unwrap()))
            .collect()
    }

    #[test]
    fn least_request_prefers_idle_targets() {
        let pool = targets(&[1, 1, 1]);
        let _busy: Vec<_> = (0..50)
            .map(|_| crate::upstream::InFlight::to(pool[0].clone()))
            .collect();
        let picks = (0..3000).filter(|_| least_request(&pool) == 0).count();
        // Target 0 is chosen only when both draws land on it, which P2C never does.
        assert_eq!(picks, 0);
    }

    #[test]
    fn weighted_random_follows_weights() {
        let pool = targets(&[1, 3]);
        let balancer = Balancer::new(Balance::Random, &pool, None);
        let headers = HeaderMap::new();
        let ctx = PickContext {
            headers: &headers,
            client_ip: [127, 0, 0, 1].into(),
        };
        let heavy = (0..8000).filter(|_| balancer.pick(&pool, &ctx) == 1).count();
        assert!((5600..6400).contains(&heavy), "{heavy}");
    }

    #[test]
    fn hash_keys_come_from_headers_cookies_and_ip() {
        let mut headers = HeaderMap::new();
        headers.insert("x-user", "42".parse().unwrap());
        headers.insert(http::header::COOKIE, "a=1; session=abc".parse().unwrap());
        let ctx = PickContext {
            headers: &headers,
            client_ip: [10, 1, 2, 3].into(),
        };
        let mut buf = [0u8; 16];
        assert_eq!(
            HashOn::parse("header:x-user").unwrap().key(&ctx, &mut buf),
            Some(&b"42"[..])
        );
        assert_eq!(
            HashOn::parse("cookie:session").unwrap().key(&ctx, &mut buf),
            Some(&b"abc"[..])
        );
        assert_eq!(
            HashOn::parse("client_ip").unwrap().key(&ctx, &mut buf),
            Some(&[10, 1, 2, 3][..])
        );
        assert!(HashOn::parse("body:x").is_err());
    }
}
