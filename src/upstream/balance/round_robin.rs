//! Smooth weighted round robin, as nginx does it, without a lock.
//!
//! nginx runs the algorithm on every pick under the upstream's lock. The
//! sequence it produces depends only on the weights, so Portico computes one
//! full cycle when the config is compiled and walks it with an atomic cursor:
//! the same spread (weights 5,1,1 give a a b a c a a, never a a a a a b c),
//! with no lock on the hot path.

use std::sync::atomic::{AtomicUsize, Ordering};

#[derive(Debug)]
pub struct RoundRobin {
    sequence: Vec<usize>,
    cursor: AtomicUsize,
}

/// Longest cycle kept; weights are scaled down past it (rarely: it takes
/// weights summing over 4096 after dividing by their common divisor).
const MAX_CYCLE: u64 = 4096;

impl RoundRobin {
    /// `weights[i]` is target i's weight (at least 1).
    pub fn new(weights: &[u32]) -> RoundRobin {
        let divisor = weights.iter().copied().fold(0, gcd).max(1);
        let mut weights: Vec<u64> = weights.iter().map(|w| u64::from(*w / divisor)).collect();
        let total: u64 = weights.iter().sum();
        if total > MAX_CYCLE {
            for w in &mut weights {
                *w = (*w * MAX_CYCLE / total).max(1);
            }
        }
        let total: i64 = weights.iter().sum::<u64>() as i64;
        let mut current = vec![0i64; weights.len()];
        let mut sequence = Vec::with_capacity(total as usize);
        for _ in 0..total {
            let mut best = 0;
            for (i, w) in weights.iter().enumerate() {
                current[i] += *w as i64;
                if current[i] > current[best] {
                    best = i;
                }
            }
            current[best] -= total;
            sequence.push(best);
        }
        RoundRobin {
            sequence,
            // Nodes start at different points so that a fleet restarted at once
            // does not send its first requests to the same target.
            cursor: AtomicUsize::new(fastrand::usize(..)),
        }
    }

    pub fn next(&self) -> usize {
        let at = self.cursor.fetch_add(1, Ordering::Relaxed);
        self.sequence[at % self.sequence.len()]
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_heavy_targets_smoothly() {
        let rr = RoundRobin::new(&[5, 1, 1]);
        let start = rr.sequence.iter().position(|&i| i == 1).unwrap();
        let mut cycle: Vec<usize> = rr.sequence[start..].to_vec();
        cycle.extend_from_slice(&rr.sequence[..start]);
        assert_eq!(rr.sequence.len(), 7);
        assert_eq!(rr.sequence, vec![0, 0, 1, 0, 2, 0, 0]);
        let counts = (0..700).fold([0; 3], |mut c, _| {
            c[rr.next()] += 1;
            c
        });
        assert_eq!(counts, [500, 100, 100]);
    }

    #[test]
    fn common_divisors_and_huge_weights_stay_short() {
        assert_eq!(RoundRobin::new(&[100, 200]).sequence.len(), 3);
        let rr = RoundRobin::new(&[1_000_000, 1]);
        assert!(rr.sequence.len() as u64 <= MAX_CYCLE + 1);
        assert!(rr.sequence.contains(&1));
    }
}
