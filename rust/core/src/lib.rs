//! `thrifty-core`: every algorithm behind the `thrifty` Python package, in pure Rust.
//!
//! The crate knows nothing about Python. Functions take slices and plain option
//! structs, report progress through [`progress::Progress`], run their parallel work on
//! whatever rayon pool they are called from (see [`parallel`]) and return one error
//! enum per module, each of which classifies itself through [`error::Classify`] so that
//! bindings can map it to an exception type without knowing the module.
//!
//! Results never depend on the number of threads: parallel reductions split their input
//! into chunks whose size is fixed in advance (not derived from the thread count) and
//! combine the partial results in chunk order.

pub mod alloc;
pub mod cluster;
pub mod cpu;
pub mod data;
pub mod error;
pub mod gemm;
pub mod linalg;
pub mod neighbors;
pub mod parallel;
pub mod progress;
pub mod prune;
pub mod quant;
pub mod text;

pub use alloc::AllocError;
pub use error::{Classify, ErrorKind};
pub use progress::Progress;

/// Version of this crate, as in `Cargo.toml`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
