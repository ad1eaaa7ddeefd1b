//! One rank's epoch as a source of whole batches.
//!
//! [`Batches`] joins a [`BatchPlan`] (which rows make up batch `b`) with the places the
//! rows live: the data rows in memory or in a file read with positional reads, the
//! label rows in memory. [`Batches::batch`] gathers batch `b` into fresh buffers;
//! [`Batches::stream`] hands the whole epoch (from a resume point) to a bounded
//! background producer. The memory is borrowed through any `B: AsRef<[u8]>`, so a
//! caller that owns the bytes elsewhere (a numpy array kept alive by a binding) only
//! has to guarantee that they outlive the stream.

use super::gather::{Buf, FileRows, RowSource, SizeGuard, PAR_BYTES};
use super::plan::{BatchPlan, PlanOptions};
use super::stream::Prefetcher;
use super::{invalid, DataError};
use crate::parallel;

/// Where the rows of a matrix (or the windows of a token array) sit inside a buffer:
/// row `r` is the `width` elements of `elem_size` bytes starting at element
/// `r * stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per element (1, 2, 4 or 8).
    pub elem_size: usize,
    /// Elements from one row's start to the next (`< width` for overlapping windows).
    pub stride: usize,
    /// Elements per row.
    pub width: usize,
    /// Number of rows.
    pub n_rows: u64,
}

/// Where the data rows come from.
#[derive(Debug)]
pub enum Rows<B> {
    /// Bytes in memory, laid out as described.
    Mem(B, Layout),
    /// Bytes of a memory-mapped file, laid out as described. The file's size is checked
    /// before every batch, so a file truncated between batches gives an error instead
    /// of a `SIGBUS`; a truncation during the copy of a batch still raises `SIGBUS`
    /// (only [`Rows::File`] is immune).
    Mapped(B, Layout, SizeGuard),
    /// A file read with positional reads (see [`FileRows`]).
    File(FileRows),
}

/// One batch: the data rows, the number of rows, and the label rows if any.
pub type Batch = (Buf, usize, Option<Buf>);

/// The batches of one epoch for one rank.
#[derive(Debug)]
pub struct Batches<B> {
    x: Rows<B>,
    y: Option<(B, Layout)>,
    plan: BatchPlan,
    threads: usize,
}

fn mem_rows(bytes: &[u8], l: Layout) -> Result<RowSource<'_>, DataError> {
    RowSource::new(bytes, l.elem_size, l.stride, l.width, l.n_rows)
}

impl<B: AsRef<[u8]> + Sync> Batches<B> {
    /// Check that the rows fit their buffers and that the labels have one row per data
    /// row, then plan the epoch over the data rows (restricted to `keep` when given).
    /// Batches of at least [`PAR_BYTES`] are gathered on `threads` threads.
    pub fn new(
        x: Rows<B>,
        y: Option<(B, Layout)>,
        keep: Option<Vec<u64>>,
        opts: PlanOptions,
        threads: usize,
    ) -> Result<Self, DataError> {
        let n_rows = match &x {
            Rows::Mem(bytes, l) | Rows::Mapped(bytes, l, _) => {
                mem_rows(bytes.as_ref(), *l)?.n_rows()
            }
            Rows::File(f) => f.n_rows(),
        };
        if let Some((bytes, l)) = &y {
            if l.n_rows != n_rows {
                return Err(invalid(format!(
                    "labels have {} rows for {n_rows} data rows",
                    l.n_rows
                )));
            }
            mem_rows(bytes.as_ref(), *l)?;
        }
        let plan = BatchPlan::new(n_rows, keep, opts)?;
        Ok(Batches {
            x,
            y,
            plan,
            threads,
        })
    }

    /// Batches in the epoch.
    pub fn num_batches(&self) -> usize {
        self.plan.num_batches()
    }

    /// Gather batch `b` (`< num_batches()`).
    pub fn batch(&self, b: usize) -> Result<Batch, DataError> {
        let rows = self.plan.batch_rows(b)?;
        let (width, elem_size) = match &self.x {
            Rows::Mem(_, l) | Rows::Mapped(_, l, _) => (l.width, l.elem_size),
            Rows::File(f) => (f.width(), f.elem_size()),
        };
        let gather = || -> Result<Batch, DataError> {
            let x = match &self.x {
                Rows::Mem(bytes, l) => mem_rows(bytes.as_ref(), *l)?.gather(&rows)?,
                Rows::Mapped(bytes, l, guard) => {
                    guard.check()?;
                    mem_rows(bytes.as_ref(), *l)?.gather(&rows)?
                }
                Rows::File(f) => f.gather(&rows)?,
            };
            let y = match &self.y {
                Some((bytes, l)) => Some(mem_rows(bytes.as_ref(), *l)?.gather(&rows)?),
                None => None,
            };
            Ok((x, rows.len(), y))
        };
        // Small batches are copied on the calling thread: handing them to the pool
        // would cost two thread wake-ups per batch. Without a pool (the system refused
        // its threads) large ones are copied here too.
        if rows.len().saturating_mul(width).saturating_mul(elem_size) >= PAR_BYTES {
            match parallel::try_pool(self.threads) {
                Ok(pool) => pool.install(gather),
                Err(_) => gather(),
            }
        } else {
            gather()
        }
    }
}

impl<B: AsRef<[u8]> + Send + Sync + 'static> Batches<B> {
    /// Produce batches `start..num_batches()` on a background thread, at most `depth`
    /// ahead of the consumer (see [`Prefetcher`]).
    pub fn stream(
        self,
        start: usize,
        depth: usize,
    ) -> Result<Prefetcher<Batch, DataError>, DataError> {
        let n = self.num_batches();
        Prefetcher::spawn(start.min(n)..n, depth, move |b| self.batch(b))
            .map_err(|e| DataError::Io(format!("cannot start the loader thread: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::stream::Next;
    use std::time::Duration;

    fn opts(bs: usize, shuffle: bool) -> PlanOptions {
        PlanOptions {
            batch_size: bs,
            shuffle,
            seed: 5,
            epoch: 2,
            rank: 1,
            world_size: 3,
            drop_last: false,
        }
    }

    fn as_u32(b: &Buf) -> &[u32] {
        match b {
            Buf::U32(v) => v,
            _ => panic!("expected 4-byte elements"),
        }
    }

    #[test]
    fn batches_hold_the_planned_rows_and_labels() {
        let (n, d) = (50u64, 3usize);
        let x: Vec<u8> = (0..n as u32 * d as u32)
            .flat_map(|v| v.to_ne_bytes())
            .collect();
        let y: Vec<u8> = (0..n as u8).map(|v| v * 2).collect();
        let lx = Layout {
            elem_size: 4,
            stride: d,
            width: d,
            n_rows: n,
        };
        let ly = Layout {
            elem_size: 1,
            stride: 1,
            width: 1,
            n_rows: n,
        };
        let keep: Vec<u64> = (0..n).filter(|r| r % 4 != 1).collect();
        let plan = BatchPlan::new(n, Some(keep.clone()), opts(4, true)).unwrap();
        let batches = Batches::new(
            Rows::Mem(x.clone(), lx),
            Some((y.clone(), ly)),
            Some(keep),
            opts(4, true),
            2,
        )
        .unwrap();
        assert_eq!(batches.num_batches(), plan.num_batches());
        for b in 0..batches.num_batches() {
            let rows = plan.batch_rows(b).unwrap();
            let (xb, len, yb) = batches.batch(b).unwrap();
            assert_eq!(len, rows.len());
            let xs = as_u32(&xb);
            let Some(Buf::U8(ys)) = yb else { panic!() };
            for (i, &r) in rows.iter().enumerate() {
                assert_eq!(xs[i * d], r as u32 * d as u32);
                assert_eq!(ys[i], r as u8 * 2);
            }
        }
        // the stream yields the same batches from a resume point
        let stream = batches.stream(2, 1).unwrap();
        let mut got = 0;
        loop {
            match stream.next_timeout(Duration::from_secs(5)) {
                Next::Item(r) => {
                    let (xb, _, _) = r.unwrap();
                    let rows = plan.batch_rows(2 + got).unwrap();
                    assert_eq!(as_u32(&xb)[0], rows[0] as u32 * d as u32);
                    got += 1;
                }
                Next::Pending => panic!("stalled"),
                Next::Done => break,
            }
        }
        assert_eq!(got, plan.num_batches() - 2);
    }

    #[test]
    fn a_mapped_file_is_checked_before_every_batch() {
        let bytes = vec![3u8; 100];
        let path = std::env::temp_dir().join(format!("thrifty-batches-{}.bin", std::process::id()));
        std::fs::write(&path, &bytes).unwrap();
        let l = Layout {
            elem_size: 1,
            stride: 10,
            width: 10,
            n_rows: 10,
        };
        let guard = SizeGuard::open(&path, 100).unwrap();
        // (the test maps nothing: a copy of the bytes stands in for the mapping)
        let b = Batches::new(Rows::Mapped(bytes, l, guard), None, None, opts(1, false), 1).unwrap();
        assert!(b.batch(0).is_ok());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(50)
            .unwrap();
        let e = b.batch(1).unwrap_err();
        assert!(e.to_string().contains("changed size"), "{e}");
        assert!(SizeGuard::open(&path, 51).is_err());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn mismatched_or_short_buffers_are_rejected() {
        let l = |n_rows| Layout {
            elem_size: 1,
            stride: 2,
            width: 2,
            n_rows,
        };
        let e = Batches::new(
            Rows::Mem(vec![0u8; 20], l(10)),
            Some((vec![0u8; 20], l(9))),
            None,
            opts(2, false),
            1,
        )
        .unwrap_err();
        assert!(e.to_string().contains("labels have 9 rows"), "{e}");
        let e = Batches::new(
            Rows::Mem(vec![0u8; 19], l(10)),
            None,
            None,
            opts(2, false),
            1,
        )
        .unwrap_err();
        assert!(matches!(e, DataError::Format(_)), "{e}");
        let b = Batches::new(
            Rows::Mem(vec![0u8; 20], l(10)),
            None,
            None,
            opts(2, false),
            1,
        )
        .unwrap();
        assert!(b.batch(b.num_batches()).is_err());
    }
}
