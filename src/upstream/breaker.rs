//! Circuit breaker: closed → open when the failure rate over a sliding window
//! passes a threshold (with enough requests to judge); open answers at once;
//! after `open_for`, half-open lets a few probe requests through and closes
//! on their success or opens again on a failure.
//!
//! The window is a [`Window`] of atomics, so recording an outcome takes no lock.

use super::health::{now_ms, Outcome};
use super::window::Window;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::time::Duration;

/// A compiled `circuit_breaker:` block.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerPolicy {
    pub failure_rate: f64,
    pub min_requests: u32,
    pub window: Duration,
    pub open_for: Duration,
    pub half_open_requests: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Closed = 0,
    Open = 1,
    HalfOpen = 2,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Closed => "closed",
            State::Open => "open",
            State::HalfOpen => "half_open",
        }
    }
}

#[derive(Debug)]
pub struct CircuitBreaker {
    policy: BreakerPolicy,
    /// Requests and failures over `policy.window`.
    window: Window,
    state: AtomicU8,
    /// While open: when half-open may begin (`now_ms`).
    open_until: AtomicU64,
    /// While half-open: probe requests still allowed, and successes seen.
    probes_left: AtomicU32,
    probe_successes: AtomicU32,
}

/// What a state change was, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Opened,
    HalfOpened,
    Closed,
}

impl CircuitBreaker {
    pub fn new(policy: BreakerPolicy) -> CircuitBreaker {
        CircuitBreaker {
            policy,
            window: Window::new(policy.window),
            state: AtomicU8::new(State::Closed as u8),
            open_until: AtomicU64::new(0),
            probes_left: AtomicU32::new(0),
            probe_successes: AtomicU32::new(0),
        }
    }

    pub fn state(&self) -> State {
        match self.state.load(Ordering::Relaxed) {
            1 => State::Open,
            2 => State::HalfOpen,
            _ => State::Closed,
        }
    }

    /// Would [`CircuitBreaker::allow`] refuse now? Asks without changing state.
    pub fn is_refusing(&self) -> bool {
        self.state() == State::Open && now_ms() < self.open_until.load(Ordering::Relaxed)
    }

    /// May a request go through? `Err` carries how long until it may be tried.
    /// In half-open, an `Ok` uses up one probe.
    pub fn allow(&self) -> Result<Option<Change>, Duration> {
        match self.state() {
            State::Closed => Ok(None),
            State::Open => {
                let until = self.open_until.load(Ordering::Relaxed);
                let now = now_ms();
                if now < until {
                    return Err(Duration::from_millis(until - now));
                }
                let opened = self
                    .state
                    .compare_exchange(
                        State::Open as u8,
                        State::HalfOpen as u8,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    )
                    .is_ok();
                if opened {
                    self.probe_successes.store(0, Ordering::Relaxed);
                    self.probes_left
                        .store(self.policy.half_open_requests, Ordering::Relaxed);
                }
                self.take_probe().map(|()| opened.then_some(Change::HalfOpened))
            }
            State::HalfOpen => self.take_probe().map(|()| None),
        }
    }

    fn take_probe(&self) -> Result<(), Duration> {
        self.probes_left
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| n.checked_sub(1))
            .map(|_| ())
            .map_err(|_| Duration::from_secs(1))
    }

    /// Records a finished request; returns the state change it caused.
    pub fn record(&self, outcome: Outcome) -> Option<Change> {
        match self.state() {
            State::Open => None,
            State::HalfOpen => match outcome {
                Outcome::Failure => self.open(State::HalfOpen),
                Outcome::Success => {
                    let successes = self.probe_successes.fetch_add(1, Ordering::AcqRel) + 1;
                    if successes < self.policy.half_open_requests {
                        return None;
                    }
                    self.window.clear();
                    self.state
                        .compare_exchange(
                            State::HalfOpen as u8,
                            State::Closed as u8,
                            Ordering::AcqRel,
                            Ordering::Relaxed,
                        )
                        .ok()
                        .map(|_| Change::Closed)
                }
            },
            State::Closed => {
                let (requests, failures) = self.window.add(1, u64::from(outcome == Outcome::Failure));
                let tripped = requests >= u64::from(self.policy.min_requests)
                    && failures as f64 >= self.policy.failure_rate * requests as f64;
                if tripped {
                    self.open(State::Closed)
                } else {
                    None
                }
            }
        }
    }

    fn open(&self, from: State) -> Option<Change> {
        self.open_until
            .store(now_ms() + self.policy.open_for.as_millis() as u64, Ordering::Relaxed);
        self.state
            .compare_exchange(from as u8, State::Open as u8, Ordering::AcqRel, Ordering::Relaxed)
            .ok()
            .map(|_| Change::Opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: BreakerPolicy = BreakerPolicy {
        failure_rate: 0.5,
        min_requests: 10,
        window: Duration::from_secs(10),
        open_for: Duration::from_secs(15),
        half_open_requests: 2,
    };

    #[tokio::test(start_paused = true)]
    async fn opens_on_the_failure_rate_rejects_then_half_opens_and_closes() {
        let breaker = CircuitBreaker::new(POLICY);
        for _ in 0..9 {
            assert_eq!(breaker.record(Outcome::Failure), None, "too few requests to judge");
        }
        assert_eq!(breaker.record(Outcome::Failure), Some(Change::Opened));
        let wait = breaker.allow().unwrap_err();
        assert!(wait > Duration::from_secs(14), "{wait:?}");
        tokio::time::advance(Duration::from_secs(16)).await;
        assert_eq!(breaker.allow(), Ok(Some(Change::HalfOpened)));
        assert_eq!(breaker.allow(), Ok(None), "a second probe");
        assert!(breaker.allow().is_err(), "only `half_open_requests` probes");
        assert_eq!(breaker.record(Outcome::Success), None);
        assert_eq!(breaker.record(Outcome::Success), Some(Change::Closed));
        assert_eq!(breaker.allow(), Ok(None));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_probe_opens_again_and_old_failures_leave_the_window() {
        let breaker = CircuitBreaker::new(POLICY);
        for _ in 0..10 {
            breaker.record(Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(16)).await;
        breaker.allow().unwrap();
        assert_eq!(breaker.record(Outcome::Failure), Some(Change::Opened));
        assert!(breaker.allow().is_err());

        let fresh = CircuitBreaker::new(POLICY);
        for _ in 0..6 {
            fresh.record(Outcome::Failure);
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        for _ in 0..6 {
            assert_eq!(
                fresh.record(Outcome::Success),
                None,
                "failures from the last window are gone"
            );
        }
        assert_eq!(fresh.state(), State::Closed);
    }
}
