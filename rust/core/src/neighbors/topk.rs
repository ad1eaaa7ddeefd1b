//! Exact top-k search: blocked matrix product fused with per-query selection.
//!
//! # Semantics
//! * `Dot`: score `s = q · k` computed by [`crate::gemm`] (`f32`, FMA chain in feature
//!   order); higher is nearer.
//! * `Cosine`: rows are scaled by `1 / ||row||` (norm in `f64`, one rounding to `f32`)
//!   while they are packed, then as `Dot`; an all-zero row is scaled by `0`, so its
//!   similarity to every vector is `0` (as scikit-learn's `cosine_similarity`).
//! * `Euclidean`: `dist = (||q||² + ||k||²) − 2 (q · k)` in `f32` (squared norms
//!   accumulated in `f64` and rounded once), clamped below at `0`; lower is nearer.
//!
//! The result for each query is the first `k` keys of the total order "better score
//! first, then lower key index" over the scores defined above. Every score is computed
//! the same way wherever its key sits in a block and however the work is split, so
//! identical keys tie exactly and are returned lower index first, and results never
//! depend on the thread count. Scores that overflow to NaN count as the worst possible
//! score (reported as `-inf` similarity / `+inf` distance).

use std::cmp::Ordering;
use std::ops::Range;

use rayon::prelude::*;

use super::{check_pair, inverse_norms, sq_norms, Metric, NeighborsError};
use crate::alloc::{check_total, checked_len, try_vec};
use crate::gemm::{self, AlignedBuf, Isa};
use crate::linalg::MatRef;
use crate::progress::Progress;

/// The `k` best keys of every query, row-major `(n_queries, k)`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopK {
    /// Similarities (descending) or squared distances (ascending).
    pub scores: Vec<f32>,
    /// Key indices.
    pub indices: Vec<i64>,
    /// Neighbours per query.
    pub k: usize,
}

/// Packed bytes of keys per superblock: keys are packed once per superblock and shared
/// by every query block.
const SUPERBLOCK_BYTES: usize = 64 << 20;

/// Exact top-`k` of `keys` for every row of `queries` with the fastest kernel available.
pub fn topk(
    queries: MatRef<'_>,
    keys: MatRef<'_>,
    k: usize,
    metric: Metric,
    progress: &Progress,
) -> Result<TopK, NeighborsError> {
    topk_with(Isa::detect(), queries, keys, k, metric, progress)
}

/// [`topk`] with an explicit kernel (for tests and benchmarks).
pub fn topk_with(
    isa: Isa,
    queries: MatRef<'_>,
    keys: MatRef<'_>,
    k: usize,
    metric: Metric,
    progress: &Progress,
) -> Result<TopK, NeighborsError> {
    check_pair(queries, "queries", keys, "keys")?;
    let (m, n, d) = (queries.rows(), keys.rows(), keys.cols());
    if k == 0 || k > n {
        return Err(NeighborsError::BadK { k, n });
    }
    // The results (and up to as many candidates while searching) are allocated before
    // any work, so an impossible `queries x k` fails at once with an `AllocError`.
    let out_len = checked_len(m, k, "the top-k results")?;
    check_total(out_len, 4 + 8 + 8, "the top-k results and candidates")?;
    let mut scores = try_vec(0.0f32, out_len, "the top-k scores")?;
    let mut indices = try_vec(0i64, out_len, "the top-k indices")?;
    let (q_scale, k_scale) = match metric {
        Metric::Cosine => (Some(inverse_norms(queries)), Some(inverse_norms(keys))),
        _ => (None, None),
    };
    let (q_norms, k_norms) = match metric {
        Metric::Euclidean => (sq_norms(queries), sq_norms(keys)),
        _ => (Vec::new(), Vec::new()),
    };
    let ctx = Ctx {
        isa,
        metric,
        queries,
        q_scale: q_scale.as_deref(),
        q_norms: &q_norms,
        k_norms: &k_norms,
        d,
        mq: 8 * isa.mr(),
        nb: gemm::b_block_rows(isa, d),
        n_keys: n,
    };
    let nb = ctx.nb;
    let sb = ((SUPERBLOCK_BYTES / 4 / d) / nb).max(1) * nb;
    let n_qblocks = m.div_ceil(ctx.mq);
    let superblocks = crate::parallel::fixed_chunks(n, sb);
    progress.set_total((n_qblocks * superblocks.len()) as u64);

    let mut state: Vec<Cands> = (0..m).map(|_| Cands::new(k)).collect();
    let threads = rayon::current_num_threads();
    for sbr in superblocks {
        progress.check()?;
        let packed = gemm::pack_all(
            MatRef::new(&keys.as_slice()[sbr.start * d..sbr.end * d], sbr.len(), d)?,
            k_scale.as_deref().map(|s| &s[sbr.clone()]),
            isa.nr(),
            nb,
        );
        let n_l2 = packed.len();
        // Few query blocks: also split the keys, so every thread has work. The result
        // does not depend on the split (see the module docs).
        let splits = if n_qblocks >= 2 * threads {
            1
        } else {
            (4 * threads).div_ceil(n_qblocks).min(n_l2)
        };
        let per = n_l2.div_ceil(splits);
        let mut tasks: Vec<(usize, Range<usize>, Vec<Cands>)> = Vec::new();
        for (qb, chunk) in state.chunks_mut(ctx.mq).enumerate() {
            for s in 0..splits {
                let l2 = (s * per).min(n_l2)..((s + 1) * per).min(n_l2);
                // The first split continues from the state so far (lower key indices).
                let init = if s == 0 {
                    chunk
                        .iter_mut()
                        .map(|c| std::mem::replace(c, Cands::new(k)))
                        .collect()
                } else {
                    (0..chunk.len()).map(|_| Cands::new(k)).collect()
                };
                tasks.push((qb, l2, init));
            }
        }
        tasks.par_iter_mut().try_for_each(|(qb, l2, cands)| {
            progress.check()?;
            ctx.run(*qb, &packed, l2.clone(), sbr.start, cands);
            if l2.start == 0 || splits == 1 {
                progress.inc(1);
            }
            Ok::<_, NeighborsError>(())
        })?;
        // Merge in split order (ascending key indices).
        for (qb, _, cands) in tasks {
            let dst = &mut state[qb * ctx.mq..];
            for (st, c) in dst.iter_mut().zip(cands) {
                if st.len() == 0 {
                    *st = c;
                } else {
                    st.merge(c);
                }
            }
        }
    }

    scores
        .par_chunks_mut(k)
        .zip(indices.par_chunks_mut(k))
        .zip(state.par_iter_mut())
        .for_each(|((s, ix), c)| {
            c.finish();
            for j in 0..k {
                s[j] = match metric {
                    Metric::Euclidean => -c.keys[j],
                    _ => c.keys[j],
                };
                ix[j] = c.idx[j] as i64;
            }
        });
    Ok(TopK { scores, indices, k })
}

struct Ctx<'a> {
    isa: Isa,
    metric: Metric,
    queries: MatRef<'a>,
    q_scale: Option<&'a [f64]>,
    q_norms: &'a [f32],
    k_norms: &'a [f32],
    d: usize,
    mq: usize,
    nb: usize,
    n_keys: usize,
}

impl Ctx<'_> {
    /// Query block `qb` against packed key blocks `l2` of a superblock starting at key
    /// `key0`, updating `cands` (one per query of the block).
    fn run(
        &self,
        qb: usize,
        packed: &[AlignedBuf],
        l2: Range<usize>,
        key0: usize,
        cands: &mut [Cands],
    ) {
        if l2.is_empty() {
            return;
        }
        let (mr, nr) = (self.isa.mr(), self.isa.nr());
        let rows = qb * self.mq..(qb * self.mq + self.mq).min(self.queries.rows());
        let mut ap = AlignedBuf::zeros(gemm::packed_len(rows.len(), self.d, mr));
        gemm::pack_rows(
            self.queries,
            rows.clone(),
            self.q_scale,
            mr,
            ap.as_mut_slice(),
        );
        let ldc = self.nb.div_ceil(nr) * nr;
        let mut tile = AlignedBuf::zeros(rows.len().div_ceil(mr) * mr * ldc);
        for lb in l2 {
            let bp = packed[lb].as_slice();
            let cols = bp.len() / self.d; // padded to nr
            let c0 = key0 + lb * self.nb;
            gemm::compute_block(
                self.isa,
                self.d,
                ap.as_slice(),
                bp,
                tile.as_mut_slice(),
                ldc,
            );
            // The last block is padded to whole panels.
            let valid = cols.min(self.n_keys - c0);
            let t = tile.as_mut_slice();
            for (i, cand) in cands.iter_mut().enumerate() {
                let row = &mut t[i * ldc..i * ldc + valid];
                let qn = if self.metric == Metric::Euclidean {
                    self.q_norms[rows.start + i]
                } else {
                    0.0
                };
                let kn = if self.metric == Metric::Euclidean {
                    &self.k_norms[c0..c0 + valid]
                } else {
                    &[][..]
                };
                scan_row(self.isa, self.metric, row, qn, kn, c0, cand);
            }
        }
    }
}

/// Candidate buffer of one query: unsorted `(key, index)` pairs, compacted to the best
/// `k` (by [`better`]) whenever it fills; `thresh` is the worst kept key once `k` are
/// kept, so that later keys (with larger indices) must beat it strictly.
#[derive(Clone)]
struct Cands {
    keys: Vec<f32>,
    idx: Vec<u64>,
    k: usize,
    cap: usize,
    thresh: f32,
    full: bool,
}

/// Total order: higher key first, then lower index.
#[inline]
fn better(ka: f32, ia: u64, kb: f32, ib: u64) -> Ordering {
    kb.partial_cmp(&ka)
        .unwrap_or(Ordering::Equal)
        .then(ia.cmp(&ib))
}

impl Cands {
    fn new(k: usize) -> Self {
        Self {
            keys: Vec::new(),
            idx: Vec::new(),
            k,
            cap: k + k.clamp(16, 4096),
            thresh: f32::NEG_INFINITY,
            full: false,
        }
    }

    fn len(&self) -> usize {
        self.keys.len()
    }

    #[inline]
    fn push(&mut self, key: f32, i: u64) {
        let key = if key.is_nan() { f32::NEG_INFINITY } else { key };
        self.keys.push(key);
        self.idx.push(i);
        if self.keys.len() >= self.cap {
            self.compact();
        }
    }

    /// Keep the best `k`; afterwards `thresh` is the worst kept key.
    fn compact(&mut self) {
        if self.keys.len() < self.k {
            return;
        }
        let mut pairs: Vec<(f32, u64)> = self
            .keys
            .iter()
            .copied()
            .zip(self.idx.iter().copied())
            .collect();
        if pairs.len() > self.k {
            pairs.select_nth_unstable_by(self.k - 1, |a, b| better(a.0, a.1, b.0, b.1));
            pairs.truncate(self.k);
        }
        self.thresh = pairs.iter().map(|p| p.0).fold(f32::INFINITY, f32::min);
        self.full = true;
        self.keys.clear();
        self.idx.clear();
        for (kk, ii) in pairs {
            self.keys.push(kk);
            self.idx.push(ii);
        }
    }

    /// Add every candidate of `other` (which saw only larger key indices).
    fn merge(&mut self, other: Cands) {
        for (kk, ii) in other.keys.into_iter().zip(other.idx) {
            self.push(kk, ii);
        }
        self.compact();
    }

    /// Sort the best `k` into output order.
    fn finish(&mut self) {
        self.compact();
        let mut pairs: Vec<(f32, u64)> = self
            .keys
            .iter()
            .copied()
            .zip(self.idx.iter().copied())
            .collect();
        pairs.sort_unstable_by(|a, b| better(a.0, a.1, b.0, b.1));
        for (j, (kk, ii)) in pairs.into_iter().enumerate() {
            self.keys[j] = kk;
            self.idx[j] = ii;
        }
    }
}

/// Turn one row of dot products into keys (higher is better) and offer them to `c`.
#[inline]
fn scan_row(
    isa: Isa,
    metric: Metric,
    row: &mut [f32],
    qn: f32,
    kn: &[f32],
    c0: usize,
    c: &mut Cands,
) {
    // SAFETY: the features of `isa` were detected at run time.
    unsafe {
        match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => scan_avx512(metric, row, qn, kn, c0, c),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => scan_avx2(metric, row, qn, kn, c0, c),
            _ => scan_generic(metric, row, qn, kn, c0, c),
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn scan_avx512(
    metric: Metric,
    row: &mut [f32],
    qn: f32,
    kn: &[f32],
    c0: usize,
    c: &mut Cands,
) {
    scan_generic(metric, row, qn, kn, c0, c)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn scan_avx2(
    metric: Metric,
    row: &mut [f32],
    qn: f32,
    kn: &[f32],
    c0: usize,
    c: &mut Cands,
) {
    scan_generic(metric, row, qn, kn, c0, c)
}

#[inline(always)]
fn scan_generic(metric: Metric, row: &mut [f32], qn: f32, kn: &[f32], c0: usize, c: &mut Cands) {
    if metric == Metric::Euclidean {
        for (s, &kv) in row.iter_mut().zip(kn) {
            let v = (qn + kv) - 2.0 * *s;
            *s = -(if v < 0.0 { 0.0 } else { v });
        }
    }
    const W: usize = 16;
    for (ci, chunk) in row.chunks(W).enumerate() {
        if c.full {
            let t = c.thresh;
            let any = chunk.iter().fold(false, |a, &s| a | (s > t));
            if !any {
                continue;
            }
        }
        let base = c0 + ci * W;
        for (j, &s) in chunk.iter().enumerate() {
            if !c.full || s > c.thresh {
                c.push(s, (base + j) as u64);
            }
        }
        if !c.full && c.len() >= c.k {
            c.compact();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::install;

    fn ints(n: usize, seed: u64, range: i64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 33) as i64 % (2 * range + 1) - range) as f32
            })
            .collect()
    }

    /// Exact reference on integer data (every f32 operation is exact there).
    fn reference(q: &[f32], x: &[f32], d: usize, k: usize, metric: Metric) -> (Vec<f32>, Vec<i64>) {
        let (m, n) = (q.len() / d, x.len() / d);
        let mut scores = Vec::new();
        let mut idx = Vec::new();
        for i in 0..m {
            let mut all: Vec<(f64, usize)> = (0..n)
                .map(|j| {
                    let qi = &q[i * d..(i + 1) * d];
                    let xj = &x[j * d..(j + 1) * d];
                    let s = match metric {
                        Metric::Euclidean => -qi
                            .iter()
                            .zip(xj)
                            .map(|(a, b)| f64::from(a - b) * f64::from(a - b))
                            .sum::<f64>(),
                        _ => qi.iter().zip(xj).map(|(a, b)| f64::from(a * b)).sum(),
                    };
                    (s, j)
                })
                .collect();
            all.sort_by(|a, b| b.0.partial_cmp(&a.0).unwrap().then(a.1.cmp(&b.1)));
            for &(s, j) in &all[..k] {
                scores.push(if metric == Metric::Euclidean {
                    -s as f32
                } else {
                    s as f32
                });
                idx.push(j as i64);
            }
        }
        (scores, idx)
    }

    #[test]
    fn exact_on_integer_data_with_ties_every_kernel_and_thread_count() {
        let d = 37;
        for &(m, n, k) in &[
            (3usize, 50usize, 50usize),
            (130, 700, 10),
            (1, 5, 1),
            (200, 33, 7),
        ] {
            let q = ints(m * d, 1 + m as u64, 2);
            let mut x = ints(n * d, 2 + n as u64, 2);
            // duplicate keys and a query equal to a key
            let r = x[..d].to_vec();
            x[(n - 1) * d..].copy_from_slice(&r);
            let qm = MatRef::new(&q, m, d).unwrap();
            let xm = MatRef::new(&x, n, d).unwrap();
            for metric in [Metric::Dot, Metric::Euclidean] {
                let (ws, wi) = reference(&q, &x, d, k, metric);
                for isa in Isa::available() {
                    for t in [1, 3] {
                        let got =
                            install(t, || topk_with(isa, qm, xm, k, metric, &Progress::new()))
                                .unwrap();
                        assert_eq!(got.indices, wi, "{isa:?} {metric:?} t={t} m={m} n={n}");
                        assert_eq!(got.scores, ws);
                    }
                }
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn any_shape_matches_reference(
            m in 1usize..20, n in 1usize..60, d in 1usize..30, kf in 0.0f64..1.0, seed in 0u64..1000,
        ) {
            let k = 1 + ((n - 1) as f64 * kf) as usize;
            let q = ints(m * d, seed, 2);
            let x = ints(n * d, seed + 1, 2);
            let qm = MatRef::new(&q, m, d).unwrap();
            let xm = MatRef::new(&x, n, d).unwrap();
            for metric in [Metric::Dot, Metric::Euclidean] {
                let (ws, wi) = reference(&q, &x, d, k, metric);
                for isa in Isa::available() {
                    let got = topk_with(isa, qm, xm, k, metric, &Progress::new()).unwrap();
                    proptest::prop_assert_eq!(&got.indices, &wi);
                    proptest::prop_assert_eq!(&got.scores, &ws);
                }
            }
        }
    }

    #[test]
    fn cosine_self_match_and_duplicates() {
        let d = 20;
        let n = 300;
        let x: Vec<f32> = ints(n * d, 5, 50).iter().map(|v| v + 0.5).collect();
        let mut x2 = x.clone();
        let r = x2[10 * d..11 * d].to_vec();
        x2[200 * d..201 * d].copy_from_slice(&r);
        let xm = MatRef::new(&x2, n, d).unwrap();
        let got = topk(xm, xm, 3, Metric::Cosine, &Progress::new()).unwrap();
        for i in 0..n {
            let first = got.indices[i * 3];
            if i == 200 || i == 10 {
                assert_eq!(&got.indices[i * 3..i * 3 + 2], &[10, 200]);
            } else {
                assert_eq!(first, i as i64);
            }
            assert!((got.scores[i * 3] - 1.0).abs() < 1e-6);
        }
        assert_eq!(got.scores[30].to_bits(), got.scores[31].to_bits());
    }

    #[test]
    fn cosine_zero_rows_have_similarity_zero() {
        // keys: 0 = zero, 1 = (1, 0), 2 = zero, 3 = (-1, 0); queries: zero, (1, 0), (-1, 1)
        let x = [0.0f32, 0.0, 1.0, 0.0, 0.0, 0.0, -1.0, 0.0];
        let q = [0.0f32, 0.0, 1.0, 0.0, -1.0, 1.0];
        let (xm, qm) = (
            MatRef::new(&x, 4, 2).unwrap(),
            MatRef::new(&q, 3, 2).unwrap(),
        );
        for isa in Isa::available() {
            let got = topk_with(isa, qm, xm, 4, Metric::Cosine, &Progress::new()).unwrap();
            // similarity 0 ties go to the lower index
            assert_eq!(got.indices, [0, 1, 2, 3, 1, 0, 2, 3, 3, 0, 2, 1]);
            let h = std::f32::consts::FRAC_1_SQRT_2;
            let want = [0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, -1.0, h, 0.0, 0.0, -h];
            for (g, w) in got.scores.iter().zip(want) {
                assert!((g - w).abs() < 1e-6, "{:?}", got.scores);
            }
        }
    }

    #[test]
    fn bad_inputs() {
        let x = [1.0f32, 0.0, 0.0, 0.0];
        let m = MatRef::new(&x, 2, 2).unwrap();
        let p = Progress::new();
        assert!(matches!(
            topk(m, m, 3, Metric::Dot, &p),
            Err(NeighborsError::BadK { .. })
        ));
        assert!(matches!(
            topk(m, m, 0, Metric::Dot, &p),
            Err(NeighborsError::BadK { .. })
        ));
        let y = [1.0f32; 3];
        let ym = MatRef::new(&y, 1, 3).unwrap();
        assert!(matches!(
            topk(ym, m, 1, Metric::Dot, &p),
            Err(NeighborsError::DimMismatch { .. })
        ));
        let z = [f32::NAN, 1.0];
        let zm = MatRef::new(&z, 1, 2).unwrap();
        assert!(topk(zm, m, 1, Metric::Dot, &p).is_err());
        p.cancel();
        assert!(matches!(
            topk(m, m, 1, Metric::Dot, &p),
            Err(NeighborsError::Cancelled(_))
        ));
    }

    #[test]
    fn impossible_result_sizes_are_alloc_errors_before_any_work() {
        use crate::error::{Classify, ErrorKind};
        let n = 1_000_000;
        let x = vec![1.0f32; n];
        let m = MatRef::new(&x, n, 1).unwrap();
        // 10^6 x 10^6 neighbours: 20 TB of results and candidates.
        let e = topk(m, m, n, Metric::Dot, &Progress::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfMemory, "{e}");
        let e = topk(m, m, n + 1, Metric::Dot, &Progress::new()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
    }
}
