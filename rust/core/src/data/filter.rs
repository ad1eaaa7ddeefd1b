//! Online loss filtering with the automatic threshold of "Efficient NLP Model
//! Finetuning via Multistage Data Filtering".
//!
//! During a warm-up of `warmup_steps` batches every example is back-propagated and the
//! threshold follows the mean of the most recent `window` per-example losses. When
//! the warm-up ends the threshold is frozen; from then on an example is
//! back-propagated only if its loss is at least the threshold — examples the model
//! already fits better than a typical warm-up example are skipped.

use std::collections::VecDeque;

use super::{invalid, DataError};
use crate::alloc::AllocError;

/// Streaming loss filter; see the module docs.
#[derive(Debug, Clone)]
pub struct LossFilter {
    warmup_steps: u64,
    window: usize,
    history: VecDeque<f64>,
    threshold: Option<f64>,
    steps: u64,
    seen: u64,
    skipped: u64,
}

fn check_losses(losses: &[f64]) -> Result<(), DataError> {
    if let Some(i) = losses.iter().position(|l| !l.is_finite()) {
        return Err(invalid(format!(
            "losses contains {} at position {i}; losses must be finite",
            losses[i]
        )));
    }
    Ok(())
}

/// Which losses reach `threshold` (the stateless rule).
pub fn mask_at_least(losses: &[f64], threshold: f64) -> Result<Vec<bool>, DataError> {
    check_losses(losses)?;
    Ok(losses.iter().map(|&l| l >= threshold).collect())
}

impl LossFilter {
    /// A filter with `warmup_steps` batches of warm-up and a window of `window` losses.
    ///
    /// The window's memory grows with the losses fed, never ahead of them, so a window
    /// far larger than the losses a run produces costs nothing.
    pub fn new(warmup_steps: u64, window: usize) -> Result<Self, DataError> {
        if window < 1 {
            return Err(invalid(format!("window must be >= 1, got {window}")));
        }
        Ok(LossFilter {
            warmup_steps,
            window,
            history: VecDeque::new(),
            threshold: None,
            steps: 0,
            seen: 0,
            skipped: 0,
        })
    }

    /// Feed one batch of per-example losses; returns which to back-propagate.
    pub fn update(&mut self, losses: &[f64]) -> Result<Vec<bool>, DataError> {
        check_losses(losses)?;
        let mask = if self.steps < self.warmup_steps || self.threshold.is_none() {
            let room = self.window - self.history.len();
            let grow = losses.len().min(room);
            self.history.try_reserve(grow).map_err(|_| AllocError {
                what: "the loss window",
                bytes: grow.saturating_mul(8),
            })?;
            for &l in losses {
                if self.history.len() == self.window {
                    self.history.pop_front();
                }
                self.history.push_back(l);
            }
            if !self.history.is_empty() {
                self.threshold = Some(self.history.iter().sum::<f64>() / self.history.len() as f64);
            }
            vec![true; losses.len()]
        } else {
            let t = self.threshold.unwrap_or(f64::NEG_INFINITY);
            losses.iter().map(|&l| l >= t).collect::<Vec<bool>>()
        };
        self.steps += 1;
        self.seen += losses.len() as u64;
        self.skipped += mask.iter().filter(|&&m| !m).count() as u64;
        Ok(mask)
    }

    /// The current threshold (`None` before any loss was seen).
    pub fn threshold(&self) -> Option<f64> {
        self.threshold
    }

    /// Batches fed so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Examples seen so far.
    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Examples skipped so far.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Fraction of examples skipped so far (0 before any).
    pub fn skipped_fraction(&self) -> f64 {
        if self.seen == 0 {
            0.0
        } else {
            self.skipped as f64 / self.seen as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_frozen_threshold() {
        let mut f = LossFilter::new(2, 4).unwrap();
        assert_eq!(f.update(&[1.0, 2.0, 3.0]).unwrap(), vec![true; 3]);
        assert_eq!(f.threshold(), Some(2.0));
        f.update(&[4.0, 5.0]).unwrap();
        // window keeps the last 4: 2, 3, 4, 5
        assert_eq!(f.threshold(), Some(3.5));
        let m = f.update(&[3.0, 3.5, 9.0, 0.1]).unwrap();
        assert_eq!(m, vec![false, true, true, false]);
        assert_eq!(f.threshold(), Some(3.5));
        assert_eq!(f.skipped(), 2);
        assert!((f.skipped_fraction() - 2.0 / 9.0).abs() < 1e-12);
    }

    #[test]
    fn huge_window_allocates_only_what_is_fed() {
        let mut f = LossFilter::new(1, 1 << 40).unwrap();
        assert_eq!(f.update(&[1.0, 3.0]).unwrap(), vec![true, true]);
        assert_eq!(f.threshold(), Some(2.0));
        assert!(f.history.capacity() < 1 << 20);
        let mut f = LossFilter::new(1, usize::MAX).unwrap();
        f.update(&[4.0]).unwrap();
        assert_eq!(f.threshold(), Some(4.0));
    }

    #[test]
    fn bad_inputs() {
        assert!(LossFilter::new(1, 0).is_err());
        let mut f = LossFilter::new(1, 3).unwrap();
        assert!(f.update(&[1.0, f64::NAN]).is_err());
        assert!(mask_at_least(&[f64::INFINITY], 0.0).is_err());
        assert_eq!(mask_at_least(&[1.0, 2.0], 1.5).unwrap(), vec![false, true]);
    }
}
