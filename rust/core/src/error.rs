//! The shared error vocabulary.
//!
//! Every module defines its own `thiserror` enum and implements [`Classify`] for it.
//! Bindings map an [`ErrorKind`] to an exception type (`thrifty.InvalidInputError`,
//! `thrifty.FormatError`, ...) without knowing which module the error came from.

/// What kind of failure an error is, from the caller's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The caller passed something invalid: wrong shape, NaN, k > n, unknown label ...
    InvalidInput,
    /// Bytes that should follow a format do not (truncated file, bad header, ...).
    Format,
    /// An I/O failure while reading or writing a file.
    Io,
    /// A buffer whose size came from the input could not be allocated.
    OutOfMemory,
    /// The work was cancelled through [`crate::Progress::cancel`] (e.g. Ctrl-C).
    Cancelled,
    /// A bug in thrifty: an invariant that should always hold did not.
    Internal,
}

/// Implemented by every module's error enum.
pub trait Classify: std::error::Error + Send + Sync + 'static {
    /// The kind of this error.
    fn kind(&self) -> ErrorKind;
}

/// Returned by long-running work when [`crate::Progress::cancel`] was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cancelled")]
pub struct Cancelled;

impl Classify for Cancelled {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Cancelled
    }
}

/// Work that cannot fail.
impl Classify for std::convert::Infallible {
    fn kind(&self) -> ErrorKind {
        match *self {}
    }
}
