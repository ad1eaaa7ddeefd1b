//! How the kernels run: [`dispatch`] and [`simd_dispatch!`] compile a kernel twice
//! (AVX2, and the baseline x86-64 of release wheels) and pick one at run time; the
//! small element kernels every format uses; and explicit AVX2 kernels where the
//! compiler's vectorisation falls short, each with its portable twin (the reference the
//! tests compare it with, and what runs on CPUs without AVX2). Results are
//! bit-identical between the two.

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
            if $crate::quant::simd::has_avx2() {
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

/// [`simd_dispatch!`] with an AVX-512 (F + DQ) tier first, for loops that gain from
/// the wider vectors: the stochastic-rounding kernels (their counter-based draws multiply
/// 64-bit integers, one `vpmullq` with AVX-512DQ against a five-instruction emulation
/// with AVX2, and their float-to-integer conversions and unsigned compares are single
/// instructions there), the fp8/fp4 element encoders, and k-means++'s float64 distances.
macro_rules! simd_dispatch_wide {
    ($($arg:ident : $ty:ty),* ; $ret:ty ; $body:expr) => {{
        #[inline(always)]
        #[allow(clippy::too_many_arguments)]
        fn inner($($arg: $ty),*) -> $ret { $body }
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512dq")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512($($arg: $ty),*) -> $ret { inner($($arg),*) }
            #[target_feature(enable = "avx2")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) -> $ret { inner($($arg),*) }
            if $crate::quant::simd::has_avx2() {
                if $crate::cpu::avx512dq() {
                    // SAFETY: the CPU supports AVX-512F and DQ (checked just above).
                    unsafe { avx512($($arg),*) }
                } else {
                    // SAFETY: the CPU supports AVX2 (checked just above).
                    unsafe { avx2($($arg),*) }
                }
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
pub(crate) use simd_dispatch_wide;

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

/// Round half to even to an integer, for |v| <= 2^22 (callers clamp first): the low
/// bits of `v + 1.5 * 2^23`. Fast in a baseline x86-64 build, where
/// `round_ties_even` is a library call.
#[inline(always)]
pub(crate) fn rne_i32(v: f32) -> i32 {
    const M: f32 = 12_582_912.0;
    ((v + M).to_bits() as i32).wrapping_sub(M.to_bits() as i32)
}

/// `out[j] = table[code_j] * scales[j / block]` for the 4-bit codes of `bytes`, in
/// blocks of `block` values (an even count; `block / 2` bytes each): element `2i` is the
/// LOW nibble of byte `i` when `low_first`, else the high one. `out` may end in a short
/// block, and may be one value shorter than `2 * bytes.len()` (an odd tail).
#[inline(always)]
pub(crate) fn lut4_decode(
    bytes: &[u8],
    out: &mut [f32],
    table: &[f32; 16],
    scales: &[f32],
    block: usize,
    low_first: bool,
) {
    assert!(
        out.len() <= 2 * bytes.len()
            && block >= 2
            && block.is_multiple_of(2)
            && scales.len() >= out.len().div_ceil(block)
    );
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above); lengths checked above.
        unsafe { lut4_decode_avx2(bytes, out, table, scales, block, low_first) };
        return;
    }
    lut4_decode_scalar(bytes, out, table, scales, block, low_first)
}

#[inline(always)]
pub(crate) fn lut4_decode_scalar(
    bytes: &[u8],
    out: &mut [f32],
    table: &[f32; 16],
    scales: &[f32],
    block: usize,
    low_first: bool,
) {
    for ((ob, bb), &s) in out
        .chunks_mut(block)
        .zip(bytes.chunks(block / 2))
        .zip(scales)
    {
        lut4_block_scalar(bb, ob, table, s, low_first);
    }
}

/// One block of [`lut4_decode_scalar`] (also the tail of the AVX2 kernel).
#[inline(always)]
fn lut4_block_scalar(bytes: &[u8], out: &mut [f32], table: &[f32; 16], s: f32, low_first: bool) {
    let (first, second) = if low_first { (0, 4) } else { (4, 0) };
    let half = out.len() / 2;
    let mut it = out.chunks_exact_mut(2);
    for (pair, &b) in (&mut it).zip(bytes) {
        pair[0] = table[((b >> first) & 15) as usize] * s;
        pair[1] = table[((b >> second) & 15) as usize] * s;
    }
    if let [last] = it.into_remainder() {
        *last = table[((bytes[half] >> first) & 15) as usize] * s;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lut4_decode_avx2(
    bytes: &[u8],
    out: &mut [f32],
    table: &[f32; 16],
    scales: &[f32],
    block: usize,
    low_first: bool,
) {
    use std::arch::x86_64::*;
    let tlo = _mm256_loadu_ps(table.as_ptr());
    let thi = _mm256_loadu_ps(table.as_ptr().add(8));
    let shifts = if low_first {
        _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
    } else {
        _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24)
    };
    let m15 = _mm256_set1_epi32(15);
    for ((ob, bb), &s) in out
        .chunks_mut(block)
        .zip(bytes.chunks(block / 2))
        .zip(scales)
    {
        let vs = _mm256_set1_ps(s);
        let full = ob.len() / 8;
        let (bp, op) = (bb.as_ptr(), ob.as_mut_ptr());
        for i in 0..full {
            // SAFETY: 8 values per step, 4 bytes each: within this block of `out` and
            // of `bytes` (`out.len() <= 2 * bytes.len()`, blocks of `block / 2` bytes).
            let w = (bp.add(4 * i) as *const u32).read_unaligned();
            let idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w as i32), shifts), m15);
            let lo = _mm256_permutevar8x32_ps(tlo, idx);
            let hi = _mm256_permutevar8x32_ps(thi, idx);
            // bit 3 of the code moved to the sign bit selects the upper half of the table
            let v = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
            _mm256_storeu_ps(op.add(8 * i), _mm256_mul_ps(v, vs));
        }
        lut4_block_scalar(&bb[4 * full..], &mut ob[8 * full..], table, s, low_first);
    }
}

/// `out[j] = table[(bytes[j] >> shift) & 3]`: 2-bit codes, one per byte at bit `shift`
/// (`out` and `bytes` of the same length).
#[inline(always)]
pub(crate) fn lut2_decode(bytes: &[u8], shift: u32, table: &[f32; 4], out: &mut [f32]) {
    assert!(out.len() == bytes.len() && shift <= 6);
    #[cfg(target_arch = "x86_64")]
    if has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above); lengths checked above.
        unsafe { lut2_decode_avx2(bytes, shift, table, out) };
        return;
    }
    lut2_decode_scalar(bytes, shift, table, out)
}

#[inline(always)]
pub(crate) fn lut2_decode_scalar(bytes: &[u8], shift: u32, table: &[f32; 4], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(bytes) {
        *o = table[((b >> shift) & 3) as usize];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lut2_decode_avx2(bytes: &[u8], shift: u32, table: &[f32; 4], out: &mut [f32]) {
    use std::arch::x86_64::*;
    // `vpermilps` picks within each 128-bit lane by the low 2 bits of each index: the
    // 4-entry table in both lanes, and no mask needed after the shift.
    let t4 = _mm_loadu_ps(table.as_ptr());
    let tab = _mm256_set_m128(t4, t4);
    let cnt = _mm_cvtsi32_si128(shift as i32);
    let full = out.len() / 32;
    let (bp, op) = (bytes.as_ptr(), out.as_mut_ptr());
    for i in 0..full {
        for k in 0..4 {
            let at = 32 * i + 8 * k;
            // SAFETY: 32 values per step: within `bytes` and `out` (same length).
            let b = _mm_loadl_epi64(bp.add(at) as *const __m128i);
            let idx = _mm256_srl_epi32(_mm256_cvtepu8_epi32(b), cnt);
            _mm256_storeu_ps(op.add(at), _mm256_permutevar_ps(tab, idx));
        }
    }
    lut2_decode_scalar(&bytes[32 * full..], shift, table, &mut out[32 * full..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::passes::NONFINITE;

    #[test]
    fn rne_i32_matches_round_ties_even() {
        for i in -4000..4000 {
            let v = i as f32 * 0.25 + 0.0001 * (i % 3) as f32;
            assert_eq!(rne_i32(v) as f32, v.round_ties_even(), "{v}");
        }
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

    #[test]
    fn lut2_matches_scalar() {
        let table = [-0.37f32, -0.0, 1.5e-39, f32::NAN];
        let bytes: Vec<u8> = (0..301u32).map(|i| (i * 97 + 13) as u8).collect();
        for len in [0, 1, 7, 8, 31, 32, 33, 64, 95, 301] {
            for shift in [0, 2, 4, 6] {
                let mut a = vec![0f32; len];
                let mut b = vec![1f32; len];
                lut2_decode(&bytes[..len], shift, &table, &mut a);
                lut2_decode_scalar(&bytes[..len], shift, &table, &mut b);
                let ab: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
                let bb: Vec<u32> = b.iter().map(|v| v.to_bits()).collect();
                assert_eq!(ab, bb, "len {len} shift {shift}");
            }
        }
    }

    #[test]
    fn lut4_matches_scalar() {
        let table: [f32; 16] = std::array::from_fn(|i| (i as f32 - 7.3) * 0.37);
        let bytes: Vec<u8> = (0..301u32).map(|i| (i * 97 + 13) as u8).collect();
        let scales = [1.0f32, -0.5, 3.1e-3, f32::from_bits(1), 7.0, -0.0];
        for len in [0usize, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 601, 602] {
            for low in [false, true] {
                for block in [2, 16, 32, 64, 602] {
                    let nb = len.div_ceil(block);
                    let sc: Vec<f32> = (0..nb).map(|k| scales[k % scales.len()]).collect();
                    let mut a = vec![0f32; len];
                    let mut b = vec![0f32; len];
                    lut4_decode(&bytes, &mut a, &table, &sc, block, low);
                    lut4_decode_scalar(&bytes, &mut b, &table, &sc, block, low);
                    let ab: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
                    let bb: Vec<u32> = b.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(ab, bb, "len {len} low {low} block {block}");
                    // the scalar twin against the formula itself
                    for (j, v) in b.iter().enumerate() {
                        let byte = bytes[j / 2];
                        let first = j % 2 == 0;
                        let code = if first == low { byte & 15 } else { byte >> 4 };
                        let want = table[code as usize] * sc[j / block];
                        assert_eq!(v.to_bits(), want.to_bits());
                    }
                }
            }
        }
    }
}
