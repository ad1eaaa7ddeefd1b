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
mod simd;
pub mod ternary;

use rayon::prelude::*;

use crate::alloc::{try_vec, try_with_capacity, AllocError};
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
    /// A buffer (output, scales) could not be allocated.
    #[error(transparent)]
    Alloc(#[from] AllocError),
}

impl Classify for QuantError {
    fn kind(&self) -> ErrorKind {
        match self {
            QuantError::Invalid(_) => ErrorKind::InvalidInput,
            QuantError::Format(_) => ErrorKind::Format,
            QuantError::Alloc(e) => e.kind(),
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
/// the first value is written: on an error `out` is left as it was.
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

/// Where a dequantization writes: a new buffer of `n` values, or the caller's.
pub(crate) enum Dst<'a> {
    New(usize),
    Into(&'a mut [f32]),
}

impl Dst<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Dst::New(n) => *n,
            Dst::Into(o) => o.len(),
        }
    }
}

/// [`par_out`] into a [`Dst`]: returns the new buffer, or an empty one after filling
/// the caller's (same chunks either way).
pub(crate) fn par_out_dst(
    dst: Dst<'_>,
    oc: usize,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Result<Vec<f32>, AllocError> {
    match dst {
        Dst::New(n) => par_out(n, oc, f),
        Dst::Into(out) => {
            out.par_chunks_mut(oc.max(1))
                .enumerate()
                .for_each(|(i, o)| f(i, o));
            Ok(Vec::new())
        }
    }
}

/// [`par_map`] into a [`Dst`].
pub(crate) fn par_map_dst<T: Sync>(
    x: &[T],
    xc: usize,
    dst: Dst<'_>,
    oc: usize,
    f: impl Fn(usize, &[T], &mut [f32]) + Sync + Send,
) -> Result<Vec<f32>, AllocError> {
    debug_assert_eq!(x.len().div_ceil(xc), dst.len().div_ceil(oc));
    par_out_dst(dst, oc, |i, o| {
        let xi = &x[i * xc..((i + 1) * xc).min(x.len())];
        f(i, xi, o)
    })
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
            if $crate::quant::has_avx2() {
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

/// Float32 bits of |v| at and above which a value is NaN or infinite.
pub(crate) const NONFINITE: u32 = 0x7f80_0000;

/// Largest `bits(|v|)` of a slice, without runtime dispatch. For finite input
/// `f32::from_bits` of it is the largest |v| (non-negative floats sort like their
/// bits); NaN and infinity give a result `>= NONFINITE`, so one pass both finds the
/// scale and validates the input.
#[inline(always)]
pub(crate) fn amax_bits_plain(x: &[f32]) -> u32 {
    // An integer max reduction: the compiler vectorises it with several accumulators
    // (integer max is associative, so the order does not matter).
    x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff))
}

/// [`amax_bits_plain`] compiled for AVX2 when available.
pub(crate) fn amax_bits(x: &[f32]) -> u32 {
    simd_dispatch!(x: &[f32]; u32; amax_bits_plain(x))
}

/// (min, max, largest `bits(|v|)`) of a slice, without runtime dispatch; min and max
/// are meaningful for finite input only.
#[inline(always)]
pub(crate) fn min_max_bits_plain(x: &[f32]) -> (f32, f32, u32) {
    let mut lo = [f32::INFINITY; 8];
    let mut hi = [f32::NEG_INFINITY; 8];
    let mut bits = [0u32; 8];
    let mut it = x.chunks_exact(8);
    for c in &mut it {
        for k in 0..8 {
            lo[k] = if c[k] < lo[k] { c[k] } else { lo[k] };
            hi[k] = if c[k] > hi[k] { c[k] } else { hi[k] };
            bits[k] = bits[k].max(c[k].to_bits() & 0x7fff_ffff);
        }
    }
    let (mut a, mut b, mut m) = (f32::INFINITY, f32::NEG_INFINITY, 0u32);
    for &v in lo.iter().chain(it.remainder()) {
        a = if v < a { v } else { a };
    }
    for &v in hi.iter().chain(it.remainder()) {
        b = if v > b { v } else { b };
    }
    for &v in &bits {
        m = m.max(v);
    }
    for v in it.remainder() {
        m = m.max(v.to_bits() & 0x7fff_ffff);
    }
    (a, b, m)
}

/// Raised by any parallel chunk whose largest `bits(|v|)` says NaN or infinity; checked
/// once after the pass ([`NonFiniteFlag::check`] names the first bad value).
#[derive(Default)]
pub(crate) struct NonFiniteFlag(std::sync::atomic::AtomicBool);

impl NonFiniteFlag {
    pub(crate) fn note(&self, worst_bits: u32) {
        if worst_bits >= NONFINITE {
            self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub(crate) fn check(self, x: &[f32]) -> Result<(), QuantError> {
        if self.0.into_inner() {
            return Err(nonfinite(x));
        }
        Ok(())
    }
}

/// The error [`check_finite`] gives for `x` (which holds a NaN or an infinity).
pub(crate) fn nonfinite(x: &[f32]) -> QuantError {
    match check_finite(x) {
        Err(e) => e,
        Ok(()) => QuantError::Invalid("input contains NaN or infinity".into()),
    }
}

/// A kernel that [`dispatch`] runs compiled for AVX2 when the CPU has it (release
/// wheels target baseline x86-64). `run` must be `#[inline(always)]` (and what it
/// calls `#[inline(always)]` or small) so that it is inlined into the AVX2 copy, where
/// plain loops vectorise with 256-bit registers. (A closure would not do: its body is
/// a function of its own, compiled for the baseline.)
pub(crate) trait Kernel {
    type Out;
    fn run(self) -> Self::Out;
}

/// Run `k` compiled for AVX2 when available, else as is.
#[inline(always)]
pub(crate) fn dispatch<K: Kernel>(k: K) -> K::Out {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        unsafe fn avx2<K: Kernel>(k: K) -> K::Out {
            k.run()
        }
        if has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { avx2(k) };
        }
    }
    k.run()
}

/// Whether the AVX2 kernels run (false when the CPU lacks AVX2, or when
/// `force_scalar(true)` is in effect in tests).
#[inline(always)]
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        #[cfg(test)]
        if FORCE_SCALAR.with(|f| f.get()) {
            return false;
        }
        crate::cpu::avx2()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(test)]
thread_local! {
    static FORCE_SCALAR: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Tests: run `f` with the AVX2 kernels of this module disabled on this thread and
/// the rayon pool limited to this thread, so that every kernel takes its baseline path.
#[cfg(test)]
pub(crate) fn scalar_only<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    crate::parallel::install(1, || {
        FORCE_SCALAR.with(|c| c.set(true));
        let r = f();
        FORCE_SCALAR.with(|c| c.set(false));
        r
    })
}

/// Per-group reduction `f` over groups of `g` consecutive elements (`g` divides
/// `x.len()`), in parallel; large groups are split into fixed chunks.
pub(crate) fn group_reduce<T: Send + Copy>(
    x: &[f32],
    g: usize,
    f: impl Fn(&[f32]) -> T + Sync,
    combine: impl Fn(T, T) -> T + Sync,
) -> Result<Vec<T>, AllocError> {
    let mut out = try_with_capacity(x.len().div_ceil(g), "group statistics")?;
    if g >= CHUNK {
        // at most one entry per CHUNK input values: the partial results are small
        out.extend(x.chunks(g).map(|grp| {
            let parts: Vec<T> = grp.par_chunks(CHUNK).map(&f).collect();
            parts.into_iter().reduce(&combine).expect("non-empty group")
        }));
    } else {
        let per = (CHUNK / g).max(1) * g;
        let parts: Vec<Vec<T>> = x
            .par_chunks(per)
            .map(|c| c.chunks(g).map(&f).collect())
            .collect();
        for p in parts {
            out.extend(p);
        }
    }
    Ok(out)
}

/// Round half to even to an integer, for |v| <= 2^22 (callers clamp first): the low
/// bits of `v + 1.5 * 2^23`. Fast in a baseline x86-64 build, where
/// `round_ties_even` is a library call.
#[inline(always)]
pub(crate) fn rne_i32(v: f32) -> i32 {
    const M: f32 = 12_582_912.0;
    ((v + M).to_bits() as i32).wrapping_sub(M.to_bits() as i32)
}

/// The pieces `(offset, len, group)` of `start..start+len` that lie in one group of
/// `g` elements (an iterator, so that loop bodies stay in the calling kernel).
#[inline(always)]
pub(crate) fn pieces(start: usize, len: usize, g: usize) -> Pieces {
    Pieces {
        start,
        len,
        g,
        off: 0,
    }
}

pub(crate) struct Pieces {
    start: usize,
    len: usize,
    g: usize,
    off: usize,
}

impl Iterator for Pieces {
    type Item = (usize, usize, usize);
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        if self.off >= self.len {
            return None;
        }
        let (off, pos) = (self.off, self.start + self.off);
        let grp = pos / self.g;
        let take = ((grp + 1) * self.g - pos).min(self.len - off);
        self.off += take;
        Some((off, take, grp))
    }
}

/// Advise the 2 MiB-aligned interior of a large fresh buffer as a transparent huge
/// page region (`MADV_HUGEPAGE`) before it is touched.
///
/// Large outputs are dominated by page faults on their first write (the kernels run at
/// a fraction of the cost); huge pages cut the faults 512-fold where the kernel allows
/// it. Elsewhere, and when the advice is refused, this does nothing.
fn advise_huge(start: usize, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if bytes >= 4 * HUGE {
            let lo = start.next_multiple_of(HUGE);
            let hi = (start + bytes) / HUGE * HUGE;
            if hi > lo {
                // SAFETY: [lo, hi) lies inside the caller's allocation; MADV_HUGEPAGE only
                // changes how its pages are backed, never their contents.
                unsafe {
                    libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

/// Output size from which `calloc` gets fresh zero pages from the kernel (glibc maps
/// allocations above its largest mmap threshold, 32 MiB on 64-bit).
const LARGE: usize = 32 << 20;

/// Element types of the buffers made by [`par_out_with`].
///
/// # Safety
/// The all-zero bit pattern must be a valid value equal to `Self::default()`.
pub(crate) unsafe trait ZeroBits: Copy + Default + Send + Sync {}
// SAFETY: zero bits are 0 / 0.0 for these types.
unsafe impl ZeroBits for u8 {}
// SAFETY: as above.
unsafe impl ZeroBits for f32 {}

/// What an output buffer is called in an allocation error.
const OUT_BUFFER: &str = "the output buffer";

/// A zero-filled buffer of `n` values from `alloc_zeroed` (for large sizes glibc's
/// `calloc` maps fresh zero pages without a `memset`), or an [`AllocError`] instead of
/// the abort of `vec![0; n]`.
fn try_zeroed<T: ZeroBits>(n: usize) -> Result<Vec<T>, AllocError> {
    let err = AllocError {
        what: OUT_BUFFER,
        bytes: n.saturating_mul(std::mem::size_of::<T>()),
    };
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| err)?;
    if layout.size() == 0 {
        return Ok(Vec::new());
    }
    // SAFETY: the layout has a non-zero size.
    let p = unsafe { std::alloc::alloc_zeroed(layout) } as *mut T;
    if p.is_null() {
        return Err(err);
    }
    // SAFETY: `p` comes from the global allocator with the layout of `[T; n]`, and its
    // `n` values are zero bits, a valid `T` (`ZeroBits`).
    Ok(unsafe { Vec::from_raw_parts(p, n, n) })
}

/// A new buffer of `n` values written in parallel chunks of `oc` values by
/// `f(chunk_index, chunk)`, zipped with chunks of `sc` entries of `side` (per-chunk
/// scales; pass `&mut []` and any `sc` when there are none).
///
/// The buffer is never zero-filled in a separate pass (`vec![0; n]` is a `memset`
/// once the allocator reuses memory): each chunk is zeroed just before `f` sees it,
/// while it is hot in cache. Buffers of [`LARGE`] bytes or more are fresh mappings
/// (glibc's `calloc` maps them without a `memset`) and are used as they come.
/// `T::default()` must be a valid value for the kernels to overwrite.
pub(crate) fn par_out_with<T, S>(
    n: usize,
    oc: usize,
    side: &mut [S],
    sc: usize,
    f: impl Fn(usize, &mut [T], &mut [S]) + Sync + Send,
) -> Result<Vec<T>, AllocError>
where
    T: ZeroBits,
    S: Send,
{
    let oc = oc.max(1);
    // every output chunk must meet a side chunk (a shorter zip would leave some unwritten)
    assert!(side.is_empty() || n.div_ceil(oc) == side.len().div_ceil(sc.max(1)));
    if n * std::mem::size_of::<T>() >= LARGE {
        // A fresh mapping from the allocator: its pages are zero already, and touching
        // them twice would cost a pass over memory.
        let mut v = try_zeroed::<T>(n)?;
        advise_huge(v.as_ptr() as usize, n * std::mem::size_of::<T>());
        if side.is_empty() {
            v.par_chunks_mut(oc)
                .enumerate()
                .for_each(|(i, c)| f(i, c, &mut []));
        } else {
            v.par_chunks_mut(oc)
                .zip(side.par_chunks_mut(sc.max(1)))
                .enumerate()
                .for_each(|(i, (c, s))| f(i, c, s));
        }
        return Ok(v);
    }
    let mut v: Vec<std::mem::MaybeUninit<T>> = try_with_capacity(n, OUT_BUFFER)?;
    advise_huge(v.as_ptr() as usize, n * std::mem::size_of::<T>());
    // SAFETY: the capacity is `n` and `MaybeUninit` values need no initialisation.
    unsafe { v.set_len(n) };
    let body = |i: usize, c: &mut [std::mem::MaybeUninit<T>], s: &mut [S]| {
        for e in c.iter_mut() {
            e.write(T::default());
        }
        // SAFETY: every element of `c` was initialised just above, and
        // `MaybeUninit<T>` has the layout of `T`.
        let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<T>] as *mut [T]) };
        f(i, c, s);
    };
    if side.is_empty() {
        v.par_chunks_mut(oc)
            .enumerate()
            .for_each(|(i, c)| body(i, c, &mut []));
    } else {
        v.par_chunks_mut(oc)
            .zip(side.par_chunks_mut(sc.max(1)))
            .enumerate()
            .for_each(|(i, (c, s))| body(i, c, s));
    }
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: all `n` values were initialised by the chunks above (they cover `0..n`);
    // pointer, length and capacity come from a `Vec` of a type with the same layout.
    Ok(unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) })
}

/// [`par_out_with`] without side outputs.
pub(crate) fn par_out<T: ZeroBits>(
    n: usize,
    oc: usize,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Result<Vec<T>, AllocError> {
    par_out_with::<T, u8>(n, oc, &mut [], 1, |i, c, _| f(i, c))
}

/// How a grouped format quantizes one group; see [`quantize_groups`]. Implementations
/// mark every method `#[inline(always)]` (they are inlined into AVX2 kernels).
pub(crate) trait GroupCodec: Sync {
    /// A group statistic (largest |v|, or min and max).
    type Stat: Copy + Send;
    /// The group's stored parameters (scale, zero point).
    type Param: Copy + Default + Send + Sync;
    /// Packed bytes per value: `NUM / DEN`.
    const NUM: usize;
    const DEN: usize;
    /// The statistic of consecutive values of one group.
    fn reduce(&self, x: &[f32]) -> Self::Stat;
    /// Two statistics of pieces of one group, in order.
    fn combine(a: Self::Stat, b: Self::Stat) -> Self::Stat;
    /// The largest `bits(|v|)` seen (NaN / Inf detection, see [`amax_bits_plain`]).
    fn bits(s: &Self::Stat) -> u32;
    fn finish(&self, s: Self::Stat) -> Self::Param;
    /// Write the bytes of consecutive values of one group; `first` is the flat index
    /// of `xs[0]` (even whenever `DEN` is 2).
    fn encode(&self, xs: &[f32], out: &mut [u8], p: Self::Param, first: usize);
}

/// One parallel chunk of whole groups: statistic, parameter and codes of each group
/// while it is in cache. Returns the largest `bits(|v|)`.
struct FusedGroups<'a, C: GroupCodec> {
    c: &'a C,
    xi: &'a [f32],
    o: &'a mut [u8],
    ps: &'a mut [C::Param],
    g: usize,
    first: usize,
}

impl<C: GroupCodec> Kernel for FusedGroups<'_, C> {
    type Out = u32;
    #[inline(always)]
    fn run(self) -> u32 {
        let mut worst = 0u32;
        let bpg = self.g * C::NUM / C::DEN;
        for (k, ((grp, ob), p)) in self
            .xi
            .chunks_exact(self.g)
            .zip(self.o.chunks_exact_mut(bpg))
            .zip(self.ps.iter_mut())
            .enumerate()
        {
            let r = self.c.reduce(grp);
            worst = worst.max(C::bits(&r));
            *p = self.c.finish(r);
            self.c.encode(grp, ob, *p, self.first + k * self.g);
        }
        worst
    }
}

/// The statistic of a piece of a group.
struct ReducePiece<'a, C: GroupCodec>(&'a C, &'a [f32]);

impl<C: GroupCodec> Kernel for ReducePiece<'_, C> {
    type Out = C::Stat;
    #[inline(always)]
    fn run(self) -> C::Stat {
        self.0.reduce(self.1)
    }
}

/// The codes of one parallel chunk whose group parameters are known.
struct EncodeChunk<'a, C: GroupCodec> {
    c: &'a C,
    xi: &'a [f32],
    o: &'a mut [u8],
    params: &'a [C::Param],
    g: usize,
    start: usize,
}

impl<C: GroupCodec> Kernel for EncodeChunk<'_, C> {
    type Out = ();
    #[inline(always)]
    fn run(self) {
        let (xi, o, start) = (self.xi, self.o, self.start);
        for (off, len, grp) in pieces(start, xi.len(), self.g) {
            let ob = &mut o[off * C::NUM / C::DEN..(off + len) * C::NUM / C::DEN];
            self.c
                .encode(&xi[off..off + len], ob, self.params[grp], start + off);
        }
    }
}

/// Quantize groups of `g` consecutive values (`g` divides `x.len()`) with codec `c`:
/// the packed bytes and one parameter per group.
///
/// Groups of at most [`CHUNK`] values are done in ONE pass over the input (statistic
/// and encoding while the group is in cache); larger groups take a parallel reduction
/// pass, then the encoding pass. Everything runs compiled for AVX2 when available.
pub(crate) fn quantize_groups<C: GroupCodec>(
    x: &[f32],
    g: usize,
    c: &C,
) -> Result<(Vec<u8>, Vec<C::Param>), QuantError> {
    let n = x.len();
    let (num, den) = (C::NUM, C::DEN);
    debug_assert!(g > 0 && n.is_multiple_of(g) && (num * g).is_multiple_of(den));
    let bad = NonFiniteFlag::default();
    if g <= CHUNK {
        let per = CHUNK / g * g;
        let mut params = try_vec(C::Param::default(), n / g, "group scales")?;
        let data = par_out_with(
            n * num / den,
            per * num / den,
            &mut params,
            per / g,
            |ci, o, ps| {
                let xi = &x[ci * per..((ci + 1) * per).min(n)];
                let k = FusedGroups {
                    c,
                    xi,
                    o,
                    ps,
                    g,
                    first: ci * per,
                };
                bad.note(dispatch(k));
            },
        )?;
        bad.check(x)?;
        return Ok((data, params));
    }
    let stats = group_reduce(x, g, |p| dispatch(ReducePiece(c, p)), C::combine)?;
    if stats.iter().any(|r| C::bits(r) >= NONFINITE) {
        return Err(nonfinite(x));
    }
    let params: Vec<C::Param> = stats.into_iter().map(|r| c.finish(r)).collect();
    let data = par_out(n * num / den, CHUNK * num / den, |ci, o| {
        let start = ci * CHUNK;
        let xi = &x[start..(start + CHUNK).min(n)];
        dispatch(EncodeChunk {
            c,
            xi,
            o,
            params: &params,
            g,
            start,
        })
    })?;
    Ok((data, params))
}

/// A new buffer of `n` values made in parallel from chunks of `xc` input items:
/// `f(chunk_index, input_chunk, output_chunk)` fills output chunks of `oc` values
/// (see [`par_out_with`]; the chunk counts must match).
pub(crate) fn par_map<T: Sync, U: ZeroBits>(
    x: &[T],
    xc: usize,
    n: usize,
    oc: usize,
    f: impl Fn(usize, &[T], &mut [U]) + Sync + Send,
) -> Result<Vec<U>, AllocError> {
    debug_assert_eq!(x.len().div_ceil(xc), n.div_ceil(oc));
    par_out(n, oc, |i, o| {
        let xi = &x[i * xc..((i + 1) * xc).min(x.len())];
        f(i, xi, o)
    })
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
    fn impossible_buffers_are_errors() {
        let e = try_zeroed::<f32>(usize::MAX / 2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfMemory);
        assert!(par_out::<u8>(usize::MAX / 2, CHUNK, |_, _| {}).is_err());
        let q = QuantError::from(e);
        assert_eq!(q.kind(), ErrorKind::OutOfMemory);
        assert!(q.to_string().contains("cannot allocate"), "{q}");
        // a zeroed large buffer really is zero
        let v = try_zeroed::<f32>(LARGE / 4 + 3).unwrap();
        assert!(v.iter().all(|&x| x == 0.0) && v.len() == LARGE / 4 + 3);
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
    fn pieces_cover_groups() {
        let mut seen = vec![];
        seen.extend(pieces(5, 10, 4));
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
        assert_eq!(f32::from_bits(amax_bits(&x)), 10.0);
        assert_eq!(min_max_bits_plain(&x), (-10.0, 8.0, 10f32.to_bits()));
        let mut y = x.clone();
        for bad in [f32::NAN, f32::INFINITY, -f32::INFINITY, -f32::NAN] {
            y[33] = bad;
            assert!(amax_bits(&y) >= NONFINITE);
            assert!(min_max_bits_plain(&y).2 >= NONFINITE);
        }
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
