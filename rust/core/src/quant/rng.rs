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

    #[test]
    fn stochastic_round_unbiased() {
        let s = Stream::new(1);
        let n = 100_000u64;
        let mean: f64 = (0..n).map(|i| s.round(2.3, i) as f64).sum::<f64>() / n as f64;
        assert!((mean - 2.3).abs() < 0.01, "{mean}");
        assert_eq!(s.round(5.0, 3), 5.0);
    }
}
