//! What the dashboard shows live, kept in memory: requests, errors and
//! latency percentiles second by second for the last five minutes, and the
//! most recent requests. Recording is a few atomic adds a request and one
//! uncontended slot lock; no lock is shared by all requests.
//!
//! A second's counts are reset by the first request of a new second that
//! lands on its slot; a request racing that reset may be lost from the
//! charts, which are a picture, not an account (the Prometheus counters are).

use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Seconds of history.
pub const SECONDS: usize = 300;
/// Requests remembered for the tail.
pub const RECENT: usize = 256;
/// Latency buckets: upper bounds of 50 µs × 2^i, the last one open.
const BUCKETS: usize = 20;

pub struct Live {
    seconds: Box<[Second]>,
    recent: Box<[Mutex<Option<Recent>>]>,
    next: AtomicUsize,
}

struct Second {
    /// The Unix second these counts are of.
    at: AtomicU64,
    requests: AtomicU64,
    errors: AtomicU64,
    latency: [AtomicU64; BUCKETS],
}

/// One request, as the tail shows it. Its parts are shared with the
/// request's own (the path is moved), so keeping it allocates nothing.
#[derive(Debug, Clone, Serialize)]
pub struct Recent {
    /// Unix time in milliseconds.
    pub at: u64,
    #[serde(serialize_with = "as_str")]
    pub method: http::Method,
    pub path: String,
    pub route: Option<std::sync::Arc<str>>,
    pub status: u16,
    pub latency_ms: f64,
    #[serde(serialize_with = "header_text")]
    pub request_id: http::HeaderValue,
    /// Portico's error code when it answered instead of the upstream.
    pub error: Option<&'static str>,
}

fn as_str<S: serde::Serializer>(method: &http::Method, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(method.as_str())
}

fn header_text<S: serde::Serializer>(value: &http::HeaderValue, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(value.to_str().unwrap_or_default())
}

/// One second of the series.
#[derive(Debug, Serialize)]
pub struct Point {
    /// Unix time in seconds.
    pub at: u64,
    pub requests: u64,
    pub errors: u64,
    /// Upper bounds of the latency bucket holding the percentile; `None`
    /// without requests.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Live")
    }
}

impl Default for Live {
    fn default() -> Self {
        Live {
            seconds: (0..SECONDS)
                .map(|_| Second {
                    at: AtomicU64::new(0),
                    requests: AtomicU64::new(0),
                    errors: AtomicU64::new(0),
                    latency: std::array::from_fn(|_| AtomicU64::new(0)),
                })
                .collect(),
            recent: (0..RECENT).map(|_| Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn bucket_of(latency: Duration) -> usize {
    let units = latency.as_micros() / 50;
    // 0–50 µs is bucket 0, up to 100 µs bucket 1, and so on, doubling.
    let bucket = (u128::BITS - units.leading_zeros()) as usize;
    bucket.min(BUCKETS - 1)
}

fn bucket_bound_ms(bucket: usize) -> f64 {
    0.05 * f64::from(1u32 << bucket)
}

impl Live {
    /// Counts a finished request; `error` when it failed (5xx or the gateway's own error).
    pub fn record(&self, latency: Duration, error: bool, recent: Option<Recent>) {
        let second = now().as_secs();
        let slot = &self.seconds[(second % SECONDS as u64) as usize];
        let seen = slot.at.load(Ordering::Relaxed);
        if seen != second
            && slot
                .at
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.requests.store(0, Ordering::Relaxed);
            slot.errors.store(0, Ordering::Relaxed);
            for count in &slot.latency {
                count.store(0, Ordering::Relaxed);
            }
        }
        slot.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            slot.errors.fetch_add(1, Ordering::Relaxed);
        }
        slot.latency[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
        if let Some(recent) = recent {
            let at = self.next.fetch_add(1, Ordering::Relaxed) % RECENT;
            if let Ok(mut slot) = self.recent[at].lock() {
                *slot = Some(recent);
            }
        }
    }

    /// The last `seconds` whole seconds, oldest first (the current one,
    /// still filling, is left out).
    pub fn series(&self, seconds: usize) -> Vec<Point> {
        let current = now().as_secs();
        let seconds = seconds.clamp(1, SECONDS - 1) as u64;
        (current - seconds..current)
            .map(|second| {
                let slot = &self.seconds[(second % SECONDS as u64) as usize];
                if slot.at.load(Ordering::Relaxed) != second {
                    return Point {
                        at: second,
                        requests: 0,
                        errors: 0,
                        p50_ms: None,
                        p99_ms: None,
                    };
                }
                let counts: Vec<u64> = slot.latency.iter().map(|c| c.load(Ordering::Relaxed)).collect();
                let total: u64 = counts.iter().sum();
                let percentile = |p: f64| {
                    let rank = ((total as f64) * p).ceil().max(1.0) as u64;
                    let mut seen = 0;
                    counts.iter().enumerate().find_map(|(bucket, count)| {
                        seen += count;
                        (seen >= rank).then(|| bucket_bound_ms(bucket))
                    })
                };
                Point {
                    at: second,
                    requests: slot.requests.load(Ordering::Relaxed),
                    errors: slot.errors.load(Ordering::Relaxed),
                    p50_ms: (total > 0).then(|| percentile(0.5)).flatten(),
                    p99_ms: (total > 0).then(|| percentile(0.99)).flatten(),
                }
            })
            .collect()
    }

    /// The most recent requests, newest first.
    pub fn recent(&self, limit: usize) -> Vec<Recent> {
        let next = self.next.load(Ordering::Relaxed);
        (1..=RECENT.min(limit))
            .filter_map(|back| {
                let at = (next + RECENT * 2 - back) % RECENT;
                self.recent[at].lock().ok().and_then(|slot| slot.clone())
            })
            .collect()
    }
}

/// Milliseconds since the Unix epoch, for [`Recent::at`].
pub fn now_ms() -> u64 {
    u64::try_from(now().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recent(path: &str, status: u16) -> Option<Recent> {
        Some(Recent {
            at: now_ms(),
            method: http::Method::GET,
            path: path.into(),
            route: None,
            status,
            latency_ms: 1.0,
            request_id: http::HeaderValue::from_static("id"),
            error: None,
        })
    }

    #[test]
    fn latencies_fall_in_doubling_buckets() {
        assert_eq!(bucket_of(Duration::from_micros(10)), 0);
        assert_eq!(bucket_of(Duration::from_micros(60)), 1);
        assert_eq!(bucket_of(Duration::from_micros(150)), 2);
        assert_eq!(bucket_of(Duration::from_secs(100)), BUCKETS - 1);
        assert_eq!(bucket_bound_ms(2), 0.2);
    }

    #[test]
    fn the_tail_is_newest_first_and_bounded() {
        let live = Live::default();
        for i in 0..(RECENT + 10) {
            live.record(Duration::from_millis(1), false, recent(&format!("/{i}"), 200));
        }
        let tail = live.recent(5);
        let paths: Vec<_> = tail.iter().map(|r| r.path.as_str()).collect();
        assert_eq!(paths, ["/265", "/264", "/263", "/262", "/261"]);
        assert_eq!(live.recent(10_000).len(), RECENT);
    }

    #[test]
    fn seconds_count_requests_errors_and_percentiles() {
        let live = Live::default();
        let second = now().as_secs();
        for i in 0..100 {
            let latency = if i < 98 {
                Duration::from_micros(120)
            } else {
                Duration::from_millis(30)
            };
            live.record(latency, i % 10 == 0, None);
        }
        // The current second is still filling: read it directly.
        let slot = &live.seconds[(second % SECONDS as u64) as usize];
        if slot.at.load(Ordering::Relaxed) == second {
            assert_eq!(slot.requests.load(Ordering::Relaxed), 100);
            assert_eq!(slot.errors.load(Ordering::Relaxed), 10);
        }
        std::thread::sleep(Duration::from_millis(1100));
        let points = live.series(3);
        assert_eq!(points.len(), 3);
        let filled: Vec<_> = points.iter().filter(|p| p.requests > 0).collect();
        let total: u64 = filled.iter().map(|p| p.requests).sum();
        assert_eq!(total, 100, "{points:?}");
        if let [point] = filled.as_slice() {
            assert_eq!((point.errors, point.p50_ms, point.p99_ms), (10, Some(0.2), Some(51.2)));
        }
    }
}
