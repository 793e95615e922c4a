//! Retries: which failures are tried again, and the budget that keeps them
//! from multiplying load on a failing service.

use crate::config::model::RetryOn;
use http::{Method, StatusCode};
use std::sync::atomic::{AtomicI64, Ordering};
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

/// Retries as a share of requests, as Finagle's retry budget: each request
/// deposits `budget` of a token, each retry takes a whole one. A small
/// reserve lets a quiet upstream still retry its rare failures.
#[derive(Debug)]
pub struct RetryBudget {
    /// Thousandths of a token.
    balance: AtomicI64,
}

/// Tokens a budget starts with and may hold at most.
const RESERVE: i64 = 10 * 1000;

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            balance: AtomicI64::new(RESERVE),
        }
    }
}

impl RetryBudget {
    /// Credits one first attempt.
    pub fn deposit(&self, share: f64) {
        let amount = (share * 1000.0) as i64;
        let _ = self.balance.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
            Some((b + amount).min(RESERVE))
        });
    }

    /// Takes a token for one retry, if there is one.
    pub fn withdraw(&self) -> bool {
        self.balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                (b >= 1000).then_some(b - 1000)
            })
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_caps_retries_at_their_share_after_the_reserve() {
        let budget = RetryBudget::default();
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit(0.2);
            if budget.withdraw() {
                retries += 1;
            }
        }
        // 20% of 1000 requests, plus the reserve of 10.
        assert!((200..=211).contains(&retries), "{retries}");
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
