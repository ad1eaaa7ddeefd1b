//! Nearest-mean classification: per-class sums, scores against class means, and
//! predictions that are exact in `f64`.

use rayon::prelude::*;

use super::{check_pair, inverse_norm, inverse_norms, sq_norms, Metric, NeighborsError};
use crate::gemm::{self, Isa};
use crate::linalg::MatRef;
use crate::parallel::fixed_chunks;
use crate::progress::Progress;

/// Fewest columns per parallel task in [`class_sums`].
const MIN_STRIP: usize = 32;

/// Add the rows of `x` to the running per-class sums: `sums[c, :] += x[i, :]` and
/// `counts[c] += 1` for every row `i` with `labels[i] == c`, rows in order.
///
/// `sums` is `n_classes x d`, row-major, `f64`. The work is split by columns, and every
/// column adds its rows in row order, so the sums are bit-identical for every thread
/// count, and feeding the rows in several calls (streaming) gives exactly the sums of
/// one call over all rows.
pub fn class_sums(
    x: MatRef<'_>,
    labels: &[u32],
    sums: &mut [f64],
    counts: &mut [u64],
    progress: &Progress,
) -> Result<(), NeighborsError> {
    x.require_non_empty("X")?;
    let (n, d) = (x.rows(), x.cols());
    let n_classes = counts.len();
    if labels.len() != n {
        return Err(NeighborsError::Labels(format!(
            "y has {} labels but X has {n} rows",
            labels.len()
        )));
    }
    if sums.len() != n_classes * d {
        return Err(NeighborsError::Labels(format!(
            "sums must be {n_classes} x {d}, got {} values",
            sums.len()
        )));
    }
    if let Some(&bad) = labels.iter().find(|&&l| l as usize >= n_classes) {
        return Err(NeighborsError::Labels(format!(
            "label index {bad} out of range for {n_classes} classes"
        )));
    }
    // Every column is summed in row order whatever the strips are, so their width may
    // follow the thread count (wide strips read X with better locality).
    let width = d
        .div_ceil(2 * rayon::current_num_threads())
        .next_multiple_of(8)
        .max(MIN_STRIP);
    let strips = fixed_chunks(d, width);
    progress.set_total(strips.len() as u64);
    let sums_ro: &[f64] = sums;
    let parts: Vec<Vec<f64>> = strips
        .par_iter()
        .map(|cols| {
            progress.check()?;
            let w = cols.len();
            let mut acc = vec![0.0f64; n_classes * w];
            for c in 0..n_classes {
                acc[c * w..(c + 1) * w]
                    .copy_from_slice(&sums_ro[c * d + cols.start..c * d + cols.end]);
            }
            for (i, &l) in labels.iter().enumerate() {
                let l = l as usize;
                let dst = &mut acc[l * w..(l + 1) * w];
                for (a, &v) in dst.iter_mut().zip(&x.row(i)[cols.clone()]) {
                    *a += f64::from(v);
                }
            }
            progress.inc(1);
            Ok(acc)
        })
        .collect::<Result<_, NeighborsError>>()?;
    // f64 sums of finite f32 values cannot overflow, so a non-finite sum means a NaN or
    // infinity in X: locate it (saving a separate pass over X in the common case).
    if parts.iter().any(|p| p.iter().any(|v| !v.is_finite())) {
        x.require_finite("X")?;
    }
    for (cols, acc) in strips.iter().zip(parts) {
        let w = cols.len();
        for c in 0..n_classes {
            sums[c * d + cols.start..c * d + cols.end].copy_from_slice(&acc[c * w..(c + 1) * w]);
        }
    }
    for &l in labels {
        counts[l as usize] += 1;
    }
    Ok(())
}

/// The means as `f32` (cosine: normalised in `f64` first; an all-zero mean stays zero,
/// so its cosine with every row is `0`).
fn means_f32(means: &[f64], d: usize, metric: Metric) -> Vec<f32> {
    let mut out = Vec::with_capacity(means.len());
    for m in means.chunks_exact(d) {
        let scale = if metric == Metric::Cosine {
            inverse_norm(m.iter().map(|v| v * v).sum::<f64>())
        } else {
            1.0
        };
        out.extend(m.iter().map(|v| (v * scale) as f32));
    }
    out
}

/// Scores of every row of `x` against every class mean (`n x n_classes`, row-major):
/// negative squared euclidean distances (`-((||x||² + ||m||²) − 2 x·m)`, clamped to
/// `<= 0`) or cosine similarities, computed in `f32` with [`crate::gemm`].
pub fn nearest_mean_scores(
    x: MatRef<'_>,
    means: &[f64],
    metric: Metric,
) -> Result<Vec<f32>, NeighborsError> {
    scores_and_norms(x, means, metric).map(|(s, _)| s)
}

/// [`nearest_mean_scores`] plus the squared row norms of `x`.
fn scores_and_norms(
    x: MatRef<'_>,
    means: &[f64],
    metric: Metric,
) -> Result<(Vec<f32>, Vec<f32>), NeighborsError> {
    let d = x.cols();
    if d == 0 || means.is_empty() || !means.len().is_multiple_of(d) {
        return Err(NeighborsError::Labels(format!(
            "means must be a non-empty (n_classes x {d}) array"
        )));
    }
    let m32 = means_f32(means, d, metric);
    let mm = MatRef::new(&m32, means.len() / d, d)?;
    check_pair(x, "X", mm, "class means")?;
    let isa = Isa::detect();
    let n_classes = mm.rows();
    match metric {
        Metric::Cosine => {
            let inv = inverse_norms(x);
            // The cosine error bound does not need the norms.
            Ok((
                gemm::matmul_nt(isa, x, Some(&inv), mm, None)?,
                vec![1.0; x.rows()],
            ))
        }
        Metric::Dot => Ok((gemm::matmul_nt(isa, x, None, mm, None)?, sq_norms(x))),
        Metric::Euclidean => {
            let xn = sq_norms(x);
            let mut s = gemm::matmul_nt(isa, x, None, mm, None)?;
            let mn = sq_norms(mm);
            s.par_chunks_mut(n_classes).zip(&xn).for_each(|(row, &q)| {
                for (v, &m) in row.iter_mut().zip(&mn) {
                    let dist = (q + m) - 2.0 * *v;
                    *v = -(if dist < 0.0 { 0.0 } else { dist });
                }
            });
            Ok((s, xn))
        }
    }
}

/// Index of the nearest class mean for every row of `x` (ties: lowest index).
///
/// Candidates are ranked with the fast `f32` scores of [`nearest_mean_scores`]; a row
/// whose best and second-best scores are closer than a bound on their rounding error
/// is re-decided with exact-as-possible `f64` arithmetic (`Σ (x − m)²`, or the cosine
/// in `f64`), so predictions equal an `f64` computation.
pub fn nearest_mean_predict(
    x: MatRef<'_>,
    means: &[f64],
    metric: Metric,
    progress: &Progress,
) -> Result<Vec<u32>, NeighborsError> {
    let (scores, xn) = scores_and_norms(x, means, metric)?;
    progress.check()?;
    let d = x.cols();
    let n_classes = means.len() / d;
    let mean_norms: Vec<f64> = means
        .chunks_exact(d)
        .map(|m| m.iter().map(|v| v * v).sum::<f64>().sqrt())
        .collect();
    let mn_max = mean_norms.iter().fold(0.0f64, |a, &b| a.max(b));
    // A bound on |score error| of each f32 score, doubled for the gap between two
    // scores (u = unit roundoff): the dot product of an FMA chain errs by at most
    // ~d·u·|x|·|m|; the euclidean expansion adds a few roundings of ||x||² + ||m||².
    let u = f64::from(f32::EPSILON) / 2.0;
    let dd = d as f64 + 2.0;
    let tol_of = |xn2: f32| -> f32 {
        let xn2 = f64::from(xn2);
        let t = match metric {
            Metric::Cosine => 4.0 * dd * u,
            Metric::Dot => 4.0 * dd * u * xn2.sqrt() * mn_max,
            Metric::Euclidean => {
                4.0 * u * (2.0 * (xn2 + mn_max * mn_max) + dd * xn2.sqrt() * mn_max)
            }
        };
        t as f32
    };
    let out: Vec<u32> = scores
        .par_chunks(n_classes)
        .enumerate()
        .map(|(i, row)| {
            let (mut best, mut bi) = (f32::NEG_INFINITY, 0usize);
            let mut second = f32::NEG_INFINITY;
            for (c, &s) in row.iter().enumerate() {
                if s > best {
                    second = best;
                    best = s;
                    bi = c;
                } else if s > second {
                    second = s;
                }
            }
            let tol = tol_of(xn[i]);
            if n_classes > 1 && best - second <= tol {
                bi = refine(x.row(i), means, &mean_norms, metric);
            }
            bi as u32
        })
        .collect();
    Ok(out)
}

/// The best class for one row, in `f64`.
fn refine(x: &[f32], means: &[f64], mean_norms: &[f64], metric: Metric) -> usize {
    let xn = x
        .iter()
        .map(|&v| f64::from(v) * f64::from(v))
        .sum::<f64>()
        .sqrt();
    let mut best = (f64::NEG_INFINITY, 0usize);
    for (c, m) in means.chunks_exact(x.len()).enumerate() {
        let s = match metric {
            Metric::Euclidean => -x
                .iter()
                .zip(m)
                .map(|(&a, &b)| (f64::from(a) - b) * (f64::from(a) - b))
                .sum::<f64>(),
            Metric::Dot => x
                .iter()
                .zip(m)
                .map(|(&a, &b)| f64::from(a) * b)
                .sum::<f64>(),
            // an all-zero row or mean has cosine 0 with everything
            Metric::Cosine if xn == 0.0 || mean_norms[c] == 0.0 => 0.0,
            Metric::Cosine => {
                x.iter()
                    .zip(m)
                    .map(|(&a, &b)| f64::from(a) * b)
                    .sum::<f64>()
                    / (xn * mean_norms[c])
            }
        };
        if s > best.0 {
            best = (s, c);
        }
    }
    best.1
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gemm::tests::lcg;
    use crate::parallel::install;

    #[test]
    fn streaming_sums_equal_one_shot_bitwise() {
        let (n, d, c) = (1000, 70, 5);
        let x = lcg(n * d, 1);
        let labels: Vec<u32> = (0..n).map(|i| ((i * 7) % c) as u32).collect();
        let xm = MatRef::new(&x, n, d).unwrap();
        let mut s1 = vec![0.0; c * d];
        let mut c1 = vec![0u64; c];
        install(1, || {
            class_sums(xm, &labels, &mut s1, &mut c1, &Progress::new())
        })
        .unwrap();
        let mut s2 = vec![0.0; c * d];
        let mut c2 = vec![0u64; c];
        for r in [0..3usize, 3..500, 500..1000] {
            let part = MatRef::new(&x[r.start * d..r.end * d], r.len(), d).unwrap();
            install(3, || {
                class_sums(part, &labels[r.clone()], &mut s2, &mut c2, &Progress::new())
            })
            .unwrap();
        }
        assert_eq!(c1, c2);
        assert_eq!(
            s1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            s2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
        // against a naive sum
        for k in 0..c {
            for j in 0..d {
                let naive: f64 = (0..n)
                    .filter(|&i| labels[i] as usize == k)
                    .map(|i| f64::from(x[i * d + j]))
                    .sum();
                assert_eq!(naive, s1[k * d + j]);
            }
        }
    }

    #[test]
    fn predict_matches_f64_brute_force() {
        let (n, d, c) = (500, 9, 6);
        let x = lcg(n * d, 2);
        let means: Vec<f64> = lcg(c * d, 3).iter().map(|&v| f64::from(v) * 0.3).collect();
        let xm = MatRef::new(&x, n, d).unwrap();
        let norms: Vec<f64> = means
            .chunks_exact(d)
            .map(|m| m.iter().map(|v| v * v).sum::<f64>().sqrt())
            .collect();
        for metric in [Metric::Euclidean, Metric::Cosine, Metric::Dot] {
            let got = nearest_mean_predict(xm, &means, metric, &Progress::new()).unwrap();
            for (i, &g) in got.iter().enumerate() {
                assert_eq!(g as usize, refine(xm.row(i), &means, &norms, metric));
            }
        }
    }

    #[test]
    fn cosine_zero_rows_and_means_score_zero() {
        // means: 0 = zero, 1 = (0, 2), 2 = (1, 1); rows: zero, (0, -1), (1, 0), (-1, 0.1)
        let means = [0.0f64, 0.0, 0.0, 2.0, 1.0, 1.0];
        let x = [0.0f32, 0.0, 0.0, -1.0, 1.0, 0.0, -1.0, 0.1];
        let xm = MatRef::new(&x, 4, 2).unwrap();
        let s = nearest_mean_scores(xm, &means, Metric::Cosine).unwrap();
        let h = std::f32::consts::FRAC_1_SQRT_2;
        let c = 0.1 / 1.01f32.sqrt();
        let want = [
            0.0,
            0.0,
            0.0,
            0.0,
            -1.0,
            -h,
            0.0,
            0.0,
            h,
            0.0,
            c,
            -0.9 * h / 1.01f32.sqrt(),
        ];
        for (g, w) in s.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "{s:?}");
        }
        let p = nearest_mean_predict(xm, &means, Metric::Cosine, &Progress::new()).unwrap();
        // a zero row ties everywhere (first class); a zero mean beats negative cosines
        assert_eq!(p, [0, 0, 2, 1]);
    }

    #[test]
    fn bad_labels_are_rejected() {
        let x = [1.0f32, 2.0];
        let xm = MatRef::new(&x, 1, 2).unwrap();
        let mut s = vec![0.0; 2];
        let mut c = vec![0u64; 1];
        assert!(class_sums(xm, &[1], &mut s, &mut c, &Progress::new()).is_err());
        assert!(class_sums(xm, &[0, 0], &mut s, &mut c, &Progress::new()).is_err());
    }
}
