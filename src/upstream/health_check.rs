//! Active health checks: one task per target probing `path` at an interval.
//! A task holds its pool weakly and ends when a reload drops the pool.

use super::health::Thresholds;
use super::{Target, UpstreamPool};
use crate::body::RequestBody;
use http::Request;
use std::ops::RangeInclusive;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// A compiled `health_check.active` block.
#[derive(Debug, Clone)]
pub struct ActiveCheck {
    pub path: http::uri::PathAndQuery,
    pub interval: Duration,
    pub timeout: Duration,
    pub thresholds: Thresholds,
    pub expect: RangeInclusive<u16>,
}

/// Parses `expect`: `200` or `200-399`.
pub fn parse_expect(text: &str) -> Result<RangeInclusive<u16>, String> {
    let fix = "write a status or a range, like 200 or 200-399";
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    match (low.trim().parse::<u16>(), high.trim().parse::<u16>()) {
        (Ok(low), Ok(high)) if (100..=599).contains(&low) && (low..=599).contains(&high) => Ok(low..=high),
        _ => Err(format!("invalid status range {text:?}: {fix}")),
    }
}

/// Starts probing, if the pool has active checks.
pub(super) fn start(pool: &Arc<UpstreamPool>) {
    if let Some(check) = pool.active_check.clone() {
        tokio::spawn(probe_forever(Arc::downgrade(pool), check));
    }
}

/// Each interval, probes the pool's current targets at once.
async fn probe_forever(pool: Weak<UpstreamPool>, check: ActiveCheck) {
    let mut ticker = tokio::time::interval(check.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(targets) = pool.upgrade().map(|pool| pool.all_targets()) else {
            return;
        };
        let mut probes = tokio::task::JoinSet::new();
        for target in targets {
            let check = check.clone();
            probes.spawn(async move {
                let passed = probe(&target, &check).await;
                (target, passed)
            });
        }
        while let Some(Ok((target, passed))) = probes.join_next().await {
            let Some(healthy) = target.health.record_probe(passed, check.thresholds) else {
                continue;
            };
            let upstream = pool.upgrade().map(|p| p.name.clone()).unwrap_or_default();
            if healthy {
                tracing::info!(upstream = &*upstream, target = &*target.addr, "target is healthy again");
            } else {
                tracing::warn!(
                    upstream = &*upstream,
                    target = &*target.addr,
                    "target failed its health checks"
                );
            }
        }
    }
}

/// One probe on a fresh connection, so a pooled connection's state cannot
/// hide a target that stopped accepting.
async fn probe(target: &Target, check: &ActiveCheck) -> bool {
    let attempt = async {
        let sender = target.transport.connect(target, check.timeout).await.ok()?;
        let request = Request::get(http::Uri::from(check.path.clone()))
            .header(http::header::HOST, target.host_header.clone())
            .header(http::header::USER_AGENT, "portico-health-check")
            .body(RequestBody::empty())
            .ok()?;
        let response = sender.send_request(request).await.ok()?;
        Some(response.status())
    };
    match tokio::time::timeout(check.timeout, attempt).await {
        Ok(Some(status)) => check.expect.contains(&status.as_u16()),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_reads_a_status_or_a_range() {
        assert_eq!(parse_expect("200").unwrap(), 200..=200);
        assert_eq!(parse_expect("200-399").unwrap(), 200..=399);
        assert!(parse_expect("399-200").is_err());
        assert!(parse_expect("2xx").is_err());
        assert!(parse_expect("700").is_err());
    }
}
