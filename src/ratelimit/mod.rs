//! Rate limits and quotas: the algorithms, and the stores that keep their
//! state: in this process (`local`, sharded and memory-bounded) or shared by
//! every node through Redis (`redis`, one atomic script per check).
//!
//! A request is checked against all of a route's limits at once: if any
//! refuses, none is charged, so a request denied by one limit does not use
//! up another.

pub mod calendar;
pub mod local;
pub mod redis;

use std::time::Duration;

/// How a limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// GCRA, the token bucket as a single timestamp: `requests` per `per`,
    /// evenly spaced, with up to `burst` at once. Smooth: a client that
    /// used its burst gets one request back every `per / requests`.
    Gcra { burst: u64 },
    /// Sliding window (the weighted sum of the current and previous fixed
    /// windows, as Cloudflare counts): at most `requests` in any `per`,
    /// approximately, with no burst at window edges.
    SlidingWindow,
    /// A quota: a fixed window that resets at calendar boundaries (hour,
    /// day, week, month) in a time zone.
    Calendar(calendar::Period),
}

/// One compiled limit.
#[derive(Debug, Clone)]
pub struct Limit {
    pub requests: u64,
    pub per: Duration,
    pub algorithm: Algorithm,
    /// For the `RateLimit-Policy` header: `10/1s`, `10000/day`.
    pub name: String,
}

/// A request's verdicts, one per limit: a route has a few limits, so they
/// are kept inline rather than in an allocation each request.
pub type Verdicts = smallvec::SmallVec<[Verdict; 4]>;

/// What a store says of one limit for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    /// Requests left after this one (0 when refused).
    pub remaining: u64,
    /// Seconds until the limit has room again (refused) or is whole again (allowed).
    pub reset_secs: u64,
}

/// A limit's state: `a` and `b` mean what the algorithm says (GCRA: the
/// theoretical arrival time in ms and unused; windows: the window's start in
/// ms and its count; sliding also keeps the previous count in `c`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State {
    pub a: u64,
    pub b: u64,
    pub c: u64,
}

impl Limit {
    fn per_ms(&self) -> u64 {
        (self.per.as_millis() as u64).max(1)
    }

    /// Applies one request at `now_ms` to `state`: the verdict and the state
    /// to keep if every limit allows. Pure, so the local store and the
    /// Redis script can be tested against the same cases.
    pub fn check(&self, state: State, now_ms: u64, zone: &jiff::tz::TimeZone) -> (Verdict, State) {
        match self.algorithm {
            Algorithm::Gcra { burst } => self.gcra(state, now_ms, burst),
            Algorithm::SlidingWindow => self.sliding(state, now_ms),
            Algorithm::Calendar(period) => {
                let (start, end) = period.bounds(now_ms, zone);
                let count = if state.a == start { state.b } else { 0 };
                let reset_secs = end.saturating_sub(now_ms).div_ceil(1000);
                if count < self.requests {
                    let verdict = Verdict {
                        allowed: true,
                        remaining: self.requests - count - 1,
                        reset_secs,
                    };
                    (
                        verdict,
                        State {
                            a: start,
                            b: count + 1,
                            c: 0,
                        },
                    )
                } else {
                    let verdict = Verdict {
                        allowed: false,
                        remaining: 0,
                        reset_secs,
                    };
                    (
                        verdict,
                        State {
                            a: start,
                            b: count,
                            c: 0,
                        },
                    )
                }
            }
        }
    }

    fn gcra(&self, state: State, now: u64, burst: u64) -> (Verdict, State) {
        // Emission interval: the time one request "costs".
        let interval = (self.per_ms() / self.requests.max(1)).max(1);
        let capacity = burst.max(1) * interval;
        let tat = state.a.max(now);
        let new_tat = tat + interval;
        if new_tat - now <= capacity {
            let remaining = (capacity - (new_tat - now)) / interval;
            let verdict = Verdict {
                allowed: true,
                remaining,
                reset_secs: (new_tat - now).div_ceil(1000),
            };
            (verdict, State { a: new_tat, b: 0, c: 0 })
        } else {
            let wait = new_tat - now - capacity;
            let verdict = Verdict {
                allowed: false,
                remaining: 0,
                reset_secs: wait.div_ceil(1000).max(1),
            };
            (verdict, state)
        }
    }

    fn sliding(&self, state: State, now: u64) -> (Verdict, State) {
        let per = self.per_ms();
        let start = now - now % per;
        // Roll the windows forward to `start`.
        let (current, previous) = if state.a == start {
            (state.b, state.c)
        } else if state.a + per == start {
            (0, state.b)
        } else {
            (0, 0)
        };
        let elapsed = now - start;
        // The previous window's share still inside the sliding window.
        let weighted = previous * (per - elapsed) / per;
        let used = weighted + current;
        let reset_secs = (per - elapsed).div_ceil(1000);
        if used < self.requests {
            let verdict = Verdict {
                allowed: true,
                remaining: self.requests - used - 1,
                reset_secs,
            };
            (
                verdict,
                State {
                    a: start,
                    b: current + 1,
                    c: previous,
                },
            )
        } else {
            let verdict = Verdict {
                allowed: false,
                remaining: 0,
                reset_secs: reset_secs.max(1),
            };
            (
                verdict,
                State {
                    a: start,
                    b: current,
                    c: previous,
                },
            )
        }
    }

    /// How long a key's state matters after its last use: expired state is
    /// the same as no state.
    pub fn idle_ttl_ms(&self) -> u64 {
        match self.algorithm {
            Algorithm::Gcra { burst } => self.per_ms().max(burst * self.per_ms() / self.requests.max(1)) + 1000,
            Algorithm::SlidingWindow => 2 * self.per_ms() + 1000,
            Algorithm::Calendar(period) => period.longest_ms() + 1000,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(requests: u64, per_ms: u64, algorithm: Algorithm) -> Limit {
        Limit {
            requests,
            per: Duration::from_millis(per_ms),
            algorithm,
            name: String::new(),
        }
    }

    fn run(limit: &Limit, times: &[u64]) -> Vec<bool> {
        let zone = jiff::tz::TimeZone::UTC;
        let mut state = State::default();
        times
            .iter()
            .map(|t| {
                let (verdict, next) = limit.check(state, *t, &zone);
                if verdict.allowed {
                    state = next;
                }
                verdict.allowed
            })
            .collect()
    }

    #[test]
    fn gcra_allows_the_burst_then_one_per_interval() {
        // 10 per second, burst 10: ten at once, then one every 100 ms.
        let l = limit(10, 1000, Algorithm::Gcra { burst: 10 });
        let t0 = 1_000_000;
        let mut times = vec![t0; 11];
        times.extend([t0 + 99, t0 + 100, t0 + 150, t0 + 200]);
        let allowed = run(&l, &times);
        assert_eq!(&allowed[..10], &[true; 10]);
        assert_eq!(&allowed[10..], &[false, false, true, false, true]);
    }

    #[test]
    fn gcra_burst_one_spaces_every_request() {
        let l = limit(2, 1000, Algorithm::Gcra { burst: 1 });
        assert_eq!(
            run(&l, &[0, 1, 499, 500, 999, 1000]),
            [true, false, false, true, false, true]
        );
    }

    #[test]
    fn sliding_window_weights_the_previous_window() {
        // 10 per 1000 ms. Window [0,1000): 10 allowed at 900.
        let l = limit(10, 1000, Algorithm::SlidingWindow);
        let mut times = vec![900; 11];
        // At 1500 the previous window weighs half: 5 used, 5 more allowed.
        times.extend([1500; 6]);
        let allowed = run(&l, &times);
        assert_eq!(allowed.iter().filter(|a| **a).count(), 15);
        assert!(!allowed[10] && !allowed[16]);
    }

    #[test]
    fn verdicts_count_down_and_say_when_to_retry() {
        let zone = jiff::tz::TimeZone::UTC;
        let l = limit(2, 60_000, Algorithm::SlidingWindow);
        let (first, state) = l.check(State::default(), 0, &zone);
        assert_eq!((first.allowed, first.remaining, first.reset_secs), (true, 1, 60));
        let (second, state) = l.check(state, 30_000, &zone);
        assert_eq!((second.allowed, second.remaining, second.reset_secs), (true, 0, 30));
        let (third, _) = l.check(state, 30_001, &zone);
        assert!(!third.allowed);
        assert_eq!(third.reset_secs, 30);
    }
}
