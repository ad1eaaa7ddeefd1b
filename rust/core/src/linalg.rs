//! Dense row-major matrix helpers shared by the capabilities: a validated matrix view,
//! finiteness checks, row norms, row normalisation and column means.

use rayon::prelude::*;

use crate::alloc::{try_with_capacity, AllocError};
use crate::error::{Cancelled, Classify, ErrorKind};
use crate::parallel::fixed_chunks;
use crate::progress::Progress;

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LinalgError {
    /// The buffer length does not match `rows * cols`.
    #[error("buffer of {len} values cannot be a {rows} x {cols} matrix")]
    Shape {
        len: usize,
        rows: usize,
        cols: usize,
    },
    /// The matrix has no rows or no columns.
    #[error("{name} is empty (shape {rows} x {cols}); at least one row and one column are needed")]
    Empty {
        name: &'static str,
        rows: usize,
        cols: usize,
    },
    /// A NaN or infinity at the given position.
    #[error("{name} contains a non-finite value ({value}) at row {row}, column {col}")]
    NonFinite {
        name: &'static str,
        row: usize,
        col: usize,
        value: f32,
    },
    /// Work was cancelled.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// An output buffer could not be allocated.
    #[error(transparent)]
    Alloc(#[from] AllocError),
}

impl Classify for LinalgError {
    fn kind(&self) -> ErrorKind {
        match self {
            LinalgError::Cancelled(_) => ErrorKind::Cancelled,
            LinalgError::Alloc(e) => e.kind(),
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// A read-only, row-major, C-contiguous `rows x cols` matrix of `f32`.
#[derive(Debug, Clone, Copy)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
}

impl<'a> MatRef<'a> {
    /// View `data` as a `rows x cols` matrix.
    pub fn new(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, LinalgError> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(LinalgError::Shape {
                len: data.len(),
                rows,
                cols,
            });
        }
        Ok(Self { data, rows, cols })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The whole buffer, row-major.
    pub fn as_slice(&self) -> &'a [f32] {
        self.data
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &'a [f32] {
        &self.data[i * self.cols..(i + 1) * self.cols]
    }

    /// Error unless the matrix has at least one row and one column.
    pub fn require_non_empty(&self, name: &'static str) -> Result<(), LinalgError> {
        if self.rows == 0 || self.cols == 0 {
            return Err(LinalgError::Empty {
                name,
                rows: self.rows,
                cols: self.cols,
            });
        }
        Ok(())
    }

    /// Error naming the first NaN or infinity, in row-major order.
    pub fn require_finite(&self, name: &'static str) -> Result<(), LinalgError> {
        let cols = self.cols.max(1);
        // Each chunk reports its first offender; the first chunk that has one wins, so
        // the reported position does not depend on the thread count.
        let bad = fixed_chunks(self.data.len(), 1 << 16)
            .into_par_iter()
            .filter_map(|r| {
                let start = r.start;
                self.data[r]
                    .iter()
                    .position(|v| !v.is_finite())
                    .map(|p| start + p)
            })
            .min();
        match bad {
            None => Ok(()),
            Some(i) => Err(LinalgError::NonFinite {
                name,
                row: i / cols,
                col: i % cols,
                value: self.data[i],
            }),
        }
    }
}

/// Squared L2 norm of a row in `f64`: eight interleaved partial sums (so the loop
/// pipelines and vectorises), combined in a fixed order — deterministic.
#[inline]
pub(crate) fn sq_norm_f64(row: &[f32]) -> f64 {
    let mut acc = [0.0f64; 8];
    let chunks = row.chunks_exact(8);
    let tail = chunks.remainder();
    for c in chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a += f64::from(v) * f64::from(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(tail) {
        *a += f64::from(v) * f64::from(v);
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]))
}

/// Squared L2 norm of every row, accumulated in `f64` ([`sq_norm_f64`]) and rounded
/// once to `f32`.
pub fn row_norms_sq(x: MatRef<'_>) -> Vec<f32> {
    (0..x.rows())
        .into_par_iter()
        .with_min_len(64)
        .map(|i| sq_norm_f64(x.row(i)) as f32)
        .collect()
}

/// Scale every row to unit L2 norm (norm accumulated in `f64`, [`sq_norm_f64`]); all-zero
/// rows stay zero.
pub fn normalize_rows(x: MatRef<'_>) -> Result<Vec<f32>, AllocError> {
    let cols = x.cols();
    let n = x.as_slice().len();
    let mut out: Vec<f32> = try_with_capacity(n, "the normalised rows")?;
    // huge pages before the first touch: a fresh output's page faults cost more than
    // the arithmetic
    crate::alloc::advise_huge(out.as_ptr() as usize, std::mem::size_of_val(x.as_slice()));
    out.resize(n, 0.0);
    if cols == 0 {
        return Ok(out);
    }
    out.par_chunks_mut(cols)
        .with_min_len(256)
        .enumerate()
        .for_each(|(i, dst)| {
            let src = x.row(i);
            let norm = sq_norm_f64(src).sqrt();
            if norm > 0.0 {
                let inv = 1.0 / norm;
                for (d, &v) in dst.iter_mut().zip(src) {
                    *d = (f64::from(v) * inv) as f32;
                }
            }
        });
    Ok(out)
}

/// Rows per unit of work (and per progress step) in [`column_mean`].
pub const MEAN_ROW_CHUNK: usize = 1024;

/// Mean of every column, accumulated in `f64`.
///
/// Rows are summed in fixed chunks of [`MEAN_ROW_CHUNK`] whose partial sums are added
/// in order, so the result is bit-identical for every thread count. Reports one
/// progress unit per row and stops early when cancelled. The input must be non-empty
/// and finite.
pub fn column_mean(x: MatRef<'_>, progress: &Progress) -> Result<Vec<f64>, LinalgError> {
    x.require_non_empty("X")?;
    x.require_finite("X")?;
    let cols = x.cols();
    progress.set_total(x.rows() as u64);
    let partials: Vec<Vec<f64>> = fixed_chunks(x.rows(), MEAN_ROW_CHUNK)
        .into_par_iter()
        .map(|r| {
            progress.check()?;
            let mut acc = vec![0.0f64; cols];
            for i in r.clone() {
                for (a, &v) in acc.iter_mut().zip(x.row(i)) {
                    *a += f64::from(v);
                }
            }
            progress.inc(r.len() as u64);
            Ok(acc)
        })
        .collect::<Result<_, Cancelled>>()?;
    let mut total = vec![0.0f64; cols];
    for p in &partials {
        for (t, v) in total.iter_mut().zip(p) {
            *t += v;
        }
    }
    let n = x.rows() as f64;
    total.iter_mut().for_each(|t| *t /= n);
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::install;
    use proptest::prelude::*;

    fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn matref_rejects_bad_shapes() {
        assert!(matches!(
            MatRef::new(&[1.0; 5], 2, 3),
            Err(LinalgError::Shape { .. })
        ));
        assert!(MatRef::new(&[], 0, 3).is_ok());
        assert!(MatRef::new(&[], usize::MAX, 3).is_err());
    }

    #[test]
    fn first_non_finite_is_reported() {
        let mut v = vec![0.0f32; 300_000];
        v[200_001] = f32::INFINITY;
        v[250_000] = f32::NAN;
        let m = MatRef::new(&v, 1000, 300).unwrap();
        for t in [1, 2, 4] {
            let e = install(t, || m.require_finite("X")).unwrap_err();
            assert!(matches!(
                e,
                LinalgError::NonFinite {
                    row: 666,
                    col: 201,
                    ..
                }
            ));
            assert_eq!(e.kind(), ErrorKind::InvalidInput);
        }
    }

    #[test]
    fn column_mean_matches_naive_and_is_thread_independent() {
        let (rows, cols) = (5000, 7);
        let v = lcg(rows * cols, 7);
        let m = MatRef::new(&v, rows, cols).unwrap();
        let one = install(1, || column_mean(m, &Progress::new())).unwrap();
        for t in [2, 3, 8] {
            let many = install(t, || column_mean(m, &Progress::new())).unwrap();
            assert_eq!(
                one.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                many.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
        for c in 0..cols {
            let naive: f64 =
                (0..rows).map(|r| f64::from(v[r * cols + c])).sum::<f64>() / rows as f64;
            assert!((naive - one[c]).abs() < 1e-12);
        }
    }

    #[test]
    fn column_mean_reports_progress_and_cancels() {
        let v = lcg(3000 * 2, 1);
        let m = MatRef::new(&v, 3000, 2).unwrap();
        let p = Progress::new();
        column_mean(m, &p).unwrap();
        assert_eq!(p.snapshot(), (3000, 3000));
        let p = Progress::new();
        p.cancel();
        let e = column_mean(m, &p).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Cancelled);
    }

    #[test]
    fn column_mean_rejects_empty() {
        let m = MatRef::new(&[], 0, 4).unwrap();
        assert!(matches!(
            column_mean(m, &Progress::new()),
            Err(LinalgError::Empty { .. })
        ));
    }

    proptest! {
        #[test]
        fn normalized_rows_have_unit_norm(rows in 1usize..20, cols in 1usize..20, seed in any::<u64>()) {
            let v = lcg(rows * cols, seed);
            let m = MatRef::new(&v, rows, cols).unwrap();
            let n = normalize_rows(m).unwrap();
            let nm = MatRef::new(&n, rows, cols).unwrap();
            for (i, s) in row_norms_sq(nm).iter().enumerate() {
                if m.row(i).iter().any(|&x| x != 0.0) {
                    prop_assert!((s - 1.0).abs() < 1e-5);
                } else {
                    prop_assert_eq!(*s, 0.0);
                }
            }
        }
    }
}
