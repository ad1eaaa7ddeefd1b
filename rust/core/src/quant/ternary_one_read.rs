//! Nearest-rounding `ternary` (absmean) with one read of the input.
//!
//! The codes need the scale `s = 1 / max(gamma, 1e-5)`, and `gamma` needs every value,
//! so the plain route reads the input twice: a memory-bound pass for `gamma`, then one
//! for the codes. Here a small sample first brackets the scale, `s_lo <= s <= s_hi`. One
//! pass then computes `gamma`'s exact chunk sums (the order of [`super::ternary`]'s own
//! reduction, so the scale is bit-identical) and writes every code under `s_lo`, noting
//! the values whose code differs under `s_hi`. A code is monotone in `s` (`fl(v * s)`
//! is, for a fixed `v`), so a value whose codes agree at both ends of the bracket has
//! that code for every `s` inside it: once the exact `s` is known, only the noted
//! values are recomputed. When the exact `s` falls outside the bracket (a sample that
//! misjudged the input), or a unit noted more values than [`UNIT_CAP`], the codes of
//! those units are recomputed from the input: the result is the same bytes either way.

use rayon::prelude::*;

use std::mem::MaybeUninit;

use super::passes::{nonfinite, par_out_uninit_with, NONFINITE};
use super::ternary::{chunk_finish, chunk_row, gamma_of, or_codes};
use super::{QuantError, CHUNK};
use crate::alloc::try_with_capacity;
use crate::Progress;

/// Inputs shorter than this (in values) take the two-pass route: the second read of a
/// 16 MB input mostly hits the cache.
const MIN_LEN: usize = 1 << 22;
/// The bracket's sample: this many evenly spaced runs of [`SAMPLE_RUN`] values.
const SAMPLE_RUNS: usize = 1024;
const SAMPLE_RUN: usize = 256;
/// The most values one unit notes; past it the unit is recomputed from the input.
const UNIT_CAP: usize = CHUNK / 4;

/// One unit of work: [`CHUNK`] packed bytes and the four input chunks they hold.
#[derive(Default)]
struct Unit {
    /// `(sum of |v|, largest bits(|v|))` of each quarter's input chunk.
    parts: [(f64, u32); 4],
    /// `position << 2 | quarter` and bits of each value whose code the bracket leaves
    /// open.
    keys: Vec<u32>,
    vals: Vec<u32>,
    /// More than [`UNIT_CAP`] values were open (or their room could not be had): the
    /// unit is recomputed from its input.
    overflow: bool,
}

impl Unit {
    /// Note one open value; past [`UNIT_CAP`] values, or when their memory cannot be
    /// had, mark the unit for recomputation instead.
    #[inline(always)]
    fn note(&mut self, key: u32, bits: u32) {
        if self.overflow {
            return;
        }
        let n = self.keys.len();
        if n == self.keys.capacity() || n == self.vals.capacity() {
            let more = n.max(1024).min(UNIT_CAP - n.min(UNIT_CAP));
            if more == 0
                || self.keys.try_reserve_exact(more).is_err()
                || self.vals.try_reserve_exact(more).is_err()
            {
                self.overflow = true;
                return;
            }
        }
        self.keys.push(key);
        self.vals.push(bits);
    }
}

/// A bracket `(s_lo, s_hi)` for the scale `s` from runs spread over `x`: the mean |v|
/// of the runs, widened by 4.5 standard errors of that mean (between runs) and 0.05%.
fn bracket(x: &[f32]) -> (f32, f32) {
    let n = x.len();
    let step = (n - SAMPLE_RUN) / (SAMPLE_RUNS - 1);
    let means: Vec<f64> = (0..SAMPLE_RUNS)
        .into_par_iter()
        .map(|b| {
            let mut acc = [0f32; 16];
            for q in x[b * step..b * step + SAMPLE_RUN].chunks_exact(16) {
                for k in 0..16 {
                    acc[k] += q[k].abs();
                }
            }
            acc.iter().map(|&a| a as f64).sum::<f64>() / SAMPLE_RUN as f64
        })
        .collect();
    let k = SAMPLE_RUNS as f64;
    let g = means.iter().sum::<f64>() / k;
    let var = means.iter().map(|m| (m - g) * (m - g)).sum::<f64>() / (k - 1.0);
    let se = (var / k).sqrt();
    let d = if g > 0.0 && g.is_finite() {
        (4.5 * se / g + 5e-4).min(0.5)
    } else {
        1e-3
    };
    let s = 1.0 / g.max(1e-5);
    ((s / (1.0 + d)) as f32, (s * (1.0 + d)) as f32)
}

/// The one-read quantization of `x` into `q_len` packed bytes (`q_len = R * inner`, see
/// [`super::ternary`]); `(bytes, s)`, or `None` where it would not pay: quarters that do
/// not start on the [`CHUNK`] grid, a short input, or a CPU without AVX-512 (the
/// portable loop, kept for tests and tails, is slower than two vectorised passes).
pub(super) fn quantize(
    x: &[f32],
    q_len: usize,
    p: &Progress,
) -> Result<Option<(Vec<u8>, f32)>, QuantError> {
    if x.len() < MIN_LEN || !q_len.is_multiple_of(CHUNK) || !crate::cpu::avx512bw() {
        return Ok(None);
    }
    let (s_lo, s_hi) = bracket(x);
    one_read(x, q_len, s_lo, s_hi, crate::cpu::avx512bw(), p).map(Some)
}

/// The input chunk of quarter `i` in unit `u` (empty past the end of `x`).
fn segment(x: &[f32], q_len: usize, u: usize, i: usize) -> &[f32] {
    let a = (u * CHUNK + i * q_len).min(x.len());
    &x[a..(a + CHUNK).min(x.len())]
}

/// [`quantize`] with a given bracket (any bracket gives the same bytes).
fn one_read(
    x: &[f32],
    q_len: usize,
    s_lo: f32,
    s_hi: f32,
    wide: bool,
    p: &Progress,
) -> Result<(Vec<u8>, f32), QuantError> {
    let t = Thresholds {
        wide,
        ..Thresholds::new(s_lo, s_hi)
    };
    assert!(q_len.is_multiple_of(CHUNK) && q_len <= x.len());
    let n_units = q_len / CHUNK;
    let mut units: Vec<Unit> = try_with_capacity(n_units, "the ternary work units")?;
    units.resize_with(n_units, Unit::default);
    let body = |u: usize, out: &mut [MaybeUninit<u8>], unit: &mut [Unit]| {
        let unit = &mut unit[0];
        for i in 0..4 {
            let xs = segment(x, q_len, u, i);
            if !xs.is_empty() {
                unit.parts[i] = first_read(xs, out, i, t, unit);
            }
        }
    };
    // SAFETY: quarter 0 of every unit is a whole CHUNK (`q_len` is a multiple of it and
    // at most `x.len()`), and `first_read` stores a code for each of its values.
    let mut data = unsafe { par_out_uninit_with(q_len, CHUNK, &mut units, 1, p, body)? };
    // every input chunk, in order: quarter i of unit u is chunk u + i * n_units
    let mut parts: Vec<(f64, u32)> = try_with_capacity(4 * n_units, "the ternary chunk sums")?;
    for i in 0..4 {
        for (u, unit) in units.iter().enumerate() {
            if !segment(x, q_len, u, i).is_empty() {
                parts.push(unit.parts[i]);
            }
        }
    }
    debug_assert_eq!(parts.len(), x.len().div_ceil(CHUNK));
    let (gamma, m) = gamma_of(&parts, x.len());
    // the AVX-512 kernel leaves `bits` alone: a NaN or infinity shows in the sum instead
    // (a sum of finite float32 magnitudes cannot overflow float64)
    if m >= NONFINITE || !gamma.is_finite() {
        return Err(nonfinite(x));
    }
    let s = 1.0f32 / gamma.max(1e-5);
    let inside = s_lo <= s && s <= s_hi;
    let f_s = first_nonzero(s);
    data.par_chunks_mut(CHUNK)
        .zip(units.par_iter())
        .enumerate()
        .for_each(|(u, (out, unit))| {
            if p.is_cancelled() {
                return;
            }
            if inside && !unit.overflow {
                // a noted value was written as code 1 (its |v| is below f_lo); it moves
                // to 2 or 0 when its |v| reaches the exact threshold
                let keys = &unit.keys;
                for (e, (&key, &b)) in keys.iter().zip(&unit.vals).enumerate() {
                    #[cfg(target_arch = "x86_64")]
                    if let Some(&ahead) = keys.get(e + 16) {
                        // SAFETY: a prefetch has no effect beyond the cache; the address
                        // lies inside `out` (notes hold positions of this unit)
                        unsafe {
                            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
                            _mm_prefetch::<_MM_HINT_T0>(
                                out.as_ptr().add((ahead >> 2) as usize) as *const i8
                            );
                        }
                    }
                    if b & 0x7fff_ffff >= f_s {
                        let (at, shift) = ((key >> 2) as usize, 2 * (key & 3));
                        out[at] ^= (if b >> 31 == 0 { 3 } else { 1 }) << shift;
                    }
                }
            } else {
                out.fill(0);
                for i in 0..4 {
                    let xs = segment(x, q_len, u, i);
                    or_codes(&mut out[..xs.len()], xs, s, 2 * i as u32);
                }
            }
        });
    p.check()?;
    Ok((data, s))
}

/// The smallest `bits(a)`, `a >= 0`, with `fl(a * s) > 0.5`, for a positive `s`: the
/// magnitudes whose code is not 1 (`fl(a * s)` is monotone in `a`, so a bisection over
/// the ordered bit patterns finds it exactly; infinity's when nothing finite qualifies).
fn first_nonzero(s: f32) -> u32 {
    let (mut lo, mut hi) = (0u32, 0x7f80_0000u32); // fl(0 s) <= 0.5 < fl(inf s)
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if f32::from_bits(mid) * s > 0.5 {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    hi
}

/// The first (only) read of one input chunk: its `(sum, bits)` in the order of
/// [`chunk_finish`], its codes under `s_lo` written into `out` at quarter `i` (stored for
/// quarter 0, which initialises `out[..xs.len()]`; ORed into the bytes for the others),
/// and the values whose code under `s_hi` differs noted in `unit`.
///
/// A code is 1 when `bits(|v|) < first_nonzero(s)`, else 2 for positive `v` and 0 for
/// negative; with `f_hi = first_nonzero(s_hi) <= f_lo = first_nonzero(s_lo)`, the codes
/// under the two ends differ exactly when `f_hi <= bits(|v|) < f_lo`.
fn first_read(
    xs: &[f32],
    out: &mut [MaybeUninit<u8>],
    i: usize,
    t: Thresholds,
    unit: &mut Unit,
) -> (f64, u32) {
    let mut acc = [0f64; 16];
    let mut bits = [0u32; 16];
    #[cfg(target_arch = "x86_64")]
    let done = if t.wide {
        // SAFETY: the CPU supports AVX-512F, DQ and BW (checked when `t` was made);
        // quarter 0 (same unit, earlier) stored the bytes that the others OR into.
        unsafe { avx512::first_read(xs, out, i, t, unit, &mut acc) }
    } else {
        0
    };
    #[cfg(not(target_arch = "x86_64"))]
    let done = 0;
    // the rest (all of it without AVX-512), in the same order
    let mut it = xs[done..].chunks_exact(16);
    let mut at = done;
    for q in &mut it {
        chunk_row(&mut acc, &mut bits, q);
        for &v in q {
            t.write(v, &mut out[at], i, at, unit);
            at += 1;
        }
    }
    for &v in it.remainder() {
        t.write(v, &mut out[at], i, at, unit);
        at += 1;
    }
    chunk_finish(&acc, &bits, it.remainder())
}

/// The code thresholds of both ends of a bracket, as bit patterns of `|v|`.
#[derive(Clone, Copy)]
struct Thresholds {
    /// `first_nonzero(s_lo)`: the codes written in the first read.
    f_lo: u32,
    /// `first_nonzero(s_hi)`.
    f_hi: u32,
    /// Whether the AVX-512 kernel may run.
    wide: bool,
}

impl Thresholds {
    fn new(s_lo: f32, s_hi: f32) -> Self {
        let (f_lo, f_hi) = (first_nonzero(s_lo), first_nonzero(s_hi));
        debug_assert!(f_hi <= f_lo);
        Thresholds {
            f_lo,
            f_hi,
            wide: crate::cpu::avx512bw(),
        }
    }

    /// Write the code of `v` (at position `at` of quarter `i`) into `o` (stored for
    /// quarter 0, ORed into the byte quarter 0 stored for the others), noting it when the
    /// bracket leaves it open.
    #[inline(always)]
    fn write(self, v: f32, o: &mut MaybeUninit<u8>, i: usize, at: usize, unit: &mut Unit) {
        let b = v.to_bits();
        let a = b & 0x7fff_ffff;
        let c = if a < self.f_lo {
            1
        } else if b >> 31 == 0 {
            2
        } else {
            0
        };
        if i == 0 {
            o.write(c);
        } else {
            // SAFETY: quarter 0 stored this byte (see `first_read`)
            unsafe { *o.assume_init_mut() |= c << (2 * i) };
        }
        if (self.f_hi..self.f_lo).contains(&a) {
            unit.note((at as u32) << 2 | i as u32, b);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;
    use std::mem::MaybeUninit;

    use super::{Thresholds, Unit};

    /// [`super::first_read`]'s whole 64-value blocks with AVX-512; returns how many
    /// values it took. Same sums (lane `k` of `acc` gets `|v|` of values `16 j + k`, in
    /// order), codes and notes as the portable loop; it does not track the largest
    /// `bits(|v|)` (the caller sees NaN and infinity in the sum).
    ///
    /// # Safety
    /// The CPU must support AVX-512F, DQ and BW; `out` must be at least as long as `xs`,
    /// and for `i > 0` its first `xs.len()` bytes initialised (quarter 0 stores them).
    #[target_feature(enable = "avx512f,avx512dq,avx512bw")]
    pub(super) unsafe fn first_read(
        xs: &[f32],
        out: &mut [MaybeUninit<u8>],
        i: usize,
        t: Thresholds,
        unit: &mut Unit,
        acc: &mut [f64; 16],
    ) -> usize {
        assert!(out.len() >= xs.len());
        let blocks = xs.len() / 64;
        let xp = xs.as_ptr();
        let op = out.as_mut_ptr() as *mut u8;
        let abs = _mm512_set1_epi32(0x7fff_ffff);
        let f_lo = _mm512_set1_epi32(t.f_lo as i32);
        let f_hi = _mm512_set1_epi32(t.f_hi as i32);
        // four 16-bit masks as one 64-bit mask
        let cat = |m: [u16; 4]| -> u64 {
            let lo = _mm512_kunpackw(m[1] as u32, m[0] as u32);
            let hi = _mm512_kunpackw(m[3] as u32, m[2] as u32);
            _mm512_kunpackd(hi as u64, lo as u64)
        };
        // the codes 1 and 2 at this quarter's bits
        let one = _mm512_set1_epi8(1 << (2 * i));
        let two = _mm512_set1_epi8(2 << (2 * i));
        let mut acc_lo = _mm512_loadu_pd(acc.as_ptr());
        let mut acc_hi = _mm512_loadu_pd(acc.as_ptr().add(8));
        // the open masks of a batch of blocks, noted after the batch: a call inside the
        // vector loop would keep the accumulators in memory
        let mut opens = [0u64; 64];
        for j0 in (0..blocks).step_by(64) {
            let batch = (blocks - j0).min(64);
            // bit `jb`: block `jb` of the batch has open values (about a quarter of the
            // blocks of Gaussian data: a branch per block would mispredict on each)
            let mut any = 0u64;
            for (jb, open_out) in opens[..batch].iter_mut().enumerate() {
                let j = j0 + jb;
                let (mut nz, mut neg, mut hi) = ([0u16; 4], [0u16; 4], [0u16; 4]);
                for r in 0..4 {
                    let b = _mm512_loadu_si512(xp.add(64 * j + 16 * r) as *const _);
                    let a = _mm512_and_si512(b, abs);
                    let af = _mm512_castsi512_ps(a);
                    acc_lo = _mm512_add_pd(acc_lo, _mm512_cvtps_pd(_mm512_castps512_ps256(af)));
                    acc_hi =
                        _mm512_add_pd(acc_hi, _mm512_cvtps_pd(_mm512_extractf32x8_ps::<1>(af)));
                    nz[r] = _mm512_cmpge_epu32_mask(a, f_lo);
                    neg[r] = _mm512_movepi32_mask(b);
                    hi[r] = _mm512_cmpge_epu32_mask(a, f_hi);
                }
                let (nz, neg, hi) = (cat(nz), cat(neg), cat(hi));
                let open = hi & !nz;
                let c = _mm512_mask_mov_epi8(one, nz & !neg, two);
                let c = _mm512_maskz_mov_epi8(!(nz & neg), c);
                let o = op.add(64 * j) as *mut __m512i;
                if i == 0 {
                    _mm512_storeu_si512(o, c);
                } else {
                    _mm512_storeu_si512(o, _mm512_or_si512(_mm512_loadu_si512(o), c));
                }
                *open_out = open;
                any |= u64::from(open != 0) << jb;
            }
            while any != 0 {
                let jb = any.trailing_zeros() as usize;
                any &= any - 1;
                let mut open = opens[jb];
                while open != 0 {
                    let k = 64 * (j0 + jb) + open.trailing_zeros() as usize;
                    unit.note((k as u32) << 2 | i as u32, (*xp.add(k)).to_bits());
                    open &= open - 1;
                }
            }
        }
        _mm512_storeu_pd(acc.as_mut_ptr(), acc_lo);
        _mm512_storeu_pd(acc.as_mut_ptr().add(8), acc_hi);
        64 * blocks
    }
}

#[cfg(test)]
mod tests {
    use super::super::ternary::{code, ternary_gamma};
    use super::super::ScaleMode;
    use super::*;

    /// Gaussian-like values from a fixed xorshift stream, each row scaled by `1 + row % 7`.
    fn data(n: usize, inner: usize, seed: u64) -> Vec<f32> {
        let mut st = seed | 1;
        (0..n)
            .map(|e| {
                let mut u = 0f32;
                for _ in 0..4 {
                    st ^= st << 13;
                    st ^= st >> 7;
                    st ^= st << 17;
                    u += (st >> 40) as f32 / (1u64 << 24) as f32;
                }
                (u - 2.0) * (1 + (e / inner) % 7) as f32
            })
            .collect()
    }

    /// The two-pass definition: `gamma` from [`ternary_gamma`], then each code.
    fn reference(x: &[f32], q_len: usize) -> (Vec<u8>, f32) {
        let g = ternary_gamma(x, ScaleMode::AbsMean, &Progress::new()).unwrap();
        let s = 1.0f32 / g.max(1e-5);
        let mut out = vec![0u8; q_len];
        for (e, &v) in x.iter().enumerate() {
            out[e % q_len] |= code(v, s) << (2 * (e / q_len));
        }
        (out, s)
    }

    fn check(x: &[f32], q_len: usize, brackets: &[(f32, f32)]) {
        let (want, s) = reference(x, q_len);
        for &(lo, hi) in brackets {
            for wide in [false, crate::cpu::avx512bw()] {
                let got = one_read(x, q_len, lo, hi, wide, &Progress::new()).unwrap();
                assert_eq!(
                    got.1.to_bits(),
                    s.to_bits(),
                    "scale, bracket {lo} {hi} wide {wide}"
                );
                assert!(got.0 == want, "codes, bracket {lo} {hi} wide {wide}");
            }
        }
    }

    /// Brackets around the exact `s`: the sample's, exact, missing below and above,
    /// and one so wide that every unit overflows its notes.
    fn brackets(x: &[f32], s: f32) -> Vec<(f32, f32)> {
        let mut b = vec![
            (s, s),
            (s * 0.9, s * 0.99),
            (s * 1.01, s * 1.1),
            (s * 0.5, s * 2.0),
        ];
        if x.len() >= SAMPLE_RUNS * SAMPLE_RUN {
            b.push(bracket(x));
        }
        b
    }

    #[test]
    fn one_read_equals_two_passes_for_any_bracket() {
        // 2 units; quarter 3 ends 1000 values early (a partial last chunk); 13 rows of
        // 40330 values, so rows straddle chunks
        let q_len = 2 * CHUNK;
        for (n, inner) in [
            (4 * q_len, 4096),
            (4 * q_len - 1000, 40330),
            (3 * q_len + 77, 1),
        ] {
            let x = data(n, inner, n as u64);
            let s = reference(&x, q_len).1;
            check(&x, q_len, &brackets(&x, s));
        }
    }

    #[test]
    fn ties_zeros_and_tiny_values() {
        let q_len = CHUNK;
        // half the magnitudes a, half 3a: gamma = 2a and a * s = 0.5 exactly (a tie)
        let x: Vec<f32> = (0..4 * q_len)
            .map(|e| {
                let m = if e % 2 == 0 { 0.375f32 } else { 1.125 };
                if e % 3 == 0 {
                    -m
                } else {
                    m
                }
            })
            .collect();
        let s = reference(&x, q_len).1;
        check(&x, q_len, &brackets(&x, s));
        // all zeros (s = 1e5), signed zeros and subnormals
        let z: Vec<f32> = (0..4 * q_len)
            .map(|e| match e % 4 {
                0 => 0.0,
                1 => -0.0,
                2 => f32::from_bits(e as u32 & 0xff),
                _ => -f32::from_bits(e as u32 & 0x7f_ffff),
            })
            .collect();
        let s = reference(&z, q_len).1;
        check(&z, q_len, &brackets(&z, s));
        let zeros = vec![0f32; 4 * q_len];
        check(&zeros, q_len, &[(1e5, 1e5), (9e4, 2e5), (1.0, 2.0)]);
    }

    #[test]
    fn values_exactly_at_each_threshold() {
        // magnitudes at (and one below) the thresholds of s, 0.995 s and 1.005 s, for the
        // s of the data itself: iterate until s no longer moves
        let q_len = CHUNK;
        let mut x = data(4 * q_len, 1000, 5);
        let mut s = reference(&x, q_len).1;
        for _ in 0..20 {
            for (g, m) in [1.0f32, 0.995, 1.005].into_iter().enumerate() {
                let f = first_nonzero(s * m);
                for e in (0..x.len()).skip(97 * g + 5).step_by(301) {
                    let b = if e % 2 == 0 { f } else { f - 1 };
                    x[e] = f32::from_bits(b | (((e / 3) as u32 & 1) << 31));
                }
            }
            let t = reference(&x, q_len).1;
            if t == s {
                break;
            }
            s = t;
        }
        assert_eq!(reference(&x, q_len).1, s, "no fixed point");
        check(
            &x,
            q_len,
            &[
                (s, s),
                (s * 0.995, s * 1.005),
                (s * 0.995, s),
                (s, s * 1.005),
            ],
        );
    }

    #[test]
    fn nan_and_infinity_are_errors_on_both_kernels() {
        let q_len = CHUNK;
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            for at in [0, 100, 4 * q_len - 1] {
                let mut x = data(4 * q_len, 512, 3);
                x[at] = bad;
                for wide in [false, crate::cpu::avx512bw()] {
                    let e = one_read(&x, q_len, 0.5, 2.0, wide, &Progress::new());
                    assert!(matches!(e, Err(QuantError::Invalid(_))), "{bad} at {at}");
                }
            }
        }
    }

    #[test]
    fn same_bytes_on_any_thread_count() {
        let q_len = 2 * CHUNK;
        let x = data(4 * q_len - 5, 300, 9);
        let (lo, hi) = bracket(&x);
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| one_read(&x, q_len, lo, hi, crate::cpu::avx512bw(), &Progress::new()))
                .unwrap()
        };
        assert!(run(1) == run(3));
    }

    #[test]
    fn first_nonzero_is_the_exact_threshold() {
        for s in [1e-38f32, 0.3, 1.0, 1.2535, 7.0, 1e5] {
            let f = first_nonzero(s);
            assert!(f32::from_bits(f) * s > 0.5 || f == 0x7f80_0000);
            assert!(f32::from_bits(f - 1) * s <= 0.5);
        }
    }

    #[test]
    fn layouts_that_do_not_suit_take_the_two_pass_route() {
        let p = Progress::new();
        assert!(quantize(&[1.0; 100], CHUNK, &p).unwrap().is_none());
        let x = vec![1.0f32; MIN_LEN];
        assert!(quantize(&x, MIN_LEN / 4 + 1, &p).unwrap().is_none());
        let fits = quantize(&x, MIN_LEN / 4, &p).unwrap();
        assert_eq!(fits.is_some(), crate::cpu::avx512bw());
    }
}
