//! Compression-based text distances and k-nearest-neighbour search ("gzip + kNN",
//! Jiang et al., Findings of ACL 2023).
//!
//! * [`compressed_lens`]: `C(x)` for many texts, in parallel.
//! * [`distance_matrix`]: NCD / CDM / CLM between every query and reference, where the
//!   joint text is `query + b" " + reference` (query first, as the paper's code).
//! * [`kneighbors`]: the `k` nearest references of every query, keeping only a top-k
//!   heap per query (never the distance matrix), with `C(reference)` computed once by
//!   the caller and reused.
//!
//! Every distance is computed from integer lengths with one IEEE division, in the same
//! order of operations as the plain-Python formulas, so results are bit-identical to
//! them. Work is split into blocks whose boundaries depend only on the input sizes and
//! neighbours are ordered by `(distance, reference index)`, a total order, so results
//! never depend on the thread count. Ties in distance go to the lower reference index.

mod codec;
pub mod deflate9;
mod knn;

pub use codec::{Codec, Compressor, Engine, GZIP_OVERHEAD};
pub use knn::{distance_matrix, kneighbors, Neighbors};

use rayon::prelude::*;

use crate::alloc::AllocError;
use crate::error::{Cancelled, Classify, ErrorKind};
use crate::parallel::fixed_chunks;
use crate::progress::Progress;

/// Errors of the text module.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// An unknown compressor name.
    #[error("unknown compressor {0:?}; expected one of 'gzip', 'bz2', 'lzma', 'zstd'")]
    UnknownCompressor(String),
    /// An unknown distance name.
    #[error("unknown distance {0:?}; expected one of 'ncd', 'cdm', 'clm'")]
    UnknownDistance(String),
    /// A level outside the codec's range.
    #[error("level {level} is not valid for {codec}; expected an integer from {lo} to {hi}")]
    BadLevel {
        /// Codec name.
        codec: &'static str,
        /// The level given.
        level: i32,
        /// Lowest valid level.
        lo: i32,
        /// Highest valid level.
        hi: i32,
    },
    /// No texts where at least one is needed.
    #[error("{0} is empty; need at least one text")]
    Empty(&'static str),
    /// A zero-length text.
    #[error("{what}[{index}] is an empty text; compression distances need non-empty texts")]
    EmptyText {
        /// Which argument.
        what: &'static str,
        /// Position of the empty text.
        index: usize,
    },
    /// Invalid number of neighbours.
    #[error(
        "n_neighbors={k} is invalid: need 1 <= n_neighbors <= number of references ({n_refs})"
    )]
    BadK {
        /// Requested neighbours.
        k: usize,
        /// Available references.
        n_refs: usize,
    },
    /// Lengths of paired arguments differ.
    #[error("{0}")]
    Mismatch(String),
    /// The compression library reported an error (a bug or out of memory).
    #[error("compressor failure: {0}")]
    Codec(String),
    /// Cancelled through the progress handle.
    #[error("cancelled")]
    Cancelled,
    /// A buffer sized by the input could not be allocated.
    #[error(transparent)]
    Alloc(#[from] AllocError),
}

impl From<Cancelled> for TextError {
    fn from(_: Cancelled) -> Self {
        TextError::Cancelled
    }
}

impl Classify for TextError {
    fn kind(&self) -> ErrorKind {
        match self {
            TextError::Codec(_) => ErrorKind::Internal,
            TextError::Cancelled => ErrorKind::Cancelled,
            TextError::Alloc(e) => e.kind(),
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// A compression distance between `x` (query) and `y` (reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distance {
    /// `(C(xy) - min(C(x), C(y))) / max(C(x), C(y))`.
    Ncd,
    /// `C(xy) / (C(x) + C(y))`.
    Cdm,
    /// `1 - (C(x) + C(y) - C(xy)) / C(xy)`.
    Clm,
}

impl Distance {
    /// Parse `"ncd"`, `"cdm"` or `"clm"`.
    pub fn from_name(name: &str) -> Result<Self, TextError> {
        match name {
            "ncd" => Ok(Distance::Ncd),
            "cdm" => Ok(Distance::Cdm),
            "clm" => Ok(Distance::Clm),
            _ => Err(TextError::UnknownDistance(name.to_string())),
        }
    }

    /// The distance from the three lengths; the same operations, in the same order,
    /// as the Python formulas (integer arithmetic, then one true division).
    #[inline]
    pub fn eval(self, cx: u64, cy: u64, cxy: u64) -> f64 {
        // Lengths are far below 2^53, so the conversions are exact.
        let (x, y, xy) = (cx as i64, cy as i64, cxy as i64);
        match self {
            Distance::Ncd => (xy - x.min(y)) as f64 / x.max(y) as f64,
            Distance::Cdm => xy as f64 / (x + y) as f64,
            Distance::Clm => 1.0 - (x + y - xy) as f64 / xy as f64,
        }
    }
}

/// Texts per parallel block in [`compressed_lens`].
const LEN_BLOCK: usize = 64;

/// Reject an empty list or an empty text.
pub(crate) fn check_texts(texts: &[&[u8]], what: &'static str) -> Result<(), TextError> {
    if texts.is_empty() {
        return Err(TextError::Empty(what));
    }
    if let Some(index) = texts.iter().position(|t| t.is_empty()) {
        return Err(TextError::EmptyText { what, index });
    }
    Ok(())
}

/// `C(t)` for every text, in parallel (one cached engine per worker thread).
pub fn compressed_lens(
    texts: &[&[u8]],
    comp: Compressor,
    progress: &Progress,
) -> Result<Vec<u64>, TextError> {
    check_texts(texts, "texts")?;
    progress.set_total(texts.len() as u64);
    lens_unchecked(texts, comp, progress)
}

/// [`compressed_lens`] without input checks or `set_total` (progress is incremented).
pub(crate) fn lens_unchecked(
    texts: &[&[u8]],
    comp: Compressor,
    progress: &Progress,
) -> Result<Vec<u64>, TextError> {
    comp.engine()?; // surface init errors once, before spawning
    let blocks = fixed_chunks(texts.len(), LEN_BLOCK);
    let parts: Vec<Vec<u64>> = blocks
        .par_iter()
        .map(|range| {
            progress.check()?;
            let out = comp.with_engine(|engine| {
                texts[range.clone()]
                    .iter()
                    .map(|t| engine.compressed_len(t))
                    .collect::<Result<Vec<_>, _>>()
            })?;
            progress.inc(range.len() as u64);
            Ok(out)
        })
        .collect::<Result<_, TextError>>()?;
    let mut out = crate::alloc::try_with_capacity(texts.len(), "compressed lengths")?;
    for p in parts {
        out.extend_from_slice(&p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_match_formulas() {
        assert_eq!(Distance::Ncd.eval(30, 40, 50), (50.0 - 30.0) / 40.0);
        assert_eq!(Distance::Cdm.eval(30, 40, 50), 50.0 / 70.0);
        assert_eq!(Distance::Clm.eval(30, 40, 50), 1.0 - 20.0 / 50.0);
        assert!(Distance::from_name("euclid").is_err());
    }

    #[test]
    fn lens_reject_bad_input_and_ignore_threads() {
        let comp = Compressor::new(Codec::Gzip, None).unwrap();
        let p = Progress::new();
        assert!(matches!(
            compressed_lens(&[], comp, &p),
            Err(TextError::Empty(_))
        ));
        assert!(matches!(
            compressed_lens(&[b"a", b""], comp, &p),
            Err(TextError::EmptyText { index: 1, .. })
        ));
        let owned: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("{i} {}", "xyz".repeat(i % 17)).into_bytes())
            .collect();
        let texts: Vec<&[u8]> = owned.iter().map(|t| t.as_slice()).collect();
        let one = crate::parallel::install(1, || compressed_lens(&texts, comp, &p).unwrap());
        let three = crate::parallel::install(3, || compressed_lens(&texts, comp, &p).unwrap());
        assert_eq!(one, three);
        assert_eq!(p.snapshot(), (300, 300));
    }
}
