//! Bindings for `thrifty_core::neighbors`.

use numpy::{PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::prelude::*;
use thrifty_core::neighbors::{self, Metric};

use crate::arrays::{mat, vec1, vec2};
use crate::errors::core_err;
use crate::runtime::run;

type Pair<'py, A, B> = (Bound<'py, PyArray2<A>>, Bound<'py, PyArray2<B>>);
type Sums<'py> = (Bound<'py, PyArray2<f64>>, Bound<'py, PyArray1<u64>>);

fn metric(py: Python<'_>, name: &str) -> PyResult<Metric> {
    Metric::parse(name).map_err(|e| core_err(py, &e))
}

/// Exact top-`n_neighbors`: `(scores (m, n_neighbors) float32, indices (m, n_neighbors) int64)`.
#[pyfunction]
#[pyo3(signature = (queries, keys, n_neighbors, metric_name, progress=None))]
fn neighbors_topk<'py>(
    py: Python<'py>,
    queries: PyReadonlyArray2<'py, f32>,
    keys: PyReadonlyArray2<'py, f32>,
    n_neighbors: usize,
    metric_name: &str,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Pair<'py, f32, i64>> {
    let q = mat(py, &queries, "queries")?;
    let x = mat(py, &keys, "keys")?;
    let m = metric(py, metric_name)?;
    let r = run(py, progress, |p| neighbors::topk(q, x, n_neighbors, m, p))?;
    let rows = q.rows();
    Ok((
        vec2(py, r.scores, rows, n_neighbors)?,
        vec2(py, r.indices, rows, n_neighbors)?,
    ))
}

/// Running per-class sums: returns `(sums + class sums of x, counts + class counts)`.
#[pyfunction]
#[pyo3(signature = (x, labels, sums, counts, progress=None))]
fn neighbors_class_sums<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    labels: PyReadonlyArray1<'py, u32>,
    sums: PyReadonlyArray2<'py, f64>,
    counts: PyReadonlyArray1<'py, u64>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Sums<'py>> {
    let xm = mat(py, &x, "X")?;
    let shape = sums.shape().to_vec();
    let labels = labels.as_slice()?;
    let mut s = sums.as_slice()?.to_vec();
    let mut c = counts.as_slice()?.to_vec();
    run(py, progress, |p| {
        neighbors::class_sums(xm, labels, &mut s, &mut c, p)
    })?;
    Ok((vec2(py, s, shape[0], shape[1])?, vec1(py, c)))
}

/// Scores against class means, `(n, n_classes)` float32.
#[pyfunction]
fn neighbors_nearest_mean_scores<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    means: PyReadonlyArray2<'py, f64>,
    metric_name: &str,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let xm = mat(py, &x, "X")?;
    let m = metric(py, metric_name)?;
    let c = means.shape()[0];
    let mu = means.as_slice()?;
    let s = run(py, None, |_| neighbors::nearest_mean_scores(xm, mu, m))?;
    vec2(py, s, xm.rows(), c)
}

/// Index of the nearest class mean per row (uint32).
#[pyfunction]
#[pyo3(signature = (x, means, metric_name, progress=None))]
fn neighbors_nearest_mean_predict<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    means: PyReadonlyArray2<'py, f64>,
    metric_name: &str,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let xm = mat(py, &x, "X")?;
    let m = metric(py, metric_name)?;
    let mu = means.as_slice()?;
    let out = run(py, progress, |p| {
        neighbors::nearest_mean_predict(xm, mu, m, p)
    })?;
    Ok(vec1(py, out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(neighbors_topk, m)?)?;
    m.add_function(wrap_pyfunction!(neighbors_class_sums, m)?)?;
    m.add_function(wrap_pyfunction!(neighbors_nearest_mean_scores, m)?)?;
    m.add_function(wrap_pyfunction!(neighbors_nearest_mean_predict, m)?)?;
    Ok(())
}
