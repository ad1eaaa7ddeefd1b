//! Bindings for `thrifty_core::cluster`.

use numpy::{PyArray1, PyArray2, PyReadonlyArray2};
use pyo3::prelude::*;
use thrifty_core::cluster::{self, Init, KMeansOptions};

use crate::arrays::{mat, vec1, vec2};
use crate::runtime::run;

type Fit<'py> = (
    Bound<'py, PyArray2<f32>>,
    Bound<'py, PyArray1<i64>>,
    f64,
    usize,
);

type Assigned<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>);

/// k-means: `(centroids (k, d), labels (n,), inertia, n_iter)`. `init` is
/// `"k-means++"`, `"random"`, or ignored when `init_centroids` is given.
#[pyfunction]
#[pyo3(signature = (x, n_clusters, spherical, max_iter, tol, init, init_centroids, max_points_per_centroid, seed, progress=None))]
#[allow(clippy::too_many_arguments)]
fn cluster_kmeans<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    n_clusters: usize,
    spherical: bool,
    max_iter: usize,
    tol: f64,
    init: &str,
    init_centroids: Option<PyReadonlyArray2<'py, f32>>,
    max_points_per_centroid: Option<usize>,
    seed: u64,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Fit<'py>> {
    let m = mat(py, &x, "X")?;
    let init = match init_centroids {
        Some(c) => Init::Given(c.as_slice()?.to_vec()),
        None if init == "random" => Init::Random,
        None => Init::KMeansPlusPlus,
    };
    let opts = KMeansOptions {
        n_clusters,
        spherical,
        max_iter,
        tol,
        init,
        max_points_per_centroid,
        seed,
    };
    let r = run(py, progress, |p| cluster::kmeans(m, &opts, p))?;
    let d = m.cols();
    Ok((
        vec2(py, r.centroids, n_clusters, d)?,
        vec1(py, r.labels),
        r.inertia,
        r.n_iter,
    ))
}

/// Nearest centroid per row and the squared distance to it. `unit_rows` (spherical
/// only): scale rows while packing them, exactly as the final assignment of a spherical
/// `kmeans` that trained on a subsample.
#[pyfunction]
#[pyo3(signature = (x, centroids, spherical, progress=None, unit_rows=false))]
fn cluster_kmeans_assign<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    centroids: PyReadonlyArray2<'py, f32>,
    spherical: bool,
    progress: Option<&Bound<'py, PyAny>>,
    unit_rows: bool,
) -> PyResult<Assigned<'py>> {
    let m = mat(py, &x, "X")?;
    let c = mat(py, &centroids, "centroids")?;
    let (l, d) = run(py, progress, |p| {
        if spherical && unit_rows {
            return cluster::assign_unit_rows(m, c, p);
        }
        let normed;
        let xs = if spherical {
            normed = cluster::normalized(m)?;
            thrifty_core::linalg::MatRef::new(&normed, m.rows(), m.cols())?
        } else {
            m
        };
        cluster::assign(xs, c, spherical, p)
    })?;
    Ok((vec1(py, l), vec1(py, d)))
}

/// The sorted rows `kmeans` trains on when it subsamples `n` rows for `n_clusters`
/// (`None`: it trains on every row). Memory follows the sample, not `n`.
#[pyfunction]
fn cluster_kmeans_training_sample<'py>(
    py: Python<'py>,
    n: usize,
    n_clusters: usize,
    max_points_per_centroid: Option<usize>,
    seed: u64,
) -> Option<Bound<'py, PyArray1<i64>>> {
    cluster::training_sample(n, n_clusters, max_points_per_centroid, seed)
        .map(|v| vec1(py, v.into_iter().map(|i| i as i64).collect()))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cluster_kmeans_training_sample, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_assign, m)?)?;
    Ok(())
}
