//! The parallel passes and their buffers.
//!
//! Every pass runs over chunks whose boundaries depend only on the input size (never on
//! the thread count): [`par_out_with`] and its variants make an output buffer and fill
//! its chunks in parallel, [`group_reduce`] reduces groups, [`quantize_groups`] drives
//! the grouped formats through a [`GroupCodec`], and the NaN / infinity checks ride on
//! the reductions the passes make anyway.
//!
//! Cancellation (Ctrl-C in Python): every pass that makes an output or reads the whole
//! input looks at [`Progress::is_cancelled`] before each chunk, skips the chunks that
//! start after [`Progress::cancel`], and then returns [`QuantError::Cancelled`]; the
//! formats only hand their [`Progress`] to the passes.

use rayon::prelude::*;

use super::simd::{dispatch, simd_dispatch, Kernel};
use super::{invalid, QuantError, CHUNK};
use crate::alloc::{try_vec, try_with_capacity, AllocError};
use crate::Progress;

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
/// the caller's (same chunks either way; a cancelled pass leaves the caller's buffer
/// partly written).
pub(crate) fn par_out_dst(
    dst: Dst<'_>,
    oc: usize,
    p: &Progress,
    f: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Result<Vec<f32>, QuantError> {
    match dst {
        Dst::New(n) => par_out(n, oc, p, f),
        Dst::Into(out) => {
            out.par_chunks_mut(oc.max(1))
                .enumerate()
                .for_each(|(i, o)| {
                    if !p.is_cancelled() {
                        f(i, o)
                    }
                });
            p.check()?;
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
    p: &Progress,
    f: impl Fn(usize, &[T], &mut [f32]) + Sync + Send,
) -> Result<Vec<f32>, QuantError> {
    debug_assert_eq!(x.len().div_ceil(xc), dst.len().div_ceil(oc));
    par_out_dst(dst, oc, p, |i, o| {
        let xi = &x[i * xc..((i + 1) * xc).min(x.len())];
        f(i, xi, o)
    })
}

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

/// Per-group reduction `f` over groups of `g` consecutive elements (`g` divides
/// `x.len()`), in parallel; large groups are split into fixed chunks. Chunks skipped
/// after a cancellation count as `T::default()` (the pass then fails).
pub(crate) fn group_reduce<T: Send + Copy + Default>(
    x: &[f32],
    g: usize,
    p: &Progress,
    f: impl Fn(&[f32]) -> T + Sync,
    combine: impl Fn(T, T) -> T + Sync,
) -> Result<Vec<T>, QuantError> {
    let mut out = try_with_capacity(x.len().div_ceil(g), "group statistics")?;
    let piece = |c: &[f32]| if p.is_cancelled() { T::default() } else { f(c) };
    if g >= CHUNK {
        // at most one entry per CHUNK input values: the partial results are small
        out.extend(x.chunks(g).map(|grp| {
            let parts: Vec<T> = grp.par_chunks(CHUNK).map(piece).collect();
            parts.into_iter().reduce(&combine).expect("non-empty group")
        }));
    } else {
        let per = (CHUNK / g).max(1) * g;
        let parts: Vec<Vec<T>> = x
            .par_chunks(per)
            .map(|c| {
                if p.is_cancelled() {
                    return Vec::new();
                }
                c.chunks(g).map(&f).collect()
            })
            .collect();
        for part in parts {
            out.extend(part);
        }
    }
    p.check()?;
    Ok(out)
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
///
/// After [`Progress::cancel`] the chunks not yet started are skipped, and the pass
/// returns [`QuantError::Cancelled`].
pub(crate) fn par_out_with<T, S>(
    n: usize,
    oc: usize,
    side: &mut [S],
    sc: usize,
    p: &Progress,
    f: impl Fn(usize, &mut [T], &mut [S]) + Sync + Send,
) -> Result<Vec<T>, QuantError>
where
    T: ZeroBits,
    S: Send,
{
    if n * std::mem::size_of::<T>() >= LARGE {
        // A fresh mapping from the allocator: its pages are zero already, and touching
        // them twice would cost a pass over memory.
        let mut v = try_zeroed::<T>(n)?;
        crate::alloc::advise_huge(v.as_ptr() as usize, n * std::mem::size_of::<T>());
        par_chunks_with(&mut v, oc, side, sc, p, f);
        p.check()?;
        return Ok(v);
    }
    let body = |i: usize, c: &mut [std::mem::MaybeUninit<T>], s: &mut [S]| {
        for e in c.iter_mut() {
            e.write(T::default());
        }
        // SAFETY: every element of `c` was initialised just above, and
        // `MaybeUninit<T>` has the layout of `T`.
        let c = unsafe { &mut *(c as *mut [std::mem::MaybeUninit<T>] as *mut [T]) };
        f(i, c, s);
    };
    // SAFETY: `body` initialises every element of its chunk.
    unsafe { par_out_uninit_with(n, oc, side, sc, p, body) }
}

/// A new buffer of `n` values written in parallel chunks of `oc` values by
/// `f(chunk_index, chunk, side_chunk)` as [`par_out_with`], for kernels that write every
/// value of their chunk themselves: the chunks reach `f` uninitialised (no zeroing, no
/// separate pass; the buffer is advised huge pages when large). After
/// [`Progress::cancel`] the chunks not yet started are skipped and the buffer is dropped
/// unread.
///
/// # Safety
/// Unless the call was cancelled, `f` must initialise every element of its chunk.
pub(crate) unsafe fn par_out_uninit_with<T, S>(
    n: usize,
    oc: usize,
    side: &mut [S],
    sc: usize,
    p: &Progress,
    f: impl Fn(usize, &mut [std::mem::MaybeUninit<T>], &mut [S]) + Sync + Send,
) -> Result<Vec<T>, QuantError>
where
    T: Send,
    S: Send,
{
    let mut v: Vec<std::mem::MaybeUninit<T>> = try_with_capacity(n, OUT_BUFFER)?;
    crate::alloc::advise_huge(v.as_ptr() as usize, n * std::mem::size_of::<T>());
    // SAFETY: the capacity is `n` and `MaybeUninit` values need no initialisation.
    unsafe { v.set_len(n) };
    par_chunks_with(&mut v, oc, side, sc, p, f);
    // a cancelled call may have skipped chunks: the buffer is dropped as `MaybeUninit`
    p.check()?;
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: not cancelled, so `f` ran on every chunk and (the caller's contract)
    // initialised all `n` values; pointer, length and capacity come from a `Vec` of a
    // type with the layout of `T`.
    Ok(unsafe { Vec::from_raw_parts(v.as_mut_ptr() as *mut T, v.len(), v.capacity()) })
}

/// `f(chunk_index, chunk, side_chunk)` on the chunks of `oc` values of `v` in parallel,
/// each with its chunk of `sc` entries of `side` (an empty `side` gives empty ones);
/// after [`Progress::cancel`] the chunks not yet started are skipped.
fn par_chunks_with<T: Send, S: Send>(
    v: &mut [T],
    oc: usize,
    side: &mut [S],
    sc: usize,
    p: &Progress,
    f: impl Fn(usize, &mut [T], &mut [S]) + Sync + Send,
) {
    let oc = oc.max(1);
    // every output chunk must meet a side chunk (a shorter zip would leave some unwritten)
    assert!(side.is_empty() || v.len().div_ceil(oc) == side.len().div_ceil(sc.max(1)));
    let f = |i: usize, c: &mut [T], s: &mut [S]| {
        if !p.is_cancelled() {
            f(i, c, s)
        }
    };
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
}

/// [`par_out_with`] without side outputs.
pub(crate) fn par_out<T: ZeroBits>(
    n: usize,
    oc: usize,
    p: &Progress,
    f: impl Fn(usize, &mut [T]) + Sync + Send,
) -> Result<Vec<T>, QuantError> {
    par_out_with::<T, u8>(n, oc, &mut [], 1, p, |i, c, _| f(i, c))
}

/// How a grouped format quantizes one group; see [`quantize_groups`]. Implementations
/// mark every method `#[inline(always)]` (they are inlined into AVX2 kernels).
pub(crate) trait GroupCodec: Sync {
    /// A group statistic (largest |v|, or min and max).
    type Stat: Copy + Send + Default;
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
    p: &Progress,
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
            p,
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
    let stats = group_reduce(x, g, p, |piece| dispatch(ReducePiece(c, piece)), C::combine)?;
    if stats.iter().any(|r| C::bits(r) >= NONFINITE) {
        return Err(nonfinite(x));
    }
    let params: Vec<C::Param> = stats.into_iter().map(|r| c.finish(r)).collect();
    let data = par_out(n * num / den, CHUNK * num / den, p, |ci, o| {
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
    p: &Progress,
    f: impl Fn(usize, &[T], &mut [U]) + Sync + Send,
) -> Result<Vec<U>, QuantError> {
    debug_assert_eq!(x.len().div_ceil(xc), n.div_ceil(oc));
    par_out(n, oc, p, |i, o| {
        let xi = &x[i * xc..((i + 1) * xc).min(x.len())];
        f(i, xi, o)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, ErrorKind};

    #[test]
    fn impossible_buffers_are_errors() {
        let e = try_zeroed::<f32>(usize::MAX / 2).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfMemory);
        assert!(par_out::<u8>(usize::MAX / 2, CHUNK, &Progress::new(), |_, _| {}).is_err());
        let q = QuantError::from(e);
        assert_eq!(q.kind(), ErrorKind::OutOfMemory);
        assert!(q.to_string().contains("cannot allocate"), "{q}");
        // a zeroed large buffer really is zero
        let v = try_zeroed::<f32>(LARGE / 4 + 3).unwrap();
        assert!(v.iter().all(|&x| x == 0.0) && v.len() == LARGE / 4 + 3);
    }

    #[test]
    fn pieces_cover_groups() {
        let mut seen = vec![];
        seen.extend(pieces(5, 10, 4));
        assert_eq!(seen, vec![(0, 3, 1), (3, 4, 2), (7, 3, 3)]);
    }

    /// A cancel from inside chunk 0 (one thread: chunks run in order) stops every
    /// kind of pass after that chunk, and the pass says it was cancelled.
    #[test]
    fn a_cancel_skips_the_chunks_not_yet_started() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let chunks = 10;
        let x = vec![1f32; chunks * CHUNK];
        for small in [false, true] {
            // output buffers below and above the fresh-mapping size
            let n = if small {
                chunks * CHUNK
            } else {
                LARGE / 4 * chunks
            };
            let oc = n / chunks;
            let ran = AtomicUsize::new(0);
            let p = Progress::new();
            let r = crate::parallel::install(1, || {
                par_out::<f32>(n, oc, &p, |_, _| {
                    ran.fetch_add(1, Ordering::Relaxed);
                    p.cancel();
                })
            });
            assert!(matches!(r, Err(QuantError::Cancelled(_))), "{small}");
            assert_eq!(ran.into_inner(), 1);
        }
        let ran = AtomicUsize::new(0);
        let p = Progress::new();
        let mut out = vec![0f32; x.len()];
        let r = crate::parallel::install(1, || {
            par_out_dst(Dst::Into(&mut out), CHUNK, &p, |_, o| {
                ran.fetch_add(1, Ordering::Relaxed);
                o.fill(2.0);
                p.cancel();
            })
        });
        assert!(matches!(r, Err(QuantError::Cancelled(_))));
        assert_eq!(ran.into_inner(), 1);
        assert!(out[..CHUNK].iter().all(|&v| v == 2.0) && out[CHUNK..].iter().all(|&v| v == 0.0));
        for g in [CHUNK / 4, 2 * CHUNK] {
            let ran = AtomicUsize::new(0);
            let p = Progress::new();
            let r = crate::parallel::install(1, || {
                group_reduce(
                    &x,
                    g,
                    &p,
                    |c| {
                        ran.fetch_add(1, Ordering::Relaxed);
                        p.cancel();
                        c.len()
                    },
                    |a, b| a + b,
                )
            });
            assert!(matches!(r, Err(QuantError::Cancelled(_))), "{g}");
            assert_eq!(
                ran.into_inner(),
                if g < CHUNK { CHUNK / g } else { 1 },
                "{g}"
            );
        }
    }
}
