//! Ternary formats: BitNet b1.58 (Hugging Face 2-bit layout) and GGUF TQ1_0 / TQ2_0.
//!
//! * `ternary`: one scale per tensor, `gamma = mean|W|` (absmean, accumulated in
//!   float64, rounded to float32) or the lower median of |W| (absmedian, as
//!   `torch.median`); `s = 1 / max(gamma, 1e-5)`; `q = clamp(round_half_even(W s), -1, 1)`.
//!   The stored scale is `1/s` (float32) so `dequantize` returns exactly `q / s`.
//!   Codes `q + 1` are packed in the Hugging Face BitNet layout: W is seen as
//!   `(out, in) = (shape[0], prod(shape[1:]))`; the packed uint8 array has shape
//!   `(R, in)`, `R = ceil(out / 4)`, and packed row `r` holds original rows `r + i R`
//!   at bits `2i..2i+1` (`i = 0` least significant). Bits of rows `>= out` are 0.
//! * `tq1_0` / `tq2_0`: llama.cpp's blocks of 256 along the last axis (which must be a
//!   multiple of 256), byte-identical to `gguf.quants.quantize`.

use rayon::prelude::*;

use super::float::{f16_to_f32, f32_to_f16};
use super::format::expect_len;
use super::passes::par_out_uninit_with;
use super::passes::Dst;
use super::rng::{stochastic_ternary_rows, Stream};
use super::simd::simd_dispatch;
use super::{
    format_err, invalid, Format, PackedRef, QuantError, QuantOptions, Quantized, Rounding,
    ScaleMode, Scales, CHUNK,
};
use crate::alloc::try_with_capacity;
use crate::Progress;
use std::mem::MaybeUninit;

/// BitNet scale `gamma` before clamping: absmean or lower absmedian (finite input).
pub fn ternary_gamma(x: &[f32], mode: ScaleMode, p: &Progress) -> Result<f32, QuantError> {
    Ok(gamma_checked(x, mode, p)?.0)
}

/// `gamma` and the largest `bits(|v|)` of `x` (`>= NONFINITE` when `x` holds NaN or
/// infinity; absmedian does not look and returns 0).
fn gamma_checked(x: &[f32], mode: ScaleMode, p: &Progress) -> Result<(f32, u32), QuantError> {
    match mode {
        ScaleMode::AbsMedian => {
            let mut a: Vec<f32> = try_with_capacity(x.len(), "the |W| copy of absmedian")?;
            a.par_extend(x.par_iter().map(|v| v.abs()));
            let k = (a.len() - 1) / 2;
            let (_, m, _) = a.select_nth_unstable_by(k, |p, q| p.total_cmp(q));
            Ok((*m, 0))
        }
        _ => {
            let parts: Vec<(f64, u32)> = x
                .par_chunks(CHUNK)
                .map(|c| {
                    if p.is_cancelled() {
                        return (0.0, 0);
                    }
                    simd_dispatch!(c: &[f32]; (f64, u32); {
                        // 16 independent lanes: the f64 adds are latency-bound otherwise
                        let mut acc = [0f64; 16];
                        let mut bits = [0u32; 16];
                        let mut it = c.chunks_exact(16);
                        for q in &mut it {
                            chunk_row(&mut acc, &mut bits, q);
                        }
                        chunk_finish(&acc, &bits, it.remainder())
                    })
                })
                .collect();
            p.check()?;
            Ok(gamma_of(&parts, x.len()))
        }
    }
}

/// One 16-value row of a [`CHUNK`]'s absmean reduction: `|v|` into lane `k` of `acc`,
/// and the largest `bits(|v|)` per lane.
#[inline(always)]
pub(super) fn chunk_row(acc: &mut [f64; 16], bits: &mut [u32; 16], q: &[f32]) {
    for k in 0..16 {
        acc[k] += q[k].abs() as f64;
        bits[k] = bits[k].max(q[k].to_bits() & 0x7fff_ffff);
    }
}

/// The end of one [`CHUNK`]'s absmean reduction: its 16 lane sums (lane `k` holds the
/// elements `16 j + k`, in order), then the tail. This order defines `gamma`; the
/// one-read pass ([`super::ternary_one_read`]) reproduces it.
#[inline(always)]
pub(super) fn chunk_finish(acc: &[f64; 16], bits: &[u32; 16], rem: &[f32]) -> (f64, u32) {
    let r: f64 = rem.iter().map(|v| v.abs() as f64).sum();
    let m = bits.iter().fold(0, |m, &b| m.max(b));
    let m = rem.iter().fold(m, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    (acc.iter().sum::<f64>() + r, m)
}

/// `gamma` and the largest `bits(|v|)` from every chunk's `(sum, bits)`, in chunk order.
pub(super) fn gamma_of(parts: &[(f64, u32)], n: usize) -> (f32, u32) {
    let sum = parts.iter().map(|q| q.0).sum::<f64>();
    let m = parts.iter().fold(0, |m, q| m.max(q.1));
    ((sum / n as f64) as f32, m)
}

/// The ternary code of `v` (`q + 1`, nearest rounding) under the multiplier `s`: round
/// half to even of `v * s`, clamped to `[-1, 1]`, plus one.
#[inline(always)]
pub(super) fn code(v: f32, s: f32) -> u8 {
    let t = v * s;
    1 + (t > 0.5) as u8 - (t < -0.5) as u8
}

/// OR the codes of `xs` under `s`, shifted left by `shift`, into `out`.
pub(super) fn or_codes(out: &mut [u8], xs: &[f32], s: f32, shift: u32) {
    simd_dispatch!(out: &mut [u8], xs: &[f32], s: f32, shift: u32; (); {
        for (o, &v) in out.iter_mut().zip(xs) {
            *o |= code(v, s) << shift;
        }
    })
}

pub(crate) fn quantize_ternary(
    x: &[f32],
    out_rows: usize,
    inner: usize,
    opts: &QuantOptions,
    p: &Progress,
) -> Result<Quantized, QuantError> {
    if opts.scale == ScaleMode::AbsMedian {
        super::passes::check_finite(x)?;
    } else if matches!(opts.rounding, Rounding::Nearest) {
        if let Some((data, s)) =
            super::ternary_one_read::quantize(x, out_rows.div_ceil(4) * inner, p)?
        {
            return Ok(Quantized {
                data,
                scales: Scales::F32(vec![1.0 / s]),
                zero_points: None,
                tensor_scale: None,
                group_size: x.len(),
            });
        }
    }
    let (gamma, m) = gamma_checked(x, opts.scale, p)?;
    if m >= super::passes::NONFINITE {
        return Err(super::passes::nonfinite(x));
    }
    let s = 1.0f32 / gamma.max(1e-5);
    let big_r = out_rows.div_ceil(4);
    let rows_per = (CHUNK / inner.max(1)).max(1);
    let row = |src: usize| &x[src * inner..(src + 1) * inner];
    let data = match opts.rounding {
        Rounding::Stochastic(seed) => {
            let st = Stream::new(seed);
            let body = |ci: usize, out: &mut [MaybeUninit<u8>], _: &mut [()]| {
                for (lr, orow) in out.chunks_mut(inner).enumerate() {
                    // packed row r holds the source rows r + i R that exist (r < R <= out)
                    let r = ci * rows_per + lr;
                    let n = (0..4).take_while(|i| r + i * big_r < out_rows).count();
                    let rows: [&[f32]; 4] =
                        std::array::from_fn(|i| row(if i < n { r + i * big_r } else { r }));
                    let firsts: [u64; 4] =
                        std::array::from_fn(|i| ((r + i * big_r) * inner) as u64);
                    stochastic_ternary_rows(&rows[..n], &firsts[..n], orow, &st, s);
                }
            };
            // SAFETY: `stochastic_ternary_rows` writes every byte of each packed row,
            // and the chunks are whole rows.
            unsafe { par_out_uninit_with(big_r * inner, rows_per * inner, &mut [], 1, p, body)? }
        }
        Rounding::Nearest => {
            super::passes::par_out(big_r * inner, rows_per * inner, p, |ci, out: &mut [u8]| {
                for (lr, orow) in out.chunks_mut(inner).enumerate() {
                    let r = ci * rows_per + lr;
                    if r + 3 * big_r < out_rows {
                        // all four source rows exist: each byte is written once
                        let (x0, x1, x2, x3) = (
                            row(r),
                            row(r + big_r),
                            row(r + 2 * big_r),
                            row(r + 3 * big_r),
                        );
                        simd_dispatch!(orow: &mut [u8], x0: &[f32], x1: &[f32], x2: &[f32], x3: &[f32], s: f32; (); {
                            let c = |v: f32| code(v, s);
                            for (j, o) in orow.iter_mut().enumerate() {
                                *o = c(x0[j]) | (c(x1[j]) << 2) | (c(x2[j]) << 4) | (c(x3[j]) << 6);
                            }
                        });
                        continue;
                    }
                    for i in 0..4 {
                        let src = r + i * big_r;
                        if src >= out_rows {
                            break;
                        }
                        or_codes(orow, row(src), s, 2 * i as u32);
                    }
                }
            })?
        }
    };
    Ok(Quantized {
        data,
        scales: Scales::F32(vec![1.0 / s]),
        zero_points: None,
        tensor_scale: None,
        group_size: x.len(),
    })
}

pub(crate) fn dequantize_ternary(
    q: &PackedRef<'_>,
    dst: Dst<'_>,
    p: &Progress,
) -> Result<Vec<f32>, QuantError> {
    let (out_rows, inner) = (q.rows, q.cols);
    let big_r = out_rows.div_ceil(4);
    expect_len("data", q.data.len(), big_r * inner, q.format)?;
    expect_len("scales", q.scales_f32.len(), 1, q.format)?;
    let scale = q.scales_f32[0];
    // Code 3 (w = 2) does not exist.
    if has_code3(q.data, 1, 1) {
        return format_err("ternary data holds code 3, which is out of range (codes are 0, 1, 2)");
    }
    let rows_per = (CHUNK / inner.max(1)).max(1);
    let (data, width) = (q.data, inner);
    let table = ternary_table(scale);
    super::passes::par_out_dst(dst, rows_per * inner, p, |ci, out: &mut [f32]| {
        for (lr, orow) in out.chunks_mut(width).enumerate() {
            let src = ci * rows_per + lr;
            let (r, i) = (src % big_r, src / big_r);
            let bytes = &data[r * width..(r + 1) * width];
            super::simd::lut2_decode(bytes, 2 * i as u32, &table, orow);
        }
    })
}

const QK: usize = 256;

/// The smallest magnitude that rounds to infinity in float16 (65504 + half a step).
const F16_OVERFLOW: f32 = 65520.0;

/// Whether packed 2-bit codes hold the non-existent code 3: `data` is made of blocks of
/// `block` bytes whose first `code_bytes` hold codes (four per byte). One OR-fold per
/// chunk (vectorised; no early exit), chunks in parallel.
fn has_code3(data: &[u8], block: usize, code_bytes: usize) -> bool {
    data.par_chunks(CHUNK / block * block).any(|c| {
        #[inline(always)]
        fn fold(bytes: &[u8]) -> u8 {
            bytes.iter().fold(0u8, |a, &x| a | (x & (x >> 1)))
        }
        let acc = simd_dispatch!(c: &[u8], block: usize, code_bytes: usize; u8; {
            if code_bytes == block {
                fold(c)
            } else {
                c.chunks(block).fold(0u8, |a, b| a | fold(&b[..code_bytes.min(b.len())]))
            }
        });
        acc & 0x55 != 0
    })
}

fn tq_bytes(f: Format) -> usize {
    if f == Format::Tq1_0 {
        54
    } else {
        66
    }
}

/// llama.cpp's ternary code: `lroundf(v) + 1` for |v| <= 1 (half away from zero).
#[inline(always)]
fn trit(v: f32) -> u8 {
    1 + (v >= 0.5) as u8 - (v <= -0.5) as u8
}

/// (d, 1/d or 0, largest `bits(|v|)`) of a block.
#[inline(always)]
fn block_scale(b: &[f32]) -> (f32, f32, u32) {
    let m = super::simd::amax_bits_plain(b);
    let d = f32::from_bits(m);
    let id = if d == 0.0 { 0.0 } else { 1.0 / d };
    (d, id, m)
}

#[inline(always)]
fn tq2_block(b: &[f32], out: &mut [u8]) -> u32 {
    let (d, id, m) = block_scale(b);
    let (qs, tail) = out.split_at_mut(64);
    for j in 0..2 {
        let q = &mut qs[32 * j..32 * j + 32];
        let x = &b[128 * j..128 * j + 128];
        for m in 0..32 {
            q[m] = trit(x[m] * id)
                | (trit(x[m + 32] * id) << 2)
                | (trit(x[m + 64] * id) << 4)
                | (trit(x[m + 96] * id) << 6);
        }
    }
    tail.copy_from_slice(&f32_to_f16(d).to_le_bytes());
    m
}

#[inline(always)]
fn pack5(t: [u8; 5]) -> u8 {
    let v = t[0] as u16 * 81 + t[1] as u16 * 27 + t[2] as u16 * 9 + t[3] as u16 * 3 + t[4] as u16;
    (v * 256).div_ceil(243) as u8
}

#[inline(always)]
fn tq1_block(b: &[f32], out: &mut [u8]) -> u32 {
    let (d, id, m) = block_scale(b);
    let mut t = [0u8; QK];
    for (ti, &v) in t.iter_mut().zip(b) {
        *ti = trit(v * id);
    }
    for m in 0..32 {
        out[m] = pack5([t[m], t[m + 32], t[m + 64], t[m + 96], t[m + 128]]);
    }
    for m in 0..16 {
        let e = 160 + m;
        out[32 + m] = pack5([t[e], t[e + 16], t[e + 32], t[e + 48], t[e + 64]]);
    }
    for j in 0..4 {
        let e = 240 + j;
        out[48 + j] = pack5([t[e], t[e + 4], t[e + 8], t[e + 12], 0]);
    }
    out[52..54].copy_from_slice(&f32_to_f16(d).to_le_bytes());
    m
}

pub(crate) fn quantize_tq(
    x: &[f32],
    cols: usize,
    f: Format,
    p: &Progress,
) -> Result<Quantized, QuantError> {
    if !cols.is_multiple_of(QK) {
        return invalid(format!(
            "{} needs the last dimension to be a multiple of 256 (GGUF rows are whole \
             blocks), got {cols}; pad the rows yourself or use another format",
            f.name()
        ));
    }
    let nb = x.len() / QK;
    let tb = tq_bytes(f);
    let per = CHUNK / QK;
    let bad = super::passes::NonFiniteFlag::default();
    let big = std::sync::atomic::AtomicU32::new(0);
    let data = super::passes::par_map(x, per * QK, nb * tb, per * tb, p, |_, xi, o| {
        let tq1 = f == Format::Tq1_0;
        let worst = simd_dispatch!(xi: &[f32], o: &mut [u8], tb: usize, tq1: bool; u32; {
            // plain loops (an iterator fold would be a function of its own, not AVX2)
            let mut worst = 0u32;
            for (b, ob) in xi.chunks(QK).zip(o.chunks_mut(tb)) {
                let m = if tq1 { tq1_block(b, ob) } else { tq2_block(b, ob) };
                worst = worst.max(m);
            }
            worst
        });
        bad.note(worst);
        big.fetch_max(worst, std::sync::atomic::Ordering::Relaxed);
    })?;
    bad.check(x)?;
    // The block scale is stored as float16: a block whose largest |x| rounds to
    // float16 infinity (65520 and above) cannot be represented.
    if f32::from_bits(big.into_inner()) >= F16_OVERFLOW {
        let i = x.iter().position(|v| v.abs() >= F16_OVERFLOW).unwrap_or(0);
        return invalid(format!(
            "{} stores each block's largest |x| as float16, which ends at 65504: x = {} at \
             flat index {i} would give an infinite scale; rescale the tensor or use \
             another format",
            f.name(),
            x[i]
        ));
    }
    Ok(Quantized {
        data,
        scales: Scales::None,
        zero_points: None,
        tensor_scale: None,
        group_size: QK,
    })
}

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

pub(crate) fn dequantize_tq(
    q: &PackedRef<'_>,
    dst: Dst<'_>,
    p: &Progress,
) -> Result<Vec<f32>, QuantError> {
    let n = dst.len();
    let f = q.format;
    if !n.is_multiple_of(QK) || !q.cols.is_multiple_of(QK) {
        return format_err(format!("{} needs rows that are multiples of 256", f.name()));
    }
    let nb = n / QK;
    let tb = tq_bytes(f);
    expect_len("data", q.data.len(), nb * tb, f)?;
    if f == Format::Tq2_0 && has_code3(q.data, tb, 64) {
        return format_err("tq2_0 data holds code 3, which is out of range (codes are 0, 1, 2)");
    }
    let per = CHUNK / QK;
    super::passes::par_map_dst(q.data, per * tb, dst, per * QK, p, |_, bi, o| {
        let tq2 = f == Format::Tq2_0;
        tq_dequantize_blocks(bi, o, tq2)
    })
}

/// The value of each 2-bit code `c` (code 3 only for the table's sake: callers reject
/// it first): `(c - 1) * d`, the scalar expression of the references.
#[inline(always)]
fn ternary_table(d: f32) -> [f32; 4] {
    std::array::from_fn(|c| (c as f32 - 1.0) * d)
}

/// The trits (0, 1, 2) of a TQ1_0 block in element order.
#[inline(always)]
fn tq1_trits(b: &[u8], t: &mut [u8; QK]) {
    // q = byte * 3^n (mod 256); trit = (3 q) >> 8, i.e. [q > 85] + [q > 170]
    #[inline(always)]
    fn plane(src: &[u8], n: usize, dst: &mut [u8]) {
        for (o, &c) in dst.iter_mut().zip(src) {
            let q = c.wrapping_mul(POW3[n]);
            *o = (q > 85) as u8 + (q > 170) as u8;
        }
    }
    for n in 0..5 {
        plane(&b[..32], n, &mut t[32 * n..32 * n + 32]);
        plane(&b[32..48], n, &mut t[160 + 16 * n..176 + 16 * n]);
    }
    for n in 0..4 {
        plane(&b[48..52], n, &mut t[240 + 4 * n..244 + 4 * n]);
    }
}

/// The 2-bit codes of a TQ2_0 block in element order (byte `32j + m` holds element
/// `128j + m + 32n` at bits `2n`).
#[inline(always)]
fn tq2_codes(b: &[u8], t: &mut [u8; QK]) {
    for j in 0..2 {
        for n in 0..4 {
            let dst = &mut t[128 * j + 32 * n..128 * j + 32 * n + 32];
            for (o, &c) in dst.iter_mut().zip(&b[32 * j..32 * j + 32]) {
                *o = (c >> (2 * n)) & 3;
            }
        }
    }
}

/// Decode whole TQ1_0 / TQ2_0 blocks.
fn tq_dequantize_blocks(bi: &[u8], o: &mut [f32], tq2: bool) {
    let tb = if tq2 { 66 } else { 54 };
    let mut t = [0u8; QK];
    for (b, ob) in bi.chunks(tb).zip(o.chunks_mut(QK)) {
        let table = ternary_table(f16_to_f32(u16::from_le_bytes([b[tb - 2], b[tb - 1]])));
        let tr = &mut t;
        if tq2 {
            simd_dispatch!(b: &[u8], tr: &mut [u8; QK]; (); tq2_codes(b, tr));
        } else {
            simd_dispatch!(b: &[u8], tr: &mut [u8; QK]; (); tq1_trits(b, tr));
        }
        super::simd::lut2_decode(&t, 0, &table, ob);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code3_found_anywhere_and_only_in_code_bytes() {
        // every position of every code, in data spanning several parallel chunks
        let n = 66 * (CHUNK / 66 * 2 + 3);
        let base = vec![0b1001_0100u8; n]; // codes 0, 1, 1, 2
        assert!(!has_code3(&base, 1, 1));
        assert!(!has_code3(&base, 66, 64));
        for pos in [0, 1, 63, 64, 65, 66, 130, n / 2, n - 3, n - 2, n - 1] {
            for k in 0..4 {
                let mut d = base.clone();
                d[pos] |= 3 << (2 * k);
                assert!(has_code3(&d, 1, 1), "{pos} {k}");
                // TQ2_0: the last 2 bytes of each 66-byte block are the fp16 scale
                assert_eq!(has_code3(&d, 66, 64), pos % 66 < 64, "{pos} {k}");
            }
        }
    }

    /// llama.cpp's trit extraction, `((byte * 3^n mod 256) * 3) >> 8`, for every byte.
    #[test]
    fn trit_compare_rule_is_llama_cpp_formula() {
        for byte in 0..=255u8 {
            let mut b = [byte; 54];
            b[52] = 0;
            let mut t = [0u8; QK];
            tq1_trits(&b, &mut t);
            for (e, &got) in t.iter().enumerate() {
                let n = if e < 160 {
                    e / 32
                } else if e < 240 {
                    (e - 160) / 16
                } else {
                    (e - 240) / 4
                };
                let q = byte.wrapping_mul(POW3[n]);
                assert_eq!(got as u16, (q as u16 * 3) >> 8, "byte {byte} element {e}");
            }
        }
    }

    fn opts(mode: ScaleMode) -> QuantOptions {
        let mut o = QuantOptions::new(Format::Ternary);
        o.scale = mode;
        o
    }

    #[test]
    fn ternary_layout_and_round_trip() {
        // 5 rows x 3 cols -> R = 2 packed rows
        let x: Vec<f32> = (0..15).map(|i| ((i % 3) as f32 - 1.0) * 0.7).collect();
        let p = Progress::new();
        let q = quantize_ternary(&x, 5, 3, &opts(ScaleMode::AbsMean), &p).unwrap();
        assert_eq!(q.data.len(), 6);
        let gamma = x.iter().map(|v| v.abs() as f64).sum::<f64>() / 15.0;
        let s = 1.0 / (gamma as f32);
        for src in 0..5 {
            for j in 0..3 {
                let want = ((x[src * 3 + j] * s).round_ties_even().clamp(-1.0, 1.0) + 1.0) as u8;
                let (r, i) = (src % 2, src / 2);
                assert_eq!((q.data[r * 3 + j] >> (2 * i)) & 3, want);
            }
        }
        let Scales::F32(sc) = &q.scales else { panic!() };
        let r = PackedRef {
            format: Format::Ternary,
            rows: 5,
            cols: 3,
            data: &q.data,
            scales_f32: sc,
            scales_u8: &[],
            zero_points: None,
            tensor_scale: None,
            group_size: 15,
        };
        let y = dequantize_ternary(&r, Dst::New(15), &p).unwrap();
        for (a, b) in x.iter().zip(&y) {
            assert_eq!(*b, (a * s).round_ties_even().clamp(-1.0, 1.0) / s);
        }
    }

    #[test]
    fn absmedian_is_lower_median() {
        let x = [4.0f32, -1.0, 3.0, 2.0];
        assert_eq!(
            ternary_gamma(&x, ScaleMode::AbsMedian, &Progress::new()).unwrap(),
            2.0
        );
    }

    #[test]
    fn tq_round_trip_codes() {
        let x: Vec<f32> = (0..512).map(|i| ((i * 7 % 5) as f32 - 2.0) / 2.0).collect();
        for f in [Format::Tq1_0, Format::Tq2_0] {
            let p = Progress::new();
            let q = quantize_tq(&x, 512, f, &p).unwrap();
            let r = PackedRef {
                format: f,
                rows: 1,
                cols: 512,
                data: &q.data,
                scales_f32: &[],
                scales_u8: &[],
                zero_points: None,
                tensor_scale: None,
                group_size: 256,
            };
            let y = dequantize_tq(&r, Dst::New(512), &p).unwrap();
            for (a, b) in x.iter().zip(&y) {
                assert_eq!(*b, (a / 1.0).round());
            }
        }
        assert!(quantize_tq(&x[..300], 300, Format::Tq2_0, &Progress::new()).is_err());
    }
}
