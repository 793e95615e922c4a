//! The in-process store: limit states in a hash map split into shards, each
//! behind its own lock, so that requests for different keys rarely wait on
//! each other. Memory is bounded: a key idle long enough to have recovered
//! fully expires, and a shard at its capacity first drops expired keys, then
//! an eighth of the rest (a flood of distinct keys costs those keys their
//! history, not the gateway its memory).

use super::{Limit, State, Verdicts};
use smallvec::SmallVec;
use std::collections::HashMap;
use std::hash::{BuildHasher, DefaultHasher, RandomState};
use std::sync::{Mutex, MutexGuard};

const SHARDS: usize = 64;
/// Keys kept at most, by default (each shard holds a little less, see `new`).
pub const DEFAULT_MAX_KEYS: usize = 1_000_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    state: State,
    expires_at: u64,
}

/// Counters by key. The keys are keyed digests already (`key_hasher`);
/// foldhash, seeded per process, spreads them over the table for a few
/// instructions where SipHash took a hundred.
type Counters = HashMap<u64, Entry, foldhash::fast::RandomState>;

/// One shard of the counters, locked.
type Shard<'a> = MutexGuard<'a, Counters>;

#[derive(Debug)]
pub struct LocalStore {
    shards: Vec<Mutex<Counters>>,
    per_shard: usize,
    /// SipHash-1-3 with this process's random key: a client cannot choose
    /// a key (a header's value, say) whose counter is another client's, as
    /// it could solve a fast hash's mixing for. Kept with the counters,
    /// across reloads, so that a key finds its counter again.
    keys: RandomState,
}

impl Default for LocalStore {
    fn default() -> Self {
        LocalStore::new(DEFAULT_MAX_KEYS)
    }
}

impl LocalStore {
    pub fn new(max_keys: usize) -> LocalStore {
        LocalStore {
            shards: (0..SHARDS).map(|_| Mutex::new(Counters::default())).collect(),
            per_shard: shard_capacity(max_keys / SHARDS),
            keys: RandomState::new(),
        }
    }

    /// A hasher for a request's key, from which each limit's counter key is
    /// finished.
    pub fn key_hasher(&self) -> DefaultHasher {
        self.keys.build_hasher()
    }

    fn shard_of(key: u64) -> usize {
        (key >> 58) as usize % SHARDS
    }

    /// Checks one request against every `(key, limit)`; charges them all only
    /// if all allow. The shards involved are locked together (in index
    /// order), so the check and the charge are one step.
    pub fn check(&self, checks: &[(u64, &Limit)], now_ms: u64, zone: &jiff::tz::TimeZone) -> Verdicts {
        // A request has a few limits: nothing here allocates for up to four.
        let mut indexes: SmallVec<[usize; 4]> = checks.iter().map(|(key, _)| Self::shard_of(*key)).collect();
        indexes.sort_unstable();
        indexes.dedup();
        let mut guards: SmallVec<[(usize, Shard<'_>); 4]> = indexes
            .iter()
            .map(|i| (*i, self.shards[*i].lock().unwrap_or_else(|p| p.into_inner())))
            .collect();
        let mut verdicts = Verdicts::new();
        let mut next_states: SmallVec<[State; 4]> = SmallVec::new();
        for (key, limit) in checks {
            let index = Self::shard_of(*key);
            let map = guards.iter().find(|(i, _)| *i == index).map(|(_, g)| &**g);
            let state = map
                .and_then(|m| m.get(key))
                .filter(|entry| entry.expires_at > now_ms)
                .map_or(State::default(), |entry| entry.state);
            let (verdict, next) = limit.check(state, now_ms, zone);
            verdicts.push(verdict);
            next_states.push(next);
        }
        if verdicts.iter().all(|v| v.allowed) {
            for ((key, limit), next) in checks.iter().zip(next_states) {
                let index = Self::shard_of(*key);
                if let Some((_, map)) = guards.iter_mut().find(|(i, _)| *i == index) {
                    if map.len() >= self.per_shard && !map.contains_key(key) {
                        make_room(map, now_ms, self.per_shard);
                    }
                    map.insert(
                        *key,
                        Entry {
                            state: next,
                            expires_at: now_ms + limit.idle_ttl_ms(),
                        },
                    );
                }
            }
        }
        verdicts
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The most keys a shard holds: the table's size at its largest load for a
/// power-of-two number of buckets (7/8 of them), so that reaching the cap
/// never doubles the table. 1,000,000 keys become 64 × 14,336 = 917,504.
fn shard_capacity(wanted: usize) -> usize {
    let buckets = (wanted.max(1) * 8 / 7).max(8);
    let below = if buckets.is_power_of_two() {
        buckets
    } else {
        buckets.next_power_of_two() / 2
    };
    (below * 7 / 8).max(1)
}

fn make_room(map: &mut Counters, now_ms: u64, capacity: usize) {
    map.retain(|_, entry| entry.expires_at > now_ms);
    if map.len() >= capacity {
        let drop: Vec<u64> = map.keys().take((capacity / 8).max(1)).copied().collect();
        for key in drop {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::Algorithm;
    use std::hash::Hasher;
    use std::time::Duration;

    fn limit(requests: u64) -> Limit {
        Limit {
            requests,
            per: Duration::from_secs(60),
            algorithm: Algorithm::SlidingWindow,
            name: String::new(),
        }
    }

    #[test]
    fn a_request_refused_by_one_limit_is_not_charged_to_the_others() {
        let store = LocalStore::default();
        let zone = jiff::tz::TimeZone::UTC;
        let (small, large) = (limit(1), limit(100));
        let checks = [(1u64 << 60, &small), (7u64, &large)];
        assert!(store.check(&checks, 1000, &zone).iter().all(|v| v.allowed));
        let refused = store.check(&checks, 1001, &zone);
        assert!(!refused[0].allowed);
        // One request charged before, this one now: the refused one did not count.
        let alone = store.check(&[(7u64, &large)], 1002, &zone);
        assert_eq!(alone[0].remaining, 98);
    }

    #[test]
    fn counter_keys_are_keyed_by_the_process_not_a_fixed_function() {
        // Two stores (two processes' worth of secret): one request key, two
        // digests; so no client can compute another's digest to aim at.
        let digest = |store: &LocalStore| {
            let mut key = store.key_hasher();
            key.write(b"route\x1fbob\x1f");
            key.finish()
        };
        let (one, other) = (LocalStore::new(8), LocalStore::new(8));
        assert_eq!(digest(&one), digest(&one));
        assert_ne!(digest(&one), digest(&other));
    }

    #[test]
    fn a_million_distinct_keys_stay_within_the_bound() {
        let store = LocalStore::new(100_000);
        let zone = jiff::tz::TimeZone::UTC;
        let l = limit(10);
        for i in 0..1_000_000u64 {
            let key = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes());
            store.check(&[(key, &l)], 1000, &zone);
        }
        assert!(store.len() <= 100_000, "{}", store.len());
        assert!(store.len() > 50_000, "{}", store.len());
    }
}
