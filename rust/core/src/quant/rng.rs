//! The counter-based random stream behind `rounding = "stochastic"`.
//!
//! Element `i` of a tensor quantized with seed `s` draws
//! `u = mix(mix(s) ^ (i + 1) * 0x9E3779B97F4A7C15)`, where `mix` is the SplitMix64
//! finaliser; the uniform variate is the top 32 bits of `u` divided by 2^32. A draw
//! depends only on `(seed, i)`, never on the order of evaluation, so results do not
//! depend on the thread count or the chunking.

/// The odd constant that spreads element indices: element `i` draws from
/// `key ^ (i + 1) * GOLDEN`.
pub(crate) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 finaliser (Steele, Lea & Flood 2014).
#[inline(always)]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Random stream keyed by a seed.
#[derive(Debug, Clone, Copy)]
pub struct Stream {
    key: u64,
}

impl Stream {
    pub fn new(seed: u64) -> Self {
        Stream { key: mix(seed) }
    }

    /// The 32 random bits of element `i` (the top half of its 64-bit draw).
    #[inline(always)]
    pub fn bits32(&self, i: u64) -> u32 {
        self.bits_at(Self::counter(i))
    }

    /// `(i + 1) * GOLDEN`, the counter term of element `i`. Loops keep it as a running
    /// sum (`+ GOLDEN` per element) instead of multiplying for every element, and draw
    /// with [`bits_at`](Self::bits_at).
    #[inline(always)]
    pub(crate) fn counter(i: u64) -> u64 {
        i.wrapping_add(1).wrapping_mul(GOLDEN)
    }

    /// The 32 random bits of the element whose counter term is `c`.
    #[inline(always)]
    pub(crate) fn bits_at(&self, c: u64) -> u32 {
        (mix(self.key ^ c) >> 32) as u32
    }

    /// Uniform in `[0, 1)` with 32 random bits, for element `i`.
    #[inline(always)]
    pub fn uniform(&self, i: u64) -> f64 {
        uniform_of(self.bits32(i))
    }

    /// `out[j] = bits32(first + j)`, vectorised (AVX-512DQ's 64-bit multiplies or
    /// AVX2 when available); the values do not depend on the path.
    pub fn fill_bits32(&self, first: u64, out: &mut [u32]) {
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f,avx512dq")]
            unsafe fn avx512(s: &Stream, first: u64, out: &mut [u32]) {
                fill_plain(s, first, out)
            }
            #[target_feature(enable = "avx2")]
            unsafe fn avx2(s: &Stream, first: u64, out: &mut [u32]) {
                fill_plain(s, first, out)
            }
            if super::simd::has_avx2() {
                if crate::cpu::avx512dq() {
                    // SAFETY: the CPU supports AVX-512F/DQ (checked just above).
                    return unsafe { avx512(self, first, out) };
                }
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { avx2(self, first, out) };
            }
        }
        fill_plain(self, first, out)
    }

    /// Stochastically round `v` to an integer: `floor(v) + Bernoulli(v - floor(v))`.
    /// Needs |v| <= 2^22 (callers clamp first).
    #[inline(always)]
    pub fn round(&self, v: f32, i: u64) -> f32 {
        round_with(v, self.bits32(i))
    }
}

#[inline(always)]
fn fill_plain(s: &Stream, first: u64, out: &mut [u32]) {
    let mut c = Stream::counter(first);
    for o in out.iter_mut() {
        *o = s.bits_at(c);
        c = c.wrapping_add(GOLDEN);
    }
}

/// The uniform variate in `[0, 1)` of 32 random bits.
#[inline(always)]
pub fn uniform_of(bits: u32) -> f64 {
    bits as f64 * (1.0 / 4_294_967_296.0)
}

/// [`Stream::round`] given the element's random bits (branch-free, so it vectorises).
#[inline(always)]
pub fn round_with(v: f32, bits: u32) -> f32 {
    round_with_i32(v, bits) as f32
}

/// [`round_with`] as an integer (no saturating float-to-int cast, which would not
/// vectorise).
#[inline(always)]
pub fn round_with_i32(v: f32, bits: u32) -> i32 {
    // floor without a libm call (baseline x86-64 has no roundss)
    let r = super::simd::rne_i32(v);
    let rf = r as f32;
    let down = rf > v;
    let f = if down { rf - 1.0 } else { rf };
    r - down as i32 + below(bits, v - f) as i32
}

/// `uniform_of(bits) < p`, in float32 and integer arithmetic.
///
/// Exact: `y = p * 2^32` is exact (a power-of-two scaling), and for the integer `bits`,
/// `bits < y` holds exactly when `bits < ceil(y)`; for `p < 1`, `ceil(y) <= 2^32 - 256`
/// fits a `u32`. `p = 1` (the float32 fraction `v - floor(v)` of a tiny negative `v`
/// rounds to 1) and above always hold; NaN and negative `p` never do, as in float64.
/// This replaces a float64 comparison (half the vector width, and no unsigned
/// conversion before AVX-512) with one multiply, one rounding, one conversion and
/// integer compares.
#[inline(always)]
pub fn below(bits: u32, p: f32) -> bool {
    const LAST: f32 = 4_294_967_040.0; // (1 - 2^-24) * 2^32, the largest y below 2^32
    let y = p * 4_294_967_296.0;
    let always = y > LAST;
    let y = if (0.0..=LAST).contains(&y) { y } else { 0.0 };
    // SAFETY: `y.ceil()` lies in [0, 2^32 - 256] (checked just above): it fits a u32.
    always | (bits < unsafe { y.ceil().to_int_unchecked::<u32>() })
}

/// How stochastic rounding to an integer format maps a value `v` to the number it
/// rounds: `(v - sub) / div` (`asym`) or `v * mul`, clamped to `[lo, hi]`; the code is
/// the rounded number plus `bias`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Affine {
    pub mul: f32,
    pub sub: f32,
    pub div: f32,
    pub asym: bool,
    pub lo: f32,
    pub hi: f32,
    pub bias: i32,
}

/// Stochastically rounded integer codes of consecutive values, element `j` with the
/// draw of flat index `first + j`: `out[j] = c << shift` (or `out[j] |= c << shift`
/// with `or`), `c = (round_with_i32(map(xs[j]), bits) + bias) as u8` ([`Affine`]).
/// `xs` and `out` have the same length; `shift` leaves the code within the byte.
///
/// With AVX-512F/DQ/BW, an explicit kernel draws 16 values per step (two vectors of
/// eight 64-bit counters, `vpmullq` for SplitMix64's multiplies, the high halves of the
/// sixteen draws gathered into one vector) and rounds with the same float32 steps as
/// [`round_with_i32`]: `floor` is one rounding instruction instead of the
/// round-to-nearest trick, and `ceil(p * 2^32)` becomes an unsigned conversion that
/// rounds up. The codes are those of [`stochastic_ints_plain`] for every finite input
/// (NaN gives unspecified codes: callers reject NaN input anyway).
pub(crate) fn stochastic_ints(
    xs: &[f32],
    out: &mut [u8],
    st: &Stream,
    first: u64,
    a: Affine,
    shift: u32,
    or: bool,
) {
    assert!(xs.len() == out.len() && shift <= 6);
    #[cfg(target_arch = "x86_64")]
    {
        if avx512_kernels() {
            // SAFETY: the CPU supports AVX-512F, DQ and BW (checked just above); lengths
            // checked above.
            let done = unsafe {
                match (a.asym, or) {
                    (false, false) => {
                        sr_avx512::<false, false, false>(xs, out, st.key, first, a, shift)
                    }
                    (false, true) => {
                        sr_avx512::<false, true, false>(xs, out, st.key, first, a, shift)
                    }
                    (true, false) => {
                        sr_avx512::<true, false, false>(xs, out, st.key, first, a, shift)
                    }
                    (true, true) => {
                        sr_avx512::<true, true, false>(xs, out, st.key, first, a, shift)
                    }
                }
            };
            let f = first.wrapping_add(done as u64);
            return stochastic_ints_plain(&xs[done..], &mut out[done..], st, f, a, shift, or);
        }
        #[target_feature(enable = "avx2")]
        unsafe fn avx2(
            xs: &[f32],
            out: &mut [u8],
            st: &Stream,
            f: u64,
            a: Affine,
            sh: u32,
            or: bool,
        ) {
            stochastic_ints_plain(xs, out, st, f, a, sh, or)
        }
        if super::simd::has_avx2() {
            // SAFETY: the CPU supports AVX2 (checked just above).
            return unsafe { avx2(xs, out, st, first, a, shift, or) };
        }
    }
    stochastic_ints_plain(xs, out, st, first, a, shift, or)
}

/// Stochastically rounded 4-bit codes packed two per byte, the even element in the
/// low nibble: `out[k] = c(2k) | c(2k + 1) << 4`, with the codes `c` of
/// [`stochastic_ints`] (draws of `first + j`); `a` must map into `0..=15` (after its
/// bias). `xs` has `2 * out.len()` values.
pub(crate) fn stochastic_nibbles(xs: &[f32], out: &mut [u8], st: &Stream, first: u64, a: Affine) {
    assert!(xs.len() == 2 * out.len());
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx512_kernels() {
        // SAFETY: the CPU supports AVX-512F, DQ and BW (checked just above); lengths
        // checked above.
        done = unsafe {
            if a.asym {
                sr_avx512::<true, false, true>(xs, out, st.key, first, a, 0)
            } else {
                sr_avx512::<false, false, true>(xs, out, st.key, first, a, 0)
            }
        };
    }
    // the rest: codes in batches of an even length, then paired
    const B: usize = 256;
    let mut codes = [0u8; B];
    for (k, xb) in xs[done..].chunks(B).enumerate() {
        let codes = &mut codes[..xb.len()];
        let f = first.wrapping_add((done + k * B) as u64);
        stochastic_ints(xb, codes, st, f, a, 0, false);
        let o = &mut out[done / 2 + k * B / 2..];
        for (b, pair) in o.iter_mut().zip(codes.chunks_exact(2)) {
            *b = (pair[0] & 15) | (pair[1] << 4);
        }
    }
}

/// Whether the explicit AVX-512 kernels of this module may run: a CPU with AVX-512F,
/// DQ, BW and VL, and AVX2 not switched off (`THRIFTY_ISA`, or the tests' scalar mode).
#[cfg(target_arch = "x86_64")]
#[inline]
fn avx512_kernels() -> bool {
    super::simd::has_avx2() && crate::cpu::avx512bw()
}

/// [`stochastic_ints`] as plain loops: the reference of the AVX-512 kernel, and the
/// AVX2 and baseline paths (the draws in the same loop as the arithmetic).
#[inline(always)]
pub(crate) fn stochastic_ints_plain(
    xs: &[f32],
    out: &mut [u8],
    st: &Stream,
    first: u64,
    a: Affine,
    shift: u32,
    or: bool,
) {
    let mut c = Stream::counter(first);
    if or {
        for (o, &v) in out.iter_mut().zip(xs) {
            *o |= int_code(v, st.bits_at(c), a) << shift;
            c = c.wrapping_add(GOLDEN);
        }
    } else {
        for (o, &v) in out.iter_mut().zip(xs) {
            *o = int_code(v, st.bits_at(c), a) << shift;
            c = c.wrapping_add(GOLDEN);
        }
    }
}

/// The code of one value given its draw (see [`stochastic_ints`]).
#[inline(always)]
fn int_code(v: f32, bits: u32, a: Affine) -> u8 {
    let t = if a.asym {
        (v - a.sub) / a.div
    } else {
        v * a.mul
    };
    (round_with_i32(t.clamp(a.lo, a.hi), bits) + a.bias) as u8
}

/// The constants of the vectorised draws: [`Stream::bits_at`] sixteen elements at a time.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct DrawConsts {
    /// `key ^ (key >> 30)`: SplitMix64's first xor-shift of `key ^ c` is
    /// `key ^ (key >> 30) ^ c ^ (c >> 30)`, one three-way xor per vector.
    key: std::arch::x86_64::__m512i,
    m1: std::arch::x86_64::__m512i,
    m2: std::arch::x86_64::__m512i,
    /// The counter step of sixteen elements.
    step: std::arch::x86_64::__m512i,
    /// The high 32-bit halves of the 64-bit lanes of two vectors, in element order.
    odd: std::arch::x86_64::__m512i,
}

#[cfg(target_arch = "x86_64")]
impl DrawConsts {
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn new(key: u64) -> Self {
        use std::arch::x86_64::*;
        DrawConsts {
            key: _mm512_set1_epi64((key ^ (key >> 30)) as i64),
            m1: _mm512_set1_epi64(0xBF58_476D_1CE4_E5B9u64 as i64),
            m2: _mm512_set1_epi64(0x94D0_49BB_1331_11EBu64 as i64),
            step: _mm512_set1_epi64(GOLDEN.wrapping_mul(16) as i64),
            odd: _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31),
        }
    }

    /// The counter terms of elements `first + 0..8` and `first + 8..16`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn counters(first: u64) -> [std::arch::x86_64::__m512i; 2] {
        use std::arch::x86_64::*;
        let c: [u64; 16] = std::array::from_fn(|j| Stream::counter(first.wrapping_add(j as u64)));
        [
            _mm512_loadu_si512(c.as_ptr() as *const _),
            _mm512_loadu_si512(c.as_ptr().add(8) as *const _),
        ]
    }
}

/// The 32 random bits of sixteen consecutive elements ([`Stream::bits_at`]) from their
/// counter terms `$c = [__m512i; 2]` (elements 0..8 and 8..16), which then advance by
/// sixteen elements: `vpmullq` for SplitMix64's multiplies, the high halves of the
/// sixteen draws gathered into one vector.
#[cfg(target_arch = "x86_64")]
macro_rules! draw16 {
    ($c:expr, $k:expr) => {{
        let (ca, cb) = ($c[0], $c[1]);
        $c = [_mm512_add_epi64(ca, $k.step), _mm512_add_epi64(cb, $k.step)];
        // z ^ (z >> 30) of z = key ^ c
        let za = _mm512_ternarylogic_epi64::<0x96>($k.key, ca, _mm512_srli_epi64::<30>(ca));
        let zb = _mm512_ternarylogic_epi64::<0x96>($k.key, cb, _mm512_srli_epi64::<30>(cb));
        let za = _mm512_mullo_epi64(za, $k.m1);
        let zb = _mm512_mullo_epi64(zb, $k.m1);
        let za = _mm512_mullo_epi64(_mm512_xor_si512(za, _mm512_srli_epi64::<27>(za)), $k.m2);
        let zb = _mm512_mullo_epi64(_mm512_xor_si512(zb, _mm512_srli_epi64::<27>(zb)), $k.m2);
        // the high half of z ^ (z >> 31) is h ^ (h >> 31), h the high half of z
        let h = _mm512_permutex2var_epi32(za, $k.odd, zb);
        _mm512_xor_si512(h, _mm512_srli_epi32::<31>(h))
    }};
}

/// The AVX-512 kernel of [`stochastic_ints`] over the leading multiple of 16 values
/// (with `NIB`, of [`stochastic_nibbles`] over the leading multiple of 64); returns how
/// many values it wrote.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw")]
unsafe fn sr_avx512<const ASYM: bool, const OR: bool, const NIB: bool>(
    xs: &[f32],
    out: &mut [u8],
    key: u64,
    first: u64,
    a: Affine,
    shift: u32,
) -> usize {
    use std::arch::x86_64::*;
    let full = if NIB {
        xs.len().min(2 * out.len()) / 64 * 4
    } else {
        xs.len().min(out.len()) / 16
    };
    let mut c = DrawConsts::counters(first);
    let dc = DrawConsts::new(key);
    let (mul, sub, div) = (
        _mm512_set1_ps(a.mul),
        _mm512_set1_ps(a.sub),
        _mm512_set1_ps(a.div),
    );
    let (lo, hi) = (_mm512_set1_ps(a.lo), _mm512_set1_ps(a.hi));
    let two32 = _mm512_set1_ps(4_294_967_296.0);
    let last = _mm512_set1_ps(4_294_967_040.0); // see `below`
    let bias = _mm512_set1_epi32(a.bias);
    let minus1 = _mm512_set1_epi32(-1);
    let sh = _mm_cvtsi32_si128(shift as i32);
    let (xp, op) = (xs.as_ptr(), out.as_mut_ptr());
    // The codes (as 32-bit lanes, not yet shifted) of the 16 values of step `i`.
    macro_rules! codes {
        ($i:expr) => {{
            let u = draw16!(c, dc);
            // the value to round, as the scalar code computes it
            // SAFETY: 16 values per step, within `xs` (`full` whole steps).
            let x = _mm512_loadu_ps(xp.add(16 * $i));
            let t = if ASYM {
                _mm512_div_ps(_mm512_sub_ps(x, sub), div)
            } else {
                _mm512_mul_ps(x, mul)
            };
            let t = _mm512_min_ps(_mm512_max_ps(t, lo), hi);
            // floor, the float32 fraction and `below`: bits < ceil(p * 2^32), or p * 2^32
            // above the largest value under 2^32 (then the conversion is out of range)
            let f = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC }>(t);
            let y = _mm512_mul_ps(_mm512_sub_ps(t, f), two32);
            let always = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, last);
            let ceil = _mm512_cvt_roundps_epu32::<{ _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC }>(y);
            let up = always | _mm512_cmplt_epu32_mask(u, ceil);
            let q = _mm512_add_epi32(_mm512_cvttps_epi32(f), bias);
            _mm512_mask_sub_epi32(q, up, q, minus1)
        }};
    }
    // Four steps at a time: their 64 codes narrowed to bytes by two dword and one word
    // pack (within 128-bit lanes; signed saturation keeps every code of -128..=127 as
    // the truncation would) and one dword permutation, then shifted as 16-bit lanes
    // with the bits each low byte pushed into its neighbour masked off, one 64-byte
    // store; cheaper than four byte narrowings (`vpmovdb`) and 16-byte stores.
    let order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    let keep = _mm512_set1_epi8((0xFFu32 << shift) as u8 as i8);
    let nib = _mm512_set1_epi16(0x1001); // bytes 1 and 16: the weights of a nibble pair
    let quads = full / 4;
    for g in 0..quads {
        let (q0, q1, q2, q3) = (
            codes!(4 * g),
            codes!(4 * g + 1),
            codes!(4 * g + 2),
            codes!(4 * g + 3),
        );
        let w01 = _mm512_packs_epi32(q0, q1);
        let w23 = _mm512_packs_epi32(q2, q3);
        let b = _mm512_permutexvar_epi32(order, _mm512_packs_epi16(w01, w23));
        if NIB {
            // code 2k + c2 * 16 into word k, then narrowed to bytes
            let pairs = _mm512_maddubs_epi16(b, nib);
            // SAFETY: 32 bytes per group, within `out` (`2 * out.len() >= 64 * quads`).
            _mm256_storeu_si256(op.add(32 * g) as *mut __m256i, _mm512_cvtepi16_epi8(pairs));
            continue;
        }
        let mut b = _mm512_and_si512(_mm512_sll_epi16(b, sh), keep);
        // SAFETY: 64 bytes per group, within `out` (`4 * quads <= full` whole steps).
        let o = op.add(64 * g) as *mut __m512i;
        if OR {
            b = _mm512_or_si512(b, _mm512_loadu_si512(o));
        }
        _mm512_storeu_si512(o, b);
    }
    for i in 4 * quads..full {
        let q = codes!(i);
        let mut b = _mm512_cvtepi32_epi8(_mm512_sll_epi32(q, sh));
        // SAFETY: 16 bytes per step, within `out` (`full` whole steps).
        let o = op.add(16 * i) as *mut __m128i;
        if OR {
            b = _mm_or_si128(b, _mm_loadu_si128(o));
        }
        _mm_storeu_si128(o, b);
    }
    16 * full
}

/// The [`Affine`] map of the BitNet ternary codes: `v * s` clamped to `[-1, 1]`, code
/// `q + 1`.
pub(crate) fn ternary_map(s: f32) -> Affine {
    Affine {
        mul: s,
        sub: 0.0,
        div: 1.0,
        asym: false,
        lo: -1.0,
        hi: 1.0,
        bias: 1,
    }
}

/// Stochastically rounded ternary codes of up to four rows, packed two bits each:
/// `out[j] = sum of c_i(j) << 2 i`, where `c_i(j)` is the code of `rows[i][j]` under
/// [`ternary_map`]`(s)` with the draw of flat index `firsts[i] + j`, as
/// [`stochastic_ints`] computes it. Every byte of `out` is written (once).
///
/// With AVX-512 the kernel skips the general rounding steps: for `t` in `[-1, 1]` the
/// code is `1 - [t < 0] + up`, with the fraction `t` (`t + 1` for negative `t`, the
/// float32 `t - floor(t)`) and `up` the rule of [`below`]. At `t = 1` the fraction is 1
/// (where `t - floor(t)` is 0), so `up` always holds and supplies the code's second
/// step. The codes are added into bytes under masks, never widened to 32-bit lanes.
pub(crate) fn stochastic_ternary_rows(
    rows: &[&[f32]],
    firsts: &[u64],
    out: &mut [std::mem::MaybeUninit<u8>],
    st: &Stream,
    s: f32,
) {
    let n = rows.len();
    assert!((1..=4).contains(&n) && firsts.len() == n);
    assert!(rows.iter().all(|r| r.len() == out.len()));
    #[allow(unused_mut)]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if avx512_kernels() {
        let (o, len) = (out.as_mut_ptr() as *mut u8, out.len());
        // SAFETY: the CPU supports AVX-512F/DQ/BW/VL (checked just above); the rows
        // and `out` have `len` elements (checked above).
        done = unsafe {
            match n {
                1 => sr_ternary_avx512::<1>(rows, firsts, o, len, st.key, s),
                2 => sr_ternary_avx512::<2>(rows, firsts, o, len, st.key, s),
                3 => sr_ternary_avx512::<3>(rows, firsts, o, len, st.key, s),
                _ => sr_ternary_avx512::<4>(rows, firsts, o, len, st.key, s),
            }
        };
    }
    let a = ternary_map(s);
    let mut c: [u64; 4] = std::array::from_fn(|i| {
        Stream::counter(firsts.get(i).map_or(0, |f| f.wrapping_add(done as u64)))
    });
    for (j, o) in out.iter_mut().enumerate().skip(done) {
        let mut b = 0u8;
        for i in 0..n {
            b |= int_code(rows[i][j], st.bits_at(c[i]), a) << (2 * i);
            c[i] = c[i].wrapping_add(GOLDEN);
        }
        o.write(b);
    }
}

/// The AVX-512 kernel of [`stochastic_ternary_rows`] for `N` rows over the leading
/// multiple of 16 bytes; returns how many bytes it wrote.
///
/// # Safety
/// The CPU supports AVX-512F/DQ/BW/VL; `rows` holds at least `N` rows of `len` values
/// and `firsts` `N` indices; `out` is valid for `len` bytes of writes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512dq,avx512bw,avx512vl")]
unsafe fn sr_ternary_avx512<const N: usize>(
    rows: &[&[f32]],
    firsts: &[u64],
    out: *mut u8,
    len: usize,
    key: u64,
    s: f32,
) -> usize {
    use std::arch::x86_64::*;
    let full = len / 16;
    let dc = DrawConsts::new(key);
    let mut c: [[__m512i; 2]; N] = std::array::from_fn(|i| DrawConsts::counters(firsts[i]));
    let xp: [*const f32; N] = std::array::from_fn(|i| rows[i].as_ptr());
    let (vs, one, zero) = (_mm512_set1_ps(s), _mm512_set1_ps(1.0), _mm512_setzero_ps());
    let two32 = _mm512_set1_ps(4_294_967_296.0);
    let last = _mm512_set1_ps(4_294_967_040.0); // see `below`
                                                // one step of row i's code, and the code 1 of every row
    let w: [__m128i; N] = std::array::from_fn(|i| _mm_set1_epi8(1 << (2 * i)));
    let base = _mm_set1_epi8((0..N).map(|i| 1u8 << (2 * i)).sum::<u8>() as i8);
    for k in 0..full {
        let mut acc = base;
        for i in 0..N {
            let u = draw16!(c[i], dc);
            // SAFETY: 16 values per step, within each row (`full` whole steps).
            let x = _mm512_loadu_ps(xp[i].add(16 * k));
            // clamp(v * s, -1, 1): the smaller magnitude of t and 1, with t's sign
            let t = _mm512_range_ps::<0b0010>(_mm512_mul_ps(x, vs), one);
            let neg = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(t, zero);
            let y = _mm512_mul_ps(_mm512_mask_add_ps(t, neg, t, one), two32);
            let always = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(y, last);
            let ceil = _mm512_cvt_roundps_epu32::<{ _MM_FROUND_TO_POS_INF | _MM_FROUND_NO_EXC }>(y);
            let up = always | _mm512_cmplt_epu32_mask(u, ceil);
            acc = _mm_mask_sub_epi8(acc, neg, acc, w[i]);
            acc = _mm_mask_add_epi8(acc, up, acc, w[i]);
        }
        // SAFETY: 16 bytes per step, within `out` (`full` whole steps).
        _mm_storeu_si128(out.add(16 * k) as *mut __m128i, acc);
    }
    16 * full
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_mean_and_reproducible() {
        let s = Stream::new(42);
        let n = 200_000u64;
        let mean: f64 = (0..n).map(|i| s.uniform(i)).sum::<f64>() / n as f64;
        assert!((mean - 0.5).abs() < 0.005, "{mean}");
        assert_eq!(s.uniform(7), Stream::new(42).uniform(7));
        assert_ne!(s.uniform(7), Stream::new(43).uniform(7));
    }

    #[test]
    fn batched_bits_match_single_draws() {
        let s = Stream::new(0xDEAD_BEEF);
        for (first, len) in [
            (0u64, 0usize),
            (0, 1),
            (5, 37),
            (u64::MAX - 3, 9),
            (1 << 40, 1000),
        ] {
            let mut out = vec![0u32; len];
            s.fill_bits32(first, &mut out);
            for (j, &b) in out.iter().enumerate() {
                assert_eq!(b, s.bits32(first.wrapping_add(j as u64)));
                assert_eq!(uniform_of(b), s.uniform(first.wrapping_add(j as u64)));
            }
            let mut plain = vec![0u32; len];
            super::super::simd::scalar_only(|| s.fill_bits32(first, &mut plain));
            assert_eq!(out, plain);
        }
        // the branch-free rounding is the documented floor + Bernoulli
        for (v, bits) in [
            (2.3f32, 0u32),
            (2.3, u32::MAX),
            (-0.5, 1 << 31),
            (-0.5, (1 << 31) - 1),
            (7.0, 5),
        ] {
            let f = v.floor();
            let want = if uniform_of(bits) < (v - f) as f64 {
                f + 1.0
            } else {
                f
            };
            assert_eq!(round_with(v, bits), want, "{v} {bits}");
        }
    }

    /// The float32/integer Bernoulli step is the float64 comparison it replaces, on
    /// random pairs and on the integers next to `p * 2^32`.
    #[test]
    fn below_is_the_float64_comparison() {
        let mut r = 7u64;
        for _ in 0..200_000 {
            r = mix(r);
            let p = f32::from_bits((r as u32) % 0x3f80_0000); // [0, 1), subnormals too
            let y = (p as f64 * 4_294_967_296.0) as i64;
            for bits in [(r >> 32) as i64, y - 1, y, y + 1, 0, u32::MAX as i64] {
                let bits = bits.clamp(0, u32::MAX as i64) as u32;
                assert_eq!(below(bits, p), uniform_of(bits) < p as f64, "{bits} {p}");
            }
        }
        assert!(!below(0, f32::NAN) && !below(0, -0.5));
        assert!(below(u32::MAX, 1.0) && below(u32::MAX, 1e30));
        // the documented rule, float64 comparison of the float32 fraction, on values
        // of every magnitude the integer formats round (tiny ones of both signs too)
        let mut r = 11u64;
        for _ in 0..200_000 {
            r = mix(r);
            let mag = f32::from_bits(((r >> 40) as u32 % 150 + 1) << 23 | (r as u32 & 0x7f_ffff));
            let v = if r >> 63 == 1 { -mag } else { mag }.clamp(-128.0, 127.0);
            let bits = (r >> 8) as u32;
            let f = v.floor();
            let want = f + (uniform_of(bits) < (v - f) as f64) as i32 as f32;
            assert_eq!(round_with(v, bits), want, "{v} {bits}");
        }
        // the fraction of a tiny negative value rounds to 1: always up, as in float64
        let v = -1e-30f32;
        assert_eq!(round_with(v, u32::MAX), 0.0);
        assert!(below(0, f32::from_bits(1)) && !below(1, f32::from_bits(1)));
    }

    /// Appends subnormals of both signs, then `count` pairs: a random float of one of
    /// the lowest `exps` binades (either sign) and `grid(k)` of a random `k < 4000`.
    fn with_random_values(
        vals: &mut Vec<f32>,
        seed: u64,
        count: usize,
        exps: u32,
        grid: impl Fn(u64) -> f32,
    ) {
        for k in 1..20 {
            vals.push(f32::from_bits(k));
            vals.push(-f32::from_bits(k * 977));
        }
        let mut r = seed;
        for _ in 0..count {
            r = mix(r);
            let mag = f32::from_bits(((r >> 40) as u32 % exps + 1) << 23 | (r as u32 & 0x7f_ffff));
            vals.push(if r >> 63 == 1 { -mag } else { mag });
            vals.push(grid((r >> 20) % 4000));
        }
    }

    /// `(length, first index)` of the runs the kernel tests draw: empty, tails only, one
    /// vector, a vector and a tail, a counter that wraps, then `long` values.
    fn spans(long: usize) -> [(usize, u64); 7] {
        [
            (0, 0),
            (1, 3),
            (15, 0),
            (16, 7),
            (33, 1 << 40),
            (47, u64::MAX - 40),
            (long, 99),
        ]
    }

    /// The integer codes of every kernel (AVX-512, AVX2, baseline) are those of the
    /// documented rule, `floor(t) + [uniform < t - floor(t)]` in float64 plus the bias
    /// (also packed in nibbles, for the 4-bit maps), for every length (whole vectors and tails), start index (the counter wraps),
    /// shift, mapping and kind of value: exact integers, halves, tiny values of both
    /// signs (whose fraction rounds to 1), subnormals, values beyond the clamp.
    #[test]
    fn integer_kernels_follow_the_rule() {
        let mut vals: Vec<f32> = vec![
            0.0,
            -0.0,
            1e-30,
            -1e-30,
            0.5,
            -0.5,
            1.5,
            -2.5,
            127.0,
            -128.0,
            126.99999,
            -127.99999,
            300.0,
            -300.0,
            3.4e38,
            -3.4e38,
            7.0,
            -8.0,
            15.0,
            0.999_999_94,
            -0.999_999_94,
            2.5e-8,
            -2.5e-8,
        ];
        with_random_values(&mut vals, 5, 600, 140, |k| k as f32 / 16.0 - 125.0);
        let maps = [
            // int8, ternary, int4 symmetric, int4 asymmetric (a zero point)
            Affine {
                mul: 1.0,
                sub: 0.0,
                div: 1.0,
                asym: false,
                lo: -128.0,
                hi: 127.0,
                bias: 0,
            },
            ternary_map(0.37),
            Affine {
                mul: 0.11,
                sub: 0.0,
                div: 1.0,
                asym: false,
                lo: -8.0,
                hi: 7.0,
                bias: 8,
            },
            Affine {
                mul: 1.0,
                sub: -3.3,
                div: 0.7,
                asym: true,
                lo: 0.0,
                hi: 15.0,
                bias: 0,
            },
        ];
        let s = Stream::new(0x5EED);
        for (mi, a) in maps.iter().enumerate() {
            for (len, first) in spans(vals.len()) {
                let xs = &vals[vals.len() - len..];
                for (shift, or) in [(0, false), (0, true), (2, true), (6, true)] {
                    let init: Vec<u8> = (0..len)
                        .map(|j| (j as u8).wrapping_mul(37) & 0x03)
                        .collect();
                    let mut got = init.clone();
                    stochastic_ints(xs, &mut got, &s, first, *a, shift, or);
                    let mut plain = init.clone();
                    super::super::simd::scalar_only(|| {
                        stochastic_ints(xs, &mut plain, &s, first, *a, shift, or)
                    });
                    assert_eq!(got, plain, "map {mi} len {len} first {first} shift {shift}");
                    if shift == 0 && !or && a.lo >= -(a.bias as f32) && a.hi + a.bias as f32 <= 15.0
                    {
                        // the same codes in nibbles, on each path
                        let xs = &xs[..len & !1];
                        let mut nib = vec![0u8; xs.len() / 2];
                        stochastic_nibbles(xs, &mut nib, &s, first, *a);
                        let mut nib_plain = vec![0u8; xs.len() / 2];
                        super::super::simd::scalar_only(|| {
                            stochastic_nibbles(xs, &mut nib_plain, &s, first, *a)
                        });
                        let want: Vec<u8> =
                            got.chunks_exact(2).map(|p| p[0] | (p[1] << 4)).collect();
                        assert_eq!(nib, want, "map {mi} len {len} first {first}");
                        assert_eq!(nib_plain, want, "map {mi} len {len} first {first}");
                    }
                    for (j, &v) in xs.iter().enumerate() {
                        let t = if a.asym {
                            (v - a.sub) / a.div
                        } else {
                            v * a.mul
                        };
                        let t = t.clamp(a.lo, a.hi);
                        let f = t.floor();
                        let u = s.uniform(first.wrapping_add(j as u64));
                        let q = f as i32 + (u < (t - f) as f64) as i32 + a.bias;
                        let want = ((q as u8) << shift) | if or { init[j] } else { 0 };
                        assert_eq!(got[j], want, "map {mi} value {v} index {j}");
                    }
                }
            }
        }
    }

    /// The packed ternary rows of every kernel are the documented rule per value, for
    /// one to four rows, whole vectors and tails, wrapping counters, and the values
    /// where the AVX-512 shortcut differs from the general steps: `t` exactly 1 or -1,
    /// beyond them, zeros of both signs, tiny negatives (fraction rounding to 1).
    #[test]
    fn ternary_rows_follow_the_rule() {
        let mut vals: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            -1.0,
            1.000_000_1,
            -1.000_000_1,
            0.999_999_94,
            -0.999_999_94,
            2.0,
            -2.0,
            1e-30,
            -1e-30,
            -2.9e-8,
            -3.0e-8,
            -5.9e-8,
            -6.0e-8,
            3.4e38,
            -3.4e38,
            0.5,
            -0.5,
        ];
        with_random_values(&mut vals, 23, 700, 130, |k| k as f32 / 1000.0 - 2.0);
        let st = Stream::new(0xBEEF);
        let m = vals.len();
        for s in [1.0f32, 0.37, 3.0] {
            for n in 1..=4usize {
                for (len, first) in spans(m / 4) {
                    // row i: a rotation of the values, so rows differ
                    let rows: Vec<Vec<f32>> = (0..n)
                        .map(|i| (0..len).map(|j| vals[(j + 131 * i) % m]).collect())
                        .collect();
                    let refs: Vec<&[f32]> = rows.iter().map(|v| v.as_slice()).collect();
                    let firsts: Vec<u64> = (0..n)
                        .map(|i| first.wrapping_add((i as u64) * 1_000_003))
                        .collect();
                    let run = || {
                        let mut out = vec![std::mem::MaybeUninit::<u8>::uninit(); len];
                        stochastic_ternary_rows(&refs, &firsts, &mut out, &st, s);
                        // SAFETY: every byte was written (the function's contract)
                        out.iter()
                            .map(|b| unsafe { b.assume_init() })
                            .collect::<Vec<u8>>()
                    };
                    let got = run();
                    let plain = super::super::simd::scalar_only(run);
                    assert_eq!(got, plain, "s {s} rows {n} len {len}");
                    for (j, &g) in got.iter().enumerate() {
                        let mut want = 0u8;
                        for i in 0..n {
                            let t = (rows[i][j] * s).clamp(-1.0, 1.0);
                            let f = t.floor();
                            let u = st.uniform(firsts[i].wrapping_add(j as u64));
                            let q = f as i32 + (u < (t - f) as f64) as i32 + 1;
                            want |= (q as u8) << (2 * i);
                        }
                        assert_eq!(g, want, "s {s} rows {n} byte {j}");
                    }
                }
            }
        }
    }

    /// `x` such that `mix(x) == z` (SplitMix64's finaliser is a bijection).
    fn unmix(z: u64) -> u64 {
        fn unshift(x: u64, k: u32) -> u64 {
            let mut y = x;
            for _ in 0..64 / k {
                y = x ^ (y >> k);
            }
            y
        }
        fn inverse(m: u64) -> u64 {
            let mut v = m; // Newton's iteration for m^-1 mod 2^64 (m odd)
            for _ in 0..6 {
                v = v.wrapping_mul(2u64.wrapping_sub(m.wrapping_mul(v)));
            }
            v
        }
        let z = unshift(z, 31).wrapping_mul(inverse(0x94D0_49BB_1331_11EB));
        let z = unshift(z, 27).wrapping_mul(inverse(0xBF58_476D_1CE4_E5B9));
        unshift(z, 30)
    }

    /// A fraction that rounds to 1 (`t = 1` in the ternary shortcut, tiny negative
    /// values) rounds up even for the largest draw, `u32::MAX`, which every kernel meets
    /// only there: the conversion of `2^32` is out of range.
    #[test]
    fn the_largest_draw_still_rounds_a_fraction_of_one_up() {
        let (j, first) = (21usize, 1000u64);
        let x = unmix(u64::MAX << 32) ^ Stream::counter(first + j as u64);
        let st = Stream { key: x };
        assert_eq!(st.bits32(first + j as u64), u32::MAX);
        assert_eq!(mix(unmix(0x0123_4567_89AB_CDEF)), 0x0123_4567_89AB_CDEF);
        for v in [1.0f32, 2.0, -1e-30, -2.9e-8, 0.5, -1.0] {
            let mut xs = vec![0.25f32; 40];
            xs[j] = v;
            let t = v.clamp(-1.0, 1.0);
            let f = t.floor();
            let want = (f as i32 + (uniform_of(u32::MAX) < (t - f) as f64) as i32 + 1) as u8;
            for kernel in [false, true] {
                let run = || {
                    let mut out = vec![std::mem::MaybeUninit::<u8>::uninit(); xs.len()];
                    stochastic_ternary_rows(&[&xs], &[first], &mut out, &st, 1.0);
                    // SAFETY: every byte was written (the function's contract)
                    let a = unsafe { out[j].assume_init() };
                    let mut b = vec![0u8; xs.len()];
                    stochastic_ints(&xs, &mut b, &st, first, ternary_map(1.0), 0, false);
                    (a, b[j])
                };
                let got = if kernel {
                    run()
                } else {
                    super::super::simd::scalar_only(run)
                };
                assert_eq!(got, (want, want), "{v} kernel {kernel}");
            }
        }
    }

    #[test]
    fn stochastic_round_unbiased() {
        let s = Stream::new(1);
        let n = 100_000u64;
        let mean: f64 = (0..n).map(|i| s.round(2.3, i) as f64).sum::<f64>() / n as f64;
        assert!((mean - 2.3).abs() < 0.01, "{mean}");
        assert_eq!(s.round(5.0, 3), 5.0);
    }
}
