//! Maglev consistent hashing (Eisenbud et al., NSDI 2016): a lookup table
//! filled by each target in turn along its own permutation, so that removing
//! one of N targets moves about 1/N of the keys and load stays even.

use xxhash_rust::xxh3::xxh3_64_with_seed;

/// Table size: a prime well above 100 times any sensible target count.
const TABLE_SIZE: usize = 65_537;

#[derive(Debug)]
pub struct Maglev {
    table: Vec<u16>,
}

impl Maglev {
    /// `names` identify targets (their addresses) so that a target keeps its
    /// slots when others come and go; `weights` repeat its turns.
    pub fn new(names: &[&str], weights: &[u32]) -> Maglev {
        let n = names.len();
        if n == 0 {
            // Nothing to fill the table with (a pool whose targets are all
            // yet to be discovered); `pick` is never asked of an empty pool.
            return Maglev { table: Vec::new() };
        }
        let permutations: Vec<(usize, usize)> = names
            .iter()
            .map(|name| {
                let offset = (xxh3_64_with_seed(name.as_bytes(), 0xA11CE) % TABLE_SIZE as u64) as usize;
                let skip = (xxh3_64_with_seed(name.as_bytes(), 0xB0B) % (TABLE_SIZE as u64 - 1)) as usize + 1;
                (offset, skip)
            })
            .collect();
        let max_weight = weights.iter().copied().max().unwrap_or(1).max(1);
        let mut next = vec![0usize; n];
        let mut table = vec![u16::MAX; TABLE_SIZE];
        let mut filled = 0;
        // Weighted Maglev: in each round, target i takes a turn when its
        // accumulated credit reaches the heaviest weight.
        let mut credit = vec![0u64; n];
        'fill: loop {
            for i in 0..n {
                credit[i] += u64::from(weights[i].max(1));
                if credit[i] < u64::from(max_weight) {
                    continue;
                }
                credit[i] -= u64::from(max_weight);
                let (offset, skip) = permutations[i];
                loop {
                    let slot = (offset + next[i] * skip) % TABLE_SIZE;
                    next[i] += 1;
                    if table[slot] == u16::MAX {
                        table[slot] = i as u16;
                        filled += 1;
                        break;
                    }
                }
                if filled == TABLE_SIZE {
                    break 'fill;
                }
            }
        }
        Maglev { table }
    }

    pub fn pick(&self, key: &[u8]) -> usize {
        let slot = (xxh3_64_with_seed(key, 0) % TABLE_SIZE as u64) as usize;
        self.table.get(slot).map_or(0, |index| usize::from(*index))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:80")).collect()
    }

    #[test]
    fn removing_one_of_n_moves_about_one_nth_of_keys() {
        let all = names(5);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let before = Maglev::new(&refs, &[1; 5]);
        let after = Maglev::new(&refs[..4], &[1; 4]);
        let keys = 20_000;
        let mut moved = 0;
        for k in 0..keys {
            let key = format!("user-{k}");
            let old = before.pick(key.as_bytes());
            let new = after.pick(key.as_bytes());
            if old != 4 && refs[old] != refs[new] {
                moved += 1;
            }
            if old == 4 {
                moved += 1;
            }
        }
        let share = moved as f64 / keys as f64;
        // Ideal is 1/5 = 0.20; Maglev is close to minimal disruption.
        assert!(share > 0.15 && share < 0.27, "moved {share}");
    }

    #[test]
    fn an_empty_pool_builds_an_empty_table() {
        assert!(Maglev::new(&[], &[]).table.is_empty());
    }

    #[test]
    fn load_is_even_and_weights_count() {
        let all = names(3);
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        let m = Maglev::new(&refs, &[1, 1, 2]);
        let mut counts = [0usize; 3];
        for slot in &m.table {
            counts[usize::from(*slot)] += 1;
        }
        let share = counts[2] as f64 / TABLE_SIZE as f64;
        assert!((share - 0.5).abs() < 0.02, "{counts:?}");
    }
}
