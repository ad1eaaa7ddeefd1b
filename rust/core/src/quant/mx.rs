//! Float element formats: bulk FP8 / FP4 codecs, scaled FP8, OCP MX and NVFP4.
//!
//! * `fp8_e4m3` / `fp8_e5m2`: `scale = amax / max` per group (per-tensor by default,
//!   1.0 for an all-zero group) or a fixed scale; codes = encode(x / scale).
//! * `mxfp4`, `mxfp8_e4m3`, `mxfp8_e5m2` (OCP MX v1.0): blocks of 32 over the
//!   flattened tensor; E8M0 scale code `floor(log2(amax)) - emax_elem + 127` clamped to
//!   `[0, 254]` (0 for an all-zero block); elements `x / 2^(code - 127)` rounded half to
//!   even and clamped to the element max. MXFP4 packs element `2i` in the LOW nibble.
//!   A ragged tail is padded with zeros to a whole block (the shape is remembered).
//! * `nvfp4` (torchao): `per_tensor = amax / (448 * 6)` (1.0 for an all-zero tensor);
//!   per 16-block `s = clamp((block_amax / 6) / per_tensor, 2^-6, 448)` cast to E4M3;
//!   elements `clamp(x * ((1 / per_tensor) / s), -6, 6)` rounded to E2M1 (torchao's
//!   float32 arithmetic in that order: one multiplication by a reciprocal, not a
//!   division, so the codes are byte-identical to `nvfp4_quantize`), element `2i` in
//!   the LOW nibble; tail padded to 16.
//!
//! Overflow: with a fixed scale `x / scale` may exceed float32; saturating encoders
//! (the default, and stochastic rounding always) clamp it to the element max like any
//! other out-of-range value. A fixed fp8 scale whose `max * scale` overflows float32,
//! and (absmax scaling) groups whose dequantized range would round to infinity, are
//! rejected, so a quantized tensor always dequantizes to finite values.

use rayon::prelude::*;

use super::float::{
    decode_table, e8m0_value, encode_one, encode_one_f64, floor_log2, FloatKind, Spec, E2M1, E4M3,
    E5M2,
};
use super::format::expect_len;
use super::int::resolve_group;
use super::passes::{pieces, Dst};
use super::rng::{below, Stream, GOLDEN};
use super::simd::{simd_dispatch, simd_dispatch_wide};
use super::{
    format_err, invalid, Format, PackedRef, QuantError, QuantOptions, Quantized, ScaleMode, Scales,
    CHUNK,
};
use crate::alloc::try_vec;
use crate::Progress;

/// Spec of a codec name: `e4m3`, `e5m2` or `e2m1`.
pub fn codec_spec(kind: FloatKind) -> Spec {
    Spec::of(kind)
}

/// Encode float32 values to one code per byte (round half to even; fails only when
/// the output cannot be allocated).
pub fn encode_slice(
    x: &[f32],
    kind: FloatKind,
    saturate: bool,
    p: &Progress,
) -> Result<Vec<u8>, QuantError> {
    let spec = Spec::of(kind);
    super::passes::par_map(x, CHUNK, x.len(), CHUNK, p, |_, xi, o| {
        encode_into(xi, o, spec, saturate);
    })
}

/// [`encode_slice`] for float64 values, rounded directly from float64 (a detour
/// through float32 would round twice and differ next to midpoints).
pub fn encode_slice_f64(
    x: &[f64],
    kind: FloatKind,
    saturate: bool,
    p: &Progress,
) -> Result<Vec<u8>, QuantError> {
    let spec = Spec::of(kind);
    super::passes::par_map(x, CHUNK, x.len(), CHUNK, p, |_, xi, o| {
        for (c, &v) in o.iter_mut().zip(xi) {
            *c = encode_one_f64(v, &spec, saturate) as u8;
        }
    })
}

#[inline(always)]
fn encode_into(xi: &[f32], o: &mut [u8], spec: Spec, saturate: bool) {
    // Constant-fold the common cases so the kernels vectorise.
    match (spec.kind, saturate) {
        (FloatKind::E4M3, true) => simd_dispatch_wide!(xi: &[f32], o: &mut [u8]; (); {
            for (c, &v) in o.iter_mut().zip(xi) { *c = encode_one(v, &E4M3, true) as u8; }
        }),
        (FloatKind::E4M3, false) => simd_dispatch_wide!(xi: &[f32], o: &mut [u8]; (); {
            for (c, &v) in o.iter_mut().zip(xi) { *c = encode_one(v, &E4M3, false) as u8; }
        }),
        (FloatKind::E5M2, true) => simd_dispatch_wide!(xi: &[f32], o: &mut [u8]; (); {
            for (c, &v) in o.iter_mut().zip(xi) { *c = encode_one(v, &E5M2, true) as u8; }
        }),
        (FloatKind::E5M2, false) => simd_dispatch_wide!(xi: &[f32], o: &mut [u8]; (); {
            for (c, &v) in o.iter_mut().zip(xi) { *c = encode_one(v, &E5M2, false) as u8; }
        }),
        _ => simd_dispatch_wide!(xi: &[f32], o: &mut [u8], saturate: bool; (); {
            for (c, &v) in o.iter_mut().zip(xi) { *c = encode_one(v, &E2M1, saturate) as u8; }
        }),
    }
}

/// Decode one code per byte to float32. E2M1 codes above 15 are an error.
pub fn decode_slice(codes: &[u8], kind: FloatKind, p: &Progress) -> Result<Vec<f32>, QuantError> {
    let spec = Spec::of(kind);
    if spec.bits() < 8 {
        if let Some(i) = codes.iter().position(|&c| c >> spec.bits() != 0) {
            return format_err(format!(
                "code {} at flat index {i} is out of range for a {}-bit format (0..{})",
                codes[i],
                spec.bits(),
                (1u32 << spec.bits()) - 1
            ));
        }
    }
    let table = table256(&spec);
    let out = super::passes::par_map(codes, CHUNK, codes.len(), CHUNK, p, |_, ci, o| {
        let table = &table;
        simd_dispatch!(ci: &[u8], o: &mut [f32], table: &[f32; 256]; (); {
            for (y, &c) in o.iter_mut().zip(ci) {
                *y = table[c as usize];
            }
        })
    })?;
    Ok(out)
}

/// A decode table padded to 256 entries (E2M1 repeats), so that any byte indexes it.
fn table256(spec: &Spec) -> [f32; 256] {
    let t = decode_table(spec);
    std::array::from_fn(|i| t[i % t.len()])
}

/// The value of magnitude code `m` (sign bit clear) by arithmetic instead of a table
/// lookup (a gather per vector, the slow part of a vectorised loop): equal to the
/// decode table for every finite magnitude code; codes above the largest finite one
/// give the next power-of-two step instead of Inf/NaN (callers never keep those).
#[inline(always)]
fn mag_value(m: u32, spec: &Spec) -> f32 {
    let m = m & ((1 << (spec.ebits + spec.mbits)) - 1);
    let e = m >> spec.mbits;
    let mant = m & ((1 << spec.mbits) - 1);
    let normal =
        f32::from_bits(((e + 127).wrapping_sub(spec.bias) << 23) | (mant << (23 - spec.mbits)));
    // subnormal: mant * 2^(1 - bias - mbits), exact
    let sub = mant as f32 * f32::from_bits((128 - spec.bias - spec.mbits) << 23);
    if e == 0 {
        sub
    } else {
        normal
    }
}

/// Stochastic rounding of `v` between the two neighbouring codes `lo <= |v| < hi`
/// (`|v|` clamped to the format's max, which also catches overflow to infinity): `hi`
/// when `uniform_of(bits) < (|v| - lo) / (hi - lo)`, sign kept.
///
/// The bracket comes from the bits, not from the nearest code: a normal result drops
/// the float32 mantissa bits the format lacks (`lo`; `hi` is the next code, across a
/// binade too), and those dropped bits ARE the fraction times `2^32` (an integer, so
/// the comparison with the draw is a plain integer compare); a subnormal result scales
/// `|v|` by the inverse quantum (exact) and takes floor and fraction like the integer
/// formats ([`below`]). Branch-free, in float32 and integer arithmetic, so that loops
/// of it vectorise.
#[inline(always)]
fn sr_encode(v: f32, spec: &Spec, bits: u32) -> u8 {
    let sign = (v.to_bits() >> 31) << (spec.ebits + spec.mbits);
    let max = mag_value(spec.max_code, spec);
    let a = f32::from_bits(v.to_bits() & 0x7fff_ffff);
    let a = if a < max { a } else { max }; // NaN (rejected later) too
    let ab = a.to_bits();
    // normal results
    let sh = 23 - spec.mbits;
    let lo_norm = (ab >> sh).wrapping_sub((127 - spec.bias) << spec.mbits);
    let up_norm = bits < (ab & ((1 << sh) - 1)) << (32 - sh);
    // subnormal results: |v| / quantum in [0, 2^mbits), exact
    let w = a * f32::from_bits((127 + spec.bias + spec.mbits - 1) << 23);
    let r = super::simd::rne_i32(w);
    let down = r as f32 > w;
    let fl = if down { r as f32 - 1.0 } else { r as f32 };
    let lo_sub = (r - down as i32) as u32;
    let up_sub = below(bits, w - fl);
    let normal = ab >= (128 - spec.bias) << 23;
    let lo = if normal { lo_norm } else { lo_sub };
    let up = if normal { up_norm } else { up_sub };
    ((lo + up as u32) | sign) as u8
}

/// `out[j] = sr_encode(xs[j] * mul / div, ...)` with element `first + j`'s draw, the
/// element format constant-folded, the draws in the same loop (AVX-512 when
/// available).
#[allow(clippy::too_many_arguments)]
fn sr_encode_into(
    out: &mut [u8],
    xs: &[f32],
    st: &Stream,
    first: usize,
    mul: f32,
    div: f32,
    kind: FloatKind,
) {
    macro_rules! go {
        ($spec:expr) => {
            simd_dispatch_wide!(out: &mut [u8], xs: &[f32], st: &Stream, first: usize,
                                mul: f32, div: f32; (); {
                let mut c = Stream::counter(first as u64);
                for (o, &v) in out.iter_mut().zip(xs) {
                    let u = st.bits_at(c);
                    c = c.wrapping_add(GOLDEN);
                    *o = sr_encode(v * mul / div, &$spec, u);
                }
            })
        };
    }
    match kind {
        FloatKind::E4M3 => go!(E4M3),
        FloatKind::E5M2 => go!(E5M2),
        _ => go!(E2M1),
    }
}

fn elem_spec(f: Format) -> Spec {
    match f {
        Format::Fp8E4m3 | Format::Mxfp8E4m3 => E4M3,
        Format::Fp8E5m2 | Format::Mxfp8E5m2 => E5M2,
        _ => E2M1,
    }
}

pub(crate) fn quantize_fp8(
    x: &[f32],
    cols: usize,
    opts: &QuantOptions,
    p: &Progress,
) -> Result<Quantized, QuantError> {
    let f = opts.format;
    let spec = elem_spec(f);
    let n = x.len();
    let g = resolve_group(n, cols, opts.group_size, None, f)?;
    let fixed = match opts.scale {
        ScaleMode::Fixed(s) => Some(s),
        _ => None,
    };
    let max = spec.max_value();
    if let Some(s) = fixed {
        if !(max * s).is_finite() {
            return invalid(format!(
                "a fixed {} scale must be at most 3.4e38/{max}, got {s} (the dequantized \
                 range, max * scale, would overflow float32)",
                f.name()
            ));
        }
    }
    let st = super::format::stream(opts.rounding);
    let saturate = opts.saturate;
    let codec = Fp8Codec {
        spec,
        fixed,
        max,
        st,
        saturate,
    };
    let (data, scales) = super::passes::quantize_groups(x, g, &codec, p)?;
    // amax / max rounded up, times max, can pass float32's max for |x| near it
    if let Some(k) = scales.iter().position(|&s| !(max * s).is_finite()) {
        return invalid(format!(
            "{}: the values of group {k} come too close to float32's max (3.4e38): their \
             dequantized values would overflow to infinity; rescale the tensor",
            f.name()
        ));
    }
    Ok(Quantized {
        data,
        scales: Scales::F32(scales),
        zero_points: None,
        tensor_scale: None,
        group_size: g,
    })
}

/// Scaled FP8: `scale = amax / max` per group (or fixed), codes `encode(v / scale)`.
struct Fp8Codec {
    spec: Spec,
    fixed: Option<f32>,
    max: f32,
    st: Option<Stream>,
    saturate: bool,
}

impl super::passes::GroupCodec for Fp8Codec {
    type Stat = u32;
    type Param = f32;
    const NUM: usize = 1;
    const DEN: usize = 1;

    #[inline(always)]
    fn reduce(&self, x: &[f32]) -> u32 {
        super::simd::amax_bits_plain(x)
    }

    #[inline(always)]
    fn combine(a: u32, b: u32) -> u32 {
        a.max(b)
    }

    #[inline(always)]
    fn bits(s: &u32) -> u32 {
        *s
    }

    #[inline(always)]
    fn finish(&self, m: u32) -> f32 {
        self.fixed
            .unwrap_or_else(|| fp8_scale(f32::from_bits(m), self.max))
    }

    #[inline(always)]
    fn encode(&self, xs: &[f32], o: &mut [u8], s: f32, first: usize) {
        match &self.st {
            None => encode_scaled(xs, o, s, self.spec.kind, self.saturate),
            Some(st) => sr_encode_into(o, xs, st, first, 1.0, s, self.spec.kind),
        }
    }
}

/// `encode(v / s)` with the format constant-folded so that the loops vectorise.
/// Saturating: a quotient that overflows float32 (a small fixed scale) is clamped
/// first, so it saturates instead of becoming Inf (E4M3: NaN).
#[inline(always)]
fn encode_scaled(xs: &[f32], o: &mut [u8], s: f32, kind: FloatKind, saturate: bool) {
    const M: f32 = f32::MAX;
    match (kind, saturate) {
        (FloatKind::E4M3, true) => {
            for (c, &v) in o.iter_mut().zip(xs) {
                *c = encode_one((v / s).clamp(-M, M), &E4M3, true) as u8;
            }
        }
        (FloatKind::E4M3, false) => {
            for (c, &v) in o.iter_mut().zip(xs) {
                *c = encode_one(v / s, &E4M3, false) as u8;
            }
        }
        (FloatKind::E5M2, true) => {
            for (c, &v) in o.iter_mut().zip(xs) {
                *c = encode_one((v / s).clamp(-M, M), &E5M2, true) as u8;
            }
        }
        _ => {
            for (c, &v) in o.iter_mut().zip(xs) {
                *c = encode_one(v / s, &E5M2, false) as u8;
            }
        }
    }
}

pub(crate) fn dequantize_fp8(
    q: &PackedRef<'_>,
    dst: Dst<'_>,
    p: &Progress,
) -> Result<Vec<f32>, QuantError> {
    let n = dst.len();
    let g = super::format::check_groups(q, n, false)?;
    expect_len("data", q.data.len(), n, q.format)?;
    expect_len("scales", q.scales_f32.len(), n / g, q.format)?;
    let table = table256(&elem_spec(q.format));
    let scales = q.scales_f32;
    let y = super::passes::par_map_dst(q.data, CHUNK, dst, CHUNK, p, |ci, di, o| {
        let table = &table;
        simd_dispatch!(ci: usize, di: &[u8], o: &mut [f32], g: usize, scales: &[f32], table: &[f32; 256]; (); {
            for (off, len, grp) in pieces(ci * CHUNK, o.len(), g) {
                let s = scales[grp];
                for (v, &c) in o[off..off + len].iter_mut().zip(&di[off..off + len]) {
                    *v = table[c as usize] * s;
                }
            }
        })
    })?;
    Ok(y)
}

fn mx_emax(f: Format) -> i32 {
    match f {
        Format::Mxfp8E4m3 => 8,
        Format::Mxfp8E5m2 => 15,
        _ => 2,
    }
}

const MX_BLOCK: usize = 32;
const NV_BLOCK: usize = 16;

/// E8M0 code of a block with largest magnitude `a`.
#[inline(always)]
pub fn mx_scale_code(a: f32, emax: i32) -> u8 {
    if a == 0.0 {
        return 0;
    }
    (floor_log2(a) - emax + 127).clamp(0, 254) as u8
}

/// `2^(127 - code)`, the reciprocal of an E8M0 scale, exactly.
#[inline(always)]
fn e8m0_inverse(code: u8) -> f32 {
    e8m0_value(254 - code)
}

/// How a block's scale follows from its largest magnitude.
#[derive(Clone, Copy)]
enum BlockRule {
    /// OCP MX: E8M0 code of `floor(log2(amax)) - emax`.
    Mx { emax: i32 },
    /// NVFP4: E4M3 code of `clamp((amax / 6) / pt, 2^-6, 448)`; `inv_pt = 1 / pt`.
    Nv {
        pt: f32,
        inv_pt: f32,
        lut: &'static [f32; 256],
    },
}

const NV_MIN_SCALE: f32 = 0.015625; // 2^-6, the smallest normal E4M3

/// The block (zero-padded to `B` values when short).
#[inline(always)]
fn block_at<const B: usize>(xi: &[f32], k: usize, padded: &mut [f32; B]) {
    let b = &xi[k * B..((k + 1) * B).min(xi.len())];
    padded[..b.len()].copy_from_slice(b);
    padded[b.len()..].fill(0.0);
}

/// Nearest codes of a block, `encode(v * mul)`: MX multiplies by the exact reciprocal
/// of its power-of-two scale, NVFP4 by torchao's `(1 / per_tensor) / block_scale`.
#[inline(always)]
fn encode_block_nearest<const B: usize>(
    b: &[f32; B],
    codes: &mut [u8; B],
    kind: FloatKind,
    mul: f32,
) {
    macro_rules! enc {
        ($spec:expr) => {
            for (c, &v) in codes.iter_mut().zip(b) {
                *c = encode_one(v * mul, &$spec, true) as u8;
            }
        };
    }
    match kind {
        FloatKind::E2M1 => enc!(E2M1),
        FloatKind::E5M2 => enc!(E5M2),
        _ => enc!(E4M3),
    }
}

/// Stochastic rounding parameters: element spec, the stream and the flat index of the
/// chunk's first value.
type StochasticBlocks<'a> = (&'a Spec, &'a Stream, usize);

/// Scales and codes of a chunk of whole blocks (the last may be short and is
/// zero-padded); returns the largest `bits(|v|)` seen (NaN / Inf detection).
#[inline(always)]
fn blocks_body<const B: usize>(
    xi: &[f32],
    o: &mut [u8],
    sc: &mut [u8],
    kind: FloatKind,
    rule: BlockRule,
    sr: Option<StochasticBlocks<'_>>,
) -> u32 {
    let fp4 = kind == FloatKind::E2M1;
    let bpb = if fp4 { B / 2 } else { B };
    let mut padded = [0f32; B];
    let mut codes = [0u8; B];
    let nbk = sc.len();
    // 1. largest |v| (as bits) of every block of the chunk
    let mut am = [0u32; CHUNK / NV_BLOCK];
    let am = &mut am[..nbk];
    for (k, a) in am.iter_mut().enumerate() {
        *a = match xi.get(k * B..(k + 1) * B) {
            Some(full) => super::simd::amax_bits_plain(full),
            None => {
                block_at(xi, k, &mut padded);
                super::simd::amax_bits_plain(&padded)
            }
        };
    }
    let worst = am.iter().fold(0, |w, &a| w.max(a));
    // 2. all scales at once (a loop without per-block dependencies vectorises)
    let mut muls = [1f32; CHUNK / NV_BLOCK];
    let muls = &mut muls[..nbk];
    match rule {
        BlockRule::Mx { emax } => {
            for ((s, m), &a) in sc.iter_mut().zip(muls.iter_mut()).zip(am.iter()) {
                let code = mx_scale_code(f32::from_bits(a), emax);
                *s = code;
                *m = e8m0_inverse(code);
            }
        }
        BlockRule::Nv { pt, inv_pt, lut } => {
            for ((s, m), &a) in sc.iter_mut().zip(muls.iter_mut()).zip(am.iter()) {
                let bs = ((f32::from_bits(a) / 6.0) / pt).clamp(NV_MIN_SCALE, 448.0);
                let code = encode_one(bs, &E4M3, true) as u8;
                *s = code;
                *m = inv_pt / lut[code as usize];
            }
        }
    }
    // 3. the elements
    for (k, ob) in o.chunks_mut(bpb).enumerate() {
        let b: &[f32; B] = match xi.get(k * B..(k + 1) * B) {
            Some(full) => full.try_into().expect("a whole block"),
            None => {
                block_at(xi, k, &mut padded);
                &padded
            }
        };
        let mul = muls[k];
        match sr {
            None => encode_block_nearest(b, &mut codes, kind, mul),
            Some((spec, st, first)) => {
                sr_encode_into(&mut codes, b, st, first + k * B, mul, 1.0, spec.kind)
            }
        }
        write_block(&codes, ob, fp4);
    }
    worst
}

/// Quantize `x` in blocks of `B` (scale codes and packed elements), one pass, in
/// parallel, compiled for AVX2 when available.
fn quantize_blocks<const B: usize>(
    x: &[f32],
    spec: &Spec,
    rule: BlockRule,
    st: Option<&Stream>,
    p: &Progress,
) -> Result<(Vec<u8>, Vec<u8>), QuantError> {
    let n = x.len();
    let nb = n.div_ceil(B);
    let fp4 = spec.kind == FloatKind::E2M1;
    let bpb = if fp4 { B / 2 } else { B };
    let mut scales = try_vec(0u8, nb, "block scales")?;
    let per = CHUNK / B;
    let bad = super::passes::NonFiniteFlag::default();
    let data = super::passes::par_out_with(
        nb * bpb,
        per * bpb,
        &mut scales,
        per,
        p,
        |ci, o, sc| {
            let xi = &x[ci * per * B..((ci + 1) * per * B).min(n)];
            let sr = st.map(|st| (spec, st, ci * per * B));
            let kind = spec.kind;
            let b32 = B == 32;
            let worst = simd_dispatch!(xi: &[f32], o: &mut [u8], sc: &mut [u8], kind: FloatKind,
                                       rule: BlockRule, sr: Option<StochasticBlocks<'_>>, b32: bool; u32; {
                if b32 {
                    blocks_body::<32>(xi, o, sc, kind, rule, sr)
                } else {
                    blocks_body::<16>(xi, o, sc, kind, rule, sr)
                }
            });
            bad.note(worst);
        },
    )?;
    bad.check(x)?;
    Ok((data, scales))
}

fn write_block(codes: &[u8], out: &mut [u8], fp4: bool) {
    if fp4 {
        for (o, pair) in out.iter_mut().zip(codes.chunks_exact(2)) {
            *o = pair[0] | (pair[1] << 4);
        }
    } else {
        out.copy_from_slice(codes);
    }
}

pub(crate) fn quantize_mx(
    x: &[f32],
    opts: &QuantOptions,
    p: &Progress,
) -> Result<Quantized, QuantError> {
    let f = opts.format;
    if opts.group_size.is_some_and(|g| g != MX_BLOCK) {
        return invalid(format!(
            "{} uses blocks of 32 (OCP MX v1.0); group_size must be None or 32",
            f.name()
        ));
    }
    let spec = elem_spec(f);
    let st = super::format::stream(opts.rounding);
    let rule = BlockRule::Mx { emax: mx_emax(f) };
    let (data, scales) = quantize_blocks::<MX_BLOCK>(x, &spec, rule, st.as_ref(), p)?;
    Ok(Quantized {
        data,
        scales: Scales::U8(scales),
        zero_points: None,
        tensor_scale: None,
        group_size: MX_BLOCK,
    })
}

/// Decode packed blocks: `value(code) * block_scale`.
fn dequantize_blocks(
    q: &PackedRef<'_>,
    dst: Dst<'_>,
    block: usize,
    spec: &Spec,
    p: &Progress,
    block_scale: impl Fn(usize) -> f32 + Sync,
) -> Result<Vec<f32>, QuantError> {
    let fp4 = spec.kind == FloatKind::E2M1;
    let bpb = if fp4 { block / 2 } else { block };
    let table = table256(spec);
    let t16: [f32; 16] = std::array::from_fn(|i| table[i]);
    let per = CHUNK / block;
    // a ragged last block is simply shorter (the 4-bit decoder takes an odd tail)
    super::passes::par_map_dst(q.data, per * bpb, dst, per * block, p, |ci, di, o| {
        let ss: Vec<f32> = (0..o.len().div_ceil(block))
            .map(|k| block_scale(ci * per + k))
            .collect();
        let (table, t16, ss) = (&table, &t16, &ss[..]);
        if fp4 {
            return super::simd::lut4_decode(di, o, t16, ss, block, true);
        }
        simd_dispatch!(di: &[u8], o: &mut [f32], ss: &[f32], table: &[f32; 256],
                       block: usize; (); {
            for ((ob, bytes), &s) in o.chunks_mut(block).zip(di.chunks(block)).zip(ss) {
                for (v, &c) in ob.iter_mut().zip(bytes) {
                    *v = table[c as usize] * s;
                }
            }
        })
    })
}

pub(crate) fn dequantize_mx(
    q: &PackedRef<'_>,
    dst: Dst<'_>,
    p: &Progress,
) -> Result<Vec<f32>, QuantError> {
    let n = dst.len();
    let spec = elem_spec(q.format);
    let nb = n.div_ceil(MX_BLOCK);
    let bpb = if spec.kind == FloatKind::E2M1 {
        MX_BLOCK / 2
    } else {
        MX_BLOCK
    };
    expect_len("data", q.data.len(), nb * bpb, q.format)?;
    expect_len("scales", q.scales_u8.len(), nb, q.format)?;
    dequantize_blocks(q, dst, MX_BLOCK, &spec, p, |b| e8m0_value(q.scales_u8[b]))
}

/// Scaled-FP8 scale `amax / max`: 1.0 for an all-zero group, and never 0 (a tiny amax
/// whose quotient underflows gets the smallest subnormal) so no NaN can appear.
pub fn fp8_scale(a: f32, max: f32) -> f32 {
    let s = a / max;
    if a == 0.0 {
        1.0
    } else if s == 0.0 {
        f32::from_bits(1)
    } else {
        s
    }
}

/// NVFP4 per-tensor scale `amax / (448 * 6)` for a tensor with largest magnitude `a`:
/// 1.0 for an all-zero tensor, and at least 2^-126 (the smallest normal float32) so
/// that block scales cannot overflow and no NaN can appear (torchao returns NaN for
/// such tiny tensors).
pub fn nvfp4_tensor_scale(a: f32) -> f32 {
    if a == 0.0 {
        1.0
    } else {
        (a / (448.0 * 6.0)).max(f32::MIN_POSITIVE)
    }
}

pub(crate) fn quantize_nvfp4(
    x: &[f32],
    opts: &QuantOptions,
    p: &Progress,
) -> Result<Quantized, QuantError> {
    if opts.group_size.is_some_and(|g| g != NV_BLOCK) {
        return invalid("nvfp4 uses blocks of 16; group_size must be None or 16");
    }
    let m = x
        .par_chunks(CHUNK)
        .map(|c| {
            if p.is_cancelled() {
                0
            } else {
                super::simd::amax_bits(c)
            }
        })
        .reduce(|| 0, u32::max);
    p.check()?;
    if m >= super::passes::NONFINITE {
        return Err(super::passes::nonfinite(x));
    }
    let pt = nvfp4_tensor_scale(f32::from_bits(m));
    // the block holding the largest |x| gets the block scale 448: 6 * (pt * 448) is
    // the largest dequantized magnitude
    if !(6.0 * (pt * 448.0)).is_finite() {
        return invalid(format!(
            "nvfp4: the largest |x| ({}) comes too close to float32's max (3.4e38): the \
             dequantized values would overflow to infinity; rescale the tensor",
            f32::from_bits(m)
        ));
    }
    let st = super::format::stream(opts.rounding);
    let rule = BlockRule::Nv {
        pt,
        inv_pt: 1.0 / pt,
        lut: super::float::e4m3_table(),
    };
    let (data, scales) = quantize_blocks::<NV_BLOCK>(x, &E2M1, rule, st.as_ref(), p)?;
    Ok(Quantized {
        data,
        scales: Scales::U8(scales),
        zero_points: None,
        tensor_scale: Some(pt),
        group_size: NV_BLOCK,
    })
}

pub(crate) fn dequantize_nvfp4(
    q: &PackedRef<'_>,
    dst: Dst<'_>,
    p: &Progress,
) -> Result<Vec<f32>, QuantError> {
    let n = dst.len();
    let nb = n.div_ceil(NV_BLOCK);
    expect_len("data", q.data.len(), nb * NV_BLOCK / 2, q.format)?;
    expect_len("scales", q.scales_u8.len(), nb, q.format)?;
    let Some(pt) = q.tensor_scale else {
        return format_err("nvfp4 needs its per-tensor scale");
    };
    let lut = decode_table(&E4M3);
    dequantize_blocks(q, dst, NV_BLOCK, &E2M1, p, |b| {
        pt * lut[q.scales_u8[b] as usize]
    })
}

#[cfg(test)]
mod tests {
    use super::super::rng::uniform_of;
    use super::*;

    #[test]
    fn codecs_round_trip_bulk() {
        for kind in [FloatKind::E4M3, FloatKind::E5M2, FloatKind::E2M1] {
            let spec = Spec::of(kind);
            let codes: Vec<u8> = (0..1u32 << spec.bits()).map(|c| c as u8).collect();
            let p = Progress::new();
            let v = decode_slice(&codes, kind, &p).unwrap();
            let back = encode_slice(&v, kind, false, &p).unwrap();
            for (c, (b, x)) in codes.iter().zip(back.iter().zip(&v)) {
                if !x.is_nan() {
                    assert_eq!(c, b);
                }
            }
        }
        assert!(decode_slice(&[16], FloatKind::E2M1, &Progress::new()).is_err());
    }

    #[test]
    fn mag_value_is_the_decode_table() {
        for spec in [E4M3, E5M2, E2M1] {
            let table = table256(&spec);
            for m in 0..=spec.max_code {
                assert_eq!(
                    mag_value(m, &spec).to_bits(),
                    table[m as usize].to_bits(),
                    "{m}"
                );
            }
        }
    }

    /// The bracketing rule on the decode tables: `lo` = the largest code whose value is
    /// at most `|v|` (clamped to max), `hi = lo + 1`, `hi` when
    /// `uniform * (value(hi) - value(lo)) < |v| - value(lo)` in float64; for values of
    /// every magnitude (subnormal and normal results, ties, beyond max) and draws next to
    /// the threshold.
    #[test]
    fn stochastic_fp_is_the_bracketing_rule() {
        for spec in [E4M3, E5M2, E2M1] {
            let table = table256(&spec);
            let max = table[spec.max_code as usize];
            let reference = |v: f32, bits: u32| -> u8 {
                let a = v.abs().min(max) as f64;
                let lo = (0..=spec.max_code)
                    .rev()
                    .find(|&c| table[c as usize] as f64 <= a)
                    .unwrap();
                let sign = (v.to_bits() >> 31) << (spec.ebits + spec.mbits);
                if lo == spec.max_code || table[lo as usize] as f64 == a {
                    return (lo | sign) as u8;
                }
                let (vl, vh) = (table[lo as usize] as f64, table[lo as usize + 1] as f64);
                let up = uniform_of(bits) * (vh - vl) < a - vl;
                ((lo + up as u32) | sign) as u8
            };
            let mut r = 3u64;
            for _ in 0..100_000 {
                r = super::super::rng::mix(r);
                let e = (r >> 40) as u32 % 40 + 100; // 2^-27 .. 2^12
                let v = f32::from_bits(e << 23 | (r as u32 & 0x7f_ffff) | ((r >> 63) as u32) << 31);
                let a = v.abs().min(max) as f64;
                // draws at random and next to the threshold of this value
                let lo = (0..=spec.max_code)
                    .rev()
                    .find(|&c| table[c as usize] as f64 <= a);
                let mut draws = vec![(r >> 8) as u32, 0, u32::MAX];
                if let Some(lo) = lo.filter(|&c| c < spec.max_code) {
                    let (vl, vh) = (table[lo as usize] as f64, table[lo as usize + 1] as f64);
                    let t = ((a - vl) / (vh - vl) * 4_294_967_296.0) as i64;
                    draws.extend([t - 1, t, t + 1].map(|b| b.clamp(0, u32::MAX as i64) as u32));
                }
                for bits in draws {
                    assert_eq!(
                        sr_encode(v, &spec, bits),
                        reference(v, bits),
                        "{:?} {v} {bits}",
                        spec.kind
                    );
                }
            }
            for v in [0.0, -0.0, max, -max, 1e30, -f32::MAX] {
                assert_eq!(sr_encode(v, &spec, 0), reference(v, 0), "{v}");
            }
        }
    }

    #[test]
    fn mx_scale_rule() {
        assert_eq!(mx_scale_code(6.0, 2), 127);
        assert_eq!(mx_scale_code(7.9, 2), 127);
        assert_eq!(mx_scale_code(8.0, 2), 128);
        assert_eq!(mx_scale_code(0.0, 2), 0);
        assert_eq!(mx_scale_code(448.0, 8), 127);
    }

    #[test]
    fn stochastic_fp_is_unbiased() {
        let st = Stream::new(3);
        let table = table256(&E2M1);
        let n = 50_000;
        let m: f64 = (0..n)
            .map(|i| table[sr_encode(2.6, &E2M1, st.bits32(i)) as usize] as f64)
            .sum::<f64>()
            / n as f64;
        assert!((m - 2.6).abs() < 0.01, "{m}");
        assert_eq!(sr_encode(7.0, &E2M1, 0), 7);
        assert_eq!(sr_encode(-3.0, &E2M1, 1 << 31), 13);
    }
}
