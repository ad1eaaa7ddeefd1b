//! A keyed bijective permutation of `0..n` in O(1) memory.
//!
//! A Feistel network permutes the `b`-bit integers (`2^b >= n`, the smallest such
//! `b`); an index is mapped through the network repeatedly until it lands below `n`
//! ("cycle walking"). Because the network is a bijection of `0..2^b`, the walk
//! restricted to `0..n` is a bijection too, and since `2^b < 2n` the expected number
//! of walks per index is below two. For odd `b` the network is unbalanced: each round
//! XORs the high `lo = b / 2` bits with a keyed hash of the low `b - lo` bits and then
//! rotates them to the bottom, which is invertible round by round. The round keys derive from `(seed, epoch)` only, so any thread computes any
//! position independently and the order never depends on the thread count.

use super::{hash_words, invalid, DataError};
use crate::alloc::try_with_capacity;

const ROUNDS: usize = 8;

/// A pseudo-random permutation of `0..n` keyed by `(seed, epoch)`.
#[derive(Debug, Clone)]
pub struct Permutation {
    n: u64,
    /// Width of the high part that each round rewrites.
    left_bits: u32,
    /// Width of the low part that keys each round.
    right_bits: u32,
    keys: [u64; ROUNDS],
}

impl Permutation {
    /// The permutation of `0..n` for this seed and epoch.
    pub fn new(n: u64, seed: u64, epoch: u64) -> Self {
        // Smallest b >= 2 with 2^b >= n.
        let bits = if n <= 4 {
            2
        } else {
            64 - (n - 1).leading_zeros()
        };
        let left_bits = bits / 2;
        let right_bits = bits - left_bits;
        let mut keys = [0u64; ROUNDS];
        for (r, k) in keys.iter_mut().enumerate() {
            *k = hash_words(&[seed, epoch, r as u64, 0x7065_726d]);
        }
        Permutation {
            n,
            left_bits,
            right_bits,
            keys,
        }
    }

    /// Number of elements permuted.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// True when `n == 0`.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    #[inline]
    fn round(&self, x: u64) -> u64 {
        let (lb, rb) = (self.left_bits, self.right_bits);
        let lmask = (1u64 << lb) - 1;
        let rmask = (1u64 << rb) - 1;
        let mut x = x;
        for &k in &self.keys {
            let left = x >> rb;
            let right = x & rmask;
            // multiplicative hash: the top `lb` bits of (right ^ k) * odd constant
            let f = ((right ^ k).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ k) >> (64 - lb);
            let new_left = left ^ (f & lmask);
            // rotate: the untouched right part moves up, the rewritten part down
            x = (right << lb) | new_left;
        }
        x
    }

    /// The element at position `i` (`i < n`).
    #[inline]
    pub fn apply(&self, i: u64) -> u64 {
        assert!(
            i < self.n,
            "permutation index {i} out of range 0..{}",
            self.n
        );
        let mut x = i;
        loop {
            x = self.round(x);
            if x < self.n {
                return x;
            }
        }
    }
}

/// Positions `start .. start + count` of the permutation of `0..n` for `(seed, epoch)`.
pub fn positions(
    n: u64,
    seed: u64,
    epoch: u64,
    start: u64,
    count: u64,
) -> Result<Vec<u64>, DataError> {
    let end = start.checked_add(count).filter(|&e| e <= n);
    let Some(end) = end else {
        return Err(invalid(format!(
            "positions {start}..{start}+{count} exceed the permutation size {n}"
        )));
    };
    let len = usize::try_from(count).unwrap_or(usize::MAX);
    let mut out = try_with_capacity(len, "the permutation positions")?;
    let p = Permutation::new(n, seed, epoch);
    out.extend((start..end).map(|i| p.apply(i)));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn is_perm(n: u64, seed: u64, epoch: u64) -> bool {
        let p = Permutation::new(n, seed, epoch);
        let mut seen = vec![false; n as usize];
        for i in 0..n {
            let j = p.apply(i) as usize;
            if seen[j] {
                return false;
            }
            seen[j] = true;
        }
        seen.iter().all(|&s| s)
    }

    proptest! {
        #[test]
        fn every_index_exactly_once(n in 0u64..3000, seed: u64, epoch in 0u64..1000) {
            prop_assert!(is_perm(n, seed, epoch));
        }
    }

    #[test]
    fn positions_are_slices_and_checked() {
        let all = positions(100, 4, 2, 0, 100).unwrap();
        assert_eq!(positions(100, 4, 2, 30, 20).unwrap(), &all[30..50]);
        assert!(matches!(
            positions(100, 4, 2, 90, 11),
            Err(DataError::InvalidInput(_))
        ));
        assert!(positions(10, 0, 0, u64::MAX, 2).is_err());
        let e = positions(1 << 62, 0, 0, 0, 1 << 61).unwrap_err();
        assert!(matches!(e, DataError::OutOfMemory(_)), "{e}");
    }

    #[test]
    fn small_and_power_sizes() {
        for n in [1u64, 2, 3, 4, 5, 15, 16, 17, 63, 64, 65, 1024, 4097] {
            assert!(is_perm(n, 7, 3), "n = {n}");
        }
    }

    #[test]
    fn depends_on_seed_and_epoch() {
        let a: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 1, 0).apply(i))
            .collect();
        let b: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 1, 1).apply(i))
            .collect();
        let c: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 2, 0).apply(i))
            .collect();
        let a2: Vec<u64> = (0..100)
            .map(|i| Permutation::new(100, 1, 0).apply(i))
            .collect();
        assert_eq!(a, a2);
        assert_ne!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, (0..100).collect::<Vec<_>>());
    }

    #[test]
    fn huge_domain_no_allocation() {
        let n = 5_000_000_000u64;
        let p = Permutation::new(n, 0, 0);
        let mut xs: Vec<u64> = (0..1000).map(|i| p.apply(i)).collect();
        assert!(xs.iter().all(|&x| x < n));
        xs.sort_unstable();
        xs.dedup();
        assert_eq!(xs.len(), 1000);
        // Positions near the end work too.
        assert!(p.apply(n - 1) < n);
    }

    #[test]
    fn roughly_uniform_first_position() {
        // The element at position 0 over many epochs should be spread over 0..n.
        let n = 10u64;
        let mut counts = [0u32; 10];
        for e in 0..5000 {
            counts[Permutation::new(n, 9, e).apply(0) as usize] += 1;
        }
        for &c in &counts {
            assert!((350..650).contains(&c), "{counts:?}");
        }
    }
}
