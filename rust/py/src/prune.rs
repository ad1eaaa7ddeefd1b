//! Bindings for `thrifty_core::prune`.

use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::prelude::*;
use thrifty_core::prune::{self, DbpOptions, Order, PruneOutput};

use crate::arrays::{mat, vec1};
use crate::errors::core_err;
use crate::runtime::run;

type Out<'py> = (
    Bound<'py, PyArray1<bool>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f32>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
);

fn order(py: Python<'_>, s: &str) -> PyResult<Order> {
    Order::parse(s).map_err(|e| core_err(py, &e))
}

fn out(py: Python<'_>, o: PruneOutput) -> Out<'_> {
    (
        vec1(py, o.keep),
        vec1(py, o.duplicate_of),
        vec1(py, o.similarity),
        vec1(py, o.score),
        vec1(py, o.keep_per_cluster),
        vec1(py, o.complexity),
    )
}

/// SemDeDup: `(keep, duplicate_of, similarity, score, keep_per_cluster, complexity)`.
#[pyfunction]
#[pyo3(signature = (x, labels, centroids, eps, order_name, seed, progress=None))]
#[allow(clippy::too_many_arguments)]
fn semdedup<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    labels: PyReadonlyArray1<'py, i64>,
    centroids: PyReadonlyArray2<'py, f32>,
    eps: f64,
    order_name: &str,
    seed: u64,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Out<'py>> {
    let (xm, cm) = (mat(py, &x, "X")?, mat(py, &centroids, "centroids")?);
    let l = labels.as_slice()?;
    let o = order(py, order_name)?;
    let r = run(py, progress, |p| {
        prune::semdedup(xm, l, cm, eps, o, seed, p)
    })?;
    Ok(out(py, r))
}

/// SSP; same outputs as `semdedup`.
#[pyfunction]
#[pyo3(signature = (x, labels, centroids, keep_fraction, keep, seed, progress=None))]
#[allow(clippy::too_many_arguments)]
fn ssp<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    labels: PyReadonlyArray1<'py, i64>,
    centroids: PyReadonlyArray2<'py, f32>,
    keep_fraction: f64,
    keep: &str,
    seed: u64,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Out<'py>> {
    let (xm, cm) = (mat(py, &x, "X")?, mat(py, &centroids, "centroids")?);
    let l = labels.as_slice()?;
    let o = order(py, keep)?;
    let r = run(py, progress, |p| {
        prune::ssp(xm, l, cm, keep_fraction, o, seed, p)
    })?;
    Ok(out(py, r))
}

/// Density-based pruning; same outputs as `semdedup`.
#[pyfunction]
#[pyo3(signature = (x, labels, centroids, keep_fraction, n_neighbors, temperature, balance, keep, dedup_eps, seed, progress=None))]
#[allow(clippy::too_many_arguments)]
fn dbp<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    labels: PyReadonlyArray1<'py, i64>,
    centroids: PyReadonlyArray2<'py, f32>,
    keep_fraction: f64,
    n_neighbors: usize,
    temperature: f64,
    balance: f64,
    keep: &str,
    dedup_eps: Option<f64>,
    seed: u64,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Out<'py>> {
    let (xm, cm) = (mat(py, &x, "X")?, mat(py, &centroids, "centroids")?);
    let l = labels.as_slice()?;
    let opts = DbpOptions {
        keep_fraction,
        n_neighbors,
        temperature,
        balance,
        keep: order(py, keep)?,
        dedup_eps,
        seed,
    };
    let r = run(py, progress, |p| prune::dbp(xm, l, cm, &opts, p))?;
    Ok(out(py, r))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(semdedup, m)?)?;
    m.add_function(wrap_pyfunction!(ssp, m)?)?;
    m.add_function(wrap_pyfunction!(dbp, m)?)?;
    Ok(())
}
