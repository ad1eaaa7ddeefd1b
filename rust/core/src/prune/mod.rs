//! Embedding-based dataset pruning, given a clustering (labels + centroids):
//!
//! * [`semdedup`] — SemDeDup (Abbas et al. 2023): per cluster, order members (hard first
//!   by default), `M_j = max_{i<j} cos(x_i, x_j)`, remove `j` when `M_j > 1 − ε`
//!   (pairwise: `j` goes even when the item it matched was itself removed).
//! * [`ssp`] — self-supervised prototype pruning (Sorscher et al. 2022): rank every
//!   sample globally by cosine distance to its own centroid, keep the hardest (or the
//!   easiest, or a random choice: [`Prefer`]).
//! * [`dbp`] — density-based pruning (Abbas et al. 2024): optional SemDeDup, cluster
//!   complexity `d_inter · d_intra`, softmax with temperature, keep counts by
//!   water-filling onto a capped simplex (rounded to sum exactly to `N`), keep the
//!   hardest within each cluster.
//!
//! [`Prefer::Auto`] applies the strategy switch of Sorscher et al. 2022 to SSP and DBP:
//! hard samples when the kept count per class (or per non-empty cluster) is at least
//! [`AUTO_HARD_MIN_PER_GROUP`], easy ones below. SemDeDup refuses it: it does not fix a
//! kept count in advance.
//!
//! Within-cluster similarities are `f32` products from [`crate::gemm`] (never `f16`).
//! Everything is deterministic for a given seed and independent of the thread count;
//! ties are broken by index.

use rayon::prelude::*;

use crate::alloc::AllocError;
use crate::cluster::{dot_f64, normalized, norms, ClusterError};
use crate::error::{Cancelled, Classify, ErrorKind};
use crate::gemm::{matmul_nt, Isa};
use crate::linalg::{LinalgError, MatRef};
use crate::progress::Progress;
use crate::quant::rng::Stream;

/// A resolved member order: which members are kept, or put first in the SemDeDup order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Farthest from the centroid first.
    Hard,
    /// Nearest to the centroid first.
    Easy,
    /// Seeded random order.
    Random,
}

impl Order {
    /// The option value naming this order: `"hard"`, `"easy"` or `"random"`.
    pub fn name(self) -> &'static str {
        match self {
            Order::Hard => "hard",
            Order::Easy => "easy",
            Order::Random => "random",
        }
    }
}

/// Kept samples per group at or above which [`Prefer::Auto`] keeps hard samples.
///
/// The "Beyond neural scaling laws" switch (Sorscher et al. 2022): keep easy samples when
/// data is scarce, hard ones when it is abundant. The paper gives no universal crossover;
/// 32 per class lies between the 24-36 kept digits per class where, on scikit-learn's
/// digits with a 5-NN classifier, hard-first SSP/DBP overtook easy-first.
pub const AUTO_HARD_MIN_PER_GROUP: usize = 32;

/// The `prefer` option: which members a method keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefer {
    /// Farthest from the centroid (abundant data).
    Hard,
    /// Nearest to the centroid (scarce data).
    Easy,
    /// Seeded random choice.
    Random,
    /// Hard or easy from the kept count per group, see [`Prefer::resolve`].
    Auto,
}

impl Prefer {
    /// Parse `"hard"`, `"easy"`, `"random"` or `"auto"`.
    pub fn parse(s: &str) -> Result<Prefer, PruneError> {
        match s {
            "hard" => Ok(Prefer::Hard),
            "easy" => Ok(Prefer::Easy),
            "random" => Ok(Prefer::Random),
            "auto" => Ok(Prefer::Auto),
            o => Err(PruneError::Invalid(format!(
                "unknown prefer {o:?}; expected \"hard\", \"easy\", \"random\" or \"auto\""
            ))),
        }
    }

    /// The order itself, `None` for `Auto`.
    pub fn fixed(self) -> Option<Order> {
        match self {
            Prefer::Hard => Some(Order::Hard),
            Prefer::Easy => Some(Order::Easy),
            Prefer::Random => Some(Order::Random),
            Prefer::Auto => None,
        }
    }

    /// The order to use when `kept` samples are kept from `groups` groups (classes, or
    /// non-empty clusters): `Auto` is `Hard` when `kept >= AUTO_HARD_MIN_PER_GROUP *
    /// groups` (`kept / groups >= AUTO_HARD_MIN_PER_GROUP` in integers), else `Easy`; the
    /// others are themselves.
    pub fn resolve(self, kept: usize, groups: usize) -> Order {
        self.fixed()
            .unwrap_or(if kept / groups.max(1) >= AUTO_HARD_MIN_PER_GROUP {
                Order::Hard
            } else {
                Order::Easy
            })
    }
}

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Matrix(#[from] LinalgError),
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
    #[error(transparent)]
    Alloc(#[from] AllocError),
}

impl Classify for PruneError {
    fn kind(&self) -> ErrorKind {
        match self {
            PruneError::Cancelled(_) => ErrorKind::Cancelled,
            PruneError::Matrix(e) => e.kind(),
            PruneError::Cluster(e) => e.kind(),
            PruneError::Invalid(_) => ErrorKind::InvalidInput,
            PruneError::Alloc(e) => e.kind(),
        }
    }
}

/// Per-item and per-cluster outcome of a pruning method.
#[derive(Debug, Clone, PartialEq)]
pub struct PruneOutput {
    /// Kept items.
    pub keep: Vec<bool>,
    /// For an item removed as a duplicate, the item it matched; otherwise -1.
    pub duplicate_of: Vec<i64>,
    /// Largest cosine to an item earlier in its cluster's SemDeDup order (NaN for the
    /// first member, or when no deduplication ran).
    pub similarity: Vec<f32>,
    /// Cosine distance to the item's own centroid, `1 − cos`.
    pub score: Vec<f64>,
    /// Items kept per cluster.
    pub keep_per_cluster: Vec<i64>,
    /// DBP cluster complexity `d_inter · d_intra` (empty for the other methods).
    pub complexity: Vec<f64>,
    /// The member order used (`Prefer::Auto` resolved).
    pub prefer: Order,
}

/// Validated clustering with normalised points and centroids.
struct Prep<'a> {
    x: MatRef<'a>,
    nrm: Vec<f64>,
    n: usize,
    d: usize,
    k: usize,
    cn: Vec<f32>,
    labels: Vec<usize>,
    members: Vec<Vec<usize>>,
    score: Vec<f64>,
    /// Global ids of the rows (strictly increasing) when `x` is a part of a larger set.
    ids: Option<&'a [i64]>,
}

fn prepare<'a>(
    x: MatRef<'a>,
    labels: &[i64],
    centroids: MatRef<'_>,
    ids: Option<&'a [i64]>,
) -> Result<Prep<'a>, PruneError> {
    x.require_non_empty("X")?;
    centroids.require_non_empty("centroids")?;
    x.require_finite("X")?;
    centroids.require_finite("centroids")?;
    let (n, d, k) = (x.rows(), x.cols(), centroids.rows());
    if centroids.cols() != d {
        return Err(PruneError::Invalid(format!(
            "X has {d} features but centroids have {}; they must match",
            centroids.cols()
        )));
    }
    if labels.len() != n {
        return Err(PruneError::Invalid(format!(
            "labels has {} entries but X has {n} rows",
            labels.len()
        )));
    }
    let mut lab = Vec::with_capacity(n);
    let mut members = vec![Vec::new(); k];
    for (i, &l) in labels.iter().enumerate() {
        if l < 0 || l as usize >= k {
            return Err(PruneError::Invalid(format!(
                "labels[{i}] = {l} is not a centroid index (0..{k})"
            )));
        }
        lab.push(l as usize);
        members[l as usize].push(i);
    }
    if let Some(g) = ids {
        if g.len() != n {
            return Err(PruneError::Invalid(format!(
                "ids has {} entries but X has {n} rows",
                g.len()
            )));
        }
        if g.first().is_some_and(|&v| v < 0) || g.windows(2).any(|w| w[0] >= w[1]) {
            return Err(PruneError::Invalid(
                "ids must be non-negative and strictly increasing".into(),
            ));
        }
    }
    let nrm = norms(x)?;
    let cn = normalized(centroids).map_err(|e| match e {
        ClusterError::ZeroVector(r) => {
            PruneError::Invalid(format!("centroid {r} is an all-zero vector"))
        }
        o => o.into(),
    })?;
    let score = (0..n)
        .into_par_iter()
        .with_min_len(512)
        .map(|i| {
            let c = lab[i];
            let xi: Vec<f32> = x
                .row(i)
                .iter()
                .map(|&v| (f64::from(v) / nrm[i]) as f32)
                .collect();
            1.0 - dot_f64(&xi, &cn[c * d..(c + 1) * d])
        })
        .collect();
    Ok(Prep {
        x,
        nrm,
        n,
        d,
        k,
        cn,
        labels: lab,
        members,
        score,
        ids,
    })
}

/// Sort `idx` by preference: hard = largest score first, easy = smallest first, random
/// = seeded by the row's global id; ties by index. `ids` (strictly increasing, so ties
/// order alike) are the global ids of the rows, when they are a part of a larger set:
/// a cluster then orders exactly as it does inside the whole set.
fn order_items(idx: &mut [usize], score: &[f64], order: Order, seed: u64, ids: Option<&[i64]>) {
    match order {
        Order::Hard => idx.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(a.cmp(&b))),
        Order::Easy => idx.sort_by(|&a, &b| score[a].total_cmp(&score[b]).then(a.cmp(&b))),
        Order::Random => {
            let s = Stream::new(seed);
            let key = |a: usize| random_key(&s, ids.map_or(a as u64, |g| g[a] as u64));
            idx.sort_by(|&a, &b| key(a).cmp(&key(b)).then(a.cmp(&b)))
        }
    }
}

/// The 32 random bits that place row `id` in the seeded random order of `s`: rows are
/// ordered by `(bits, index)` ascending (the bits of `Stream::uniform`, whose order they
/// share).
#[inline(always)]
fn random_key(s: &Stream, id: u64) -> u32 {
    s.bits32(id)
}

/// The keys of [`Order::Random`] with `seed` for the global row `ids`: sorting rows by
/// `(key, id)` ascending gives the order [`ssp`], [`semdedup`] and [`dbp`] use with a
/// seeded random preference. A key depends on `(seed, id)` only, so a distributed caller
/// can rank any part of a larger set without the other rows. `ids` must be
/// non-negative.
pub fn random_keys(ids: &[i64], seed: u64) -> Result<Vec<u32>, PruneError> {
    if let Some(i) = ids.iter().position(|&g| g < 0) {
        return Err(PruneError::Invalid(format!(
            "ids must be non-negative, got ids[{i}] = {}",
            ids[i]
        )));
    }
    let s = Stream::new(seed);
    let mut out = crate::alloc::try_vec(0u32, ids.len(), "the random keys")?;
    out.par_iter_mut()
        .zip(ids.par_iter())
        .with_min_len(1 << 14)
        .for_each(|(o, &g)| *o = random_key(&s, g as u64));
    Ok(out)
}

/// `round(fraction * n)` (halves up), at least 1.
pub fn keep_count(n: usize, fraction: f64) -> Result<usize, PruneError> {
    if !(fraction > 0.0 && fraction <= 1.0) {
        return Err(PruneError::Invalid(format!(
            "keep fraction must be in (0, 1], got {fraction}"
        )));
    }
    Ok(((fraction * n as f64 + 0.5).floor() as usize).clamp(1, n))
}

/// Rows of SemDeDup similarity computed per product.
const BLOCK: usize = 512;
/// Earlier rows compared per product: one `BLOCK x COLS` product (a few ms) is the
/// longest stretch between two cancellation checks, and bounds its memory.
const COLS: usize = 2048;

/// SemDeDup over each cluster: `(duplicate_of, similarity)`.
fn dedup_clusters(
    p: &Prep,
    eps: f64,
    order: Order,
    seed: u64,
    progress: &Progress,
) -> Result<(Vec<i64>, Vec<f32>), PruneError> {
    if !(eps > 0.0 && eps <= 1.0) {
        return Err(PruneError::Invalid(format!(
            "eps must be in (0, 1], got {eps}"
        )));
    }
    let thr = 1.0 - eps;
    let d = p.d;
    let isa = Isa::detect();
    let per: Vec<Vec<(usize, i64, f32)>> = p
        .members
        .par_iter()
        .map(|mem| -> Result<Vec<(usize, i64, f32)>, PruneError> {
            progress.check()?;
            let mut ord = mem.clone();
            order_items(&mut ord, &p.score, order, seed, p.ids);
            let m = ord.len();
            let mut out = Vec::with_capacity(m);
            if m == 0 {
                return Ok(out);
            }
            let e: Vec<f32> = ord
                .iter()
                .flat_map(|&i| {
                    let r = p.nrm[i];
                    p.x.row(i).iter().map(move |&v| (f64::from(v) / r) as f32)
                })
                .collect();
            out.push((ord[0], -1, f32::NAN));
            progress.inc(1);
            // Row blocks are independent (row j looks at rows 0..j only), so a big
            // cluster is split over the pool too; columns come in chunks of `COLS`, so
            // cancellation is noticed within one `BLOCK x COLS` product.
            let blocks: Vec<(usize, usize)> = (1..m)
                .step_by(BLOCK)
                .map(|j0| (j0, (j0 + BLOCK).min(m)))
                .collect();
            let parts: Vec<Vec<(usize, i64, f32)>> = blocks
                .par_iter()
                .map(|&(j0, j1)| -> Result<_, PruneError> {
                    let a = MatRef::new(&e[j0 * d..j1 * d], j1 - j0, d)?;
                    // Per row: the best earlier row so far (position in `ord`, cosine).
                    let mut best: Vec<Option<(usize, f32)>> = vec![None; j1 - j0];
                    for c0 in (0..j1 - 1).step_by(COLS) {
                        progress.check()?;
                        let c1 = (c0 + COLS).min(j1 - 1);
                        let b = MatRef::new(&e[c0 * d..c1 * d], c1 - c0, d)?;
                        let s = matmul_nt(isa, a, None, b, None)?;
                        for (r, row) in s.chunks_exact(c1 - c0).enumerate() {
                            let hi = (j0 + r).min(c1);
                            let bst = &mut best[r];
                            for i in c0..hi {
                                let v = row[i - c0];
                                let better = match *bst {
                                    None => true,
                                    Some((bi, bv)) => v > bv || (v == bv && ord[i] < ord[bi]),
                                };
                                if better {
                                    *bst = Some((i, v));
                                }
                            }
                        }
                    }
                    let rows = best
                        .into_iter()
                        .enumerate()
                        .map(|(r, b)| {
                            let (bi, sim) = b.expect("every row after the first has a predecessor");
                            let dup = if f64::from(sim) > thr {
                                ord[bi] as i64
                            } else {
                                -1
                            };
                            (ord[j0 + r], dup, sim)
                        })
                        .collect();
                    progress.inc((j1 - j0) as u64);
                    Ok(rows)
                })
                .collect::<Result<_, _>>()?;
            for p in parts {
                out.extend(p);
            }
            Ok(out)
        })
        .collect::<Result<_, _>>()?;
    let mut dup = vec![-1i64; p.n];
    let mut sim = vec![f32::NAN; p.n];
    for c in per {
        for (i, du, s) in c {
            dup[i] = du;
            sim[i] = s;
        }
    }
    Ok((dup, sim))
}

fn per_cluster_counts(p: &Prep, keep: &[bool]) -> Vec<i64> {
    let mut c = vec![0i64; p.k];
    for (i, &kp) in keep.iter().enumerate() {
        if kp {
            c[p.labels[i]] += 1;
        }
    }
    c
}

/// SemDeDup given a clustering. See the module documentation.
pub fn semdedup(
    x: MatRef<'_>,
    labels: &[i64],
    centroids: MatRef<'_>,
    eps: f64,
    prefer: Order,
    seed: u64,
    progress: &Progress,
) -> Result<PruneOutput, PruneError> {
    semdedup_ids(x, labels, centroids, None, eps, prefer, seed, progress)
}

#[allow(clippy::too_many_arguments)]
fn semdedup_ids(
    x: MatRef<'_>,
    labels: &[i64],
    centroids: MatRef<'_>,
    ids: Option<&[i64]>,
    eps: f64,
    prefer: Order,
    seed: u64,
    progress: &Progress,
) -> Result<PruneOutput, PruneError> {
    let p = prepare(x, labels, centroids, ids)?;
    progress.set_total(p.n as u64);
    let (dup, sim) = dedup_clusters(&p, eps, prefer, seed, progress)?;
    let keep: Vec<bool> = dup.iter().map(|&d| d < 0).collect();
    let kpc = per_cluster_counts(&p, &keep);
    Ok(PruneOutput {
        keep,
        duplicate_of: dup,
        similarity: sim,
        score: p.score,
        keep_per_cluster: kpc,
        complexity: Vec::new(),
        prefer,
    })
}

/// The groups [`Prefer::Auto`] counts: `n_classes` when given (at least 1), else the
/// non-empty clusters.
fn auto_groups(p: &Prep, n_classes: Option<usize>) -> Result<usize, PruneError> {
    match n_classes {
        Some(0) => Err(PruneError::Invalid(
            "n_classes must be at least 1".to_string(),
        )),
        Some(c) => Ok(c),
        None => Ok(p.members.iter().filter(|m| !m.is_empty()).count()),
    }
}

/// Options of [`ssp`].
#[derive(Debug, Clone, PartialEq)]
pub struct SspOptions {
    pub keep_fraction: f64,
    pub prefer: Prefer,
    /// Classes counted by [`Prefer::Auto`]; `None`: the non-empty clusters.
    pub n_classes: Option<usize>,
    pub seed: u64,
}

/// SSP given a clustering: keep `round(keep_fraction · n)` items ranked globally by
/// cosine distance to their own centroid (`prefer` = which end is kept).
pub fn ssp(
    x: MatRef<'_>,
    labels: &[i64],
    centroids: MatRef<'_>,
    o: &SspOptions,
    progress: &Progress,
) -> Result<PruneOutput, PruneError> {
    ssp_ids(x, labels, centroids, None, o, progress)
}

fn ssp_ids(
    x: MatRef<'_>,
    labels: &[i64],
    centroids: MatRef<'_>,
    ids: Option<&[i64]>,
    o: &SspOptions,
    progress: &Progress,
) -> Result<PruneOutput, PruneError> {
    let p = prepare(x, labels, centroids, ids)?;
    let nk = keep_count(p.n, o.keep_fraction)?;
    let prefer = o.prefer.resolve(nk, auto_groups(&p, o.n_classes)?);
    select(p, nk, prefer, o.seed, progress)
}

/// Keep the `nk` items `prefer` puts first over all of `p`.
fn select(
    p: Prep,
    nk: usize,
    prefer: Order,
    seed: u64,
    progress: &Progress,
) -> Result<PruneOutput, PruneError> {
    let mut idx: Vec<usize> = (0..p.n).collect();
    order_items(&mut idx, &p.score, prefer, seed, p.ids);
    let mut mask = vec![false; p.n];
    for &i in &idx[..nk] {
        mask[i] = true;
    }
    progress.inc(p.n as u64);
    let kpc = per_cluster_counts(&p, &mask);
    Ok(PruneOutput {
        keep: mask,
        duplicate_of: vec![-1; p.n],
        similarity: vec![f32::NAN; p.n],
        score: p.score,
        keep_per_cluster: kpc,
        complexity: Vec::new(),
        prefer,
    })
}

/// Options of [`dbp`].
#[derive(Debug, Clone, PartialEq)]
pub struct DbpOptions {
    pub keep_fraction: f64,
    pub n_neighbors: usize,
    pub temperature: f64,
    pub balance: f64,
    pub prefer: Prefer,
    /// Classes counted by [`Prefer::Auto`]; `None`: the non-empty clusters.
    pub n_classes: Option<usize>,
    pub dedup_eps: Option<f64>,
    pub seed: u64,
}

/// A pruning method and its options, for callers that pick the method at run time.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// [`semdedup`] with threshold `eps`, member order and seed (`Prefer::Auto` is
    /// refused: SemDeDup fixes no kept count in advance).
    SemDeDup { eps: f64, prefer: Prefer, seed: u64 },
    /// [`ssp`].
    Ssp(SspOptions),
    /// [`dbp`].
    Dbp(DbpOptions),
    /// Keep exactly `count` items, put first by the resolved order `prefer` over every
    /// row (ties by id): the per-cluster step of [`dbp`] once a distributed caller knows
    /// the cluster's count and has resolved [`Prefer::Auto`] over the whole set.
    Select {
        count: usize,
        prefer: Order,
        seed: u64,
    },
}

impl Method {
    /// Run the method on `x` clustered by `labels` / `centroids`.
    pub fn run(
        &self,
        x: MatRef<'_>,
        labels: &[i64],
        centroids: MatRef<'_>,
        progress: &Progress,
    ) -> Result<PruneOutput, PruneError> {
        self.run_ids(x, labels, centroids, None, progress)
    }

    /// [`Method::run`] on rows that are a part of a larger set, with their global `ids`
    /// (strictly increasing): seeded random orders then draw by global id, so a cluster
    /// processed on its own gives what it gives inside the whole set.
    pub fn run_ids(
        &self,
        x: MatRef<'_>,
        labels: &[i64],
        centroids: MatRef<'_>,
        ids: Option<&[i64]>,
        progress: &Progress,
    ) -> Result<PruneOutput, PruneError> {
        match *self {
            Method::SemDeDup { eps, prefer, seed } => {
                let order = prefer.fixed().ok_or_else(|| {
                    PruneError::Invalid(
                        "prefer=\"auto\" does not apply to semdedup: it chooses from the kept \
                         count, which SemDeDup does not fix in advance; pass \"hard\", \"easy\" \
                         or \"random\""
                            .to_string(),
                    )
                })?;
                semdedup_ids(x, labels, centroids, ids, eps, order, seed, progress)
            }
            Method::Ssp(ref o) => ssp_ids(x, labels, centroids, ids, o, progress),
            Method::Dbp(ref o) => dbp_ids(x, labels, centroids, ids, o, progress),
            Method::Select {
                count,
                prefer,
                seed,
            } => {
                let p = prepare(x, labels, centroids, ids)?;
                if count > p.n {
                    return Err(PruneError::Invalid(format!(
                        "cannot keep {count} of {} items",
                        p.n
                    )));
                }
                select(p, count, prefer, seed, progress)
            }
        }
    }
}

/// Integer keep counts: `x_j = clip(λ P_j, lb_j, n_j)` with `λ` found by bisection so
/// that `Σ x ≤ total` as closely as `f64` allows, floors, then the remaining units to the
/// largest fractional parts (ties to the lower cluster), then by `P` to clusters with
/// room. `Σ n_j >= total` and `Σ lb_j <= total` are required.
pub fn capped_simplex_counts(p: &[f64], lb: &[usize], cap: &[usize], total: usize) -> Vec<usize> {
    let f = |lam: f64| -> f64 {
        p.iter()
            .zip(lb.iter().zip(cap))
            .map(|(&pj, (&l, &c))| (lam * pj).clamp(l as f64, c as f64))
            .sum()
    };
    let t = total as f64;
    let mut hi = 1.0f64;
    let mut guard = 0;
    while f(hi) < t && guard < 2000 {
        hi *= 2.0;
        guard += 1;
    }
    let mut lo = 0.0f64;
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if f(mid) <= t {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let x: Vec<f64> = p
        .iter()
        .zip(lb.iter().zip(cap))
        .map(|(&pj, (&l, &c))| (lo * pj).clamp(l as f64, c as f64))
        .collect();
    let mut cnt: Vec<usize> = x.iter().map(|v| v.floor() as usize).collect();
    let mut rem = total.saturating_sub(cnt.iter().sum());
    let mut by_frac: Vec<usize> = (0..p.len()).collect();
    by_frac.sort_by(|&a, &b| {
        (x[b] - x[b].floor())
            .total_cmp(&(x[a] - x[a].floor()))
            .then(a.cmp(&b))
    });
    for &j in &by_frac {
        if rem == 0 {
            break;
        }
        if x[j] > x[j].floor() && cnt[j] < cap[j] {
            cnt[j] += 1;
            rem -= 1;
        }
    }
    if rem > 0 {
        let mut by_p: Vec<usize> = (0..p.len()).collect();
        by_p.sort_by(|&a, &b| p[b].total_cmp(&p[a]).then(a.cmp(&b)));
        for &j in &by_p {
            let add = (cap[j] - cnt[j]).min(rem);
            cnt[j] += add;
            rem -= add;
        }
    }
    cnt
}

/// Centroid similarities [`inter_distances`] holds at once, in bytes: one product block
/// and its transpose, whatever `k`.
const INTER_BLOCK_BYTES: usize = 64 << 20;

/// Centroids per block of [`inter_distances`] for `k` centroids: two `k x B` `f32`
/// blocks fit in [`INTER_BLOCK_BYTES`] (at least one centroid, at most `k`).
fn inter_block_rows(k: usize) -> usize {
    (INTER_BLOCK_BYTES / 2 / std::mem::size_of::<f32>() / k.max(1)).clamp(1, k.max(1))
}

/// DBP's `d_inter`: for each unit centroid, the mean cosine distance `1 − cos` to its
/// `l` nearest other centroids, the `l` smallest distances added in ascending order
/// (NaN for every centroid when `l == 0`).
///
/// The `k x k` similarity matrix is never built: centroids come in blocks of `rows`,
/// and a block's similarities to all centroids come from `matmul_nt(all, block)`
/// (`k x rows`, parallel over the `k` rows), transposed so that each centroid's
/// similarities are contiguous. The values are those of the full product
/// `matmul_nt(all, all)`: [`crate::gemm`] computes every entry as the same FMA chain
/// over the depth, wherever the entry lies and whatever the operands' row counts, and
/// the chain for `(m, j)` equals the chain for `(j, m)` (the two factors of each
/// product are swapped, which does not change an IEEE product or FMA).
///
/// `progress` counts one unit per centroid, added after each block; a cancellation is
/// noticed before every block and between the rows of a block, so it stops the work
/// within one block's product (at most [`INTER_BLOCK_BYTES`] of similarities).
fn inter_distances(
    unit: MatRef<'_>,
    l: usize,
    rows: usize,
    progress: &Progress,
) -> Result<Vec<f64>, PruneError> {
    let (k, d) = (unit.rows(), unit.cols());
    if l == 0 {
        progress.check()?;
        progress.inc(k as u64);
        return Ok(crate::alloc::try_vec(
            f64::NAN,
            k,
            "the inter-cluster distances",
        )?);
    }
    assert!(
        l < k && rows > 0,
        "1 <= l < k and a block of at least one row"
    );
    let isa = Isa::detect();
    let what = "a block of centroid similarities";
    let rows = rows.min(k);
    let mut tr = crate::alloc::try_vec(0.0f32, crate::alloc::checked_len(rows, k, what)?, what)?;
    let mut inter = crate::alloc::try_with_capacity(k, "the inter-cluster distances")?;
    for j0 in (0..k).step_by(rows) {
        progress.check()?;
        let b = rows.min(k - j0);
        let block = MatRef::new(&unit.as_slice()[j0 * d..(j0 + b) * d], b, d)?;
        // s[m * b + j] = cos(centroid m, centroid j0 + j)
        let s = matmul_nt(isa, unit, None, block, None)?;
        let t = &mut tr[..b * k];
        // transpose in groups of 16 block columns (one cache line of `s` per row m)
        const G: usize = 16;
        t.par_chunks_mut(G * k).enumerate().for_each(|(g, out)| {
            let c0 = g * G;
            let w = out.len() / k;
            for (m, src) in s.chunks_exact(b).enumerate() {
                for (jj, &v) in src[c0..c0 + w].iter().enumerate() {
                    out[jj * k + m] = v;
                }
            }
        });
        let part: Vec<f64> = t
            .par_chunks(k)
            .enumerate()
            .map_init(
                || crate::alloc::try_with_capacity::<f64>(k, "a row of centroid distances"),
                |buf, (jj, sim)| -> Result<f64, PruneError> {
                    progress.check()?;
                    let buf = buf.as_mut().map_err(|e| *e)?;
                    let j = j0 + jj;
                    buf.clear();
                    buf.extend(
                        sim.iter()
                            .enumerate()
                            .filter(|&(m, _)| m != j)
                            .map(|(_, &c)| 1.0 - f64::from(c)),
                    );
                    // the l smallest, then in ascending order: the same values, added in
                    // the same order, as a full sort would give
                    buf.select_nth_unstable_by(l - 1, f64::total_cmp);
                    let near = &mut buf[..l];
                    near.sort_by(f64::total_cmp);
                    Ok(near.iter().sum::<f64>() / l as f64)
                },
            )
            .collect::<Result<_, PruneError>>()?;
        inter.extend(part);
        progress.inc(b as u64);
    }
    Ok(inter)
}

/// The DBP allocation from per-cluster statistics: `(keep counts, complexity)`.
///
/// `unit_centroids` are the L2-normalised centroids (`k x d`), `intra[j]` the mean
/// cosine distance of cluster `j`'s surviving members to its centroid (summed in
/// ascending row order; NaN for a cluster with none), `sizes[j]` their number, `total`
/// the number of samples to keep over all clusters ([`keep_count`] of the input size).
/// [`dbp`] calls it after its per-cluster pass; a distributed caller reduces the
/// per-cluster statistics of its shards and calls it once.
///
/// The centroid distances are `O(k^2 d)` work: `progress` gets one unit per centroid
/// (`k` in all; the caller declares the total) and a cancellation stops it within one
/// block of centroids, returning [`PruneError::Cancelled`].
pub fn dbp_counts(
    unit_centroids: MatRef<'_>,
    intra: &[f64],
    sizes: &[usize],
    total: usize,
    o: &DbpOptions,
    progress: &Progress,
) -> Result<(Vec<usize>, Vec<f64>), PruneError> {
    check_dbp_options(o)?;
    let k = unit_centroids.rows();
    if intra.len() != k || sizes.len() != k {
        return Err(PruneError::Invalid(format!(
            "intra ({}) and sizes ({}) must have one entry per centroid ({k})",
            intra.len(),
            sizes.len()
        )));
    }
    let n_alive: usize = sizes.iter().sum();
    let l = o.n_neighbors.min(k - 1);
    let inter = inter_distances(unit_centroids, l, inter_block_rows(k), progress)?;
    let mut cx: Vec<f64> = intra.iter().zip(&inter).map(|(a, b)| a * b).collect();
    let finite: Vec<f64> = cx.iter().copied().filter(|v| v.is_finite()).collect();
    let fill = if finite.is_empty() {
        1.0
    } else {
        finite.iter().sum::<f64>() / finite.len() as f64
    };
    cx.iter_mut().for_each(|v| {
        if !v.is_finite() {
            *v = fill
        }
    });
    let mx = cx.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = cx
        .iter()
        .map(|c| ((c - mx) / o.temperature).exp())
        .collect();
    let z: f64 = e.iter().sum();
    let prob: Vec<f64> = e.iter().map(|v| v / z).collect();
    let counts = if total >= n_alive {
        sizes.to_vec()
    } else {
        let base = ((total as f64 / k as f64) * o.balance).floor() as usize;
        let lb: Vec<usize> = sizes
            .iter()
            .map(|&s| base.min(s.saturating_sub(1)))
            .collect();
        capped_simplex_counts(&prob, &lb, sizes, total)
    };
    Ok((counts, cx))
}

/// Density-based pruning given a clustering. See the module documentation.
pub fn dbp(
    x: MatRef<'_>,
    labels: &[i64],
    centroids: MatRef<'_>,
    o: &DbpOptions,
    progress: &Progress,
) -> Result<PruneOutput, PruneError> {
    dbp_ids(x, labels, centroids, None, o, progress)
}

fn check_dbp_options(o: &DbpOptions) -> Result<(), PruneError> {
    if !(o.temperature > 0.0 && o.temperature.is_finite()) {
        return Err(PruneError::Invalid(format!(
            "temperature must be positive, got {}",
            o.temperature
        )));
    }
    if !(0.0..=1.0).contains(&o.balance) {
        return Err(PruneError::Invalid(format!(
            "balance must be in [0, 1], got {}",
            o.balance
        )));
    }
    if o.n_neighbors == 0 {
        return Err(PruneError::Invalid("n_neighbors must be at least 1".into()));
    }
    Ok(())
}

fn dbp_ids(
    x: MatRef<'_>,
    labels: &[i64],
    centroids: MatRef<'_>,
    ids: Option<&[i64]>,
    o: &DbpOptions,
    progress: &Progress,
) -> Result<PruneOutput, PruneError> {
    check_dbp_options(o)?;
    let p = prepare(x, labels, centroids, ids)?;
    let total = keep_count(p.n, o.keep_fraction)?;
    // the SemDeDup pass (n), the centroid distances (k), the selection (n)
    let passes = if o.dedup_eps.is_some() { 2 } else { 1 };
    progress.set_total(p.n as u64 * passes + p.k as u64);
    let (dup, sim) = match o.dedup_eps {
        Some(eps) => dedup_clusters(&p, eps, Order::Hard, o.seed, progress)?,
        None => (vec![-1i64; p.n], vec![f32::NAN; p.n]),
    };
    let alive: Vec<Vec<usize>> = p
        .members
        .iter()
        .map(|m| m.iter().copied().filter(|&i| dup[i] < 0).collect())
        .collect();
    let sizes: Vec<usize> = alive.iter().map(Vec::len).collect();
    let intra: Vec<f64> = alive
        .iter()
        .map(|m| m.iter().map(|&i| p.score[i]).sum::<f64>() / m.len() as f64)
        .collect();
    let cm = MatRef::new(&p.cn, p.k, p.d)?;
    let (counts, cx) = dbp_counts(cm, &intra, &sizes, total, o, progress)?;
    let kept = counts.iter().sum();
    let prefer = o.prefer.resolve(kept, auto_groups(&p, o.n_classes)?);
    let mut keep = vec![false; p.n];
    for (j, mem) in alive.iter().enumerate() {
        let mut m = mem.clone();
        order_items(&mut m, &p.score, prefer, o.seed, p.ids);
        for &i in &m[..counts[j]] {
            keep[i] = true;
        }
    }
    progress.inc(p.n as u64);
    Ok(PruneOutput {
        keep,
        duplicate_of: dup,
        similarity: sim,
        score: p.score,
        keep_per_cluster: counts.iter().map(|&c| c as i64).collect(),
        complexity: cx,
        prefer,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capped_counts_sum_exactly() {
        let p = [0.5, 0.3, 0.2];
        let cap = [10, 2, 100];
        for total in 1..=112 {
            let lb: Vec<usize> = cap
                .iter()
                .map(|&c: &usize| (total / 6).min(c - 1))
                .collect();
            let c = capped_simplex_counts(&p, &lb, &cap, total);
            assert_eq!(c.iter().sum::<usize>(), total);
            for j in 0..3 {
                assert!(c[j] <= cap[j] && c[j] >= lb[j]);
            }
        }
    }

    #[test]
    fn semdedup_removes_exact_copy_pairwise() {
        // three identical rows and one different; centroid at the mean
        let x = [1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
        let c = [1.0f32, 1.0];
        let xm = MatRef::new(&x, 4, 2).unwrap();
        let cm = MatRef::new(&c, 1, 2).unwrap();
        let r = semdedup(xm, &[0; 4], cm, 0.01, Order::Hard, 0, &Progress::new()).unwrap();
        assert_eq!(r.keep.iter().filter(|&&k| k).count(), 2);
        assert_eq!(r.duplicate_of[1], 0);
        assert_eq!(r.duplicate_of[2], 0);
        assert_eq!(r.duplicate_of[3], -1);
    }

    proptest::proptest! {
        /// Counts sum exactly to the total, respect the bounds, and are monotone in
        /// `P` among clusters with room on both sides (water-filling).
        #[test]
        fn capped_counts_properties(
            w in proptest::collection::vec(0.01f64..10.0, 1..12),
            caps in proptest::collection::vec(1usize..50, 12),
            frac in 0.01f64..1.0,
        ) {
            let k = w.len();
            let z: f64 = w.iter().sum();
            let p: Vec<f64> = w.iter().map(|v| v / z).collect();
            let cap = &caps[..k];
            let total = ((cap.iter().sum::<usize>() as f64 * frac) as usize).max(1);
            let lb: Vec<usize> = cap.iter().map(|&c| (total / (2 * k)).min(c - 1)).collect();
            let c = capped_simplex_counts(&p, &lb, cap, total);
            proptest::prop_assert_eq!(c.iter().sum::<usize>(), total);
            for j in 0..k {
                proptest::prop_assert!(c[j] >= lb[j] && c[j] <= cap[j]);
            }
            for a in 0..k {
                for b in 0..k {
                    if p[a] > p[b] && c[a] < cap[a] && c[b] > lb[b] {
                        proptest::prop_assert!(c[a] + 1 >= c[b], "{:?} {:?}", p, c);
                    }
                }
            }
        }
    }

    #[test]
    fn method_run_matches_direct_calls() {
        let x = [
            1.0f32, 0.0, 1.0, 0.0, 0.9, 0.1, 0.0, 1.0, 0.1, 0.9, -1.0, 0.2,
        ];
        let c = [1.0f32, 0.0, 0.0, 1.0];
        let xm = MatRef::new(&x, 6, 2).unwrap();
        let cm = MatRef::new(&c, 2, 2).unwrap();
        let lab = [0i64, 0, 0, 1, 1, 1];
        let pr = Progress::new();
        let dbp_opts = DbpOptions {
            keep_fraction: 0.5,
            n_neighbors: 1,
            temperature: 0.5,
            balance: 0.5,
            prefer: Prefer::Easy,
            n_classes: None,
            dedup_eps: Some(0.01),
            seed: 3,
        };
        let ssp_opts = SspOptions {
            keep_fraction: 0.5,
            prefer: Prefer::Hard,
            n_classes: Some(2),
            seed: 2,
        };
        let cases = [
            (
                Method::SemDeDup {
                    eps: 0.01,
                    prefer: Prefer::Random,
                    seed: 1,
                },
                semdedup(xm, &lab, cm, 0.01, Order::Random, 1, &pr),
            ),
            (
                Method::Ssp(ssp_opts.clone()),
                ssp(xm, &lab, cm, &ssp_opts, &pr),
            ),
            (
                Method::Dbp(dbp_opts.clone()),
                dbp(xm, &lab, cm, &dbp_opts, &pr),
            ),
        ];
        for (m, direct) in cases {
            let via = m.run(xm, &lab, cm, &pr).unwrap();
            let direct = direct.unwrap();
            // NaN-aware comparison of the similarity column
            assert_eq!(via.keep, direct.keep, "{m:?}");
            assert_eq!(via.duplicate_of, direct.duplicate_of, "{m:?}");
            assert_eq!(via.score, direct.score, "{m:?}");
            assert_eq!(via.keep_per_cluster, direct.keep_per_cluster, "{m:?}");
            assert_eq!(via.complexity, direct.complexity, "{m:?}");
            assert_eq!(via.prefer, direct.prefer, "{m:?}");
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&via.similarity), bits(&direct.similarity), "{m:?}");
        }
    }

    #[test]
    fn auto_switches_at_the_per_group_threshold() {
        let t = AUTO_HARD_MIN_PER_GROUP;
        assert_eq!(Prefer::Auto.resolve(t * 10, 10), Order::Hard);
        assert_eq!(Prefer::Auto.resolve(t * 10 - 1, 10), Order::Easy);
        assert_eq!(Prefer::Auto.resolve(t, 1), Order::Hard);
        assert_eq!(Prefer::Auto.resolve(0, 1), Order::Easy);
        assert_eq!(Prefer::Auto.resolve(usize::MAX, usize::MAX), Order::Easy);
        for (p, o) in [
            (Prefer::Hard, Order::Hard),
            (Prefer::Easy, Order::Easy),
            (Prefer::Random, Order::Random),
        ] {
            assert_eq!(p.resolve(0, 5), o);
            assert_eq!(p.resolve(1 << 20, 1), o);
            assert_eq!(Prefer::parse(o.name()).unwrap(), p);
        }
        assert_eq!(Prefer::parse("auto").unwrap(), Prefer::Auto);
        assert!(Prefer::parse("Hard").is_err());
    }

    #[test]
    fn auto_counts_classes_or_non_empty_clusters() {
        // 70 points in clusters 0 and 1 of 3 (cluster 2 is empty): 35 per non-empty
        // cluster, 23 per class for 3 classes
        let n = 70;
        let x: Vec<f32> = (0..n)
            .flat_map(|i| [1.0f32, (i % 7) as f32 * 0.1, (i % 2) as f32, 0.5])
            .collect();
        let c = [
            1.0f32, 0.0, 0.0, 0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0,
        ];
        let xm = MatRef::new(&x, n, 4).unwrap();
        let cm = MatRef::new(&c, 3, 4).unwrap();
        let lab: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let pr = Progress::new();
        let run = |keep_fraction, prefer, n_classes| {
            let o = SspOptions {
                keep_fraction,
                prefer,
                n_classes,
                seed: 0,
            };
            ssp(xm, &lab, cm, &o, &pr)
        };
        let used = |f, p, c| run(f, p, c).unwrap().prefer;
        assert_eq!(used(1.0, Prefer::Auto, None), Order::Hard);
        assert_eq!(used(1.0, Prefer::Auto, Some(2)), Order::Hard);
        assert_eq!(used(1.0, Prefer::Auto, Some(3)), Order::Easy);
        // 64 kept of 70 is the last count that is still 32 per cluster
        assert_eq!(used(64.0 / 70.0, Prefer::Auto, None), Order::Hard);
        assert_eq!(used(63.0 / 70.0, Prefer::Auto, None), Order::Easy);
        assert_eq!(used(0.5, Prefer::Random, Some(1)), Order::Random);
        // auto keeps exactly what the resolved order keeps
        let auto = run(0.5, Prefer::Auto, None).unwrap();
        assert_eq!(auto.keep, run(0.5, Prefer::Easy, None).unwrap().keep);
        assert!(run(1.0, Prefer::Auto, Some(0)).is_err());
        let m = Method::SemDeDup {
            eps: 0.1,
            prefer: Prefer::Auto,
            seed: 0,
        };
        let e = m.run(xm, &lab, cm, &pr).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("semdedup"), "{e}");
    }

    #[test]
    fn a_cluster_alone_with_global_ids_equals_it_inside_the_whole_set() {
        let (n, d) = (60usize, 3usize);
        let s = Stream::new(11);
        let x: Vec<f32> = (0..n * d)
            .map(|i| s.uniform(i as u64) as f32 - 0.3)
            .collect();
        let c = [1.0f32, 0.0, 0.0, 0.0, 1.0, 0.0];
        let lab: Vec<i64> = (0..n as i64).map(|i| i % 2).collect();
        let (xm, cm) = (
            MatRef::new(&x, n, d).unwrap(),
            MatRef::new(&c, 2, d).unwrap(),
        );
        let pr = Progress::new();
        let ids: Vec<i64> = (0..n as i64).filter(|i| i % 2 == 1).collect();
        let rows: Vec<f32> = ids
            .iter()
            .flat_map(|&i| x[i as usize * d..(i as usize + 1) * d].to_vec())
            .collect();
        let part_x = MatRef::new(&rows, ids.len(), d).unwrap();
        let part_c = MatRef::new(&c[d..], 1, d).unwrap();
        let zeros = vec![0; ids.len()];
        for prefer in [Prefer::Random, Prefer::Hard] {
            let m = Method::SemDeDup {
                eps: 0.05,
                prefer,
                seed: 7,
            };
            let whole = m.run(xm, &lab, cm, &pr).unwrap();
            let part = m.run_ids(part_x, &zeros, part_c, Some(&ids), &pr).unwrap();
            for (j, &g) in ids.iter().enumerate() {
                let dup = part.duplicate_of[j];
                let dup = if dup < 0 { -1 } else { ids[dup as usize] };
                assert_eq!(dup, whole.duplicate_of[g as usize], "{m:?} row {g}");
                assert_eq!(part.keep[j], whole.keep[g as usize], "{m:?} row {g}");
                assert_eq!(part.score[j], whole.score[g as usize], "{m:?} row {g}");
            }
        }
        // DBP's per-cluster choice: Select with the cluster's count and the order the
        // whole run resolved keeps exactly what the whole run keeps there
        for prefer in [Prefer::Random, Prefer::Easy, Prefer::Auto] {
            let o = DbpOptions {
                keep_fraction: 0.4,
                n_neighbors: 1,
                temperature: 0.5,
                balance: 0.5,
                prefer,
                n_classes: None,
                dedup_eps: None,
                seed: 5,
            };
            let whole = dbp(xm, &lab, cm, &o, &pr).unwrap();
            let sel = Method::Select {
                count: whole.keep_per_cluster[1] as usize,
                prefer: whole.prefer,
                seed: 5,
            };
            let part = sel
                .run_ids(part_x, &zeros, part_c, Some(&ids), &pr)
                .unwrap();
            for (j, &g) in ids.iter().enumerate() {
                assert_eq!(part.keep[j], whole.keep[g as usize], "{prefer:?} row {g}");
            }
            let too_many = Method::Select {
                count: ids.len() + 1,
                prefer: whole.prefer,
                seed: 5,
            };
            let e = too_many.run_ids(part_x, &zeros, part_c, Some(&ids), &pr);
            assert!(matches!(e, Err(PruneError::Invalid(_))));
        }
        // ids must increase
        let bad = Method::Ssp(SspOptions {
            keep_fraction: 0.5,
            prefer: Prefer::Hard,
            n_classes: None,
            seed: 0,
        })
        .run_ids(xm, &lab, cm, Some(&vec![0; n]), &pr);
        assert!(matches!(bad, Err(PruneError::Invalid(_))));
    }

    /// `d_inter` as the unblocked computation: the full `k x k` product, every row
    /// sorted in full.
    fn inter_unblocked(unit: MatRef<'_>, l: usize) -> Vec<f64> {
        let k = unit.rows();
        let cc = matmul_nt(Isa::detect(), unit, None, unit, None).unwrap();
        (0..k)
            .map(|j| {
                if l == 0 {
                    return f64::NAN;
                }
                let mut dist: Vec<f64> = (0..k)
                    .filter(|&m| m != j)
                    .map(|m| 1.0 - f64::from(cc[j * k + m]))
                    .collect();
                dist.sort_by(f64::total_cmp);
                dist[..l].iter().sum::<f64>() / l as f64
            })
            .collect()
    }

    #[test]
    fn inter_distances_in_blocks_equal_the_full_matrix_bit_for_bit() {
        // depth above one GEMM depth chunk (384), duplicate and opposite centroids (ties)
        let (k, d) = (41usize, 397usize);
        let s = Stream::new(3);
        let mut c: Vec<f32> = (0..k * d)
            .map(|i| s.uniform(i as u64) as f32 - 0.5)
            .collect();
        let row5 = c[5 * d..6 * d].to_vec();
        c[17 * d..18 * d].copy_from_slice(&row5);
        c[30 * d..31 * d].copy_from_slice(&row5);
        let neg: Vec<f32> = row5.iter().map(|v| -v).collect();
        c[9 * d..10 * d].copy_from_slice(&neg);
        // nearly orthogonal centroids: cosines ~1e-11, so the distances fill all 53 bits
        // and their sum depends on the order they are added in
        let mut e: Vec<f32> = (0..k * d)
            .map(|i| (s.uniform(i as u64 + (1 << 40)) as f32 - 0.5) * 1e-11)
            .collect();
        (0..k).for_each(|m| e[m * d + m] = 1.0);
        let bits = |v: &[f64]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for x in [&c, &e] {
            let unit = normalized(MatRef::new(x, k, d).unwrap()).unwrap();
            let um = MatRef::new(&unit, k, d).unwrap();
            for l in [0, 1, 2, 5, k - 1] {
                let want = bits(&inter_unblocked(um, l));
                for rows in [1, 3, 7, 16, 20, k - 1, k, k + 5] {
                    let got = inter_distances(um, l, rows, &Progress::new()).unwrap();
                    assert_eq!(bits(&got), want, "l = {l}, {rows} rows per block");
                    let one = crate::parallel::install(1, || {
                        inter_distances(um, l, rows, &Progress::new()).unwrap()
                    });
                    assert_eq!(bits(&one), want, "l = {l}, {rows} rows per block, 1 thread");
                }
            }
        }
        let unit = normalized(MatRef::new(&c, k, d).unwrap()).unwrap();
        // a single centroid has no neighbour
        let one = MatRef::new(&unit[..d], 1, d).unwrap();
        assert!(inter_distances(one, 0, 1, &Progress::new()).unwrap()[0].is_nan());
    }

    #[test]
    fn dbp_counts_reports_progress_and_stops_when_cancelled() {
        use std::sync::{Arc, Mutex, OnceLock, Weak};
        let (k, d) = (40usize, 8usize);
        let s = Stream::new(5);
        let c: Vec<f32> = (0..k * d)
            .map(|i| s.uniform(i as u64) as f32 - 0.5)
            .collect();
        let unit = normalized(MatRef::new(&c, k, d).unwrap()).unwrap();
        let um = MatRef::new(&unit, k, d).unwrap();
        let intra: Vec<f64> = (0..k).map(|j| 0.1 + j as f64 / 100.0).collect();
        let sizes = vec![50usize; k];
        let o = DbpOptions {
            keep_fraction: 0.5,
            n_neighbors: 3,
            temperature: 0.5,
            balance: 0.5,
            prefer: Prefer::Hard,
            n_classes: None,
            dedup_eps: None,
            seed: 0,
        };
        // one unit per centroid, the total declared by the caller
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sn = seen.clone();
        let p = Progress::with_callback(move |done, total| sn.lock().unwrap().push((done, total)));
        p.set_total(k as u64);
        dbp_counts(um, &intra, &sizes, 1000, &o, &p).unwrap();
        assert_eq!(p.snapshot(), (k as u64, k as u64));
        assert_eq!(seen.lock().unwrap().last(), Some(&(k as u64, k as u64)));
        // blocks of 7 centroids: progress after each block, same distances
        let p = Progress::new();
        let blocked = inter_distances(um, 3, 7, &p).unwrap();
        assert_eq!(p.snapshot().0, k as u64);
        let full = inter_distances(um, 3, k, &Progress::new()).unwrap();
        assert_eq!(blocked, full);
        // cancelled before it starts: no block runs
        let p = Progress::new();
        p.cancel();
        let r = dbp_counts(um, &intra, &sizes, 1000, &o, &p);
        assert!(matches!(r, Err(PruneError::Cancelled(_))), "{r:?}");
        assert_eq!(p.snapshot().0, 0);
        // cancelled once the first block of 7 is done: the next block never runs
        let slot: Arc<OnceLock<Weak<Progress>>> = Arc::new(OnceLock::new());
        let sl = slot.clone();
        let p = Arc::new(Progress::with_callback(move |done, _| {
            if done > 0 {
                if let Some(p) = sl.get().and_then(Weak::upgrade) {
                    p.cancel();
                }
            }
        }));
        slot.set(Arc::downgrade(&p)).unwrap();
        let r = inter_distances(um, 3, 7, &p);
        assert!(matches!(r, Err(PruneError::Cancelled(_))), "{r:?}");
        assert_eq!(p.snapshot().0, 7);
        // and the whole DBP pass reports k more units than its rows
        let x: Vec<f32> = (0..200 * d)
            .map(|i| s.uniform(i as u64 + 7777) as f32 - 0.5)
            .collect();
        let xm = MatRef::new(&x, 200, d).unwrap();
        let labels: Vec<i64> = (0..200).map(|i| i % k as i64).collect();
        let p = Progress::new();
        dbp(xm, &labels, MatRef::new(&c, k, d).unwrap(), &o, &p).unwrap();
        assert_eq!(p.snapshot(), (200 + k as u64, 200 + k as u64));
    }

    #[test]
    fn inter_blocks_stay_within_their_memory_bound() {
        for k in [
            1usize,
            2,
            1000,
            2896,
            2897,
            100_000,
            10_000_000,
            100_000_000,
        ] {
            let b = inter_block_rows(k);
            assert!(b >= 1 && b <= k, "k = {k}: {b}");
            assert!(b == 1 || 2 * b * k * 4 <= INTER_BLOCK_BYTES, "k = {k}: {b}");
        }
        // small k: one block, the whole matrix
        assert_eq!(inter_block_rows(1000), 1000);
        assert_eq!(inter_block_rows(100_000), 83);
    }

    #[test]
    fn random_keys_give_the_random_order() {
        // the keys sort the rows exactly as the seeded random preference does
        let n = 300usize;
        let score = vec![0.0; n];
        let ids: Vec<i64> = (0..n as i64).map(|i| 3 * i + 1).collect();
        for seed in [0u64, 1, 42, u64::MAX] {
            let keys = random_keys(&ids, seed).unwrap();
            for (i, &g) in ids.iter().enumerate() {
                // the documented draw: the top 32 bits of the uniform variate
                let u = Stream::new(seed).uniform(g as u64);
                assert_eq!(f64::from(keys[i]) / 4_294_967_296.0, u);
            }
            for g in [None, Some(&ids[..])] {
                let mut idx: Vec<usize> = (0..n).collect();
                order_items(&mut idx, &score, Order::Random, seed, g);
                let k: Vec<u32> = match g {
                    Some(g) => random_keys(g, seed).unwrap(),
                    None => random_keys(&(0..n as i64).collect::<Vec<_>>(), seed).unwrap(),
                };
                let mut want: Vec<usize> = (0..n).collect();
                want.sort_by_key(|&a| (k[a], a));
                assert_eq!(idx, want, "seed {seed}");
            }
        }
        assert!(random_keys(&[], 3).unwrap().is_empty());
        let e = random_keys(&[0, -2], 3).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.to_string().contains("ids[1] = -2"), "{e}");
    }

    #[test]
    fn keep_count_rounds() {
        assert_eq!(keep_count(10, 0.25).unwrap(), 3);
        assert_eq!(keep_count(10, 0.01).unwrap(), 1);
        assert!(keep_count(10, 0.0).is_err());
        assert!(keep_count(10, 1.5).is_err());
    }
}
