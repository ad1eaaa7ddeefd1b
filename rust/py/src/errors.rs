//! Maps core errors and panics to the exception classes of `thrifty._errors`.
//!
//! The classes are defined once, in Python (`thrifty/_errors.py`, so that they pickle
//! and document like any Python class), and imported here once as typed Rust handles:
//! raising never looks a class up by name.

use pyo3::prelude::*;
use thrifty_core::{Classify, ErrorKind};

pyo3::import_exception!(thrifty._errors, InvalidInputError);
pyo3::import_exception!(thrifty._errors, FormatError);
pyo3::import_exception!(thrifty._errors, ThriftyIOError);
pyo3::import_exception!(thrifty._errors, OutOfMemoryError);
pyo3::import_exception!(thrifty._errors, CancelledError);
pyo3::import_exception!(thrifty._errors, InternalError);

/// The exception for an error kind, carrying `msg`.
pub fn kind_err(kind: ErrorKind, msg: String) -> PyErr {
    match kind {
        ErrorKind::InvalidInput => InvalidInputError::new_err(msg),
        ErrorKind::Format => FormatError::new_err(msg),
        ErrorKind::Io => ThriftyIOError::new_err(msg),
        ErrorKind::OutOfMemory => OutOfMemoryError::new_err(msg),
        ErrorKind::Cancelled => CancelledError::new_err(msg),
        ErrorKind::Internal => InternalError::new_err(msg),
    }
}

/// Convert any core error into the matching Python exception.
pub fn core_err<E: Classify>(_py: Python<'_>, err: &E) -> PyErr {
    kind_err(err.kind(), err.to_string())
}

/// `thrifty.InvalidInputError(msg)`.
pub fn invalid_input(_py: Python<'_>, msg: impl Into<String>) -> PyErr {
    InvalidInputError::new_err(msg.into())
}

/// Turn a caught panic payload into a `thrifty.InternalError`.
pub fn panic_err(_py: Python<'_>, payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    };
    InternalError::new_err(format!(
        "internal error in thrifty's Rust core (panic: {msg}); please report this bug"
    ))
}
