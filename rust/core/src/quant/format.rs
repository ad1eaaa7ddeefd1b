//! The formats, their options and the entry points: [`quantize`] and [`dequantize`]
//! check the arguments that do not depend on the format, then hand the work to the
//! format's own module; the checks shared by several formats' packed inputs live here.

use super::passes::{check_finite, Dst};
use super::{format_err, int, invalid, mx, rng, ternary, QuantError};
use crate::Progress;

/// The packed formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Ternary,
    Tq1_0,
    Tq2_0,
    Int8,
    Int4,
    Nf4,
    Fp8E4m3,
    Fp8E5m2,
    Mxfp4,
    Mxfp8E4m3,
    Mxfp8E5m2,
    Nvfp4,
}

impl Format {
    pub const ALL: [Format; 12] = [
        Format::Ternary,
        Format::Tq1_0,
        Format::Tq2_0,
        Format::Int8,
        Format::Int4,
        Format::Nf4,
        Format::Fp8E4m3,
        Format::Fp8E5m2,
        Format::Mxfp4,
        Format::Mxfp8E4m3,
        Format::Mxfp8E5m2,
        Format::Nvfp4,
    ];

    /// The name used by the Python API.
    pub fn name(self) -> &'static str {
        match self {
            Format::Ternary => "ternary",
            Format::Tq1_0 => "tq1_0",
            Format::Tq2_0 => "tq2_0",
            Format::Int8 => "int8",
            Format::Int4 => "int4",
            Format::Nf4 => "nf4",
            Format::Fp8E4m3 => "fp8_e4m3",
            Format::Fp8E5m2 => "fp8_e5m2",
            Format::Mxfp4 => "mxfp4",
            Format::Mxfp8E4m3 => "mxfp8_e4m3",
            Format::Mxfp8E5m2 => "mxfp8_e5m2",
            Format::Nvfp4 => "nvfp4",
        }
    }

    /// Parse a Python-side name.
    pub fn parse(s: &str) -> Result<Format, QuantError> {
        Format::ALL.into_iter().find(|f| f.name() == s).map_or_else(
            || {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.name()).collect();
                invalid(format!(
                    "unknown format {s:?}; expected one of {}",
                    names.join(", ")
                ))
            },
            Ok,
        )
    }
}

/// How the scale is chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ScaleMode {
    /// The format's default (absmean for ternary, absmax elsewhere).
    Default,
    /// BitNet: mean of |W| over the tensor.
    AbsMean,
    /// BitNet Reloaded: lower median of |W| over the tensor.
    AbsMedian,
    /// Largest |x| of each group.
    AbsMax,
    /// A fixed, caller-given scale (dequantized value = code value * scale).
    Fixed(f32),
}

/// Rounding of scaled values to codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rounding {
    /// Round to nearest (ties as the format's reference defines them).
    Nearest,
    /// `floor(v) + Bernoulli(v - floor(v))`, drawn from [`rng::Stream`] keyed by the seed.
    Stochastic(u64),
}

/// Options of [`quantize`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantOptions {
    pub format: Format,
    /// Group length along the last axis (int8/int4/fp8; must divide `cols`) or block
    /// length (nf4). `None`: the format's default. `Some(0)` means per-tensor.
    pub group_size: Option<usize>,
    pub scale: ScaleMode,
    /// int4 only: symmetric (no zero points) instead of torchao's asymmetric scheme.
    pub symmetric: bool,
    pub rounding: Rounding,
    /// fp8 only: clamp values beyond the format's max (else NaN / Inf as ml_dtypes).
    pub saturate: bool,
}

impl QuantOptions {
    pub fn new(format: Format) -> Self {
        QuantOptions {
            format,
            group_size: None,
            scale: ScaleMode::Default,
            symmetric: false,
            rounding: Rounding::Nearest,
            saturate: true,
        }
    }
}

/// Per-group scales: float32 or one-byte codes (E8M0 for MX, E4M3 for NVFP4).
#[derive(Debug, Clone, PartialEq)]
pub enum Scales {
    None,
    F32(Vec<f32>),
    U8(Vec<u8>),
}

/// The result of [`quantize`].
#[derive(Debug, Clone, PartialEq)]
pub struct Quantized {
    /// Packed bytes in the format's own layout.
    pub data: Vec<u8>,
    pub scales: Scales,
    /// int4 asymmetric: float zero points, one per group.
    pub zero_points: Option<Vec<f32>>,
    /// NVFP4: the per-tensor float32 scale.
    pub tensor_scale: Option<f32>,
    /// Elements per group/block (the whole tensor for per-tensor scaling).
    pub group_size: usize,
}

impl Quantized {
    /// This tensor as the input of [`dequantize`] (`rows x cols` as given to [`quantize`]).
    pub fn as_packed(&self, format: Format, rows: usize, cols: usize) -> PackedRef<'_> {
        let (scales_f32, scales_u8) = match &self.scales {
            Scales::F32(s) => (s.as_slice(), &[][..]),
            Scales::U8(s) => (&[][..], s.as_slice()),
            Scales::None => (&[][..], &[][..]),
        };
        PackedRef {
            format,
            rows,
            cols,
            data: &self.data,
            scales_f32,
            scales_u8,
            zero_points: self.zero_points.as_deref(),
            tensor_scale: self.tensor_scale,
            group_size: self.group_size,
        }
    }
}

/// Borrowed packed tensor for [`dequantize`].
#[derive(Debug, Clone, Copy)]
pub struct PackedRef<'a> {
    pub format: Format,
    pub rows: usize,
    pub cols: usize,
    pub data: &'a [u8],
    pub scales_f32: &'a [f32],
    pub scales_u8: &'a [u8],
    pub zero_points: Option<&'a [f32]>,
    pub tensor_scale: Option<f32>,
    pub group_size: usize,
}

/// Quantize the row-major `rows x cols` float32 matrix `x`; see the module docs.
pub fn quantize(
    x: &[f32],
    rows: usize,
    cols: usize,
    opts: &QuantOptions,
    p: &Progress,
) -> Result<Quantized, QuantError> {
    if rows.checked_mul(cols) != Some(x.len()) {
        return invalid(format!(
            "input has {} values, which is not {rows} x {cols}",
            x.len()
        ));
    }
    if x.is_empty() {
        return invalid("cannot quantize an empty array");
    }
    let f = opts.format;
    if let Rounding::Stochastic(_) = opts.rounding {
        if matches!(f, Format::Tq1_0 | Format::Tq2_0 | Format::Nf4) {
            return invalid(format!(
                "rounding=\"stochastic\" is not defined for {}; its reference rounds to nearest",
                f.name()
            ));
        }
    }
    let scale_ok = match opts.scale {
        ScaleMode::Default => true,
        ScaleMode::AbsMean | ScaleMode::AbsMedian => f == Format::Ternary,
        ScaleMode::AbsMax => matches!(
            f,
            Format::Int8 | Format::Int4 | Format::Fp8E4m3 | Format::Fp8E5m2
        ),
        ScaleMode::Fixed(s) => {
            if !(s.is_finite() && s > 0.0) {
                return invalid(format!("a fixed scale must be finite and > 0, got {s}"));
            }
            matches!(f, Format::Int8 | Format::Fp8E4m3 | Format::Fp8E5m2)
                && matches!(opts.group_size, None | Some(0))
        }
    };
    if !scale_ok {
        return invalid(format!(
            "scale={:?} is not supported for format {} (ternary: absmean/absmedian; \
             int8/int4/fp8: absmax, and a fixed number for per-tensor int8/fp8; others: default)",
            opts.scale,
            f.name()
        ));
    }
    if opts.symmetric && f != Format::Int4 {
        return invalid("symmetric applies to int4 only");
    }
    // Every path below detects NaN / Inf itself, inside a pass it makes anyway (the
    // largest |v| is taken on the float bits, where they sort above every finite value).
    let r = match f {
        Format::Ternary => ternary::quantize_ternary(x, rows, cols, opts, p),
        Format::Tq1_0 | Format::Tq2_0 => ternary::quantize_tq(x, cols, f, p),
        Format::Int8 | Format::Int4 => int::quantize_int(x, cols, opts, p),
        Format::Nf4 => int::quantize_nf4(x, opts, p),
        Format::Fp8E4m3 | Format::Fp8E5m2 => mx::quantize_fp8(x, cols, opts, p),
        Format::Mxfp4 | Format::Mxfp8E4m3 | Format::Mxfp8E5m2 => mx::quantize_mx(x, opts, p),
        Format::Nvfp4 => mx::quantize_nvfp4(x, opts, p),
    };
    // NaN / Inf is reported before any other problem with the arguments.
    if r.is_err() {
        check_finite(x)?;
    }
    r
}

/// Reconstruct the float32 values of a packed tensor (row-major `rows x cols`).
pub fn dequantize(q: &PackedRef<'_>, p: &Progress) -> Result<Vec<f32>, QuantError> {
    let n = value_count(q)?;
    dequantize_dst(q, Dst::New(n), p)
}

/// [`dequantize`] into the caller's buffer of `rows * cols` values (no allocation, and
/// no page faults when the buffer is reused). The packed tensor is fully checked before
/// the first value is written: on an error `out` is left as it was (a cancelled call
/// may have written part of it).
pub fn dequantize_into(q: &PackedRef<'_>, out: &mut [f32], p: &Progress) -> Result<(), QuantError> {
    let n = value_count(q)?;
    if out.len() != n {
        return Err(QuantError::Invalid(format!(
            "out holds {} values, the tensor has {n} ({} x {})",
            out.len(),
            q.rows,
            q.cols
        )));
    }
    dequantize_dst(q, Dst::Into(out), p).map(|_| ())
}

fn value_count(q: &PackedRef<'_>) -> Result<usize, QuantError> {
    q.rows
        .checked_mul(q.cols)
        .filter(|&n| n > 0)
        .ok_or_else(|| QuantError::Format(format!("invalid shape {} x {}", q.rows, q.cols)))
}

fn dequantize_dst(q: &PackedRef<'_>, dst: Dst<'_>, p: &Progress) -> Result<Vec<f32>, QuantError> {
    match q.format {
        Format::Ternary => ternary::dequantize_ternary(q, dst, p),
        Format::Tq1_0 | Format::Tq2_0 => ternary::dequantize_tq(q, dst, p),
        Format::Int8 | Format::Int4 => int::dequantize_int(q, dst, p),
        Format::Nf4 => int::dequantize_nf4(q, dst, p),
        Format::Fp8E4m3 | Format::Fp8E5m2 => mx::dequantize_fp8(q, dst, p),
        Format::Mxfp4 | Format::Mxfp8E4m3 | Format::Mxfp8E5m2 => mx::dequantize_mx(q, dst, p),
        Format::Nvfp4 => mx::dequantize_nvfp4(q, dst, p),
    }
}

/// The stochastic stream of a rounding mode (`None` for nearest).
pub(crate) fn stream(r: Rounding) -> Option<rng::Stream> {
    match r {
        Rounding::Stochastic(seed) => Some(rng::Stream::new(seed)),
        Rounding::Nearest => None,
    }
}

/// Check that a packed tensor's group size fits its shape (groups along `cols`).
pub(crate) fn check_groups(q: &PackedRef<'_>, n: usize, even: bool) -> Result<usize, QuantError> {
    let g = q.group_size;
    if g == 0
        || !n.is_multiple_of(g)
        || (g != n && !q.cols.is_multiple_of(g))
        || (even && !g.is_multiple_of(2))
    {
        return format_err(format!(
            "{}: group_size {g} does not fit shape {} x {}",
            q.format.name(),
            q.rows,
            q.cols
        ));
    }
    Ok(g)
}

/// Check the size of a packed array against what the format needs.
pub(crate) fn expect_len(what: &str, got: usize, want: usize, f: Format) -> Result<(), QuantError> {
    if got != want {
        return format_err(format!(
            "{} {what} has {got} entries, expected {want} for this shape",
            f.name()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Classify;
    use crate::quant::simd::scalar_only;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()).unwrap(), f);
        }
        assert!(matches!(Format::parse("int3"), Err(QuantError::Invalid(_))));
    }

    #[test]
    fn fixed_fp8_scale_saturates_overflowing_quotients() {
        let p = Progress::new();
        for (f, max) in [(Format::Fp8E4m3, 448.0f32), (Format::Fp8E5m2, 57344.0)] {
            for rounding in [Rounding::Nearest, Rounding::Stochastic(3)] {
                let mut o = QuantOptions::new(f);
                o.scale = ScaleMode::Fixed(0.5);
                o.rounding = rounding;
                let x = [3e38f32, -3e38, f32::MAX, 1.0];
                let q = quantize(&x, 1, 4, &o, &p).unwrap();
                let y = dequantize(&q.as_packed(f, 1, 4), &p).unwrap();
                assert_eq!(y, vec![max * 0.5, -max * 0.5, max * 0.5, 1.0], "{f:?}");
            }
            let mut o = QuantOptions::new(f);
            o.scale = ScaleMode::Fixed(1e36);
            assert!(matches!(
                quantize(&[1.0], 1, 1, &o, &p),
                Err(QuantError::Invalid(_))
            ));
        }
    }

    #[test]
    fn unrepresentable_ranges_are_refused() {
        let p = Progress::new();
        let mut x = vec![0f32; 512];
        x[300] = 65520.0;
        for f in [Format::Tq1_0, Format::Tq2_0] {
            let e = quantize(&x, 2, 256, &QuantOptions::new(f), &p).unwrap_err();
            assert!(e.to_string().contains("flat index 300"), "{e}");
        }
        x[300] = 65519.0;
        assert!(quantize(&x, 2, 256, &QuantOptions::new(Format::Tq1_0), &p).is_ok());
        x[0] = -3e38;
        x[1] = 3e38;
        let e = quantize(&x, 2, 256, &QuantOptions::new(Format::Int4), &p).unwrap_err();
        assert!(e.to_string().contains("group 0"), "{e}");
        x[1] = f32::MAX;
        // nvfp4 and fp8 (absmax) stay finite even at float32's max: accepted
        for f in [Format::Nvfp4, Format::Fp8E4m3, Format::Fp8E5m2] {
            let q = quantize(&x, 2, 256, &QuantOptions::new(f), &p).unwrap();
            let y = dequantize(&q.as_packed(f, 2, 256), &p).unwrap();
            assert!(y.iter().all(|v| v.is_finite()), "{f:?}");
        }
        // -128 * (amax / 127.5) overflows
        assert!(quantize(&x, 2, 256, &QuantOptions::new(Format::Int8), &p).is_err());
        let mut o = QuantOptions::new(Format::Int8);
        o.scale = ScaleMode::Fixed(1e-39);
        assert!(quantize(&[0.0, 1.0], 1, 2, &o, &p).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        let p = Progress::new();
        let o = QuantOptions::new(Format::Int8);
        assert!(quantize(&[], 0, 0, &o, &p).is_err());
        assert!(quantize(&[1.0, f32::NAN], 1, 2, &o, &p).is_err());
        assert!(quantize(&[1.0, 2.0], 1, 3, &o, &p).is_err());
        let mut o2 = QuantOptions::new(Format::Nf4);
        o2.rounding = Rounding::Stochastic(1);
        assert!(quantize(&[1.0, 2.0], 1, 2, &o2, &p).is_err());
    }

    /// Inputs that exercise ties, subnormals, zeros, huge values and ragged tails.
    fn tricky_inputs() -> Vec<(usize, usize, Vec<f32>)> {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut out = vec![];
        for &(rows, cols) in &[
            (1, 1),
            (3, 7),
            (5, 33),
            (4, 256),
            (8, 768),
            (3, 70_000),
            (2, 131_072),
        ] {
            let n = rows * cols;
            let x: Vec<f32> = (0..n)
                .map(|i| {
                    let r = next();
                    match r % 11 {
                        0 => 0.0,
                        1 => -0.0,
                        2 => f32::from_bits((r >> 20) as u32 & 0x007f_ffff), // subnormal
                        3 => ((r >> 16) % 33) as f32 / 8.0 - 2.0,            // ties
                        4 => ((r >> 16) % 17) as f32 * 0.25 - 2.0,
                        5 => (i % 13) as f32 * 1e-3,
                        6 => -(((r >> 8) % 1000) as f32) * 37.5,
                        _ => ((r >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 4.0) as f32,
                    }
                })
                .collect();
            out.push((rows, cols, x));
        }
        out
    }

    fn all_options() -> Vec<QuantOptions> {
        let mut v = vec![];
        for f in Format::ALL {
            v.push(QuantOptions::new(f));
            if !matches!(f, Format::Tq1_0 | Format::Tq2_0 | Format::Nf4) {
                let mut o = QuantOptions::new(f);
                o.rounding = Rounding::Stochastic(17);
                v.push(o);
            }
        }
        for (f, g, sym) in [
            (Format::Int8, Some(1), false),
            (Format::Int8, Some(0), false),
            (Format::Int4, Some(2), true),
            (Format::Int4, Some(0), false),
            (Format::Nf4, Some(32), false),
            (Format::Fp8E5m2, Some(1), false),
        ] {
            let mut o = QuantOptions::new(f);
            o.group_size = g;
            o.symmetric = sym;
            v.push(o);
        }
        let mut o = QuantOptions::new(Format::Ternary);
        o.scale = ScaleMode::AbsMedian;
        v.push(o);
        let mut o = QuantOptions::new(Format::Fp8E4m3);
        o.scale = ScaleMode::Fixed(1e-3);
        o.saturate = false;
        v.push(o);
        v
    }

    fn run_both(
        x: &[f32],
        rows: usize,
        cols: usize,
        o: &QuantOptions,
    ) -> [Option<(Quantized, Vec<u32>)>; 2] {
        let go = || {
            let p = Progress::new();
            let q = quantize(x, rows, cols, o, &p).ok()?;
            let r = q.as_packed(o.format, rows, cols);
            let y = dequantize(&r, &p).expect("own output decodes");
            let yb: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
            // the caller's buffer (stale NaNs in it) gets the same values
            let mut into = vec![f32::NAN; y.len()];
            dequantize_into(&r, &mut into, &p).expect("own output decodes");
            assert!(into.iter().map(|v| v.to_bits()).eq(yb.iter().copied()));
            Some((q, yb))
        };
        [go(), scalar_only(go)]
    }

    /// The AVX2 kernels (and the multi-threaded chunking) give exactly the bytes,
    /// scales and decoded floats of the baseline kernels on one thread.
    #[test]
    fn dispatched_kernels_match_baseline() {
        for (rows, cols, x) in tricky_inputs() {
            for o in all_options() {
                let [a, b] = run_both(&x, rows, cols, &o);
                assert_eq!(a.is_some(), b.is_some(), "{o:?} {rows}x{cols}");
                if let (Some(a), Some(b)) = (a, b) {
                    assert!(a == b, "{:?} {rows}x{cols}", o.format);
                }
            }
        }
    }

    /// A cancelled call (Ctrl-C in Python) stops in its passes and says so, for every
    /// format and option, both ways, and for the element codecs.
    #[test]
    fn cancelled_calls_report_cancelled() {
        let (rows, cols, x) = tricky_inputs().swap_remove(4);
        let cancelled = Progress::new();
        cancelled.cancel();
        let is_cancelled = |e: QuantError| {
            assert_eq!(e.kind(), crate::error::ErrorKind::Cancelled, "{e}");
        };
        for o in all_options() {
            let Ok(q) = quantize(&x, rows, cols, &o, &Progress::new()) else {
                continue;
            };
            is_cancelled(quantize(&x, rows, cols, &o, &cancelled).unwrap_err());
            let r = q.as_packed(o.format, rows, cols);
            is_cancelled(dequantize(&r, &cancelled).unwrap_err());
            let mut out = vec![0f32; x.len()];
            is_cancelled(dequantize_into(&r, &mut out, &cancelled).unwrap_err());
        }
        let kind = super::super::float::FloatKind::E4M3;
        is_cancelled(mx::encode_slice(&x, kind, true, &cancelled).unwrap_err());
        let xd: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        is_cancelled(mx::encode_slice_f64(&xd, kind, true, &cancelled).unwrap_err());
        is_cancelled(mx::decode_slice(&[1, 2, 3], kind, &cancelled).unwrap_err());
    }

    #[test]
    fn dequantize_into_checks_before_writing() {
        let p = Progress::new();
        let x: Vec<f32> = (0..512).map(|i| (i as f32 * 0.37).sin()).collect();
        let q = quantize(&x, 2, 256, &QuantOptions::new(Format::Tq2_0), &p).unwrap();
        let mut r = q.as_packed(Format::Tq2_0, 2, 256);
        let mut short = vec![1.0f32; 511];
        let e = dequantize_into(&r, &mut short, &p).unwrap_err();
        assert!(matches!(e, QuantError::Invalid(_)), "{e}");
        assert!(short.iter().all(|&v| v == 1.0));
        // a corrupt code anywhere: an error, and the buffer as it was
        let mut bad = q.data.clone();
        bad[100] = 0xff;
        r.data = &bad;
        let mut out = vec![1.0f32; 512];
        assert!(dequantize_into(&r, &mut out, &p).is_err());
        assert!(out.iter().all(|&v| v == 1.0));
    }

    #[test]
    fn nonfinite_rejected_on_every_path() {
        for (rows, cols, x) in tricky_inputs().into_iter().skip(2) {
            let n = x.len();
            for pos in [0, n / 2, n - 1] {
                for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
                    let mut y = x.clone();
                    y[pos] = bad;
                    for o in all_options() {
                        let p = Progress::new();
                        let got = quantize(&y, rows, cols, &o, &p);
                        let ok_shape = quantize(&x, rows, cols, &o, &p).is_ok();
                        if ok_shape {
                            let e = got.expect_err("non-finite input must be rejected");
                            assert!(e.to_string().contains(&format!("flat index {pos}")), "{e}");
                        }
                    }
                }
            }
        }
    }
}
