//! k-means clustering (Lloyd's algorithm), plain or spherical.
//!
//! * Assignment runs the blocked product of [`crate::gemm`] with the arg-max fused into
//!   its micro-kernel (squared euclidean as `2 x·c − |c|²`, or inner product on unit
//!   vectors for the spherical variant), so the `points x centroids` distance matrix is
//!   never stored, not even one block of it.
//! * Centroid updates sum members in `f64` in row order: results never depend on the
//!   thread count.
//! * Like faiss, training may run on a seeded subsample of `max_points_per_centroid * k`
//!   points; every point is then assigned to the final centroids.
//! * Empty clusters are re-seeded with the point farthest from its centroid (ties by
//!   index), as scikit-learn does.
//! * Convergence as scikit-learn: stop when the summed squared centroid shift is at most
//!   `tol` times the mean per-feature variance of the training data.
//! * The order-dependent `f64` sums of an iteration (member sums, the variance) run per
//!   fixed [`SUPER_CHUNK`] of rows, combined by a fixed [`Tree`]: a distributed caller
//!   computes the same partials where the rows are and gets the same bits
//!   ([`lloyd_block`], [`farthest_rows`], [`lloyd_update`]). `inertia` sums the
//!   distances per 4096-row chunk, then the chunk sums left to right.

use rayon::prelude::*;

use crate::alloc::AllocError;
use crate::error::{Cancelled, Classify, ErrorKind};
use crate::gemm::{self, AlignedBuf, Isa};
use crate::linalg::{LinalgError, MatRef};
use crate::neighbors::NeighborsError;
use crate::progress::Progress;
use crate::quant::rng::Stream;

/// How the first centroids are chosen.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// k-means++ (Arthur & Vassilvitskii 2007): each new centroid drawn with probability
    /// proportional to the squared distance to the nearest chosen one.
    KMeansPlusPlus,
    /// `k` distinct training points drawn uniformly.
    Random,
    /// Row-major `k x d` starting centroids.
    Given(Vec<f32>),
}

/// Options of [`kmeans`].
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansOptions {
    pub n_clusters: usize,
    pub spherical: bool,
    pub max_iter: usize,
    pub tol: f64,
    pub init: Init,
    pub max_points_per_centroid: Option<usize>,
    pub seed: u64,
}

/// A fitted clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansResult {
    /// Row-major `k x d` centroids (unit length when spherical).
    pub centroids: Vec<f32>,
    /// Nearest centroid of every input point.
    pub labels: Vec<i64>,
    /// Sum of squared euclidean distances of every point to its centroid (`f64`; on the
    /// normalised points when spherical).
    pub inertia: f64,
    /// Lloyd iterations run.
    pub n_iter: usize,
}

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Matrix(#[from] LinalgError),
    #[error("n_clusters must be between 1 and the number of points ({n}), got {k}")]
    BadK { k: usize, n: usize },
    #[error("{0}")]
    Invalid(String),
    #[error("row {0} is an all-zero vector, which has no direction for spherical k-means")]
    ZeroVector(usize),
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    #[error(transparent)]
    Alloc(#[from] AllocError),
}

impl Classify for ClusterError {
    fn kind(&self) -> ErrorKind {
        match self {
            ClusterError::Cancelled(_) => ErrorKind::Cancelled,
            ClusterError::Matrix(e) => e.kind(),
            ClusterError::Alloc(e) => e.kind(),
            _ => ErrorKind::InvalidInput,
        }
    }
}

impl From<NeighborsError> for ClusterError {
    fn from(e: NeighborsError) -> Self {
        match e {
            NeighborsError::Matrix(m) => ClusterError::Matrix(m),
            NeighborsError::Cancelled(c) => ClusterError::Cancelled(c),
            NeighborsError::Alloc(a) => ClusterError::Alloc(a),
            other => ClusterError::Invalid(other.to_string()),
        }
    }
}

/// `x · y` accumulated in `f64`.
#[inline]
pub(crate) fn dot_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let ca = a.chunks_exact(4);
    let cb = b.chunks_exact(4);
    let (ta, tb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += f64::from(x[l]) * f64::from(y[l]);
        }
    }
    for (x, y) in ta.iter().zip(tb) {
        acc[0] += f64::from(*x) * f64::from(*y);
    }
    (acc[0] + acc[2]) + (acc[1] + acc[3])
}

/// Squared euclidean distance in `f64`.
#[inline]
fn sq_dist_f64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = 0.0f64;
    for (x, y) in a.iter().zip(b) {
        let t = f64::from(*x) - f64::from(*y);
        acc += t * t;
    }
    acc
}

/// Rows scaled to unit length (norm in `f64`); zero rows are an error.
pub fn normalized(x: MatRef<'_>) -> Result<Vec<f32>, ClusterError> {
    let d = x.cols();
    let len = crate::alloc::checked_len(x.rows(), d, "the normalised rows")?;
    let mut out: Vec<f32> = crate::alloc::try_with_capacity(len, "the normalised rows")?;
    // Every value is written below (the buffer is dropped unread on an error): no zero
    // fill first, which cost as much as the normalisation itself on small inputs.
    out.spare_capacity_mut()[..len]
        .par_chunks_mut(d.max(1))
        .enumerate()
        .try_for_each(|(i, dst)| {
            let row = x.row(i);
            let n = dot_f64(row, row).sqrt();
            if n == 0.0 {
                return Err(ClusterError::ZeroVector(i));
            }
            for (o, &v) in dst.iter_mut().zip(row) {
                o.write((f64::from(v) / n) as f32);
            }
            Ok(())
        })?;
    // SAFETY: the chunks cover the first `len` values and each chunk wrote all of its
    // values (the error path returned above).
    unsafe { out.set_len(len) };
    Ok(out)
}

/// L2 norm of every row (in `f64`); zero rows are an error.
pub fn norms(x: MatRef<'_>) -> Result<Vec<f64>, ClusterError> {
    let v: Vec<f64> = (0..x.rows())
        .into_par_iter()
        .with_min_len(512)
        .map(|i| dot_f64(x.row(i), x.row(i)).sqrt())
        .collect();
    match v.iter().position(|&n| n == 0.0) {
        Some(r) => Err(ClusterError::ZeroVector(r)),
        None => Ok(v),
    }
}

/// Nearest centroid of every row of `x` (ties to the lower centroid index) and the
/// squared euclidean distance to it in `f64`. With `spherical`, rows and centroids are
/// taken to be unit vectors and the nearest is the one with the largest inner product.
pub fn assign(
    x: MatRef<'_>,
    centroids: MatRef<'_>,
    spherical: bool,
    progress: &Progress,
) -> Result<(Vec<i64>, Vec<f64>), ClusterError> {
    assign_scaled(x, centroids, spherical, None, progress)
}

/// [`assign`] for the unit-length rows of `x`, scaled while they are packed (without
/// copying `x`): the labels and distances of the final assignment of a spherical
/// [`kmeans`] that trained on a subsample. Each row's result depends on that row only.
pub fn assign_unit_rows(
    x: MatRef<'_>,
    centroids: MatRef<'_>,
    progress: &Progress,
) -> Result<(Vec<i64>, Vec<f64>), ClusterError> {
    let r = norms(x)?;
    assign_scaled(x, centroids, true, Some(&r), progress)
}

/// [`assign`] for the rows of `x` divided by `row_norms` (without copying `x`).
fn assign_scaled(
    x: MatRef<'_>,
    centroids: MatRef<'_>,
    spherical: bool,
    row_norms: Option<&[f64]>,
    progress: &Progress,
) -> Result<(Vec<i64>, Vec<f64>), ClusterError> {
    if x.cols() != centroids.cols() {
        return Err(ClusterError::Invalid(format!(
            "X has {} features but centroids have {}; they must match",
            x.cols(),
            centroids.cols()
        )));
    }
    x.require_non_empty("X")?;
    centroids.require_non_empty("centroids")?;
    let inv: Option<Vec<f64>> = row_norms.map(|r| r.iter().map(|n| 1.0 / n).collect());
    let mut dist = crate::alloc::try_vec(0.0f64, x.rows(), "the distances")?;
    let labels = nearest(
        Isa::for_columns(centroids.rows()),
        x,
        centroids,
        spherical,
        inv.as_deref(),
        Some((&mut dist, row_norms)),
        progress,
    )?;
    Ok((labels, dist))
}

/// Squared euclidean distance (`f64`) of every row of `x` (divided by `row_norms` when
/// given, rounded to `f32` as when packing) to its centroid `labels[i]` of the row-major
/// `centroids`.
fn distances(
    x: MatRef<'_>,
    centroids: &[f32],
    labels: &[i64],
    row_norms: Option<&[f64]>,
) -> Vec<f64> {
    let mut out = vec![0.0f64; labels.len()];
    out.par_chunks_mut(ASSIGN_ROWS)
        .zip(labels.par_chunks(ASSIGN_ROWS))
        .enumerate()
        .for_each(|(i, (o, l))| rows_dist(x, i * ASSIGN_ROWS, centroids, l, row_norms, o));
    out
}

/// Squared euclidean distance (`f64`) of row `i` of `x` (divided by `row_norms[i]` and
/// rounded to `f32` when given) to row `c` of the row-major `centroids`.
#[inline]
fn row_dist(x: MatRef<'_>, i: usize, centroids: &[f32], c: i64, row_norms: Option<&[f64]>) -> f64 {
    let d = x.cols();
    let cr = &centroids[c as usize * d..(c as usize + 1) * d];
    match row_norms {
        None => sq_dist_f64(x.row(i), cr),
        Some(r) => x
            .row(i)
            .iter()
            .zip(cr)
            .map(|(&a, &b)| {
                let t = f64::from((f64::from(a) / r[i]) as f32) - f64::from(b);
                t * t
            })
            .sum(),
    }
}

/// Rows interleaved by [`rows_dist`].
const DIST_ROWS: usize = 4;

/// [`row_dist`] of rows `r0..r0 + labels.len()` of `x` to their centroids, into `out`:
/// the same values (each row's sum still runs over the features in order), with
/// [`DIST_ROWS`] rows interleaved so that their addition chains (and divisions) overlap
/// instead of each waiting on the previous addition.
fn rows_dist(
    x: MatRef<'_>,
    r0: usize,
    centroids: &[f32],
    labels: &[i64],
    row_norms: Option<&[f64]>,
    out: &mut [f64],
) {
    let d = x.cols();
    let full = labels.len() / DIST_ROWS * DIST_ROWS;
    for g in (0..full).step_by(DIST_ROWS) {
        let xr: [&[f32]; DIST_ROWS] = std::array::from_fn(|j| x.row(r0 + g + j));
        let cr: [&[f32]; DIST_ROWS] = std::array::from_fn(|j| {
            let c = labels[g + j] as usize;
            &centroids[c * d..(c + 1) * d]
        });
        let mut acc = [0.0f64; DIST_ROWS];
        match row_norms {
            None => {
                for p in 0..d {
                    for j in 0..DIST_ROWS {
                        let t = f64::from(xr[j][p]) - f64::from(cr[j][p]);
                        acc[j] += t * t;
                    }
                }
            }
            Some(r) => {
                let nr: [f64; DIST_ROWS] = std::array::from_fn(|j| r[r0 + g + j]);
                for p in 0..d {
                    for j in 0..DIST_ROWS {
                        let t =
                            f64::from((f64::from(xr[j][p]) / nr[j]) as f32) - f64::from(cr[j][p]);
                        acc[j] += t * t;
                    }
                }
            }
        }
        out[g..g + DIST_ROWS].copy_from_slice(&acc);
    }
    for j in full..labels.len() {
        out[j] = row_dist(x, r0 + j, centroids, labels[j], row_norms);
    }
}

/// Rows per super-chunk: the unit of every order-dependent `f64` reduction of a Lloyd
/// iteration (the member sums and counts, and the mean variance behind `tol`).
///
/// A single addition chain over all `n` rows cannot be split between machines and give
/// the same bits (`(a + b) + c` is not `a + (b + c)`), so the rows are cut into fixed
/// super-chunks of this many global rows (a constant: independent of threads,
/// partitions and machines). Within a super-chunk the sums run as one chain in row
/// order starting from zero; the super-chunk partials are then combined by [`Tree`].
/// For `n <= SUPER_CHUNK` this is the single chain over all rows. A distributed caller
/// computes each super-chunk's partial where its rows are ([`lloyd_block`],
/// [`feature_sums_block`], [`sq_deviations_block`]) and combines them with the same tree
/// ([`add_into`] per node), so it gets the same bits as one process.
pub const SUPER_CHUNK: usize = 1 << 20;

/// The fixed aligned binary tree over super-chunk partials `0..P`, fed in order: level 1
/// adds partials `2m` and `2m + 1` (left + right), level 2 adds those results pairwise,
/// and so on; a node without a right sibling passes up unchanged. The shape depends on
/// `P` only. Streaming: it holds one pending node per level (at most `log2 P + 1`
/// partials), never all `P`.
#[derive(Debug)]
pub struct Tree<T> {
    /// `(level, node)`: complete aligned subtrees of strictly decreasing level.
    stack: Vec<(u32, T)>,
}

impl<T> Default for Tree<T> {
    fn default() -> Self {
        Self { stack: Vec::new() }
    }
}

impl<T> Tree<T> {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next leaf; `add(left, right)` combines two sibling nodes.
    pub fn push(&mut self, leaf: T, add: &mut impl FnMut(T, T) -> T) {
        let (mut level, mut node) = (0u32, leaf);
        while self.stack.last().is_some_and(|(l, _)| *l == level) {
            let (_, left) = self.stack.pop().expect("checked above");
            node = add(left, node);
            level += 1;
        }
        self.stack.push((level, node));
    }

    /// The root (`None` without leaves). The pending subtrees are the aligned blocks of
    /// the binary expansion of `P` (largest first); in the tree each one is the left
    /// sibling of everything after it, so they combine from the right.
    pub fn finish(mut self, add: &mut impl FnMut(T, T) -> T) -> Option<T> {
        let mut acc = self.stack.pop()?.1;
        while let Some((_, left)) = self.stack.pop() {
            acc = add(left, acc);
        }
        Some(acc)
    }
}

/// One inner node of [`Tree`] for `f64` partials: `left[i] = left[i] + right[i]`.
pub fn add_into(left: &mut [f64], right: &[f64]) -> Result<(), ClusterError> {
    if left.len() != right.len() {
        return Err(ClusterError::Invalid(format!(
            "partials of different sizes ({} and {}) cannot be added",
            left.len(),
            right.len()
        )));
    }
    for (a, &b) in left.iter_mut().zip(right) {
        *a += b;
    }
    Ok(())
}

/// Rows `r` of `x`.
fn sub_rows(x: MatRef<'_>, r: std::ops::Range<usize>) -> Result<MatRef<'_>, ClusterError> {
    let d = x.cols();
    Ok(MatRef::new(
        &x.as_slice()[r.start * d..r.end * d],
        r.len(),
        d,
    )?)
}

/// Adds the rows of `x` to the `f64` sums (`k x d`, row-major) and counts (`k`) of their
/// clusters `labels`, in increasing row order: each sum continues its addition chain, so
/// feeding a super-chunk's rows in consecutive blocks gives the bits of one pass. The
/// work is split by columns, one contiguous run of columns (a multiple of 16, one cache
/// line of `f32`) per thread: every task streams its part of every row in row order
/// (sequential reads that the prefetcher follows; a gather of each cluster's rows, or
/// narrow column strips, stall on memory) into a private `k x width` copy of its columns
/// of the sums. Each sum sees the same additions in the same order however the columns
/// are split, so the sums never depend on the thread count.
pub fn accumulate_members(
    x: MatRef<'_>,
    labels: &[i64],
    sums: &mut [f64],
    counts: &mut [i64],
) -> Result<(), ClusterError> {
    let (d, k) = (x.cols(), counts.len());
    if labels.len() != x.rows() || sums.len() != k * d {
        return Err(ClusterError::Invalid(format!(
            "{} rows, {} labels, {} sums and {} counts do not fit together",
            x.rows(),
            labels.len(),
            sums.len(),
            k
        )));
    }
    if let Some(&l) = labels.iter().find(|&&l| l < 0 || l as usize >= k) {
        return Err(ClusterError::Invalid(format!(
            "label {l} is not a cluster index (0..{k})"
        )));
    }
    for &l in labels {
        counts[l as usize] += 1;
    }
    if d == 0 {
        return Ok(());
    }
    let width = (d.div_ceil(rayon::current_num_threads()).div_ceil(16) * 16).clamp(1, d);
    let shared: &[f64] = sums;
    let parts = crate::parallel::fixed_chunks(d, width)
        .into_par_iter()
        .map(|cols| {
            // each task's columns of every sum, contiguous and private to the task
            let w = cols.len();
            let mut acc = crate::alloc::try_vec(0.0f64, k * w, "the centroid sums")?;
            for (c, a) in acc.chunks_exact_mut(w).enumerate() {
                a.copy_from_slice(&shared[c * d + cols.start..c * d + cols.end]);
            }
            for (i, &l) in labels.iter().enumerate() {
                let src = &x.row(i)[cols.clone()];
                let dst = &mut acc[l as usize * w..(l as usize + 1) * w];
                for (a, &v) in dst.iter_mut().zip(src) {
                    *a += f64::from(v);
                }
            }
            Ok((cols, acc))
        })
        .collect::<Result<Vec<_>, ClusterError>>()?;
    for (cols, acc) in parts {
        let w = cols.len();
        for (c, a) in acc.chunks_exact(w).enumerate() {
            sums[c * d + cols.start..c * d + cols.end].copy_from_slice(a);
        }
    }
    Ok(())
}

/// A super-chunk partial of a Lloyd iteration: `k x d` member sums and `k` counts.
type Partial = (Vec<f64>, Vec<i64>);

/// [`Tree`] node of two [`Partial`]s.
fn add_partials(mut left: Partial, right: Partial) -> Partial {
    for (a, &b) in left.0.iter_mut().zip(&right.0) {
        *a += b;
    }
    for (a, &b) in left.1.iter_mut().zip(&right.1) {
        *a += b;
    }
    left
}

/// Per-cluster sums (`f64`) and member counts of the rows of `x` labelled `labels`: per
/// [`SUPER_CHUNK`] of rows, [`accumulate_members`] from zero; the partials combined by
/// [`Tree`]. For `n <= SUPER_CHUNK`, each sum adds its members in increasing row order
/// starting from zero, exactly as a serial pass over the rows would.
fn member_sums(
    x: MatRef<'_>,
    labels: &[i64],
    k: usize,
) -> Result<(Vec<f64>, Vec<i64>), ClusterError> {
    let d = x.cols();
    let mut tree = Tree::new();
    for r in crate::parallel::fixed_chunks(x.rows(), SUPER_CHUNK) {
        let mut sums = crate::alloc::try_vec(0.0f64, k * d, "the centroid sums")?;
        let mut counts = vec![0i64; k];
        accumulate_members(sub_rows(x, r.clone())?, &labels[r], &mut sums, &mut counts)?;
        tree.push((sums, counts), &mut add_partials);
    }
    tree.finish(&mut add_partials)
        .ok_or_else(|| ClusterError::Invalid("no rows to sum".into()))
}

/// The training rows as a Lloyd iteration sees them: unit length when spherical.
fn training_rows<'a>(
    x: MatRef<'a>,
    spherical: bool,
    buf: &'a mut Vec<f32>,
) -> Result<MatRef<'a>, ClusterError> {
    if !spherical {
        return Ok(x);
    }
    *buf = normalized(x)?;
    Ok(MatRef::new(buf, x.rows(), x.cols())?)
}

/// A block's training rows (unit length when spherical, in `buf`) and the nearest
/// centroid of each, exactly as [`kmeans`] assigns its training rows.
fn block_labels<'a>(
    x: MatRef<'a>,
    centroids: MatRef<'_>,
    spherical: bool,
    buf: &'a mut Vec<f32>,
    progress: &Progress,
) -> Result<(MatRef<'a>, Vec<i64>), ClusterError> {
    let xs = training_rows(x, spherical, buf)?;
    let labels = nearest(
        Isa::for_columns(centroids.rows()),
        xs,
        centroids,
        spherical,
        None,
        None,
        progress,
    )?;
    Ok((xs, labels))
}

fn check_block(x: MatRef<'_>, centroids: MatRef<'_>) -> Result<(), ClusterError> {
    x.require_non_empty("X")?;
    x.require_finite("X")?;
    centroids.require_non_empty("centroids")?;
    if x.cols() != centroids.cols() {
        return Err(ClusterError::Invalid(format!(
            "X has {} features but centroids have {}; they must match",
            x.cols(),
            centroids.cols()
        )));
    }
    Ok(())
}

/// One block of a super-chunk of a full-data Lloyd iteration, where the rows are: the
/// rows of `x` (normalised first when spherical, as [`kmeans`] normalises its training
/// rows) go to their nearest `centroids` exactly as in [`kmeans`] (a row's label depends
/// on that row only) and are added to `sums` / `counts` by [`accumulate_members`].
/// Feeding a super-chunk's rows block by block, in order, into zeroed `sums` and
/// `counts` gives that super-chunk's partial of [`kmeans`]'s member sums.
pub fn lloyd_block(
    x: MatRef<'_>,
    centroids: MatRef<'_>,
    spherical: bool,
    sums: &mut [f64],
    counts: &mut [i64],
    progress: &Progress,
) -> Result<(), ClusterError> {
    check_block(x, centroids)?;
    let (k, d) = (centroids.rows(), centroids.cols());
    if sums.len() != k * d || counts.len() != k {
        return Err(ClusterError::Invalid(format!(
            "{} sums and {} counts do not fit {k} centroids of {d} features",
            sums.len(),
            counts.len()
        )));
    }
    let mut buf = Vec::new();
    let (xs, labels) = block_labels(x, centroids, spherical, &mut buf, progress)?;
    accumulate_members(xs, &labels, sums, counts)
}

/// The `e` rows of `dist` farthest from their centroids: farthest first, ties to the
/// lower row.
fn farthest(dist: &[f64], e: usize) -> Vec<usize> {
    // only the first `e` of the order are used: select them, then sort just those (a
    // total order: the same rows)
    let by_dist = |a: &usize, b: &usize| dist[*b].total_cmp(&dist[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..dist.len()).collect();
    if e < order.len() {
        order.select_nth_unstable_by(e, by_dist);
        order.truncate(e);
    }
    order.sort_by(by_dist);
    order
}

/// The farthest rows of a block (see [`farthest_rows`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Farthest {
    /// Row indices within the block, farthest first (ties: lower row first).
    pub rows: Vec<usize>,
    /// Their squared distances (`f64`) to their centroids.
    pub dist: Vec<f64>,
    /// Their centroids.
    pub labels: Vec<i64>,
    /// The rows as training rows (unit length when spherical), row-major.
    pub values: Vec<f32>,
}

/// Candidates for re-seeding empty clusters in a full-data Lloyd iteration: the `e` rows
/// of the block `x` farthest from their nearest `centroids` (labels and `f64` distances
/// exactly as [`kmeans`] computes them on its training rows). The `e` farthest rows of
/// all rows are the `e` first of the union of every block's candidates in the order
/// "distance descending, then global row".
pub fn farthest_rows(
    x: MatRef<'_>,
    centroids: MatRef<'_>,
    spherical: bool,
    e: usize,
    progress: &Progress,
) -> Result<Farthest, ClusterError> {
    check_block(x, centroids)?;
    let mut buf = Vec::new();
    let (xs, labels) = block_labels(x, centroids, spherical, &mut buf, progress)?;
    let dist = distances(xs, centroids.as_slice(), &labels, None);
    let rows = farthest(&dist, e);
    Ok(Farthest {
        dist: rows.iter().map(|&i| dist[i]).collect(),
        labels: rows.iter().map(|&i| labels[i]).collect(),
        values: rows.iter().flat_map(|&i| xs.row(i).to_vec()).collect(),
        rows,
    })
}

/// The end of a Lloyd iteration from the member `sums` and `counts` of all training rows
/// and the `centroids` it assigned to: every empty cluster, in increasing index, is
/// re-seeded with the next row of `reseed` (the farthest rows, farthest first; their
/// clusters `reseed_labels`), which leaves its old cluster when that keeps a member;
/// then each centroid is its sum over its count (the old centroid when still empty),
/// normalised when spherical. Returns the new centroids and the summed squared shift.
pub fn lloyd_update(
    sums: &mut [f64],
    counts: &mut [i64],
    centroids: &[f32],
    spherical: bool,
    reseed: MatRef<'_>,
    reseed_labels: &[i64],
) -> Result<(Vec<f32>, f64), ClusterError> {
    let (k, d) = (counts.len(), reseed.cols());
    if k == 0 || sums.len() != k * d || centroids.len() != k * d {
        return Err(ClusterError::Invalid(format!(
            "{} sums, {} counts and {} centroid values do not fit {d} features",
            sums.len(),
            k,
            centroids.len()
        )));
    }
    let empty: Vec<usize> = (0..k).filter(|&c| counts[c] == 0).collect();
    if reseed.rows() != empty.len() || reseed_labels.len() != empty.len() {
        return Err(ClusterError::Invalid(format!(
            "{} clusters are empty but {} re-seed rows and {} labels were given",
            empty.len(),
            reseed.rows(),
            reseed_labels.len()
        )));
    }
    if let Some(&l) = reseed_labels.iter().find(|&&l| l < 0 || l as usize >= k) {
        return Err(ClusterError::Invalid(format!(
            "label {l} is not a cluster index (0..{k})"
        )));
    }
    for (j, &c) in empty.iter().enumerate() {
        let old = reseed_labels[j] as usize;
        if counts[old] > 1 {
            counts[old] -= 1;
            for (s, &v) in sums[old * d..(old + 1) * d].iter_mut().zip(reseed.row(j)) {
                *s -= f64::from(v);
            }
        }
        counts[c] = 1;
        for (s, &v) in sums[c * d..(c + 1) * d].iter_mut().zip(reseed.row(j)) {
            *s = f64::from(v);
        }
    }
    let mut new = vec![0.0f32; k * d];
    for c in 0..k {
        if counts[c] == 0 {
            new[c * d..(c + 1) * d].copy_from_slice(&centroids[c * d..(c + 1) * d]);
            continue;
        }
        let inv = 1.0 / counts[c] as f64;
        for (o, s) in new[c * d..(c + 1) * d]
            .iter_mut()
            .zip(&sums[c * d..(c + 1) * d])
        {
            *o = (s * inv) as f32;
        }
    }
    if spherical {
        normalize_in_place(&mut new, d);
    }
    let shift: f64 = (0..k)
        .map(|c| sq_dist_f64(&new[c * d..(c + 1) * d], &centroids[c * d..(c + 1) * d]))
        .sum();
    Ok((new, shift))
}

/// Rows of `x` per parallel task in [`nearest`].
const ASSIGN_ROWS: usize = 256;

/// Index of the best centroid per row: largest `x·c` (spherical) or smallest
/// `|c|² − 2 x·c`, ties to the lower index. The products come from the blocked
/// [`gemm`] kernels with the arg-max fused into them ([`gemm::compute_block_argmax`]:
/// the score `2 x·c − |c|²` (`f32`, `|c|²` summed in `f64` and rounded once) is formed
/// and compared while the micro-tile is in registers, so no `rows x centroids` block is
/// ever stored); centroids are packed once and shared by every row block, and each
/// thread reuses its packing and arg-max buffers from task to task.
///
/// With `dist = Some((out, row_norms))`, `out[i]` receives [`row_dist`] of row `i` to
/// its centroid, computed by the task that labelled the row while the row is still in
/// cache (the same value a separate pass would give).
fn nearest(
    isa: Isa,
    x: MatRef<'_>,
    centroids: MatRef<'_>,
    spherical: bool,
    scale: Option<&[f64]>,
    dist: Option<(&mut [f64], Option<&[f64]>)>,
    progress: &Progress,
) -> Result<Vec<i64>, ClusterError> {
    let (n, k, d) = (x.rows(), centroids.rows(), x.cols());
    let (mr, nr, lanes) = (isa.mr(), isa.nr(), isa.argmax_lanes());
    let nb = gemm::b_block_rows(isa, d);
    let packed = gemm::pack_all(centroids, None, nr, nb);
    // Score = alpha * x·c + bias: bias 0 (spherical) or -|c|², and -inf on the padding
    // columns of the last panel so that they never win.
    let alpha = if spherical { 1.0 } else { 2.0 };
    let bias: Vec<f32> = (0..k.div_ceil(nr) * nr)
        .map(|c| match c {
            c if c >= k => f32::NEG_INFINITY,
            _ if spherical => 0.0,
            c => -(dot_f64(centroids.row(c), centroids.row(c)) as f32),
        })
        .collect();
    let ldc = nb.div_ceil(nr) * nr;
    let rows_pad = ASSIGN_ROWS.div_ceil(mr) * mr;
    let mut out = crate::alloc::try_vec(0i64, n, "the cluster labels")?;
    let (dist_out, row_norms) = match dist {
        Some((o, r)) => (o, r),
        None => (&mut [][..], None),
    };
    let want_dist = !dist_out.is_empty();
    let dist_chunks: Vec<&mut [f64]> = if want_dist {
        dist_out.chunks_mut(ASSIGN_ROWS).collect()
    } else {
        (0..n.div_ceil(ASSIGN_ROWS)).map(|_| &mut [][..]).collect()
    };
    let flat = centroids.as_slice();
    // Per-thread buffers: packed rows, partial products (only when d > KC), arg-max state.
    let scratch = || {
        (
            AlignedBuf::zeros(gemm::packed_len(ASSIGN_ROWS, d, mr)),
            AlignedBuf::zeros(if d > gemm::KC { rows_pad * ldc } else { 0 }),
            vec![0.0f32; rows_pad * lanes],
            vec![0i32; rows_pad * lanes],
        )
    };
    out.par_chunks_mut(ASSIGN_ROWS)
        .zip(dist_chunks)
        .enumerate()
        .try_for_each_init(
            scratch,
            |(ap, tile, val, idx), (qi, (dst, ddst))| -> Result<(), ClusterError> {
                progress.check()?;
                let r0 = qi * ASSIGN_ROWS;
                let rows = r0..r0 + dst.len();
                let alen = gemm::packed_len(rows.len(), d, mr);
                let ap = &mut ap.as_mut_slice()[..alen];
                gemm::pack_rows(x, rows.clone(), scale, mr, ap);
                let slen = rows.len().div_ceil(mr) * mr * lanes;
                let (val, idx) = (&mut val[..slen], &mut idx[..slen]);
                gemm::argmax_init(val, idx);
                for (bi, bp) in packed.iter().enumerate() {
                    // Many centroids make one task long: stay cancellable inside it.
                    progress.check()?;
                    let c0 = bi * nb;
                    let bp = bp.as_slice();
                    gemm::compute_block_argmax(
                        isa,
                        d,
                        ap,
                        bp,
                        tile.as_mut_slice(),
                        ldc,
                        gemm::ArgMax {
                            bias: &bias[c0..c0 + bp.len() / d],
                            alpha,
                            col0: c0,
                            val: &mut *val,
                            idx: &mut *idx,
                        },
                    );
                }
                for (i, o) in dst.iter_mut().enumerate() {
                    let l = i * lanes;
                    *o = gemm::argmax_reduce(&val[l..l + lanes], &idx[l..l + lanes]).1 as i64;
                }
                if want_dist {
                    rows_dist(x, r0, flat, dst, row_norms, ddst);
                }
                Ok(())
            },
        )?;
    Ok(out)
}

/// Sorted seeded sample of `m` distinct indices out of `0..n` (partial Fisher–Yates).
///
/// The swaps are recorded sparsely (only displaced positions are stored), so memory is
/// `O(m)` rather than `O(n)`: drawing 256·k rows out of billions needs no `n`-long
/// permutation. The indices are the same as those of the dense shuffle.
pub fn sample_indices(n: usize, m: usize, stream: &Stream, offset: u64) -> Vec<usize> {
    let m = m.min(n);
    let mut moved: std::collections::HashMap<usize, usize> =
        std::collections::HashMap::with_capacity(2 * m);
    let mut out = Vec::with_capacity(m);
    for i in 0..m {
        let u = stream.uniform(offset + i as u64);
        let j = i + ((u * (n - i) as f64) as usize).min(n - i - 1);
        let vj = moved.get(&j).copied().unwrap_or(j);
        let vi = moved.get(&i).copied().unwrap_or(i);
        moved.insert(j, vi);
        out.push(vj);
    }
    out.sort_unstable();
    out
}

/// The sorted global rows [`kmeans`] trains on when it subsamples: `None` when it trains
/// on every row (`max_points_per_centroid` unset or `n <= max_points_per_centroid * k`).
/// A distributed caller gathers exactly these rows and fits them without subsampling.
pub fn training_sample(
    n: usize,
    k: usize,
    max_points_per_centroid: Option<usize>,
    seed: u64,
) -> Option<Vec<usize>> {
    match max_points_per_centroid {
        Some(m) if n > m.saturating_mul(k) => Some(sample_indices(n, m * k, &Stream::new(seed), 0)),
        _ => None,
    }
}

fn init_centroids(
    x: MatRef<'_>,
    opts: &KMeansOptions,
    stream: &Stream,
    progress: &Progress,
) -> Result<Vec<f32>, ClusterError> {
    let (n, d, k) = (x.rows(), x.cols(), opts.n_clusters);
    match &opts.init {
        Init::Given(c) => {
            if c.len() != k * d {
                return Err(ClusterError::Invalid(format!(
                    "init array has {} values; expected n_clusters x n_features = {k} x {d}",
                    c.len()
                )));
            }
            if c.iter().any(|v| !v.is_finite()) {
                return Err(ClusterError::Invalid(
                    "init array contains NaN or infinite values".into(),
                ));
            }
            Ok(c.clone())
        }
        Init::Random => {
            let idx = random_init_rows(n, k, opts.seed);
            Ok(idx.iter().flat_map(|&i| x.row(i).to_vec()).collect())
        }
        Init::KMeansPlusPlus => {
            let mut out = Vec::with_capacity(k * d);
            let first = ((stream.uniform(1 << 41) * n as f64) as usize).min(n - 1);
            out.extend_from_slice(x.row(first));
            let mut best: Vec<f64> = (0..n)
                .into_par_iter()
                .with_min_len(512)
                .map(|i| sq_dist_f64(x.row(i), x.row(first)))
                .collect();
            // greedy k-means++ (as scikit-learn): 2 + ln k candidates per step, keep
            // the one that lowers the potential most (ties to the first drawn)
            let trials = 2 + (k as f64).ln().floor() as usize;
            // candidates per pass over the rows: up to 8, within 256 MiB of distances;
            // one buffer for every pass of every step (each pass overwrites its part)
            let per_pass = ((256usize << 20) / (n * 8)).clamp(1, TRIAL_LANES);
            let mut cand_buf =
                crate::alloc::try_vec(0.0f64, n * per_pass.min(trials), "k-means++ distances")?;
            for c in 1..k {
                progress.check()?;
                let total: f64 = best.iter().sum();
                // every trial draws from the same `best`: all picks first, then their
                // distances in passes that read each row once for several candidates
                let picks: Vec<usize> = (0..trials)
                    .map(|t| {
                        plus_plus_pick(
                            &best,
                            total,
                            stream.uniform((1 << 41) + (c * trials + t) as u64),
                        )
                    })
                    .collect();
                let mut choice: Option<(f64, Vec<f64>, usize)> = None;
                for group in picks.chunks(per_pass) {
                    let rows: Vec<&[f32]> = group.iter().map(|&p| x.row(p)).collect();
                    let g = group.len();
                    let cand = &mut cand_buf[..n * g];
                    trial_distances(x, &best, &rows, cand);
                    for (t, &pick) in group.iter().enumerate() {
                        let pot: f64 = cand.iter().skip(t).step_by(g).sum();
                        if choice.as_ref().is_none_or(|(bp, _, _)| pot < *bp) {
                            let col = cand.iter().skip(t).step_by(g).copied().collect();
                            choice = Some((pot, col, pick));
                        }
                    }
                }
                let (_, cand, pick) = choice.expect("at least two trials");
                out.extend_from_slice(x.row(pick));
                best = cand;
            }
            Ok(out)
        }
    }
}

/// The row a k-means++ trial draws with uniform `u`: the first whose running sum of
/// `best` passes `u * total` (a uniform row when every distance is zero).
fn plus_plus_pick(best: &[f64], total: f64, u: f64) -> usize {
    let n = best.len();
    if total > 0.0 {
        let target = u * total;
        let mut acc = 0.0;
        for (i, &b) in best.iter().enumerate() {
            acc += b;
            if acc > target && b > 0.0 {
                return i;
            }
        }
        n - 1
    } else {
        ((u * n as f64) as usize).min(n - 1)
    }
}

/// Candidates one pass of [`trial_distances`] takes at most.
const TRIAL_LANES: usize = 8;

/// `out[i * g + t] = best[i].min(sq_dist_f64(x.row(i), cands[t]))` for the `g <= 8`
/// candidate rows `cands`, bit for bit: every (row, candidate) lane runs the chain of
/// float64 operations of [`sq_dist_f64`] in the same order, eight candidates side by
/// side and four rows at a time (independent chains instead of one per distance, and
/// each row read once for all candidates).
fn trial_distances(x: MatRef<'_>, best: &[f64], cands: &[&[f32]], out: &mut [f64]) {
    const L: usize = TRIAL_LANES;
    const BLOCK: usize = 256;
    let (d, g) = (x.cols(), cands.len());
    assert!((1..=L).contains(&g) && out.len() == x.rows() * g && best.len() == x.rows());
    // the candidates transposed, `ct[j * L + t]` (spare lanes repeat candidate 0)
    let ct: Vec<f64> = (0..d * L)
        .map(|e| f64::from(cands[if e % L < g { e % L } else { 0 }][e / L]))
        .collect();
    out.par_chunks_mut(BLOCK * g).enumerate().for_each(|(bi, o)| {
        let r0 = bi * BLOCK;
        let ct = ct.as_slice();
        crate::quant::simd::simd_dispatch_wide!(x: MatRef<'_>, best: &[f64], ct: &[f64], o: &mut [f64], r0: usize, g: usize; (); {
            let rows = o.len() / g;
            let d = x.cols();
            let mut i = 0;
            while i < rows {
                let quad = (rows - i).min(4);
                let mut acc = [[0.0f64; L]; 4];
                let rs: [&[f32]; 4] = std::array::from_fn(|r| &x.row(r0 + i + r.min(quad - 1))[..d]);
                // iterators, not indices: no bounds checks in the loop
                let cols = ct.chunks_exact(L).zip(rs[0]).zip(rs[1]).zip(rs[2].iter().zip(rs[3]));
                for (((c, &x0), &x1), (&x2, &x3)) in cols {
                    for (a, xv) in acc.iter_mut().zip([x0, x1, x2, x3]) {
                        let xv = f64::from(xv);
                        for (al, &cl) in a.iter_mut().zip(c) {
                            let t = xv - cl;
                            *al += t * t;
                        }
                    }
                }
                for (r, a) in acc.iter().enumerate().take(quad) {
                    let b = best[r0 + i + r];
                    for (t, &v) in a.iter().enumerate().take(g) {
                        o[(i + r) * g + t] = b.min(v);
                    }
                }
                i += quad;
            }
        })
    });
}

/// Adds every row of `x` to the per-feature `f64` sums `acc`, in row order.
fn add_feature_sums(x: MatRef<'_>, acc: &mut [f64]) {
    for i in 0..x.rows() {
        for (m, &v) in acc.iter_mut().zip(x.row(i)) {
            *m += f64::from(v);
        }
    }
}

/// `acc` plus the squared deviations of every value of `x` from its feature's `mean`,
/// one chain in row order (features in order within a row).
fn add_sq_deviations(x: MatRef<'_>, mean: &[f64], mut acc: f64) -> f64 {
    for i in 0..x.rows() {
        for (m, &v) in mean.iter().zip(x.row(i)) {
            let t = f64::from(v) - m;
            acc += t * t;
        }
    }
    acc
}

/// Mean per-feature variance of `x` (`f64`): per-feature sums per [`SUPER_CHUNK`] (one
/// chain in row order from zero), combined by [`Tree`], divided by `n`; then the squared
/// deviations the same way. A distributed caller gets the same bits from
/// [`feature_sums_block`] and [`sq_deviations_block`] with the same tree.
fn mean_variance(x: MatRef<'_>) -> Result<f64, ClusterError> {
    let (n, d) = (x.rows(), x.cols());
    let chunks = crate::parallel::fixed_chunks(n, SUPER_CHUNK);
    let sums = chunks
        .par_iter()
        .map(|r| {
            let mut s = vec![0.0f64; d];
            add_feature_sums(sub_rows(x, r.clone())?, &mut s);
            Ok(s)
        })
        .collect::<Result<Vec<_>, ClusterError>>()?;
    let mut add = |mut l: Vec<f64>, r: Vec<f64>| {
        l.iter_mut().zip(&r).for_each(|(a, b)| *a += b);
        l
    };
    let mut tree = Tree::new();
    sums.into_iter().for_each(|s| tree.push(s, &mut add));
    let mut mean = tree.finish(&mut add).unwrap_or_default();
    mean.iter_mut().for_each(|m| *m /= n as f64);
    let sq = chunks
        .par_iter()
        .map(|r| Ok(add_sq_deviations(sub_rows(x, r.clone())?, &mean, 0.0)))
        .collect::<Result<Vec<_>, ClusterError>>()?;
    let mut add = |a: f64, b: f64| a + b;
    let mut tree = Tree::new();
    sq.into_iter().for_each(|v| tree.push(v, &mut add));
    let var = tree.finish(&mut add).unwrap_or_default();
    Ok(var / (n as f64 * d as f64))
}

/// Adds the rows of the block `x` (unit length first when spherical) to the per-feature
/// sums `acc`: fed a super-chunk's rows in order from zero, the super-chunk's partial of
/// the mean in [`kmeans`]'s `tol` (which then divides the tree's root by `n`).
pub fn feature_sums_block(
    x: MatRef<'_>,
    spherical: bool,
    acc: &mut [f64],
) -> Result<(), ClusterError> {
    x.require_finite("X")?;
    if acc.len() != x.cols() {
        return Err(ClusterError::Invalid(format!(
            "{} sums for {} features",
            acc.len(),
            x.cols()
        )));
    }
    let mut buf = Vec::new();
    add_feature_sums(training_rows(x, spherical, &mut buf)?, acc);
    Ok(())
}

/// `acc` plus the squared deviations of the block `x` (unit length first when
/// spherical) from `mean`: fed a super-chunk's rows in order from zero, the super-chunk's
/// partial of the variance in [`kmeans`]'s `tol` (the tree's root over `n * d`).
pub fn sq_deviations_block(
    x: MatRef<'_>,
    spherical: bool,
    mean: &[f64],
    acc: f64,
) -> Result<f64, ClusterError> {
    x.require_finite("X")?;
    if mean.len() != x.cols() {
        return Err(ClusterError::Invalid(format!(
            "a mean of {} values for {} features",
            mean.len(),
            x.cols()
        )));
    }
    let mut buf = Vec::new();
    Ok(add_sq_deviations(
        training_rows(x, spherical, &mut buf)?,
        mean,
        acc,
    ))
}

/// The rows `init="random"` starts from when [`kmeans`] trains on all `n` rows (sorted).
pub fn random_init_rows(n: usize, k: usize, seed: u64) -> Vec<usize> {
    sample_indices(n, k, &Stream::new(seed), 1 << 40)
}

/// The first centroids of [`kmeans`] from the `k x d` `init`: given centroids as they
/// are, or (`from_rows`) the raw data rows of [`random_init_rows`], made unit length
/// first as [`kmeans`] normalises its training rows; then normalised when spherical.
pub fn start_centroids(
    init: MatRef<'_>,
    spherical: bool,
    from_rows: bool,
) -> Result<Vec<f32>, ClusterError> {
    init.require_finite("init")?;
    let mut c = if spherical && from_rows {
        normalized(init)?
    } else {
        init.as_slice().to_vec()
    };
    if spherical {
        normalize_in_place(&mut c, init.cols());
    }
    Ok(c)
}

/// Lloyd's k-means on the rows of `x`. See the module documentation.
pub fn kmeans(
    x: MatRef<'_>,
    opts: &KMeansOptions,
    progress: &Progress,
) -> Result<KMeansResult, ClusterError> {
    x.require_non_empty("X")?;
    x.require_finite("X")?;
    let (n, d, k) = (x.rows(), x.cols(), opts.n_clusters);
    if k == 0 || k > n {
        return Err(ClusterError::BadK { k, n });
    }
    if opts.max_iter == 0 {
        return Err(ClusterError::Invalid("max_iter must be at least 1".into()));
    }
    if opts.tol.is_nan() || opts.tol < 0.0 {
        return Err(ClusterError::Invalid(format!(
            "tol must be non-negative, got {}",
            opts.tol
        )));
    }
    if opts.max_points_per_centroid == Some(0) {
        return Err(ClusterError::Invalid(
            "max_points_per_centroid must be at least 1".into(),
        ));
    }
    progress.set_total(opts.max_iter as u64 + 2);
    let stream = Stream::new(opts.seed);
    let subsample = training_sample(n, k, opts.max_points_per_centroid, opts.seed);
    // spherical + subsample: only the subsample is normalised (copied); the final
    // assignment scales rows while packing them, so `x` is never copied whole
    let row_norms = if opts.spherical && subsample.is_some() {
        Some(norms(x)?)
    } else {
        None
    };
    let normed;
    let xs = if opts.spherical && subsample.is_none() {
        normed = normalized(x)?;
        MatRef::new(&normed, n, d)?
    } else {
        x
    };
    let train_buf;
    let train = match &subsample {
        Some(idx) => {
            let mut buf = crate::alloc::try_vec(0.0f32, idx.len() * d, "the training sample")?;
            buf.par_chunks_mut(d.max(1))
                .zip(idx.par_iter())
                .with_min_len(64)
                .for_each(|(dst, &i)| {
                    let r = row_norms.as_ref().map(|r| r[i]);
                    for (o, &v) in dst.iter_mut().zip(xs.row(i)) {
                        *o = match r {
                            Some(nv) => (f64::from(v) / nv) as f32,
                            None => v,
                        };
                    }
                });
            train_buf = buf;
            MatRef::new(&train_buf, idx.len(), d)?
        }
        None => xs,
    };
    let mut cent = init_centroids(train, opts, &stream, progress)?;
    if opts.spherical {
        normalize_in_place(&mut cent, d);
    }
    progress.inc(1);
    // tol = 0 (a fixed number of iterations) needs no variance pass: the data is finite
    let tol = if opts.tol == 0.0 {
        0.0
    } else {
        opts.tol * mean_variance(train)?
    };
    let mut n_iter = 0;
    for _ in 0..opts.max_iter {
        progress.check()?;
        n_iter += 1;
        // `nearest` only checks `progress` for cancellation; it never counts.
        let labels = nearest(
            Isa::for_columns(k),
            train,
            MatRef::new(&cent, k, d)?,
            opts.spherical,
            None,
            None,
            progress,
        )?;
        let (mut sums, mut counts) = member_sums(train, &labels, k)?;
        // re-seed empty clusters with the farthest points; distances are only needed
        // to re-seed, so they are computed only here
        let e = counts.iter().filter(|&&c| c == 0).count();
        let (mut reseed, mut reseed_labels) = (Vec::new(), Vec::new());
        if e > 0 {
            let dist = distances(train, &cent, &labels, None);
            for i in farthest(&dist, e) {
                reseed.extend_from_slice(train.row(i));
                reseed_labels.push(labels[i]);
            }
        }
        let (new, shift) = lloyd_update(
            &mut sums,
            &mut counts,
            &cent,
            opts.spherical,
            MatRef::new(&reseed, e, d)?,
            &reseed_labels,
        )?;
        cent = new;
        progress.inc(1);
        if shift <= tol {
            break;
        }
    }
    let (labels, dist) = assign_scaled(
        xs,
        MatRef::new(&cent, k, d)?,
        opts.spherical,
        row_norms.as_deref(),
        progress,
    )?;
    let inertia = crate::parallel::fixed_chunks(n, 4096)
        .into_par_iter()
        .map(|r| dist[r].iter().sum::<f64>())
        .collect::<Vec<f64>>()
        .iter()
        .sum();
    progress.inc(1);
    Ok(KMeansResult {
        centroids: cent,
        labels,
        inertia,
        n_iter,
    })
}

fn normalize_in_place(c: &mut [f32], d: usize) {
    for row in c.chunks_exact_mut(d) {
        let n = dot_f64(row, row).sqrt();
        if n > 0.0 {
            for v in row.iter_mut() {
                *v = (f64::from(*v) / n) as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blobs(n: usize, d: usize, k: usize, seed: u64) -> Vec<f32> {
        let s = Stream::new(seed);
        let mut out = Vec::with_capacity(n * d);
        for i in 0..n {
            let c = i % k;
            for j in 0..d {
                let centre = if j % k == c { 10.0 } else { 0.0 };
                out.push(centre + (s.uniform((i * d + j) as u64) as f32 - 0.5));
            }
        }
        out
    }

    fn opts(k: usize) -> KMeansOptions {
        KMeansOptions {
            n_clusters: k,
            spherical: false,
            max_iter: 50,
            tol: 1e-4,
            init: Init::KMeansPlusPlus,
            max_points_per_centroid: None,
            seed: 3,
        }
    }

    /// The greedy k-means++ as first written: one pass over the rows per trial.
    fn plus_plus_one_trial_at_a_time(x: MatRef<'_>, k: usize, stream: &Stream) -> Vec<f32> {
        let n = x.rows();
        let first = ((stream.uniform(1 << 41) * n as f64) as usize).min(n - 1);
        let mut out = x.row(first).to_vec();
        let mut best: Vec<f64> = (0..n)
            .map(|i| sq_dist_f64(x.row(i), x.row(first)))
            .collect();
        let trials = 2 + (k as f64).ln().floor() as usize;
        for c in 1..k {
            let total: f64 = best.iter().sum();
            let mut choice: Option<(f64, Vec<f64>, usize)> = None;
            for t in 0..trials {
                let pick = plus_plus_pick(
                    &best,
                    total,
                    stream.uniform((1 << 41) + (c * trials + t) as u64),
                );
                let cand: Vec<f64> = (0..n)
                    .map(|i| best[i].min(sq_dist_f64(x.row(i), x.row(pick))))
                    .collect();
                let pot: f64 = cand.iter().sum();
                if choice.as_ref().is_none_or(|(bp, _, _)| pot < *bp) {
                    choice = Some((pot, cand, pick));
                }
            }
            let (_, cand, pick) = choice.unwrap();
            out.extend_from_slice(x.row(pick));
            best = cand;
        }
        out
    }

    #[test]
    fn trial_distances_are_sq_dist_f64_bit_for_bit() {
        for (n, d, g) in [(1, 1, 1), (7, 3, 8), (1029, 19, 5), (600, 384, 8)] {
            let x = blobs(n, d, 3, 9);
            let m = MatRef::new(&x, n, d).unwrap();
            let best: Vec<f64> = (0..n)
                .map(|i| if i % 3 == 0 { 1e-3 } else { f64::MAX })
                .collect();
            let cands: Vec<&[f32]> = (0..g).map(|t| m.row((t * 31) % n)).collect();
            let mut out = vec![0.0; n * g];
            trial_distances(m, &best, &cands, &mut out);
            for i in 0..n {
                for t in 0..g {
                    let want = best[i].min(sq_dist_f64(m.row(i), cands[t]));
                    assert_eq!(
                        out[i * g + t].to_bits(),
                        want.to_bits(),
                        "n {n} row {i} trial {t}"
                    );
                }
            }
        }
    }

    #[test]
    fn plus_plus_batched_trials_equal_one_trial_at_a_time() {
        // 4 trials (k = 12), 8 (k = 450: one full pass) and 9 (k = 1200: two passes);
        // odd row counts (a partial block of four rows), odd widths, duplicate rows
        for (n, d, k, seed) in [(1001, 37, 12, 1u64), (777, 5, 450, 2), (1500, 3, 1200, 3)] {
            let mut x = blobs(n, d, 7, seed);
            x.copy_within(0..d * 50, d * 100); // rows 100..150 repeat rows 0..50
            let m = MatRef::new(&x, n, d).unwrap();
            let o = KMeansOptions { seed, ..opts(k) };
            let stream = Stream::new(seed);
            let got = init_centroids(m, &o, &stream, &Progress::new()).unwrap();
            let want = plus_plus_one_trial_at_a_time(m, k, &stream);
            assert!(
                got.iter()
                    .zip(&want)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "n {n} k {k}"
            );
            assert_eq!(got.len(), want.len());
        }
    }

    #[test]
    fn recovers_separated_blobs() {
        let (n, d, k) = (300, 8, 4);
        let x = blobs(n, d, k, 1);
        let m = MatRef::new(&x, n, d).unwrap();
        let r = kmeans(m, &opts(k), &Progress::new()).unwrap();
        for i in 0..n {
            assert_eq!(r.labels[i], r.labels[i % k], "row {i}");
        }
        let distinct: std::collections::HashSet<_> = r.labels.iter().collect();
        assert_eq!(distinct.len(), k);
    }

    #[test]
    fn thread_count_independent() {
        let (n, d, k) = (1000, 16, 7);
        let x = blobs(n, d, 5, 2);
        let m = MatRef::new(&x, n, d).unwrap();
        for spherical in [false, true] {
            let mut o = opts(k);
            o.spherical = spherical;
            o.max_points_per_centroid = Some(50);
            let a = crate::parallel::install(1, || kmeans(m, &o, &Progress::new()).unwrap());
            let b = crate::parallel::install(3, || kmeans(m, &o, &Progress::new()).unwrap());
            assert_eq!(a, b);
        }
    }

    /// The fused assignment against an explicit product + in-order scan (first best
    /// wins), for every kernel: one and several centroid blocks, depth past one chunk,
    /// padding columns, spherical scores that are all negative, duplicate centroids.
    #[test]
    fn nearest_equals_scan_of_the_product() {
        for &(n, k, d) in &[(300, 37, 5), (50, 300, 400), (40, 1, 3), (77, 700, 130)] {
            let x = crate::gemm::tests::lcg(n * d, 21);
            let mut c = crate::gemm::tests::lcg(k * d, 22);
            if k > 3 {
                let r = c[..d].to_vec();
                c[2 * d..3 * d].copy_from_slice(&r);
            }
            let xm = MatRef::new(&x, n, d).unwrap();
            for spherical in [false, true] {
                let (xs, cs) = if spherical {
                    let xs = normalized(xm).unwrap();
                    // centroids pointing away from every point: all scores negative
                    let cs: Vec<f32> = normalized(MatRef::new(&c, k, d).unwrap())
                        .unwrap()
                        .iter()
                        .map(|v| -v.abs())
                        .collect();
                    let xs: Vec<f32> = xs.iter().map(|v| v.abs()).collect();
                    (xs, cs)
                } else {
                    (x.clone(), c.clone())
                };
                let xm = MatRef::new(&xs, n, d).unwrap();
                let cm = MatRef::new(&cs, k, d).unwrap();
                let cn: Vec<f32> = (0..k)
                    .map(|j| dot_f64(cm.row(j), cm.row(j)) as f32)
                    .collect();
                for isa in Isa::available() {
                    let p = gemm::matmul_nt(isa, xm, None, cm, None).unwrap();
                    let want: Vec<i64> = (0..n)
                        .map(|i| {
                            let mut b = (f32::NEG_INFINITY, 0i64);
                            for j in 0..k {
                                let v = p[i * k + j];
                                let s = if spherical { v } else { 2.0 * v - cn[j] };
                                if s > b.0 {
                                    b = (s, j as i64);
                                }
                            }
                            b.1
                        })
                        .collect();
                    let got =
                        nearest(isa, xm, cm, spherical, None, None, &Progress::new()).unwrap();
                    assert_eq!(got, want, "{isa:?} {n}x{k}x{d} spherical={spherical}");
                    assert!(got.iter().all(|&l| l != 2), "duplicate centroid wins");
                }
            }
        }
    }

    /// The dense partial Fisher–Yates the sparse one replaces.
    fn dense_sample(n: usize, m: usize, stream: &Stream, offset: u64) -> Vec<usize> {
        let mut perm: Vec<usize> = (0..n).collect();
        for i in 0..m.min(n) {
            let u = stream.uniform(offset + i as u64);
            let j = i + ((u * (n - i) as f64) as usize).min(n - i - 1);
            perm.swap(i, j);
        }
        perm.truncate(m.min(n));
        perm.sort_unstable();
        perm
    }

    #[test]
    fn sparse_sample_equals_dense_shuffle() {
        for (n, m, seed) in [
            (1, 1, 0),
            (10, 10, 1),
            (1000, 37, 2),
            (5000, 4999, 3),
            (7, 3, 4),
        ] {
            let s = Stream::new(seed);
            assert_eq!(
                sample_indices(n, m, &s, 5),
                dense_sample(n, m, &s, 5),
                "{n} {m}"
            );
        }
        // billions of rows: memory follows m, not n
        let big = sample_indices(5_000_000_000, 1000, &Stream::new(9), 0);
        assert_eq!(big.len(), 1000);
        assert!(big.windows(2).all(|w| w[0] < w[1]));
    }

    /// The aligned binary tree, level by level: the definition [`Tree`] streams.
    fn levels<T: Clone>(mut nodes: Vec<T>, add: &mut impl FnMut(T, T) -> T) -> T {
        while nodes.len() > 1 {
            nodes = nodes
                .chunks(2)
                .map(|p| match p {
                    [l, r] => add(l.clone(), r.clone()),
                    [l] => l.clone(),
                    _ => unreachable!(),
                })
                .collect();
        }
        nodes.pop().unwrap()
    }

    #[test]
    fn tree_is_the_aligned_binary_tree() {
        let mut add = |l: String, r: String| format!("({l}+{r})");
        for p in 1..70 {
            let leaves: Vec<String> = (0..p).map(|i| i.to_string()).collect();
            let mut t = Tree::new();
            for l in &leaves {
                t.push(l.clone(), &mut add);
            }
            assert!(t.stack.len() <= 7, "one pending node per level");
            assert_eq!(
                t.finish(&mut add).unwrap(),
                levels(leaves, &mut add),
                "P = {p}"
            );
        }
        assert_eq!(Tree::<String>::new().finish(&mut add), None);
        let mut t = Tree::new();
        for i in 0..5 {
            t.push(i.to_string(), &mut add);
        }
        assert_eq!(t.finish(&mut add).unwrap(), "(((0+1)+(2+3))+4)");
    }

    /// Rows whose float64 sums depend on the order of addition.
    fn wide_range_rows(n: usize, d: usize) -> Vec<f32> {
        let s = Stream::new(17);
        (0..n * d)
            .map(|i| {
                let u = s.uniform(i as u64) as f32;
                (u - 0.5) * 10f32.powi((i % 7) as i32 - 3)
            })
            .collect()
    }

    /// A plain serial chain per cluster over rows `r` (the computation of one process
    /// before super-chunks).
    fn serial_sums(
        x: &[f32],
        d: usize,
        labels: &[i64],
        k: usize,
        r: std::ops::Range<usize>,
    ) -> Vec<f64> {
        let mut s = vec![0.0f64; k * d];
        for i in r {
            let c = labels[i] as usize;
            for j in 0..d {
                s[c * d + j] += f64::from(x[i * d + j]);
            }
        }
        s
    }

    #[test]
    fn member_sums_by_super_chunk_tree() {
        let (d, k) = (3, 4);
        // n <= S: one chain over all rows, as before super-chunks
        let n = 5000;
        let x = wide_range_rows(n, d);
        let labels: Vec<i64> = (0..n).map(|i| ((i * 7) % k) as i64).collect();
        let m = MatRef::new(&x, n, d).unwrap();
        let (s, c) = member_sums(m, &labels, k).unwrap();
        assert_eq!(s, serial_sums(&x, d, &labels, k, 0..n));
        assert_eq!(c.iter().sum::<i64>(), n as i64);
        // n > S: three super-chunks, ((0 + 1) + 2)
        let n = 2 * SUPER_CHUNK + 1234;
        let x = wide_range_rows(n, d);
        let labels: Vec<i64> = (0..n).map(|i| ((i * 7 + i / 3) % k) as i64).collect();
        let m = MatRef::new(&x, n, d).unwrap();
        let (s, c) = member_sums(m, &labels, k).unwrap();
        let parts: Vec<Vec<f64>> = crate::parallel::fixed_chunks(n, SUPER_CHUNK)
            .into_iter()
            .map(|r| serial_sums(&x, d, &labels, k, r))
            .collect();
        let want: Vec<f64> = (0..k * d)
            .map(|i| (parts[0][i] + parts[1][i]) + parts[2][i])
            .collect();
        assert_eq!(s, want);
        assert_ne!(
            s,
            serial_sums(&x, d, &labels, k, 0..n),
            "the order matters here"
        );
        // the distributed path: blocks of a super-chunk fed in order, nodes by add_into
        let mut tree = Tree::new();
        let mut add = |mut l: Partial, r: Partial| {
            add_into(&mut l.0, &r.0).unwrap();
            l.1.iter_mut().zip(&r.1).for_each(|(a, b)| *a += b);
            l
        };
        for r in crate::parallel::fixed_chunks(n, SUPER_CHUNK) {
            let (mut ps, mut pc) = (vec![0.0f64; k * d], vec![0i64; k]);
            for b in crate::parallel::fixed_chunks(r.len(), 4096 * 3) {
                let b = r.start + b.start..r.start + b.end;
                let xb = sub_rows(m, b.clone()).unwrap();
                crate::parallel::install(3, || {
                    accumulate_members(xb, &labels[b], &mut ps, &mut pc).unwrap()
                });
            }
            tree.push((ps, pc), &mut add);
        }
        assert_eq!(tree.finish(&mut add).unwrap(), (s, c));
    }

    /// One process's full-data k-means against the distributed composition of the public
    /// pieces (blocks of super-chunks, tree nodes, farthest-row candidates, update),
    /// with more than one super-chunk and an empty cluster to re-seed.
    #[test]
    fn kmeans_equals_the_blockwise_lloyd_of_the_public_pieces() {
        let (d, k) = (4, 3);
        let n = 2 * SUPER_CHUNK + 777;
        let mut x = wide_range_rows(n, d);
        for (i, v) in x.iter_mut().enumerate() {
            *v += ((i / d) % 2) as f32 * 3.0;
        }
        let m = MatRef::new(&x, n, d).unwrap();
        // the third start is far from every row: its cluster is empty at first
        let init = vec![
            0.0, 0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0, 1e4, 1e4, 1e4, 1e4f32,
        ];
        for spherical in [false, true] {
            let mut o = opts(k);
            o.spherical = spherical;
            o.max_iter = 3;
            o.tol = 1e-9;
            o.init = Init::Given(init.clone());
            let want = kmeans(m, &o, &Progress::new()).unwrap();
            let p = Progress::new();
            let chunks = crate::parallel::fixed_chunks(n, SUPER_CHUNK);
            let blocks = |r: &std::ops::Range<usize>| {
                crate::parallel::fixed_chunks(r.len(), 50_000)
                    .into_iter()
                    .map(|b| sub_rows(m, r.start + b.start..r.start + b.end).unwrap())
                    .collect::<Vec<_>>()
            };
            let mut addv = |mut l: Vec<f64>, r: Vec<f64>| {
                add_into(&mut l, &r).unwrap();
                l
            };
            let mut t = Tree::new();
            for r in &chunks {
                let mut acc = vec![0.0; d];
                for b in blocks(r) {
                    feature_sums_block(b, spherical, &mut acc).unwrap();
                }
                t.push(acc, &mut addv);
            }
            let mean: Vec<f64> = t
                .finish(&mut addv)
                .unwrap()
                .iter()
                .map(|v| v / n as f64)
                .collect();
            let mut t = Tree::new();
            for r in &chunks {
                let mut acc = 0.0;
                for b in blocks(r) {
                    acc = sq_deviations_block(b, spherical, &mean, acc).unwrap();
                }
                t.push(acc, &mut |a: f64, b: f64| a + b);
            }
            let var = t.finish(&mut |a: f64, b: f64| a + b).unwrap();
            let tol = o.tol * (var / (n as f64 * d as f64));
            let init_m = MatRef::new(&init, k, d).unwrap();
            let mut cent = start_centroids(init_m, spherical, false).unwrap();
            let mut n_iter = 0;
            let mut reseeded = false;
            for _ in 0..o.max_iter {
                n_iter += 1;
                let cm = MatRef::new(&cent, k, d).unwrap();
                let mut t = Tree::new();
                let mut add = |mut l: Partial, r: Partial| {
                    add_into(&mut l.0, &r.0).unwrap();
                    l.1.iter_mut().zip(&r.1).for_each(|(a, b)| *a += b);
                    l
                };
                for r in &chunks {
                    let (mut s, mut c) = (vec![0.0; k * d], vec![0i64; k]);
                    for b in blocks(r) {
                        lloyd_block(b, cm, spherical, &mut s, &mut c, &p).unwrap();
                    }
                    t.push((s, c), &mut add);
                }
                let (mut s, mut c) = t.finish(&mut add).unwrap();
                let e = c.iter().filter(|&&v| v == 0).count();
                // every block's candidates, merged: distance descending, then row
                let mut cand: Vec<(f64, usize, i64, Vec<f32>)> = Vec::new();
                if e > 0 {
                    reseeded = true;
                    let mut r0 = 0;
                    for r in &chunks {
                        for b in blocks(r) {
                            let f = farthest_rows(b, cm, spherical, e, &p).unwrap();
                            for (j, &i) in f.rows.iter().enumerate() {
                                cand.push((
                                    f.dist[j],
                                    r0 + i,
                                    f.labels[j],
                                    f.values[j * d..(j + 1) * d].to_vec(),
                                ));
                            }
                            r0 += b.rows();
                        }
                    }
                    cand.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                    cand.truncate(e);
                }
                let rows: Vec<f32> = cand.iter().flat_map(|c| c.3.clone()).collect();
                let labs: Vec<i64> = cand.iter().map(|c| c.2).collect();
                let (new, shift) = lloyd_update(
                    &mut s,
                    &mut c,
                    &cent,
                    spherical,
                    MatRef::new(&rows, e, d).unwrap(),
                    &labs,
                )
                .unwrap();
                cent = new;
                if shift <= tol {
                    break;
                }
            }
            assert!(reseeded, "the test must re-seed an empty cluster");
            assert_eq!(cent, want.centroids, "spherical={spherical}");
            assert_eq!(n_iter, want.n_iter);
        }
    }

    #[test]
    fn rejects_bad_k() {
        let x = vec![0.0f32; 6];
        let m = MatRef::new(&x, 3, 2).unwrap();
        assert!(matches!(
            kmeans(m, &opts(4), &Progress::new()),
            Err(ClusterError::BadK { k: 4, n: 3 })
        ));
    }
}
