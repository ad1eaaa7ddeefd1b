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

use rayon::prelude::*;

use super::{
    amax, expect_len, for_each_piece, group_reduce, invalid, min_max, par_zip, simd_dispatch,
    Format, PackedRef, QuantError, QuantOptions, Quantized, ScaleMode, Scales, CHUNK,
};
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
    _p: &Progress,
) -> Result<Quantized, QuantError> {
    let f = opts.format;
    let n = x.len();
    let is4 = f == Format::Int4;
    let default = if is4 { Some(128) } else { None };
    let g = resolve_group(n, cols, opts.group_size, default, f)?;
    if is4 && g % 2 != 0 {
        return invalid(format!("int4 needs an even group_size, got {g}"));
    }
    let eps = f32::EPSILON;
    let asym = is4 && !opts.symmetric;
    let (qmin, qmax) = if is4 {
        (-8.0f32, 7.0f32)
    } else {
        (-128.0, 127.0)
    };
    // (scale, zero point) per group
    let (scales, zps): (Vec<f32>, Option<Vec<f32>>) = if asym {
        let mm = group_reduce(x, g, min_max, |a, b| (a.0.min(b.0), a.1.max(b.1)));
        let mut s = Vec::with_capacity(mm.len());
        let mut z = Vec::with_capacity(mm.len());
        for (lo, hi) in mm {
            let sc = ((hi - lo) / 15.0).max(eps);
            s.push(sc);
            z.push(lo + sc * 8.0);
        }
        (s, Some(z))
    } else if let ScaleMode::Fixed(s) = opts.scale {
        (vec![s], None)
    } else {
        let am = group_reduce(x, g, amax, f32::max);
        let half = (qmax - qmin) / 2.0;
        (am.into_iter().map(|a| (a / half).max(eps)).collect(), None)
    };
    let st = super::stream(opts.rounding);
    let per = CHUNK;
    let mut data = super::output::<u8>(if is4 { n / 2 } else { n });
    let oc = if is4 { per / 2 } else { per };
    let scales_ref = &scales;
    let zps_ref = zps.as_deref();
    par_zip(x, per, &mut data, oc, |ci, xi, o| {
        let start = ci * per;
        for_each_piece(start, xi.len(), g, |off, len, grp| {
            let xs = &xi[off..off + len];
            let sc = scales_ref[grp];
            let (mul, sub, div) = match zps_ref {
                Some(z) => (1.0, z[grp] - sc * 8.0, sc),
                None => (1.0 / sc, 0.0, 1.0),
            };
            // v = (x - sub) / div * mul  (exactly one of the two scalings is active)
            let lo_hi = if asym {
                (0.0f32, 15.0f32)
            } else {
                (qmin, qmax)
            };
            let bias: i32 = if is4 && !asym { 8 } else { 0 };
            if let Some(st) = &st {
                let mut codes = vec![0u8; len];
                for (j, (c, &v)) in codes.iter_mut().zip(xs).enumerate() {
                    let t = if asym { (v - sub) / div } else { v * mul };
                    let t = t.clamp(lo_hi.0, lo_hi.1);
                    let q = st.round(t, (start + off + j) as u64) as i32 + bias;
                    *c = q as u8;
                }
                write_codes(&codes, o, off, is4);
            } else if is4 {
                let ob = &mut o[off / 2..(off + len) / 2];
                let (lo, hi) = lo_hi;
                simd_dispatch!(xs: &[f32], ob: &mut [u8], asym: bool, mul: f32, sub: f32, div: f32,
                               lo: f32, hi: f32, bias: i32; (); {
                    for (b, pair) in ob.iter_mut().zip(xs.chunks_exact(2)) {
                        let (t0, t1) = if asym {
                            ((pair[0] - sub) / div, (pair[1] - sub) / div)
                        } else {
                            (pair[0] * mul, pair[1] * mul)
                        };
                        let q0 = (super::rne_i32(t0.clamp(lo, hi)) + bias) as u8;
                        let q1 = (super::rne_i32(t1.clamp(lo, hi)) + bias) as u8;
                        *b = q0 | (q1 << 4);
                    }
                })
            } else {
                let ob = &mut o[off..off + len];
                simd_dispatch!(xs: &[f32], ob: &mut [u8], mul: f32; (); {
                    for (b, &v) in ob.iter_mut().zip(xs) {
                        *b = super::rne_i32((v * mul).clamp(-128.0, 127.0)) as u8;
                    }
                })
            }
        });
    });
    Ok(Quantized {
        data,
        scales: Scales::F32(scales),
        zero_points: zps,
        tensor_scale: None,
        group_size: g,
    })
}

fn write_codes(codes: &[u8], o: &mut [u8], off: usize, is4: bool) {
    if is4 {
        for (k, pair) in codes.chunks_exact(2).enumerate() {
            o[off / 2 + k] = (pair[0] & 15) | (pair[1] << 4);
        }
    } else {
        o[off..off + codes.len()].copy_from_slice(codes);
    }
}

pub(crate) fn dequantize_int(
    q: &PackedRef<'_>,
    n: usize,
    _p: &Progress,
) -> Result<Vec<f32>, QuantError> {
    let f = q.format;
    let is4 = f == Format::Int4;
    let g = super::check_groups(q, n, is4)?;
    expect_len("data", q.data.len(), if is4 { n / 2 } else { n }, f)?;
    expect_len("scales", q.scales_f32.len(), n / g, f)?;
    if let Some(z) = q.zero_points {
        if !is4 {
            return super::format_err("int8 has no zero points");
        }
        expect_len("zero_points", z.len(), n / g, f)?;
    }
    let mut y = super::output::<f32>(n);
    let per = CHUNK;
    let ic = if is4 { per / 2 } else { per };
    par_zip(q.data, ic, &mut y, per, |ci, di, o| {
        let start = ci * per;
        for_each_piece(start, o.len(), g, |off, len, grp| {
            let sc = q.scales_f32[grp];
            let ys = &mut o[off..off + len];
            if is4 {
                let bytes = &di[off / 2..(off + len) / 2];
                let zp = q.zero_points.map_or(0.0, |z| z[grp]);
                simd_dispatch!(bytes: &[u8], ys: &mut [f32], sc: f32, zp: f32; (); {
                    for (pair, &b) in ys.chunks_exact_mut(2).zip(bytes) {
                        pair[0] = ((b & 15) as f32 - 8.0) * sc + zp;
                        pair[1] = ((b >> 4) as f32 - 8.0) * sc + zp;
                    }
                })
            } else {
                let bytes = &di[off..off + len];
                simd_dispatch!(bytes: &[u8], ys: &mut [f32], sc: f32; (); {
                    for (y, &b) in ys.iter_mut().zip(bytes) {
                        *y = (b as i8) as f32 * sc;
                    }
                })
            }
        });
    });
    Ok(y)
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
    _p: &Progress,
) -> Result<Quantized, QuantError> {
    let g = nf4_block_size(opts.group_size)?;
    let n = x.len();
    let nb = n.div_ceil(g);
    let mut absmax = vec![0f32; nb];
    let per = (CHUNK / g).max(1);
    absmax
        .par_chunks_mut(per)
        .zip(x.par_chunks(per * g))
        .for_each(|(a, xi)| {
            for (ai, b) in a.iter_mut().zip(xi.chunks(g)) {
                *ai = amax(b);
            }
        });
    let th = nf4_thresholds();
    let mut data = super::output::<u8>(n.div_ceil(2));
    let am = &absmax;
    par_zip(x, per * g, &mut data, per * g / 2, |ci, xi, o| {
        for (k, (b, ob)) in xi.chunks(g).zip(o.chunks_mut(g / 2)).enumerate() {
            let a = am[ci * per + k];
            let inv = if a == 0.0 { 0.0 } else { 1.0 / a };
            simd_dispatch!(b: &[f32], ob: &mut [u8], inv: f32, th: [f32; 15]; (); {
                let code = |v: f32| -> u8 {
                    let v = v * inv;
                    let mut c = 0u8;
                    for t in th {
                        c += (v > t) as u8;
                    }
                    c
                };
                let mut it = b.chunks_exact(2);
                for (o, pair) in ob.iter_mut().zip(&mut it) {
                    *o = (code(pair[0]) << 4) | code(pair[1]);
                }
                if let [last] = it.remainder() {
                    ob[b.len() / 2] = code(*last) << 4;
                }
            })
        }
    });
    Ok(Quantized {
        data,
        scales: Scales::F32(absmax),
        zero_points: None,
        tensor_scale: None,
        group_size: g,
    })
}

pub(crate) fn dequantize_nf4(
    q: &PackedRef<'_>,
    n: usize,
    _p: &Progress,
) -> Result<Vec<f32>, QuantError> {
    let g = nf4_block_size(Some(q.group_size)).map_err(|e| QuantError::Format(e.to_string()))?;
    expect_len("data", q.data.len(), n.div_ceil(2), q.format)?;
    expect_len("scales", q.scales_f32.len(), n.div_ceil(g), q.format)?;
    let mut y = super::output::<f32>(n);
    let per = (CHUNK / g).max(1);
    par_zip(q.data, per * g / 2, &mut y, per * g, |ci, di, o| {
        for (k, (ob, bytes)) in o.chunks_mut(g).zip(di.chunks(g / 2)).enumerate() {
            let a = q.scales_f32[ci * per + k];
            for (j, v) in ob.iter_mut().enumerate() {
                let b = bytes[j / 2];
                let c = if j % 2 == 0 { b >> 4 } else { b & 15 };
                *v = NF4_CODE[c as usize] * a;
            }
        }
    });
    Ok(y)
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
        let (sf, su) = match &q.scales {
            Scales::F32(s) => (s.as_slice(), &[][..]),
            Scales::U8(s) => (&[][..], s.as_slice()),
            Scales::None => (&[][..], &[][..]),
        };
        let r = PackedRef {
            format: f,
            rows: x.len() / cols,
            cols,
            data: &q.data,
            scales_f32: sf,
            scales_u8: su,
            zero_points: q.zero_points.as_deref(),
            tensor_scale: q.tensor_scale,
            group_size: q.group_size,
        };
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
