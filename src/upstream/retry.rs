//! Retries: which failures are tried again, and the budget that keeps them
//! from multiplying load on a failing service.

use super::window::Window;
use crate::config::model::RetryOn;
use http::{Method, StatusCode};
use std::time::Duration;

/// A compiled `retries:` block.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub on_connect_failure: bool,
    pub on_statuses: Vec<StatusCode>,
    pub idempotent_only: bool,
    pub budget: f64,
    pub backoff: Duration,
    pub buffer_body: u64,
}

impl RetryPolicy {
    pub fn new(config: &crate::config::model::RetriesConfig) -> RetryPolicy {
        RetryPolicy {
            attempts: config.attempts,
            on_connect_failure: config.on.contains(&RetryOn::ConnectFailure),
            on_statuses: config
                .on
                .iter()
                .filter_map(|on| match on {
                    RetryOn::Status(status) => StatusCode::from_u16(*status).ok(),
                    RetryOn::ConnectFailure => None,
                })
                .collect(),
            idempotent_only: config.idempotent_only,
            budget: config.budget.fraction(),
            backoff: config.backoff.get(),
            buffer_body: config.buffer_body.get(),
        }
    }

    /// Whether requests with this method may be retried at all.
    pub fn allows(&self, method: &Method) -> bool {
        self.attempts > 0 && (!self.idempotent_only || is_idempotent(method))
    }

    pub fn retries_status(&self, status: StatusCode) -> bool {
        self.on_statuses.contains(&status)
    }

    /// Full-jitter exponential backoff before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let ceiling = self.backoff.saturating_mul(1 << retry.saturating_sub(1).min(10));
        ceiling.mul_f64(fastrand::f64())
    }
}

/// RFC 9110 section 9.2.2.
fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Retries as a share of recent requests, as Finagle's retry budget: over
/// the last `WINDOW`, retries may not pass `RESERVE` plus `share` of the
/// requests. The reserve lets a quiet upstream still retry its rare
/// failures; the window lets a busy one absorb a burst (every in-flight
/// request of a target that just died) without refusing retries it has earned.
///
/// Counts live in a [`Window`] of atomics, so the hot path takes no lock.
#[derive(Debug)]
pub struct RetryBudget {
    /// Requests and retries over the last ten seconds.
    window: Window,
}

/// Retries always allowed per window.
const RESERVE: u64 = 10;

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            window: Window::new(Duration::from_secs(10)),
        }
    }
}

impl RetryBudget {
    /// Counts one first attempt.
    pub fn deposit(&self) {
        self.window.add(1, 0);
    }

    /// Takes one retry, if the window allows it.
    pub fn withdraw(&self, share: f64) -> bool {
        let (requests, retries) = self.window.totals();
        let allowed = (retries as f64) < RESERVE as f64 + share * requests as f64;
        if allowed {
            self.window.add(0, 1);
        }
        allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_caps_retries_at_their_share_of_the_window() {
        let budget = RetryBudget::default();
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.withdraw(0.2) {
                retries += 1;
            }
        }
        // 20% of 1000 requests, plus the reserve of 10.
        assert!((200..=211).contains(&retries), "{retries}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_retries_is_allowed_when_recent_traffic_earned_it() {
        let budget = RetryBudget::default();
        for _ in 0..500 {
            budget.deposit();
        }
        // A target dies with 50 requests in flight: all may be retried at once.
        assert!((0..50).all(|_| budget.withdraw(0.2)));
        // Ten seconds on, the window has forgotten that traffic: only the reserve is left.
        tokio::time::advance(std::time::Duration::from_secs(11)).await;
        assert_eq!((0..20).filter(|_| budget.withdraw(0.2)).count(), 10);
    }

    #[test]
    fn only_idempotent_methods_retry_by_default() {
        let policy = RetryPolicy::new(&Default::default());
        assert!(policy.allows(&Method::GET));
        assert!(policy.allows(&Method::PUT));
        assert!(!policy.allows(&Method::POST));
        assert!(!policy.allows(&Method::PATCH));
        assert!(policy.retries_status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(!policy.retries_status(StatusCode::INTERNAL_SERVER_ERROR));
        assert!(policy.backoff(3) <= Duration::from_millis(100));
    }
}
