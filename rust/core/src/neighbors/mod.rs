//! Exact nearest neighbours and nearest-mean classification on embeddings.
//!
//! * [`topk`]: exact brute-force top-k under cosine, dot or squared-euclidean scores —
//!   the blocked [`crate::gemm`] product fused with a per-query top-k selection, so the
//!   `queries x keys` score matrix is never materialised.
//! * [`class_sums`]: per-class `f64` sums and counts in row order (the state of a
//!   nearest-mean classifier; streaming in chunks gives bit-identical sums).
//! * [`nearest_mean_predict`] / [`nearest_mean_scores`]: the nearest class mean.

mod nmc;
mod topk;

pub use nmc::{class_sums, nearest_mean_predict, nearest_mean_scores};
pub use topk::{topk, topk_with, TopK};

use crate::alloc::AllocError;
use crate::error::{Cancelled, Classify, ErrorKind};
use crate::linalg::{sq_norm_f64, LinalgError, MatRef};

/// How two vectors are compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Cosine similarity (higher is nearer); an all-zero vector has similarity 0 to
    /// every vector (scikit-learn's `cosine_similarity`).
    Cosine,
    /// Inner product (higher is nearer).
    Dot,
    /// Squared euclidean distance (lower is nearer).
    Euclidean,
}

impl Metric {
    /// Parse `"cosine"`, `"dot"` or `"euclidean"`.
    pub fn parse(s: &str) -> Result<Metric, NeighborsError> {
        match s {
            "cosine" => Ok(Metric::Cosine),
            "dot" => Ok(Metric::Dot),
            "euclidean" => Ok(Metric::Euclidean),
            other => Err(NeighborsError::UnknownMetric(other.to_string())),
        }
    }
}

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NeighborsError {
    /// Bad matrix: empty, NaN/inf, wrong buffer size.
    #[error(transparent)]
    Matrix(#[from] LinalgError),
    /// The two matrices have different widths.
    #[error("{a} has {a_cols} features but {b} has {b_cols}; they must match")]
    DimMismatch {
        a: &'static str,
        a_cols: usize,
        b: &'static str,
        b_cols: usize,
    },
    /// `n_neighbors` is zero or larger than the number of keys.
    #[error("n_neighbors must be between 1 and the number of stored samples ({n}), got {k}")]
    BadK { k: usize, n: usize },
    /// A label index out of range, or a label array of the wrong length.
    #[error("{0}")]
    Labels(String),
    /// Metric name not known.
    #[error("unknown metric {0:?}; expected \"cosine\", \"dot\" or \"euclidean\"")]
    UnknownMetric(String),
    /// Work was cancelled.
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    /// The result (or a buffer sized by it) could not be allocated.
    #[error(transparent)]
    Alloc(#[from] AllocError),
}

impl Classify for NeighborsError {
    fn kind(&self) -> ErrorKind {
        match self {
            NeighborsError::Cancelled(_) => ErrorKind::Cancelled,
            NeighborsError::Matrix(e) => e.kind(),
            NeighborsError::Alloc(e) => e.kind(),
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// Non-empty, finite, and (when given) of the same width as `other`.
fn check_pair(
    a: MatRef<'_>,
    a_name: &'static str,
    b: MatRef<'_>,
    b_name: &'static str,
) -> Result<(), NeighborsError> {
    a.require_non_empty(a_name)?;
    b.require_non_empty(b_name)?;
    if a.cols() != b.cols() {
        return Err(NeighborsError::DimMismatch {
            a: a_name,
            a_cols: a.cols(),
            b: b_name,
            b_cols: b.cols(),
        });
    }
    a.require_finite(a_name)?;
    b.require_finite(b_name)?;
    Ok(())
}

/// Squared norms of every row, accumulated in `f64` ([`sq_norm_f64`]) and rounded once.
fn sq_norms(x: MatRef<'_>) -> Vec<f32> {
    use rayon::prelude::*;
    (0..x.rows())
        .into_par_iter()
        .with_min_len(256)
        .map(|i| sq_norm_f64(x.row(i)) as f32)
        .collect()
}

/// `1 / ||x||` (`x` a squared norm), and `0` for an all-zero row: scaled by it, the row
/// stays zero, so its cosine with every vector is `0` (scikit-learn's rule).
#[inline]
fn inverse_norm(sq: f64) -> f64 {
    if sq > 0.0 {
        1.0 / sq.sqrt()
    } else {
        0.0
    }
}

/// [`inverse_norm`] of every row (norm accumulated in `f64`).
fn inverse_norms(x: MatRef<'_>) -> Vec<f64> {
    use rayon::prelude::*;
    (0..x.rows())
        .into_par_iter()
        .with_min_len(256)
        .map(|i| inverse_norm(sq_norm_f64(x.row(i))))
        .collect()
}
