//! numpy intake and output. Python has already normalised dtype and layout
//! (`thrifty._validation`); these helpers only borrow the buffers, and refuse anything
//! that would need a copy.

use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyArrayMethods, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use thrifty_core::linalg::MatRef;

use crate::errors::{core_err, invalid_input};

/// Borrow a C-contiguous float32 matrix without copying.
pub fn mat<'a>(
    py: Python<'_>,
    a: &'a PyReadonlyArray2<'_, f32>,
    name: &str,
) -> PyResult<MatRef<'a>> {
    let shape = a.shape();
    let (rows, cols) = (shape[0], shape[1]);
    // `as_slice` also accepts Fortran order, which would silently transpose the data.
    let not_c = || {
        invalid_input(
            py,
            format!("{name} must be a C-contiguous array (use numpy.ascontiguousarray)"),
        )
    };
    if !a.is_c_contiguous() {
        return Err(not_c());
    }
    let data = a.as_slice().map_err(|_| not_c())?;
    MatRef::new(data, rows, cols).map_err(|e| core_err(py, &e))
}

/// Hand a `Vec` to numpy as a 1-D array, without copying.
pub fn vec1<T: numpy::Element>(py: Python<'_>, v: Vec<T>) -> Bound<'_, PyArray1<T>> {
    v.into_pyarray(py)
}

/// Hand a row-major `Vec` to numpy as a `rows x cols` array, without copying.
pub fn vec2<T: numpy::Element>(
    py: Python<'_>,
    v: Vec<T>,
    rows: usize,
    cols: usize,
) -> PyResult<Bound<'_, PyArray2<T>>> {
    v.into_pyarray(py).reshape([rows, cols])
}
