//! Integer formats and NF4.
//!
//! * `int8` / `int4` symmetric (torchao `MappingType.SYMMETRIC`):
//!   `scale = max(amax / ((qmax - qmin) / 2), eps)` (`/127.5` for int8 in [-128, 127],
//!   `/7.5` for int4 in [-8, 7]; eps = float32 machine epsilon),
//!   `q = clamp(round_half_even(x * (1 / scale)), qmin, qmax)`, `x ~ q * scale`.
//!   A fixed scale replaces the absmax rule (per-tensor only).
//! * `int4` asymmetric (torchao, zero point in the float domain):
//!   `scale = max((max - min) / 15, eps)`, `zp = min + 8 scale`,
//!   `q = clamp(round_half_even((x - (zp - 8 scale)) / scale), 0, 15)`,
//!   `x ~ (q - 8) scale + zp`.
//! * Groups run along the last axis and must divide it (per-channel = the whole row,
//!   per-tensor = everything). int8 stores one two's-complement byte per value; int4
//!   stores the nibble `q + 8` (symmetric) or `q` (asymmetric) with element `2i` in the
//!   LOW nibble of byte `i` (torchao's non-tinygemm order, also HF gpt-oss).
//! * `nf4` (bitsandbytes): blocks of `g` (default 64) over the flattened tensor, ragged
//!   tail allowed; float32 absmax per block; `v = x * (1 / absmax)` is assigned to the
//!   code whose value is nearest, using the float32-rounded midpoints (ties go to the
//!   lower index, as bitsandbytes' `x > threshold` tests); packed `q[2i] << 4 | q[2i+1]`
//!   (element `2i` in the HIGH nibble, as bitsandbytes); an odd tail leaves the low
//!   nibble 0.

use super::format::expect_len;
use super::passes::{pieces, quantize_groups, Dst, GroupCodec};
use super::rng::{stochastic_ints, stochastic_nibbles, Affine, Stream};
use super::simd::simd_dispatch;
use super::{
    invalid, Format, PackedRef, QuantError, QuantOptions, Quantized, ScaleMode, Scales, CHUNK,
};
use crate::alloc::{try_vec, try_with_capacity};
use crate::Progress;

/// bitsandbytes' NF4 code book (the published decimals, rounded to float32).
#[allow(clippy::excessive_precision, clippy::unreadable_literal)]
#[rustfmt::skip]
pub const NF4_CODE: [f32; 16] = [
    -1.0,
    -0.6961928009986877,
    -0.5250730514526367,
    -0.39491748809814453,
    -0.28444138169288635,
    -0.18477343022823334,
    -0.09105003625154495,
    0.0,
    0.07958029955625534,
    0.16093020141124725,
    0.24611230194568634,
    0.33791524171829224,
    0.44070982933044434,
    0.5626170039176941,
    0.7229568362236023,
    1.0,
];

/// Midpoints between consecutive NF4 codes (float64 midpoint rounded to float32).
pub fn nf4_thresholds() -> [f32; 15] {
    let mut t = [0f32; 15];
    for (i, ti) in t.iter_mut().enumerate() {
        *ti = ((NF4_CODE[i] as f64 + NF4_CODE[i + 1] as f64) / 2.0) as f32;
    }
    t
}

/// Resolve the group length along the last axis (`cols`) for int8/int4/fp8.
pub(crate) fn resolve_group(
    n: usize,
    cols: usize,
    group: Option<usize>,
    default: Option<usize>,
    f: Format,
) -> Result<usize, QuantError> {
    let g = match group.or(default) {
        None | Some(0) => n,
        Some(g) => g,
    };
    if g != n && !cols.is_multiple_of(g) {
        return invalid(format!(
            "group_size={g} does not divide the last dimension ({cols}) for {}; choose a \
             divisor, -1 for one group per row, or None for per-tensor",
            f.name()
        ));
    }
    Ok(g)
}

pub(crate) fn quantize_int(
    x: &[f32],
    cols: usize,
    opts: &QuantOptions,
    p: &Progress,
) -> Result<Quantized, QuantError> {
    let f = opts.format;
    let n = x.len();
    let is4 = f == Format::Int4;
    let default = if is4 { Some(128) } else { None };
    let g = resolve_group(n, cols, opts.group_size, default, f)?;
    if is4 && g % 2 != 0 {
        return invalid(format!("int4 needs an even group_size, got {g}"));
    }
    let asym = is4 && !opts.symmetric;
    let (qmin, qmax) = if is4 {
        (-8.0f32, 7.0f32)
    } else {
        (-128.0, 127.0)
    };
    let st = super::format::stream(opts.rounding);
    let fixed = match opts.scale {
        ScaleMode::Fixed(s) => Some(s),
        _ => None,
    };
    if let Some(s) = fixed {
        // `x * (1 / scale)` must not turn 0 into NaN, and `qmin * scale` must be finite
        if !(1.0 / s).is_finite() || !(qmin * s).is_finite() {
            return invalid(format!(
                "a fixed {} scale must lie between 1/3.4e38 and 3.4e38/{}, got {s} (its \
                 reciprocal or the dequantized range would overflow float32)",
                f.name(),
                -qmin
            ));
        }
    }
    let half = (qmax - qmin) / 2.0;
    // (scale, zero point) per group
    let (data, params) = match (is4, asym) {
        (true, true) => quantize_groups(x, g, &IntCodec::<true, true> { fixed, half, st }, p)?,
        (true, false) => quantize_groups(x, g, &IntCodec::<true, false> { fixed, half, st }, p)?,
        _ => quantize_groups(x, g, &IntCodec::<false, false> { fixed, half, st }, p)?,
    };
    // The dequantized values of every group, `(q - 8) * scale + zero_point` (asymmetric)
    // or `q * scale`, must be finite at both ends of the code range; only groups whose
    // values come within a few percent of float32's max (or span more than its range)
    // fail this.
    let overflows = |&(sc, zp): &(f32, f32)| {
        if asym {
            !((-8.0 * sc + zp).is_finite() && (7.0 * sc + zp).is_finite())
        } else {
            !(qmin * sc).is_finite()
        }
    };
    if let Some(k) = params.iter().position(overflows) {
        let (lo, hi) = (k * g, (k + 1) * g);
        return invalid(format!(
            "{}: the values of group {k} (flat indices {lo}..{hi}) come too close to \
             float32's max (3.4e38){}: their dequantized values would overflow to \
             infinity; rescale the tensor{}",
            f.name(),
            if asym {
                " or span more than its range"
            } else {
                ""
            },
            if asym { " or use symmetric=True" } else { "" }
        ));
    }
    let mut scales = try_with_capacity(params.len(), "group scales")?;
    scales.extend(params.iter().map(|p| p.0));
    let zps = if asym {
        let mut z = try_with_capacity(params.len(), "zero points")?;
        z.extend(params.iter().map(|p| p.1));
        Some(z)
    } else {
        None
    };
    Ok(Quantized {
        data,
        scales: Scales::F32(scales),
        zero_points: zps,
        tensor_scale: None,
        group_size: g,
    })
}

/// int8 (`IS4 = false`) and int4 (symmetric, or asymmetric with zero points).
struct IntCodec<const IS4: bool, const ASYM: bool> {
    fixed: Option<f32>,
    half: f32,
    st: Option<Stream>,
}

impl<const IS4: bool, const ASYM: bool> GroupCodec for IntCodec<IS4, ASYM> {
    type Stat = (f32, f32, u32);
    type Param = (f32, f32);
    const NUM: usize = 1;
    const DEN: usize = if IS4 { 2 } else { 1 };

    #[inline(always)]
    fn reduce(&self, x: &[f32]) -> Self::Stat {
        if ASYM {
            super::simd::min_max_bits_plain(x)
        } else {
            (0.0, 0.0, super::simd::amax_bits_plain(x))
        }
    }

    #[inline(always)]
    fn combine(a: Self::Stat, b: Self::Stat) -> Self::Stat {
        (
            if b.0 < a.0 { b.0 } else { a.0 },
            if b.1 > a.1 { b.1 } else { a.1 },
            a.2.max(b.2),
        )
    }

    #[inline(always)]
    fn bits(s: &Self::Stat) -> u32 {
        s.2
    }

    #[inline(always)]
    fn finish(&self, (lo, hi, m): Self::Stat) -> Self::Param {
        let eps = f32::EPSILON;
        if ASYM {
            let sc = ((hi - lo) / 15.0).max(eps);
            (sc, lo + sc * 8.0)
        } else {
            let sc = self
                .fixed
                .unwrap_or_else(|| (f32::from_bits(m) / self.half).max(eps));
            (sc, 0.0)
        }
    }

    #[inline(always)]
    fn encode(&self, xs: &[f32], out: &mut [u8], (sc, zp): Self::Param, first: usize) {
        encode_int(
            xs,
            out,
            sc,
            ASYM.then_some(zp),
            IS4,
            self.st.as_ref(),
            first,
        )
    }
}

/// Encode consecutive values of one group (`first` = flat index of `xs[0]`, even for
/// int4): symmetric `v * (1 / scale)` or asymmetric `(v - (zp - 8 scale)) / scale`,
/// rounded half to even (or stochastically) and clamped.
#[inline(always)]
fn encode_int(
    xs: &[f32],
    ob: &mut [u8],
    sc: f32,
    zp: Option<f32>,
    is4: bool,
    st: Option<&Stream>,
    first: usize,
) {
    let (mul, sub, div) = match zp {
        Some(z) => (1.0, z - sc * 8.0, sc),
        None => (1.0 / sc, 0.0, 1.0),
    };
    let asym = zp.is_some();
    let (lo, hi) = match (is4, asym) {
        (true, true) => (0.0f32, 15.0f32),
        (true, false) => (-8.0, 7.0),
        _ => (-128.0, 127.0),
    };
    let bias: i32 = if is4 && !asym { 8 } else { 0 };
    if let Some(st) = st {
        let t = Affine {
            mul,
            sub,
            div,
            asym,
            lo,
            hi,
            bias,
        };
        if is4 {
            stochastic_nibbles(xs, &mut ob[..xs.len() / 2], st, first as u64, t);
        } else {
            stochastic_ints(xs, ob, st, first as u64, t, 0, false);
        }
    } else if is4 {
        if asym {
            for (b, pair) in ob.iter_mut().zip(xs.chunks_exact(2)) {
                let q0 = super::simd::rne_i32(((pair[0] - sub) / div).clamp(lo, hi)) as u8;
                let q1 = super::simd::rne_i32(((pair[1] - sub) / div).clamp(lo, hi)) as u8;
                *b = q0 | (q1 << 4);
            }
        } else {
            for (b, pair) in ob.iter_mut().zip(xs.chunks_exact(2)) {
                let q0 = (super::simd::rne_i32((pair[0] * mul).clamp(lo, hi)) + bias) as u8;
                let q1 = (super::simd::rne_i32((pair[1] * mul).clamp(lo, hi)) + bias) as u8;
                *b = q0 | (q1 << 4);
            }
        }
    } else {
        for (b, &v) in ob.iter_mut().zip(xs) {
            *b = super::simd::rne_i32((v * mul).clamp(-128.0, 127.0)) as u8;
        }
    }
}

pub(crate) fn dequantize_int(
    q: &PackedRef<'_>,
    dst: Dst<'_>,
    p: &Progress,
) -> Result<Vec<f32>, QuantError> {
    let n = dst.len();
    let f = q.format;
    let is4 = f == Format::Int4;
    let g = super::format::check_groups(q, n, is4)?;
    expect_len("data", q.data.len(), if is4 { n / 2 } else { n }, f)?;
    expect_len("scales", q.scales_f32.len(), n / g, f)?;
    if let Some(z) = q.zero_points {
        if !is4 {
            return super::format_err("int8 has no zero points");
        }
        expect_len("zero_points", z.len(), n / g, f)?;
    }
    let per = CHUNK;
    let ic = if is4 { per / 2 } else { per };
    let (scales, zps) = (q.scales_f32, q.zero_points);
    super::passes::par_map_dst(q.data, ic, dst, per, p, |ci, di, o| {
        let start = ci * per;
        simd_dispatch!(di: &[u8], o: &mut [f32], start: usize, g: usize, is4: bool,
                       scales: &[f32], zps: Option<&[f32]>; (); {
            for (off, len, grp) in pieces(start, o.len(), g) {
                let sc = scales[grp];
                let ys = &mut o[off..off + len];
                if is4 {
                    let bytes = &di[off / 2..(off + len) / 2];
                    let zp = zps.map_or(0.0, |z| z[grp]);
                    for (pair, &b) in ys.chunks_exact_mut(2).zip(bytes) {
                        pair[0] = ((b & 15) as f32 - 8.0) * sc + zp;
                        pair[1] = ((b >> 4) as f32 - 8.0) * sc + zp;
                    }
                } else {
                    let bytes = &di[off..off + len];
                    for (y, &b) in ys.iter_mut().zip(bytes) {
                        *y = (b as i8) as f32 * sc;
                    }
                }
            }
        })
    })
}

pub(crate) fn nf4_block_size(g: Option<usize>) -> Result<usize, QuantError> {
    let g = g.unwrap_or(64);
    if !(32..=4096).contains(&g) || !g.is_power_of_two() {
        return invalid(format!(
            "nf4 block size must be a power of two between 32 and 4096, got {g}"
        ));
    }
    Ok(g)
}

pub(crate) fn quantize_nf4(
    x: &[f32],
    opts: &QuantOptions,
    p: &Progress,
) -> Result<Quantized, QuantError> {
    let g = nf4_block_size(opts.group_size)?;
    let n = x.len();
    let nb = n.div_ceil(g);
    let mut absmax = try_vec(0f32, nb, "block scales")?;
    let per = (CHUNK / g).max(1);
    let th = nf4_thresholds();
    let bad = super::passes::NonFiniteFlag::default();
    // One pass: each block's absmax while it is in cache, then its codes.
    let data = super::passes::par_out_with(
        n.div_ceil(2),
        per * g / 2,
        &mut absmax,
        per,
        p,
        |ci, o, am| {
            let xi = &x[ci * per * g..((ci + 1) * per * g).min(n)];
            let th = &th;
            let worst = simd_dispatch!(xi: &[f32], o: &mut [u8], am: &mut [f32], g: usize,
                                       th: &[f32; 15]; u32; {
                let mut worst = 0u32;
                for ((b, ob), a) in xi.chunks(g).zip(o.chunks_mut(g / 2)).zip(am.iter_mut()) {
                    let m = super::simd::amax_bits_plain(b);
                    worst = worst.max(m);
                    *a = f32::from_bits(m);
                    let inv = if *a == 0.0 { 0.0 } else { 1.0 / *a };
                    nf4_encode_block(b, ob, inv, th);
                }
                worst
            });
            bad.note(worst);
        },
    )?;
    bad.check(x)?;
    Ok(Quantized {
        data,
        scales: Scales::F32(absmax),
        zero_points: None,
        tensor_scale: None,
        group_size: g,
    })
}

/// NF4 codes of one block (`v * inv` against the 15 midpoints), element `2i` in the
/// high nibble; an odd tail leaves the last low nibble 0.
#[inline(always)]
fn nf4_encode_block(b: &[f32], ob: &mut [u8], inv: f32, th: &[f32; 15]) {
    #[cfg(target_arch = "x86_64")]
    if super::simd::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above).
        let full = unsafe { nf4_encode_avx2(b, ob, inv, th) };
        return nf4_encode_scalar(&b[full..], &mut ob[full / 2..], inv, th);
    }
    nf4_encode_scalar(b, ob, inv, th)
}

/// The code of `v * inv`: how many midpoints lie strictly below it (ties go to the
/// lower code, as bitsandbytes).
#[inline(always)]
fn nf4_code(v: f32, inv: f32, th: &[f32; 15]) -> u8 {
    let v = v * inv;
    th.iter().map(|&t| (v > t) as u8).sum()
}

#[inline(always)]
fn nf4_encode_scalar(b: &[f32], ob: &mut [u8], inv: f32, th: &[f32; 15]) {
    let mut it = b.chunks_exact(2);
    for (o, pair) in ob.iter_mut().zip(&mut it) {
        *o = (nf4_code(pair[0], inv, th) << 4) | nf4_code(pair[1], inv, th);
    }
    if let [last] = it.remainder() {
        ob[b.len() / 2] = nf4_code(*last, inv, th) << 4;
    }
}

/// [`nf4_encode_scalar`] for the leading multiple of 32 values; returns how many
/// values it encoded.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn nf4_encode_avx2(b: &[f32], ob: &mut [u8], inv: f32, th: &[f32; 15]) -> usize {
    use std::arch::x86_64::*;
    let full = b.len() / 32;
    assert!(ob.len() >= 16 * full);
    let vi = _mm256_set1_ps(inv);
    let ts: [__m256; 15] = std::array::from_fn(|k| _mm256_set1_ps(th[k]));
    let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
    let lo8 = _mm256_set1_epi16(0x00f0);
    for i in 0..full {
        let mut c = [_mm256_setzero_si256(); 4];
        for (j, cj) in c.iter_mut().enumerate() {
            // SAFETY: 32 values per step, within `b`.
            let v = _mm256_mul_ps(_mm256_loadu_ps(b.as_ptr().add(32 * i + 8 * j)), vi);
            for t in &ts {
                // a true compare is all ones (-1): subtracting it counts
                *cj =
                    _mm256_sub_epi32(*cj, _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GT_OQ>(v, *t)));
            }
        }
        // 32 codes as bytes in order (the packs interleave 128-bit lanes; undo it)
        let w = _mm256_packus_epi16(
            _mm256_packs_epi32(c[0], c[1]),
            _mm256_packs_epi32(c[2], c[3]),
        );
        let w = _mm256_permutevar8x32_epi32(w, order);
        // byte pairs (c0, c1) as 16-bit lanes c0 | c1 << 8 -> c0 << 4 | c1
        let p = _mm256_or_si256(
            _mm256_and_si256(_mm256_slli_epi16(w, 4), lo8),
            _mm256_srli_epi16(w, 8),
        );
        let bytes = _mm256_packus_epi16(p, p);
        let bytes = _mm256_permute4x64_epi64::<0b1000>(bytes);
        // SAFETY: 16 bytes per step, within `ob` (asserted above).
        _mm_storeu_si128(
            ob.as_mut_ptr().add(16 * i) as *mut __m128i,
            _mm256_castsi256_si128(bytes),
        );
    }
    32 * full
}

pub(crate) fn dequantize_nf4(
    q: &PackedRef<'_>,
    dst: Dst<'_>,
    p: &Progress,
) -> Result<Vec<f32>, QuantError> {
    let n = dst.len();
    let g = nf4_block_size(Some(q.group_size)).map_err(|e| QuantError::Format(e.to_string()))?;
    expect_len("data", q.data.len(), n.div_ceil(2), q.format)?;
    expect_len("scales", q.scales_f32.len(), n.div_ceil(g), q.format)?;
    let per = (CHUNK / g).max(1);
    super::passes::par_map_dst(q.data, per * g / 2, dst, per * g, p, |ci, di, o| {
        let scales = &q.scales_f32[ci * per..];
        super::simd::lut4_decode(di, o, &NF4_CODE, scales, g, false);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        f: Format,
        x: &[f32],
        cols: usize,
        g: Option<usize>,
        sym: bool,
    ) -> (Quantized, Vec<f32>) {
        let mut o = QuantOptions::new(f);
        o.group_size = g;
        o.symmetric = sym;
        let p = Progress::new();
        let q = super::super::quantize(x, x.len() / cols, cols, &o, &p).unwrap();
        let r = q.as_packed(f, x.len() / cols, cols);
        let y = super::super::dequantize(&r, &p).unwrap();
        (q, y)
    }

    #[test]
    fn int8_matches_formula() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.03)
            .collect();
        let (q, y) = run(Format::Int8, &x, 64, Some(32), false);
        for (gi, grp) in x.chunks(32).enumerate() {
            let a = grp.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = (a / 127.5).max(f32::EPSILON);
            for (j, &v) in grp.iter().enumerate() {
                let qv = (v * (1.0 / s)).round_ties_even().clamp(-128.0, 127.0);
                assert_eq!(q.data[gi * 32 + j] as i8 as f32, qv);
                assert_eq!(y[gi * 32 + j], qv * s);
            }
        }
    }

    #[test]
    fn int4_asym_matches_torchao_formula() {
        let x: Vec<f32> = (0..512)
            .map(|i| ((i * 13 % 37) as f32 - 10.0) * 0.1)
            .collect();
        let (q, y) = run(Format::Int4, &x, 256, None, false);
        assert_eq!(q.group_size, 128);
        for (gi, grp) in x.chunks(128).enumerate() {
            let lo = grp.iter().cloned().fold(f32::INFINITY, f32::min);
            let hi = grp.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let s = ((hi - lo) / 15.0).max(f32::EPSILON);
            let zp = lo + s * 8.0;
            for (j, &v) in grp.iter().enumerate() {
                let e = gi * 128 + j;
                let qv = ((v - (zp - s * 8.0)) / s)
                    .round_ties_even()
                    .clamp(0.0, 15.0);
                let nib = (q.data[e / 2] >> (4 * (e % 2))) & 15;
                assert_eq!(nib as f32, qv);
                assert_eq!(y[e], (qv - 8.0) * s + zp);
            }
        }
    }

    #[test]
    fn nf4_ragged_tail() {
        let x: Vec<f32> = (0..101)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.2)
            .collect();
        let (q, y) = run(Format::Nf4, &x, 101, None, false);
        assert_eq!(q.data.len(), 51);
        let Scales::F32(s) = &q.scales else { panic!() };
        assert_eq!(s.len(), 2);
        for (i, (&a, &b)) in x.iter().zip(&y).enumerate() {
            let am = s[i / 64];
            // nearest code value
            let best = NF4_CODE
                .iter()
                .map(|c| ((a / am) - c).abs())
                .fold(f32::INFINITY, f32::min);
            assert!(((b / am) - a / am).abs() <= best + 1e-6);
        }
    }
}
