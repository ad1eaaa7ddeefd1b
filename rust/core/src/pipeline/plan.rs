//! Which rows make up each batch of an epoch, for one rank.
//!
//! The items of an epoch are the kept rows (all rows, or a keep-list of row indices).
//! Position `p` of the epoch's global order holds item `perm(p)` (identity without
//! shuffling). Rank `r` of `W` takes the positions `r, r + W, r + 2W, ...`, so ranks
//! never overlap and together cover every item exactly once; their lengths differ by at
//! most one. Batch `b` of a rank is that rank's positions `b * batch_size ..`.

use super::perm::Permutation;
use super::{invalid, PipelineError};

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
    /// Drop the last incomplete batch of this rank.
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
pub fn validate_keep(keep: &[u64], n_rows: u64) -> Result<(), PipelineError> {
    let mut seen = vec![0u64; (n_rows as usize).div_ceil(64)];
    for (pos, &k) in keep.iter().enumerate() {
        if k >= n_rows {
            return Err(invalid(format!(
                "keep index {k} at position {pos} is out of range for {n_rows} rows"
            )));
        }
        let (w, b) = ((k / 64) as usize, k % 64);
        if seen[w] >> b & 1 == 1 {
            return Err(invalid(format!(
                "keep index {k} appears more than once (position {pos})"
            )));
        }
        seen[w] |= 1 << b;
    }
    Ok(())
}

impl BatchPlan {
    /// A plan over `n_rows` rows, restricted to `keep` (row indices) when given.
    pub fn new(
        n_rows: u64,
        keep: Option<Vec<u64>>,
        opts: PlanOptions,
    ) -> Result<Self, PipelineError> {
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

    /// Items this rank sees in the epoch (before `drop_last`).
    pub fn rank_len(&self) -> u64 {
        let (r, w) = (self.opts.rank, self.opts.world_size);
        if self.n_items > r {
            (self.n_items - r).div_ceil(w)
        } else {
            0
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

    /// The row at position `j` of this rank's order.
    #[inline]
    pub fn row(&self, j: u64) -> u64 {
        let pos = self.opts.rank + j * self.opts.world_size;
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
    pub fn batch_rows(&self, b: usize) -> Vec<u64> {
        assert!(b < self.num_batches(), "batch {b} out of range");
        let bs = self.opts.batch_size as u64;
        let start = b as u64 * bs;
        let end = (start + bs).min(self.rank_len());
        (start..end).map(|j| self.row(j)).collect()
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

    fn all_rows(plan: &BatchPlan) -> Vec<u64> {
        (0..plan.num_batches())
            .flat_map(|b| plan.batch_rows(b))
            .collect()
    }

    proptest! {
        #[test]
        fn ranks_partition_the_kept_rows(
            n in 0u64..500, bs in 1usize..40, world in 1u64..6, keep_every in 1u64..4
        ) {
            let keep: Vec<u64> = (0..n).filter(|i| i % keep_every == 0).collect();
            let mut got = Vec::new();
            for r in 0..world {
                let plan = BatchPlan::new(n, Some(keep.clone()), opts(bs, r, world, false)).unwrap();
                let rows = all_rows(&plan);
                prop_assert_eq!(rows.len() as u64, plan.rank_len());
                got.extend(rows);
            }
            got.sort_unstable();
            prop_assert_eq!(got, keep);
        }
    }

    #[test]
    fn no_shuffle_is_strided_identity() {
        let mut o = opts(4, 1, 2, false);
        o.shuffle = false;
        let plan = BatchPlan::new(10, None, o).unwrap();
        assert_eq!(plan.num_batches(), 2);
        assert_eq!(plan.batch_rows(0), vec![1, 3, 5, 7]);
        assert_eq!(plan.batch_rows(1), vec![9]);
    }

    #[test]
    fn drop_last_counts() {
        let plan = BatchPlan::new(10, None, opts(4, 0, 1, true)).unwrap();
        assert_eq!(plan.num_batches(), 2);
        let plan = BatchPlan::new(10, None, opts(4, 0, 1, false)).unwrap();
        assert_eq!(plan.num_batches(), 3);
        assert_eq!(plan.batch_rows(2).len(), 2);
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
}
