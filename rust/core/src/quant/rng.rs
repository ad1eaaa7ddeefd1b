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

    /// Uniform in `[0, 1)` with 32 random bits, for element `i`.
    #[inline(always)]
    pub fn uniform(&self, i: u64) -> f64 {
        let u = mix(self.key ^ (i.wrapping_add(1)).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (u >> 32) as f64 * (1.0 / 4_294_967_296.0)
    }

    /// Stochastically round `v` to an integer: `floor(v) + Bernoulli(v - floor(v))`.
    /// Needs |v| <= 2^22 (callers clamp first).
    #[inline(always)]
    pub fn round(&self, v: f32, i: u64) -> f32 {
        // floor without a libm call (baseline x86-64 has no roundss)
        let r = super::rne_i32(v) as f32;
        let f = if r > v { r - 1.0 } else { r };
        let p = (v - f) as f64;
        if self.uniform(i) < p {
            f + 1.0
        } else {
            f
        }
    }
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
    fn stochastic_round_unbiased() {
        let s = Stream::new(1);
        let n = 100_000u64;
        let mean: f64 = (0..n).map(|i| s.round(2.3, i) as f64).sum::<f64>() / n as f64;
        assert!((mean - 2.3).abs() < 0.01, "{mean}");
        assert_eq!(s.round(5.0, 3), 5.0);
    }
}
