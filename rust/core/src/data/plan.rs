//! Which rows make up each batch of an epoch, for one rank.
//!
//! The items of an epoch are the kept rows (all rows, or a keep-list of row indices).
//! Position `p` of the epoch's global order holds item `perm(p)` (identity without
//! shuffling). Every rank gets the same number of items, as `torch`'s
//! `DistributedSampler` does, so data-parallel ranks run the same number of steps:
//!
//! * `drop_last`: the order is cut to `W * floor(n / W)` positions (the tail of at most
//!   `W - 1` items is skipped this epoch); ranks never overlap.
//! * otherwise: the order is padded to `W * ceil(n / W)` positions by wrapping around
//!   (position `p >= n` holds the item of position `p mod n`); every item is seen, and
//!   fewer than `W` of them twice.
//!
//! Rank `r` of `W` takes the positions `r, r + W, r + 2W, ...` of that list, and batch
//! `b` of a rank is that rank's positions `b * batch_size ..`; with `drop_last` the
//! rank's last incomplete batch is dropped too. With one rank both modes are the plain
//! epoch (nothing cut, nothing padded).

use super::perm::Permutation;
use super::{invalid, DataError};
use crate::alloc::{try_vec, try_with_capacity};

/// Options of a batch plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    /// Rows per batch (>= 1).
    pub batch_size: usize,
    /// Shuffle with the keyed permutation of `(seed, epoch)`.
    pub shuffle: bool,
    /// Shuffling seed.
    pub seed: u64,
    /// Epoch number (changes the order).
    pub epoch: u64,
    /// This process's rank (`< world_size`).
    pub rank: u64,
    /// Number of ranks (>= 1).
    pub world_size: u64,
    /// Cut the epoch to a multiple of `world_size` items (instead of padding it) and
    /// drop the last incomplete batch of this rank.
    pub drop_last: bool,
}

/// The batch plan of one epoch for one rank.
#[derive(Debug, Clone)]
pub struct BatchPlan {
    keep: Option<Vec<u64>>,
    n_items: u64,
    perm: Option<Permutation>,
    opts: PlanOptions,
}

/// Check that every keep index is below `n_rows` and none repeats.
///
/// Uses a bitmap of `n_rows` bits, or sorts a copy of `keep` when that is smaller (a
/// short keep-list of a huge source).
pub fn validate_keep(keep: &[u64], n_rows: u64) -> Result<(), DataError> {
    if let Some(pos) = keep.iter().position(|&k| k >= n_rows) {
        return Err(invalid(format!(
            "keep index {} at position {pos} is out of range for {n_rows} rows",
            keep[pos]
        )));
    }
    let repeated = |k: u64| {
        let pos = keep.iter().enumerate().filter(|&(_, &x)| x == k).nth(1);
        let pos = pos.map_or(0, |(i, _)| i);
        invalid(format!(
            "keep index {k} appears more than once (position {pos})"
        ))
    };
    let words = n_rows.div_ceil(64);
    if words > keep.len() as u64 {
        let mut sorted = try_with_capacity(keep.len(), "the keep-list check")?;
        sorted.extend_from_slice(keep);
        sorted.sort_unstable();
        return match sorted.windows(2).find(|w| w[0] == w[1]) {
            Some(w) => Err(repeated(w[0])),
            None => Ok(()),
        };
    }
    let mut seen = try_vec(0u64, words as usize, "the keep-list check")?;
    for &k in keep {
        let (w, b) = ((k / 64) as usize, k % 64);
        if seen[w] >> b & 1 == 1 {
            return Err(repeated(k));
        }
        seen[w] |= 1 << b;
    }
    Ok(())
}

impl BatchPlan {
    /// A plan over `n_rows` rows, restricted to `keep` (row indices) when given.
    pub fn new(n_rows: u64, keep: Option<Vec<u64>>, opts: PlanOptions) -> Result<Self, DataError> {
        if opts.batch_size < 1 {
            return Err(invalid(format!(
                "batch_size must be >= 1, got {}",
                opts.batch_size
            )));
        }
        if opts.world_size < 1 {
            return Err(invalid(format!(
                "world_size must be >= 1, got {}",
                opts.world_size
            )));
        }
        if opts.rank >= opts.world_size {
            return Err(invalid(format!(
                "rank must be < world_size, got rank {} with world_size {}",
                opts.rank, opts.world_size
            )));
        }
        if let Some(k) = &keep {
            validate_keep(k, n_rows)?;
        }
        let n_items = keep.as_ref().map_or(n_rows, |k| k.len() as u64);
        let perm = opts
            .shuffle
            .then(|| Permutation::new(n_items, opts.seed, opts.epoch));
        Ok(BatchPlan {
            keep,
            n_items,
            perm,
            opts,
        })
    }

    /// Items in the epoch over all ranks.
    pub fn n_items(&self) -> u64 {
        self.n_items
    }

    /// Items every rank sees in the epoch: `floor(n / W)` with `drop_last`, else
    /// `ceil(n / W)` (before the last incomplete batch is dropped).
    pub fn rank_len(&self) -> u64 {
        let w = self.opts.world_size;
        if self.opts.drop_last {
            self.n_items / w
        } else {
            self.n_items.div_ceil(w)
        }
    }

    /// Batches this rank yields in the epoch.
    pub fn num_batches(&self) -> usize {
        let len = self.rank_len();
        let bs = self.opts.batch_size as u64;
        (if self.opts.drop_last {
            len / bs
        } else {
            len.div_ceil(bs)
        }) as usize
    }

    /// The row at position `j` (`j < rank_len()`) of this rank's order.
    #[inline]
    pub fn row(&self, j: u64) -> u64 {
        // j < ceil(n / W), so the position is below n + W - 1: no overflow for n < 2^64 - W.
        let mut pos = self.opts.rank + j * self.opts.world_size;
        if pos >= self.n_items {
            pos %= self.n_items; // padding wraps around to the start of the order
        }
        let item = match &self.perm {
            Some(p) => p.apply(pos),
            None => pos,
        };
        match &self.keep {
            Some(k) => k[item as usize],
            None => item,
        }
    }

    /// The rows of batch `b` (`b < num_batches()`), in order.
    pub fn batch_rows(&self, b: usize) -> Result<Vec<u64>, DataError> {
        if b >= self.num_batches() {
            return Err(invalid(format!(
                "batch {b} is out of range for an epoch of {} batches",
                self.num_batches()
            )));
        }
        let bs = self.opts.batch_size as u64;
        let start = b as u64 * bs;
        let end = start.saturating_add(bs).min(self.rank_len());
        let mut rows = try_with_capacity((end - start) as usize, "the row indices of a batch")?;
        rows.extend((start..end).map(|j| self.row(j)));
        Ok(rows)
    }

    /// All rows of this rank's epoch in yield order (the batches concatenated).
    pub fn epoch_rows(&self) -> Result<Vec<u64>, DataError> {
        let bs = self.opts.batch_size as u64;
        let len = (self.num_batches() as u64 * bs).min(self.rank_len());
        let mut rows = try_with_capacity(
            usize::try_from(len).unwrap_or(usize::MAX),
            "the row indices of an epoch",
        )?;
        rows.extend((0..len).map(|j| self.row(j)));
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn opts(bs: usize, rank: u64, world: u64, drop_last: bool) -> PlanOptions {
        PlanOptions {
            batch_size: bs,
            shuffle: true,
            seed: 3,
            epoch: 1,
            rank,
            world_size: world,
            drop_last,
        }
    }

    /// `DistributedSampler`'s rule written out: the global order cut or padded by
    /// wrapping to a multiple of `world`, then every `world`-th position from `rank`.
    fn reference_rank(order: &[u64], rank: u64, world: u64, drop_last: bool) -> Vec<u64> {
        let n = order.len() as u64;
        let per_rank = if drop_last {
            n / world
        } else {
            n.div_ceil(world)
        };
        let total = per_rank * world;
        let mut padded: Vec<u64> = order.iter().copied().take(total as usize).collect();
        while (padded.len() as u64) < total {
            let i = padded.len() % order.len();
            padded.push(order[i]);
        }
        padded
            .into_iter()
            .skip(rank as usize)
            .step_by(world as usize)
            .collect()
    }

    proptest! {
        #[test]
        fn ranks_follow_the_distributed_sampler_rule(
            n in 0u64..500, bs in 1usize..40, world in 1u64..9, keep_every in 1u64..4,
            drop_last: bool,
        ) {
            let keep: Vec<u64> = (0..n).filter(|i| i % keep_every == 0).collect();
            let k = keep.len() as u64;
            let perm = Permutation::new(k, 3, 1);
            let order: Vec<u64> = (0..k).map(|p| keep[perm.apply(p) as usize]).collect();
            let mut batches = Vec::new();
            for r in 0..world {
                let plan = BatchPlan::new(n, Some(keep.clone()), opts(bs, r, world, drop_last)).unwrap();
                let want = reference_rank(&order, r, world, drop_last);
                prop_assert_eq!(plan.rank_len(), want.len() as u64);
                let rows = plan.epoch_rows().unwrap();
                let full = if drop_last { want.len() / bs * bs } else { want.len() };
                prop_assert_eq!(&rows[..], &want[..full]);
                let by_batch: Vec<u64> = (0..plan.num_batches())
                    .flat_map(|b| plan.batch_rows(b).unwrap())
                    .collect();
                prop_assert_eq!(&by_batch, &rows);
                batches.push(plan.num_batches());
            }
            // every rank runs the same number of steps
            prop_assert!(batches.iter().all(|&b| b == batches[0]));
        }
    }

    #[test]
    fn no_shuffle_is_strided_identity() {
        let mut o = opts(4, 1, 2, false);
        o.shuffle = false;
        let plan = BatchPlan::new(10, None, o).unwrap();
        assert_eq!(plan.num_batches(), 2);
        assert_eq!(plan.batch_rows(0).unwrap(), vec![1, 3, 5, 7]);
        assert_eq!(plan.batch_rows(1).unwrap(), vec![9]);
        assert!(plan.batch_rows(2).is_err());
    }

    #[test]
    fn padding_wraps_and_cutting_drops_the_tail() {
        // 10 items over 4 ranks: padded to 12 (items 0 and 1 twice) or cut to 8
        let mut o = opts(8, 0, 4, false);
        o.shuffle = false;
        let rows = |o: PlanOptions| BatchPlan::new(10, None, o).unwrap().epoch_rows().unwrap();
        assert_eq!(rows(o), vec![0, 4, 8]);
        o.rank = 2;
        assert_eq!(rows(o), vec![2, 6, 0]);
        o.rank = 3;
        assert_eq!(rows(o), vec![3, 7, 1]);
        o.drop_last = true;
        o.batch_size = 1;
        assert_eq!(rows(o), vec![3, 7]);
        // fewer items than ranks: every rank still gets one
        let mut o = opts(2, 5, 8, false);
        o.shuffle = false;
        assert_eq!(
            BatchPlan::new(3, None, o).unwrap().epoch_rows().unwrap(),
            vec![2]
        );
        o.drop_last = true;
        assert_eq!(BatchPlan::new(3, None, o).unwrap().num_batches(), 0);
        assert_eq!(
            BatchPlan::new(0, None, opts(2, 0, 3, false))
                .unwrap()
                .num_batches(),
            0
        );
    }

    #[test]
    fn drop_last_counts() {
        let plan = BatchPlan::new(10, None, opts(4, 0, 1, true)).unwrap();
        assert_eq!(plan.num_batches(), 2);
        let plan = BatchPlan::new(10, None, opts(4, 0, 1, false)).unwrap();
        assert_eq!(plan.num_batches(), 3);
        assert_eq!(plan.batch_rows(2).unwrap().len(), 2);
        // the reported DDP case: 51193 rows, 8 ranks, batches of 32
        for drop_last in [true, false] {
            let counts: Vec<usize> = (0..8)
                .map(|r| {
                    BatchPlan::new(51193, None, opts(32, r, 8, drop_last))
                        .unwrap()
                        .num_batches()
                })
                .collect();
            let want = if drop_last { 199 } else { 200 };
            assert_eq!(counts, vec![want; 8]);
        }
    }

    #[test]
    fn bad_options() {
        assert!(BatchPlan::new(10, None, opts(0, 0, 1, false)).is_err());
        assert!(BatchPlan::new(10, None, opts(1, 2, 2, false)).is_err());
        assert!(BatchPlan::new(10, None, opts(1, 0, 0, false)).is_err());
        let e = BatchPlan::new(10, Some(vec![1, 10]), opts(1, 0, 1, false)).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        let e = BatchPlan::new(10, Some(vec![1, 1]), opts(1, 0, 1, false)).unwrap_err();
        assert!(e.to_string().contains("more than once"), "{e}");
    }

    #[test]
    fn keep_check_of_a_huge_source_sorts_instead_of_a_bitmap() {
        // a bitmap of 2^63 rows would need 1 EiB
        assert!(validate_keep(&[1, 1 << 62, 7], 1 << 63).is_ok());
        let e = validate_keep(&[5, 1 << 62, 5], 1 << 63).unwrap_err();
        assert!(
            e.to_string()
                .contains("5 appears more than once (position 2)"),
            "{e}"
        );
        let e = validate_keep(&[9, 4, 9], 10).unwrap_err();
        assert!(
            e.to_string()
                .contains("9 appears more than once (position 2)"),
            "{e}"
        );
    }
}
