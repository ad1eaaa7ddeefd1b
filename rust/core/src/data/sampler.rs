//! Temperature sampling over domains, with a Cooldown schedule, and the equivalent
//! loss weights ("Upsample or Upweight? Balanced Training on Heavily Imbalanced
//! Datasets").
//!
//! Domain `i` with `n_i` examples is drawn with probability `p_i ∝ n_i^(1/T)`: `T = 1`
//! samples proportionally to size, `T → ∞` uniformly over domains. Temperature
//! sampling converges faster than up-weighting but over-fits small domains; the
//! paper's Cooldown starts at a high temperature and lowers it during training. Here
//! the schedule holds `T` until `start`, moves linearly to `t_end` at `end` and stays
//! there (`start == end` is a single switch).
//!
//! Draw `s` uses its own hash of `(seed, s)`, so a stream resumed at step `s` with the
//! per-domain counters reproduces the uninterrupted one. Inside a domain, examples
//! come in the order of a keyed permutation that is re-keyed on every pass.

use super::perm::Permutation;
use super::{hash_words, invalid, unit_f64, DataError};
use crate::alloc::try_with_capacity;

/// A linear cooldown of the temperature from its initial value to `t_end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cooldown {
    /// Final temperature (> 0).
    pub t_end: f64,
    /// Step at which the temperature starts to fall.
    pub start: u64,
    /// Step at which it reaches `t_end` (>= start).
    pub end: u64,
}

/// Domain sampler with probabilities `∝ n_i^(1/T(step))`.
#[derive(Debug, Clone)]
pub struct TemperatureSampler {
    sizes: Vec<u64>,
    temperature: f64,
    cooldown: Option<Cooldown>,
    seed: u64,
}

fn check_temperature(t: f64, name: &str) -> Result<(), DataError> {
    if !(t.is_finite() && t > 0.0) {
        return Err(invalid(format!(
            "{name} must be a finite number > 0, got {t}"
        )));
    }
    Ok(())
}

impl TemperatureSampler {
    /// Validate and build a sampler.
    pub fn new(
        sizes: Vec<u64>,
        temperature: f64,
        cooldown: Option<Cooldown>,
        seed: u64,
    ) -> Result<Self, DataError> {
        if sizes.is_empty() {
            return Err(invalid("sizes must name at least one domain"));
        }
        if sizes.iter().all(|&n| n == 0) {
            return Err(invalid("at least one domain must have a positive size"));
        }
        check_temperature(temperature, "temperature")?;
        if let Some(c) = cooldown {
            check_temperature(c.t_end, "cooldown end temperature")?;
            if c.end < c.start {
                return Err(invalid(format!(
                    "cooldown must end at or after its start, got start {} and end {}",
                    c.start, c.end
                )));
            }
        }
        Ok(TemperatureSampler {
            sizes,
            temperature,
            cooldown,
            seed,
        })
    }

    /// Domain sizes.
    pub fn sizes(&self) -> &[u64] {
        &self.sizes
    }

    /// The temperature at `step`.
    pub fn temperature_at(&self, step: u64) -> f64 {
        match self.cooldown {
            None => self.temperature,
            Some(c) if step <= c.start => self.temperature,
            Some(c) if step >= c.end => c.t_end,
            Some(c) => {
                let f = (step - c.start) as f64 / (c.end - c.start) as f64;
                self.temperature + f * (c.t_end - self.temperature)
            }
        }
    }

    /// Sampling probabilities at `step` (sum to 1; empty domains get 0).
    pub fn probabilities(&self, step: u64) -> Vec<f64> {
        probabilities_at(&self.sizes, self.temperature_at(step))
    }

    /// Up-weighting alternative: per-domain loss weights `p_i(T) / q_i` for data drawn
    /// proportionally to size (`q_i = n_i / N`), so that the expected weighted loss
    /// equals the expected loss under temperature sampling. Empty domains get 0.
    pub fn loss_weights(&self, step: u64) -> Vec<f64> {
        let total: f64 = self.sizes.iter().map(|&n| n as f64).sum();
        self.probabilities(step)
            .iter()
            .zip(&self.sizes)
            .map(|(&p, &n)| if n == 0 { 0.0 } else { p * total / n as f64 })
            .collect()
    }

    /// Draw `n` examples starting at `step`; `counts[i]` is how many examples of
    /// domain `i` were drawn before `step` and is advanced. Returns `(domain, index)`.
    pub fn sample(
        &self,
        step: u64,
        counts: &mut [u64],
        n: usize,
    ) -> Result<(Vec<u32>, Vec<u64>), DataError> {
        if counts.len() != self.sizes.len() {
            return Err(invalid(format!(
                "counts has {} entries for {} domains",
                counts.len(),
                self.sizes.len()
            )));
        }
        if step.checked_add(n as u64).is_none() {
            return Err(invalid(format!(
                "drawing {n} samples from step {step} overflows the step counter"
            )));
        }
        let mut domains = try_with_capacity(n, "the sampled domains")?;
        let mut indices = try_with_capacity(n, "the sampled indices")?;
        let mut cum = Vec::with_capacity(self.sizes.len());
        let mut cum_t = f64::NAN;
        for s in step..step + n as u64 {
            let t = self.temperature_at(s);
            if t != cum_t {
                cum.clear();
                let mut acc = 0.0;
                for p in probabilities_at(&self.sizes, t) {
                    acc += p;
                    cum.push(acc);
                }
                cum_t = t;
            }
            let u = unit_f64(hash_words(&[self.seed, s, 0x646f_6d61])) * cum[cum.len() - 1];
            let mut d = cum.partition_point(|&c| c <= u).min(cum.len() - 1);
            while self.sizes[d] == 0 {
                d -= 1; // only reachable through rounding at an empty domain's edge
            }
            let size = self.sizes[d];
            let k = counts[d];
            let perm = Permutation::new(size, hash_words(&[self.seed, d as u64]), k / size);
            indices.push(perm.apply(k % size));
            domains.push(d as u32);
            counts[d] += 1;
        }
        Ok((domains, indices))
    }
}

/// `p_i ∝ n_i^(1/t)`, computed in log space.
pub fn probabilities_at(sizes: &[u64], t: f64) -> Vec<f64> {
    let logs: Vec<f64> = sizes
        .iter()
        .map(|&n| {
            if n == 0 {
                f64::NEG_INFINITY
            } else {
                (n as f64).ln() / t
            }
        })
        .collect();
    let max = logs.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logs.iter().map(|&l| (l - max).exp()).collect();
    let z: f64 = w.iter().sum();
    w.into_iter().map(|x| x / z).collect()
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_match_formula() {
        let s = TemperatureSampler::new(vec![1000, 100, 10, 0], 2.0, None, 0).unwrap();
        let p = s.probabilities(0);
        let w: Vec<f64> = [1000f64, 100., 10.].iter().map(|n| n.powf(0.5)).collect();
        let z: f64 = w.iter().sum();
        for i in 0..3 {
            assert!((p[i] - w[i] / z).abs() < 1e-12);
        }
        assert_eq!(p[3], 0.0);
    }

    #[test]
    fn cooldown_schedule() {
        let c = Cooldown {
            t_end: 1.0,
            start: 100,
            end: 200,
        };
        let s = TemperatureSampler::new(vec![10, 1], 5.0, Some(c), 0).unwrap();
        assert_eq!(s.temperature_at(0), 5.0);
        assert_eq!(s.temperature_at(100), 5.0);
        assert_eq!(s.temperature_at(150), 3.0);
        assert_eq!(s.temperature_at(200), 1.0);
        assert_eq!(s.temperature_at(10_000), 1.0);
    }

    #[test]
    fn empirical_frequencies_and_resume() {
        let s = TemperatureSampler::new(vec![5000, 500, 50], 3.0, None, 11).unwrap();
        let mut counts = vec![0; 3];
        let (d, idx) = s.sample(0, &mut counts, 60_000).unwrap();
        let p = s.probabilities(0);
        for i in 0..3 {
            let f = d.iter().filter(|&&x| x == i as u32).count() as f64 / d.len() as f64;
            assert!((f - p[i]).abs() < 0.01, "domain {i}: {f} vs {}", p[i]);
        }
        // resume halfway reproduces the tail
        let mut c2 = vec![0; 3];
        s.sample(0, &mut c2, 30_000).unwrap();
        let (d2, i2) = s.sample(30_000, &mut c2, 30_000).unwrap();
        assert_eq!(&d[30_000..], &d2[..]);
        assert_eq!(&idx[30_000..], &i2[..]);
        // each pass over the small domain visits every example once
        let first: Vec<u64> = d
            .iter()
            .zip(&idx)
            .filter(|(&x, _)| x == 2)
            .map(|(_, &i)| i)
            .take(50)
            .collect();
        let mut sorted = first.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
    }

    #[test]
    fn loss_weights_match_expectation() {
        let s = TemperatureSampler::new(vec![900, 100], 2.0, None, 0).unwrap();
        let w = s.loss_weights(0);
        let p = s.probabilities(0);
        assert!((0.9 * w[0] - p[0]).abs() < 1e-12);
        assert!((0.1 * w[1] - p[1]).abs() < 1e-12);
    }

    #[test]
    fn impossible_sample_sizes_are_errors() {
        let s = TemperatureSampler::new(vec![5, 5], 1.0, None, 0).unwrap();
        let mut counts = vec![0; 2];
        let e = s.sample(0, &mut counts, usize::MAX / 2).unwrap_err();
        assert!(matches!(e, DataError::OutOfMemory(_)), "{e}");
        assert!(s.sample(u64::MAX, &mut counts, 2).is_err());
        assert_eq!(counts, vec![0, 0]);
    }

    #[test]
    fn bad_inputs() {
        assert!(TemperatureSampler::new(vec![], 1.0, None, 0).is_err());
        assert!(TemperatureSampler::new(vec![0, 0], 1.0, None, 0).is_err());
        assert!(TemperatureSampler::new(vec![1], 0.0, None, 0).is_err());
        assert!(TemperatureSampler::new(vec![1], f64::NAN, None, 0).is_err());
        let c = Cooldown {
            t_end: 1.0,
            start: 5,
            end: 4,
        };
        assert!(TemperatureSampler::new(vec![1], 1.0, Some(c), 0).is_err());
    }
}
