//! Low-bit quantization and packing.
//!
//! One file per format family:
//! * [`float`]: element codecs for OCP E4M3 / E5M2 / E2M1 (and IEEE half);
//! * [`ternary`]: BitNet b1.58 ternary (Hugging Face 2-bit layout), GGUF TQ1_0 / TQ2_0;
//! * [`int`]: symmetric int8, int4 (symmetric or torchao asymmetric), bitsandbytes NF4;
//! * [`mx`]: scaled FP8, OCP MX (MXFP4 / MXFP8) and NVFP4;
//! * [`rng`]: the counter-based stream behind stochastic rounding.
//!
//! and the machinery they share (private):
//! * `format`: [`Format`], the options, and the entry points [`quantize`] /
//!   [`dequantize`], which check what every format checks and pick the format's module;
//! * `passes`: the parallel passes over fixed chunks, the output buffers they fill, the
//!   NaN / infinity checks and the grouped-format driver;
//! * `simd`: compiling kernels for AVX2 with a baseline twin, picked at run time.
//!
//! [`quantize`] and [`dequantize`] dispatch on [`Format`]. Inputs are a row-major
//! float32 buffer seen as `rows x cols`, where `cols` is the axis groups run along
//! (the last dimension; for `ternary`, everything after the first dimension). Every
//! pass runs in parallel over chunks whose boundaries depend only on the input size,
//! and reductions combine per-chunk results in order, so results never depend on the
//! thread count.

pub mod float;
mod format;
pub mod int;
pub mod mx;
mod passes;
pub mod rng;
pub(crate) mod simd;
pub mod ternary;
mod ternary_one_read;

pub use format::{
    dequantize, dequantize_into, quantize, Format, PackedRef, QuantOptions, Quantized, Rounding,
    ScaleMode, Scales,
};

use crate::alloc::AllocError;
use crate::error::{Cancelled, Classify, ErrorKind};

/// Elements per parallel work item.
pub(crate) const CHUNK: usize = 1 << 16;

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QuantError {
    /// Bad arguments or input values.
    #[error("{0}")]
    Invalid(String),
    /// Packed data that does not follow its format (wrong size, code out of range).
    #[error("{0}")]
    Format(String),
    /// A buffer (output, scales) could not be allocated.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// Stopped through [`crate::Progress::cancel`] (Ctrl-C in Python).
    #[error(transparent)]
    Cancelled(#[from] Cancelled),
}

impl Classify for QuantError {
    fn kind(&self) -> ErrorKind {
        match self {
            QuantError::Invalid(_) => ErrorKind::InvalidInput,
            QuantError::Format(_) => ErrorKind::Format,
            QuantError::Alloc(e) => e.kind(),
            QuantError::Cancelled(_) => ErrorKind::Cancelled,
        }
    }
}

pub(crate) fn invalid<T>(msg: impl Into<String>) -> Result<T, QuantError> {
    Err(QuantError::Invalid(msg.into()))
}

pub(crate) fn format_err<T>(msg: impl Into<String>) -> Result<T, QuantError> {
    Err(QuantError::Format(msg.into()))
}
