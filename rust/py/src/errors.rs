//! Maps core errors and panics to the exception classes of `thrifty._errors`.

use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use thrifty_core::{Classify, ErrorKind};

/// Instantiate `thrifty._errors.<class_name>(msg)` as a `PyErr`.
pub fn thrifty_err(py: Python<'_>, class_name: &str, msg: String) -> PyErr {
    let cls = py
        .import("thrifty._errors")
        .and_then(|m| m.getattr(class_name));
    match cls {
        Ok(cls) => match cls.call1((msg.clone(),)) {
            Ok(inst) => PyErr::from_value(inst),
            Err(e) => e,
        },
        // Only reachable when the package is broken; still never abort.
        Err(_) => PyRuntimeError::new_err(msg),
    }
}

/// Exception class name for an error kind.
fn class_for(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidInput => "InvalidInputError",
        ErrorKind::Format => "FormatError",
        ErrorKind::Io => "ThriftyIOError",
        ErrorKind::OutOfMemory => "OutOfMemoryError",
        ErrorKind::Cancelled => "CancelledError",
        ErrorKind::Internal => "InternalError",
    }
}

/// Convert any core error into the matching Python exception.
pub fn core_err<E: Classify>(py: Python<'_>, err: &E) -> PyErr {
    thrifty_err(py, class_for(err.kind()), err.to_string())
}

/// `thrifty.InvalidInputError(msg)`.
pub fn invalid_input(py: Python<'_>, msg: impl Into<String>) -> PyErr {
    thrifty_err(py, "InvalidInputError", msg.into())
}

/// Turn a caught panic payload into a `thrifty.InternalError`.
pub fn panic_err(py: Python<'_>, payload: Box<dyn std::any::Any + Send>) -> PyErr {
    let msg = if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_string()
    };
    thrifty_err(
        py,
        "InternalError",
        format!("internal error in thrifty's Rust core (panic: {msg}); please report this bug"),
    )
}
