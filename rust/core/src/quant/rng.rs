//! The counter-based random stream behind `rounding = "stochastic"`.
//!
//! Element `i` of a tensor quantized with seed `s` draws
//! `u = mix(mix(s) ^ (i + 1) * 0x9E3779B97F4A7C15)`, where `mix` is the SplitMix64
//! finaliser; the uniform variate is the top 32 bits of `u` divided by 2^32. A draw
//! depends only on `(seed, i)`, never on the order of evaluation, so results do not
//! depend on the thread count or the chunking.

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
        (mix(self.key ^ (i.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 32) as u32
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
    for (j, o) in out.iter_mut().enumerate() {
        *o = s.bits32(first.wrapping_add(j as u64));
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

/// [`round_with`] as an integer (no float-to-int cast, which would not vectorise).
#[inline(always)]
pub fn round_with_i32(v: f32, bits: u32) -> i32 {
    // floor without a libm call (baseline x86-64 has no roundss)
    let r = super::simd::rne_i32(v);
    let rf = r as f32;
    let down = rf > v;
    let f = if down { rf - 1.0 } else { rf };
    let p = (v - f) as f64;
    r - down as i32 + (uniform_of(bits) < p) as i32
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

    #[test]
    fn stochastic_round_unbiased() {
        let s = Stream::new(1);
        let n = 100_000u64;
        let mean: f64 = (0..n).map(|i| s.round(2.3, i) as f64).sum::<f64>() / n as f64;
        assert!((mean - 2.3).abs() < 0.01, "{mean}");
        assert_eq!(s.round(5.0, 3), 5.0);
    }
}
