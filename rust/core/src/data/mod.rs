//! Data pipelines: deterministic shuffling, batch plans, streaming loaders, domain
//! sampling by temperature and online loss filtering.
//!
//! * [`perm`] — a keyed bijective permutation of `0..n` (a Feistel network with cycle
//!   walking) that shuffles billions of rows in O(1) memory; the order depends only on
//!   `(seed, epoch)`.
//! * [`plan`] — which rows make up batch `b` of an epoch for one rank, after applying a
//!   keep-set, without materialising the permutation.
//! * [`gather`] — copies rows (or overlapping windows) of a byte buffer, or reads them
//!   from a file with positional reads, into a fresh, aligned batch buffer.
//! * [`batches`] — one rank's epoch as a source of whole batches (plan + gather of the
//!   data and label rows), streamed by a background thread.
//! * [`stream`] — a bounded background producer thread that stops promptly when its
//!   consumer goes away.
//! * [`sampler`] — temperature sampling over domains with a Cooldown schedule, and the
//!   equivalent loss weights ("Upsample or Upweight?").
//! * [`filter`] — the automatic loss threshold of multistage data filtering.

pub mod batches;
pub mod filter;
pub mod gather;
pub mod perm;
pub mod plan;
pub mod sampler;
pub mod stream;

use crate::error::{Classify, ErrorKind};

/// Errors of the data module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DataError {
    /// An option or argument is out of its valid range.
    #[error("{0}")]
    InvalidInput(String),
    /// A buffer is smaller than its declared shape (e.g. a truncated file).
    #[error("{0}")]
    Format(String),
    /// Reading a file failed.
    #[error("{0}")]
    Io(String),
    /// A buffer whose size the caller chose could not be allocated.
    #[error(transparent)]
    OutOfMemory(#[from] crate::alloc::AllocError),
}

impl Classify for DataError {
    fn kind(&self) -> ErrorKind {
        match self {
            DataError::InvalidInput(_) => ErrorKind::InvalidInput,
            DataError::Format(_) => ErrorKind::Format,
            DataError::Io(_) => ErrorKind::Io,
            DataError::OutOfMemory(_) => ErrorKind::OutOfMemory,
        }
    }
}

pub(crate) fn invalid(msg: impl Into<String>) -> DataError {
    DataError::InvalidInput(msg.into())
}

/// SplitMix64 finaliser: a fast, well-mixing bijection of `u64`.
#[inline]
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hash of a tuple of words (order-sensitive).
#[inline]
pub(crate) fn hash_words(words: &[u64]) -> u64 {
    let mut h = 0x6A09_E667_F3BC_C908u64;
    for &w in words {
        h = mix64(h ^ w);
    }
    h
}

/// A uniform float in `[0, 1)` from a hash value (53 random bits).
#[inline]
pub(crate) fn unit_f64(h: u64) -> f64 {
    (h >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}
