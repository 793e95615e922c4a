//! A sliding window of two counters (requests and failures, or requests and
//! retries) in ten time buckets of atomics: counting takes no lock, and a
//! bucket is rewritten only when its time comes round again.

use super::health::now_ms;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

const BUCKETS: u64 = 10;

#[derive(Debug, Default)]
struct Bucket {
    /// Which bucket number (time / bucket length) the counts belong to.
    epoch: AtomicU64,
    first: AtomicU64,
    second: AtomicU64,
}

#[derive(Debug)]
pub struct Window {
    bucket_ms: u64,
    buckets: [Bucket; BUCKETS as usize],
}

impl Window {
    pub fn new(length: Duration) -> Window {
        Window {
            bucket_ms: (length.as_millis() as u64 / BUCKETS).max(1),
            buckets: Default::default(),
        }
    }

    /// Adds to the current bucket; returns the window's totals, this included.
    pub fn add(&self, first: u64, second: u64) -> (u64, u64) {
        let epoch = now_ms() / self.bucket_ms;
        let bucket = &self.buckets[(epoch % BUCKETS) as usize];
        // Read first: within a bucket this stays a read of a shared line, not a write.
        if bucket.epoch.load(Ordering::Acquire) != epoch && bucket.epoch.swap(epoch, Ordering::AcqRel) != epoch {
            bucket.first.store(0, Ordering::Relaxed);
            bucket.second.store(0, Ordering::Relaxed);
        }
        bucket.first.fetch_add(first, Ordering::Relaxed);
        bucket.second.fetch_add(second, Ordering::Relaxed);
        self.totals_at(epoch)
    }

    /// The window's totals now.
    pub fn totals(&self) -> (u64, u64) {
        self.totals_at(now_ms() / self.bucket_ms)
    }

    fn totals_at(&self, epoch: u64) -> (u64, u64) {
        self.buckets
            .iter()
            .filter(|b| epoch.saturating_sub(b.epoch.load(Ordering::Relaxed)) < BUCKETS)
            .fold((0, 0), |(f, s), b| {
                (
                    f + b.first.load(Ordering::Relaxed),
                    s + b.second.load(Ordering::Relaxed),
                )
            })
    }

    pub fn clear(&self) {
        for bucket in &self.buckets {
            bucket.first.store(0, Ordering::Relaxed);
            bucket.second.store(0, Ordering::Relaxed);
        }
    }
}
