//! Low-bit quantization and packing.
//!
//! One file per format family:
//! * [`float`]: element codecs for OCP E4M3 / E5M2 / E2M1 (and IEEE half);
//! * [`ternary`]: BitNet b1.58 ternary (Hugging Face 2-bit layout), GGUF TQ1_0 / TQ2_0;
//! * [`int`]: symmetric int8, int4 (symmetric or torchao asymmetric), bitsandbytes NF4;
//! * [`mx`]: scaled FP8, OCP MX (MXFP4 / MXFP8) and NVFP4;
//! * [`rng`]: the counter-based stream behind stochastic rounding.
//!
//! [`quantize`] and [`dequantize`] dispatch on [`Format`]. Inputs are a row-major
//! float32 buffer seen as `rows x cols`, where `cols` is the axis groups run along
//! (the last dimension; for `ternary`, everything after the first dimension). Every
//! pass runs in parallel over chunks whose boundaries depend only on the input size,
//! and reductions combine per-chunk results in order, so results never depend on the
//! thread count.

pub mod float;
pub mod int;
pub mod mx;
pub mod rng;
pub mod ternary;

use rayon::prelude::*;

use crate::error::{Classify, ErrorKind};
use crate::Progress;

/// Elements per parallel work item.
pub(crate) const CHUNK: usize = 1 << 16;

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// Bad arguments or input values.
    #[error("{0}")]
    Invalid(String),
    /// Packed data that does not follow its format (wrong size, code out of range).
    #[error("{0}")]
    Format(String),
}

impl Classify for QuantError {
    fn kind(&self) -> ErrorKind {
        match self {
            QuantError::Invalid(_) => ErrorKind::InvalidInput,
            QuantError::Format(_) => ErrorKind::Format,
        }
    }
}

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T, QuantError> {
    Err(QuantError::Invalid(msg.into()))
}

pub(crate) fn format_err<T>(msg: impl Into<String>) -> Result<T, QuantError> {
    Err(QuantError::Format(msg.into()))
}

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
    check_finite(x)?;
    match f {
        Format::Ternary => ternary::quantize_ternary(x, rows, cols, opts, p),
        Format::Tq1_0 | Format::Tq2_0 => ternary::quantize_tq(x, cols, f, p),
        Format::Int8 | Format::Int4 => int::quantize_int(x, cols, opts, p),
        Format::Nf4 => int::quantize_nf4(x, opts, p),
        Format::Fp8E4m3 | Format::Fp8E5m2 => mx::quantize_fp8(x, cols, opts, p),
        Format::Mxfp4 | Format::Mxfp8E4m3 | Format::Mxfp8E5m2 => mx::quantize_mx(x, opts, p),
        Format::Nvfp4 => mx::quantize_nvfp4(x, opts, p),
    }
}

/// Reconstruct the float32 values of a packed tensor (row-major `rows x cols`).
pub fn dequantize(q: &PackedRef<'_>, p: &Progress) -> Result<Vec<f32>, QuantError> {
    let n = q
        .rows
        .checked_mul(q.cols)
        .filter(|&n| n > 0)
        .ok_or_else(|| QuantError::Format(format!("invalid shape {} x {}", q.rows, q.cols)))?;
    match q.format {
        Format::Ternary => ternary::dequantize_ternary(q, n, p),
        Format::Tq1_0 | Format::Tq2_0 => ternary::dequantize_tq(q, n, p),
        Format::Int8 | Format::Int4 => int::dequantize_int(q, n, p),
        Format::Nf4 => int::dequantize_nf4(q, n, p),
        Format::Fp8E4m3 | Format::Fp8E5m2 => mx::dequantize_fp8(q, n, p),
        Format::Mxfp4 | Format::Mxfp8E4m3 | Format::Mxfp8E5m2 => mx::dequantize_mx(q, n, p),
        Format::Nvfp4 => mx::dequantize_nvfp4(q, n, p),
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

/// Runs `$body` compiled for AVX2 when the CPU has it (wheels target baseline x86-64),
/// otherwise as is. The body must be an `#[inline(always)]`-friendly expression.
macro_rules! simd_dispatch {
    ($($arg:ident : $ty:ty),* ; $ret:ty ; $body:expr) => {{
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn inner($($arg: $ty),*) -> $ret { $body }
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) -> $ret { inner($($arg),*) }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                unsafe { avx2($($arg),*) }
            } else {
                inner($($arg),*)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            inner($($arg),*)
        }
    }};
}
pub(crate) use simd_dispatch;

/// Reject NaN and infinity, naming the first offending position.
pub(crate) fn check_finite(x: &[f32]) -> Result<(), QuantError> {
    let bad: usize = x
        .par_chunks(CHUNK)
        .map(|c| {
            simd_dispatch!(c: &[f32]; usize;
                c.iter().map(|v| (v.to_bits() & 0x7fff_ffff >= 0x7f80_0000) as usize).sum())
        })
        .sum();
    if bad > 0 {
        let i = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return invalid(format!(
            "input contains {} at flat index {i} ({bad} non-finite values); quantize \
             accepts finite values only (the fp8_encode/fp4_encode codecs map NaN and Inf)",
            x[i]
        ));
    }
    Ok(())
}

/// Largest |v| of a slice (finite input), without runtime dispatch: for use inside
/// kernels that are themselves dispatched.
#[inline(always)]
pub(crate) fn amax_plain(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            let a = c[k].abs();
            acc[k] = if a > acc[k] { a } else { acc[k] };
        }
    }
    let mut m = 0f32;
    for &v in acc.iter().chain(it.remainder()) {
        let a = v.abs();
        m = if a > m { a } else { m };
    }
    m
}

/// Largest |v| of a slice (finite input).
#[inline(always)]
pub(crate) fn amax(x: &[f32]) -> f32 {
    simd_dispatch!(x: &[f32]; f32; amax_plain(x))
}

/// (min, max) of a slice (finite input).
#[inline(always)]
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    simd_dispatch!(x: &[f32]; (f32, f32); {
        let mut lo = [f32::INFINITY; 8];
        let mut hi = [f32::NEG_INFINITY; 8];
        let mut it = x.chunks_exact(8);
        for c in &mut it {
            for k in 0..8 {
                lo[k] = if c[k] < lo[k] { c[k] } else { lo[k] };
                hi[k] = if c[k] > hi[k] { c[k] } else { hi[k] };
            }
        }
        let (mut a, mut b) = (f32::INFINITY, f32::NEG_INFINITY);
        for &v in lo.iter().chain(it.remainder()) {
            a = if v < a { v } else { a };
        }
        for &v in hi.iter().chain(it.remainder()) {
            b = if v > b { v } else { b };
        }
        (a, b)
    })
}

/// Per-group reduction `f` over groups of `g` consecutive elements (`g` divides
/// `x.len()`), in parallel; large groups are split into fixed chunks.
pub(crate) fn group_reduce<T: Send + Copy>(
    x: &[f32],
    g: usize,
    f: impl Fn(&[f32]) -> T + Sync,
    combine: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    if g >= CHUNK {
        x.chunks(g)
            .map(|grp| {
                let parts: Vec<T> = grp.par_chunks(CHUNK).map(&f).collect();
                parts.into_iter().reduce(&combine).expect("non-empty group")
            })
            .collect()
    } else {
        let per = (CHUNK / g).max(1) * g;
        let mut out = Vec::with_capacity(x.len() / g);
        let parts: Vec<Vec<T>> = x
            .par_chunks(per)
            .map(|c| c.chunks(g).map(&f).collect())
            .collect();
        for p in parts {
            out.extend(p);
        }
        out
    }
}

/// Round half to even to an integer, for |v| <= 2^22 (callers clamp first): the low
/// bits of `v + 1.5 * 2^23`. Fast in a baseline x86-64 build, where
/// `round_ties_even` is a library call.
#[inline(always)]
pub(crate) fn rne_i32(v: f32) -> i32 {
    const M: f32 = 12_582_912.0;
    ((v + M).to_bits() as i32).wrapping_sub(M.to_bits() as i32)
}

/// Calls `f(offset, len, group)` for the pieces of `start..start+len` that lie in one
/// group of `g` elements.
#[inline(always)]
pub(crate) fn for_each_piece(
    start: usize,
    len: usize,
    g: usize,
    mut f: impl FnMut(usize, usize, usize),
) {
    let mut off = 0;
    while off < len {
        let pos = start + off;
        let grp = pos / g;
        let take = ((grp + 1) * g - pos).min(len - off);
        f(off, take, grp);
        off += take;
    }
}

/// A zero-filled output buffer of `n` values for kernels to write (`T::default()` must
/// be all-zero bits, so that the allocation is a lazily zeroed `calloc`).
///
/// Large outputs are dominated by page faults on their first write (the kernels run at
/// a fraction of the cost). On Linux the 2 MiB-aligned interior of a large buffer is
/// advised as a transparent huge page region (`MADV_HUGEPAGE`) before it is touched,
/// which cuts the faults 512-fold where the kernel allows it; elsewhere, and when the
/// advice is refused, this is a plain `vec![0; n]`.
pub(crate) fn output<T: Copy + Default>(n: usize) -> Vec<T> {
    let v: Vec<T> = vec![T::default(); n];
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let bytes = n * std::mem::size_of::<T>();
        if bytes >= 4 * HUGE {
            let start = v.as_ptr() as usize;
            let lo = start.next_multiple_of(HUGE);
            let hi = (start + bytes) / HUGE * HUGE;
            if hi > lo {
                // SAFETY: [lo, hi) lies inside the buffer `v` owns; MADV_HUGEPAGE only
                // changes how its pages are backed, never their contents.
                unsafe {
                    libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    v
}

/// Parallel zip of input chunks of `xc` elements with output chunks of `oc` items;
/// `f(chunk_index, input, output)`. The chunk counts must match.
pub(crate) fn par_zip<T: Sync, U: Send>(
    x: &[T],
    xc: usize,
    out: &mut [U],
    oc: usize,
    f: impl Fn(usize, &[T], &mut [U]) + Sync + Send,
) {
    debug_assert_eq!(x.len().div_ceil(xc), out.len().div_ceil(oc));
    out.par_chunks_mut(oc)
        .zip(x.par_chunks(xc))
        .enumerate()
        .for_each(|(i, (o, xi))| f(i, xi, o));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names_round_trip() {
        for f in Format::ALL {
            assert_eq!(Format::parse(f.name()).unwrap(), f);
        }
        assert!(matches!(Format::parse("int3"), Err(QuantError::Invalid(_))));
    }

    #[test]
    fn rne_i32_matches_round_ties_even() {
        for i in -4000..4000 {
            let v = i as f32 * 0.25 + 0.0001 * (i % 3) as f32;
            assert_eq!(rne_i32(v) as f32, v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn pieces_cover_groups() {
        let mut seen = vec![];
        for_each_piece(5, 10, 4, |o, l, g| seen.push((o, l, g)));
        assert_eq!(seen, vec![(0, 3, 1), (3, 4, 2), (7, 3, 3)]);
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

    #[test]
    fn amax_and_minmax() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 - 20.0) * 0.5).collect();
        assert_eq!(amax(&x), 10.0);
        assert_eq!(min_max(&x), (-10.0, 8.0));
    }
}
