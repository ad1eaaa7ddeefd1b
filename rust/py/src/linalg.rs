//! Bindings for `thrifty_core::linalg`, plus the diagnostics the test-suite uses to
//! exercise the runtime (panics, thread counts, progress, cancellation).

use std::convert::Infallible;

use numpy::{PyArray1, PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;
use thrifty_core::linalg;
use thrifty_core::progress::Progress;

use crate::arrays::{mat, vec1, vec2};
use crate::runtime::run;

#[pyfunction]
fn linalg_row_norms_sq<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let m = mat(py, &x, "X")?;
    let out = run(py, None, |_| Ok::<_, Infallible>(linalg::row_norms_sq(m)))?;
    Ok(vec1(py, out))
}

#[pyfunction]
fn linalg_normalize_rows<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let m = mat(py, &x, "X")?;
    let out = run(py, None, |_| linalg::normalize_rows(m))?;
    vec2(py, out, m.rows(), m.cols())
}

#[pyfunction]
#[pyo3(signature = (x, progress=None))]
fn linalg_column_mean<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let m = mat(py, &x, "X")?;
    let out = run(py, progress, |p| linalg::column_mean(m, p))?;
    Ok(vec1(py, out))
}

/// Panics inside the runtime helper; for testing that panics become exceptions.
#[pyfunction]
fn _panic(py: Python<'_>, message: String) -> PyResult<()> {
    run(py, None, |_| -> Result<(), Infallible> {
        panic!("{message}")
    })
}

/// Thread count of the pool that work runs on, and how many distinct workers picked
/// up `n_tasks` short tasks.
#[pyfunction]
fn _pool_threads(py: Python<'_>, n_tasks: usize) -> PyResult<(usize, usize)> {
    use rayon::prelude::*;
    run(py, None, |_| {
        let ids: std::collections::HashSet<usize> = (0..n_tasks)
            .into_par_iter()
            .map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(2));
                rayon::current_thread_index().unwrap_or(usize::MAX)
            })
            .collect();
        Ok::<_, Infallible>((rayon::current_num_threads(), ids.len()))
    })
}

/// `steps` units of `step_ms` sleeping work with progress; returns the steps done
/// (fewer when cancelled, then raising).
#[pyfunction]
#[pyo3(signature = (steps, step_ms, progress=None))]
fn _busy(
    py: Python<'_>,
    steps: u64,
    step_ms: u64,
    progress: Option<&Bound<'_, PyAny>>,
) -> PyResult<u64> {
    run(py, progress, |p: &Progress| {
        p.set_total(steps);
        for _ in 0..steps {
            p.check()?;
            std::thread::sleep(std::time::Duration::from_millis(step_ms));
            p.inc(1);
        }
        Ok::<_, thrifty_core::error::Cancelled>(p.snapshot().0)
    })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(linalg_row_norms_sq, m)?)?;
    m.add_function(wrap_pyfunction!(linalg_normalize_rows, m)?)?;
    m.add_function(wrap_pyfunction!(linalg_column_mean, m)?)?;
    m.add_function(wrap_pyfunction!(_panic, m)?)?;
    m.add_function(wrap_pyfunction!(_pool_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_busy, m)?)?;
    Ok(())
}
