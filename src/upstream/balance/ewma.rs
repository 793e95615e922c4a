//! Peak-EWMA latency, the load metric of `balance: ewma` (as in Finagle and
//! linkerd): a target's latency estimate rises at once to a slower response
//! ("peak") and decays back exponentially as faster ones arrive, so a slow
//! target quickly gets less traffic without being ejected. Load is the
//! estimate times the requests in flight plus one; two random targets are
//! compared and the lighter one wins.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// How fast old observations fade: after this long they weigh 1/e.
const DECAY: Duration = Duration::from_secs(10);

/// A target's latency estimate. Updates race benignly: the estimate is a
/// heuristic, and a lost update is one observation among many.
#[derive(Debug, Default)]
pub struct PeakEwma {
    /// Estimate in nanoseconds, as f64 bits.
    cost: AtomicU64,
    /// When it was last updated, in microseconds on a process clock.
    stamp: AtomicU64,
}

fn now_micros() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    let start = *START.get_or_init(Instant::now);
    Instant::now().saturating_duration_since(start).as_micros() as u64
}

impl PeakEwma {
    /// Adds one observed response time.
    pub fn observe(&self, latency: Duration) {
        let now = now_micros();
        let rtt = latency.as_nanos() as f64;
        let cost = self.decayed(now);
        let next = if rtt > cost {
            rtt
        } else {
            let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
            let weight = (-elapsed / DECAY.as_micros() as f64).exp();
            cost * weight + rtt * (1.0 - weight)
        };
        self.cost.store(next.to_bits(), Ordering::Relaxed);
        self.stamp.store(now, Ordering::Relaxed);
    }

    /// The estimate now: it decays toward zero while nothing is observed, so
    /// a target that was slow long ago is tried again.
    fn decayed(&self, now: u64) -> f64 {
        let cost = f64::from_bits(self.cost.load(Ordering::Relaxed));
        let elapsed = now.saturating_sub(self.stamp.load(Ordering::Relaxed)) as f64;
        cost * (-elapsed / DECAY.as_micros() as f64).exp()
    }

    /// Load for power-of-two choices.
    pub fn load(&self, in_flight: usize) -> f64 {
        self.decayed(now_micros()) * (in_flight as f64 + 1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn slow_responses_raise_the_estimate_at_once_and_it_decays_back() {
        let ewma = PeakEwma::default();
        ewma.observe(Duration::from_millis(10));
        let fast = ewma.load(0);
        ewma.observe(Duration::from_millis(200));
        assert!(ewma.load(0) > 15.0 * fast, "a peak is taken at once");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(ewma.load(0) < fast, "old peaks fade");
        assert!(ewma.load(3) > ewma.load(0), "requests in flight add load");
    }
}
