//! Whether a target may take traffic: active checks (a probe at an interval,
//! flipping only after N consecutive results) and passive outlier ejection
//! (N consecutive failures of real traffic eject a target for a while,
//! doubling on each repeat up to a cap).
//!
//! State is a few atomics per target, so that the hot path reads it without
//! a lock.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// Passive health policy (`health_check.passive`).
#[derive(Debug, Clone, Copy)]
pub struct PassivePolicy {
    pub consecutive_failures: u32,
    pub eject_for: Duration,
    pub max_eject_for: Duration,
}

/// Active health policy thresholds (`health_check.active`).
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub healthy: u32,
    pub unhealthy: u32,
}

/// Milliseconds on a process-wide monotonic clock (tokio's, so tests can pause it).
pub(crate) fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(start).as_millis() as u64 + 1
}

#[derive(Debug)]
pub struct Health {
    /// Verdict of active checks; targets start healthy, as in nginx.
    active_ok: AtomicBool,
    /// Consecutive probe results against the current verdict.
    probe_streak: AtomicU32,
    consecutive_failures: AtomicU32,
    /// Ejected until this `now_ms`; 0 when not ejected.
    ejected_until: AtomicU64,
    /// Ejections so far: each doubles the next ejection's length.
    ejections: AtomicU32,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            active_ok: AtomicBool::new(true),
            probe_streak: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
        }
    }
}

/// What a finished request says of its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// A connect failure, a broken exchange or a 5xx.
    Failure,
}

impl Health {
    /// May the target take traffic now?
    pub fn available(&self) -> bool {
        self.active_ok.load(Ordering::Relaxed) && {
            let until = self.ejected_until.load(Ordering::Relaxed);
            until == 0 || until <= now_ms()
        }
    }

    /// The active checks' verdict (true when there are none).
    pub fn passes_checks(&self) -> bool {
        self.active_ok.load(Ordering::Relaxed)
    }

    /// Passive ejections so far.
    pub fn ejections(&self) -> u32 {
        self.ejections.load(Ordering::Relaxed)
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && until > now_ms()
    }

    /// Records a real request's outcome; returns the ejection length when
    /// this failure ejected the target.
    pub fn record(&self, outcome: Outcome, policy: Option<&PassivePolicy>) -> Option<Duration> {
        let policy = policy?;
        match outcome {
            Outcome::Success => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                // A target that serves well again starts its doubling afresh.
                if !self.is_ejected() {
                    self.ejections.store(0, Ordering::Relaxed);
                }
                None
            }
            Outcome::Failure => {
                let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
                if failures < policy.consecutive_failures || self.is_ejected() {
                    return None;
                }
                self.consecutive_failures.store(0, Ordering::Relaxed);
                let repeats = self.ejections.fetch_add(1, Ordering::Relaxed).min(20);
                let length = policy.eject_for.saturating_mul(1 << repeats).min(policy.max_eject_for);
                self.ejected_until
                    .store(now_ms() + length.as_millis() as u64, Ordering::Relaxed);
                Some(length)
            }
        }
    }

    /// Records an active probe's result; returns the new verdict when it flipped.
    pub fn record_probe(&self, passed: bool, thresholds: Thresholds) -> Option<bool> {
        let healthy = self.active_ok.load(Ordering::Relaxed);
        if passed == healthy {
            self.probe_streak.store(0, Ordering::Relaxed);
            return None;
        }
        let streak = self.probe_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let needed = if passed {
            thresholds.healthy
        } else {
            thresholds.unhealthy
        };
        if streak < needed {
            return None;
        }
        self.probe_streak.store(0, Ordering::Relaxed);
        self.active_ok.store(passed, Ordering::Relaxed);
        if passed {
            // A target the probe sees healthy again is not held back by old ejections.
            self.ejected_until.store(0, Ordering::Relaxed);
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        Some(passed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: PassivePolicy = PassivePolicy {
        consecutive_failures: 3,
        eject_for: Duration::from_secs(10),
        max_eject_for: Duration::from_secs(25),
    };

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_for_a_doubling_capped_time() {
        let health = Health::default();
        assert_eq!(health.record(Outcome::Failure, Some(&POLICY)), None);
        assert_eq!(
            health.record(Outcome::Success, Some(&POLICY)),
            None,
            "a success resets the count"
        );
        assert_eq!(health.record(Outcome::Failure, Some(&POLICY)), None);
        assert_eq!(health.record(Outcome::Failure, Some(&POLICY)), None);
        assert_eq!(
            health.record(Outcome::Failure, Some(&POLICY)),
            Some(Duration::from_secs(10))
        );
        assert!(!health.available());
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(health.available(), "tried again after the ejection");
        for _ in 0..2 {
            health.record(Outcome::Failure, Some(&POLICY));
        }
        assert_eq!(
            health.record(Outcome::Failure, Some(&POLICY)),
            Some(Duration::from_secs(20)),
            "doubled"
        );
        tokio::time::advance(Duration::from_secs(21)).await;
        for _ in 0..2 {
            health.record(Outcome::Failure, Some(&POLICY));
        }
        assert_eq!(
            health.record(Outcome::Failure, Some(&POLICY)),
            Some(Duration::from_secs(25)),
            "capped"
        );
    }

    #[test]
    fn probes_flip_the_verdict_only_after_their_threshold() {
        let health = Health::default();
        let thresholds = Thresholds {
            healthy: 2,
            unhealthy: 3,
        };
        assert_eq!(health.record_probe(false, thresholds), None);
        assert_eq!(health.record_probe(false, thresholds), None);
        assert_eq!(health.record_probe(true, thresholds), None, "a pass breaks the streak");
        for _ in 0..2 {
            assert_eq!(health.record_probe(false, thresholds), None);
        }
        assert_eq!(health.record_probe(false, thresholds), Some(false));
        assert!(!health.available());
        assert_eq!(health.record_probe(true, thresholds), None);
        assert_eq!(health.record_probe(true, thresholds), Some(true));
        assert!(health.available());
    }
}
