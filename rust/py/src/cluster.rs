//! Bindings for `thrifty_core::cluster`.

use numpy::{
    PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyReadonlyArrayDyn, PyReadwriteArray1,
    PyReadwriteArray2, PyReadwriteArrayDyn, PyUntypedArrayMethods,
};
use pyo3::prelude::*;
use thrifty_core::cluster::{self, Init, KMeansOptions};

use crate::arrays::{mat, vec1, vec2};
use crate::errors::invalid_input;
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

/// A writable C-contiguous array's data, or a clear error.
fn slice_mut<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    py: Python<'_>,
    a: &'a mut numpy::PyReadwriteArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a mut [T]> {
    a.as_slice_mut()
        .map_err(|_| invalid_input(py, format!("{name} must be a writable C-contiguous array")))
}

/// One block of a super-chunk of a full-data Lloyd iteration (`cluster::lloyd_block`):
/// assigns the rows of `x` to `centroids` and adds them to `sums` (k, d) float64 and
/// `counts` (k,) int64 in place.
#[pyfunction]
#[pyo3(signature = (x, centroids, spherical, sums, counts, progress=None))]
fn cluster_kmeans_lloyd_block<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    centroids: PyReadonlyArray2<'py, f32>,
    spherical: bool,
    mut sums: PyReadwriteArray2<'py, f64>,
    mut counts: PyReadwriteArray1<'py, i64>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<()> {
    let m = mat(py, &x, "X")?;
    let c = mat(py, &centroids, "centroids")?;
    let s = slice_mut(py, &mut sums, "sums")?;
    let n = slice_mut(py, &mut counts, "counts")?;
    run(py, progress, |p| {
        cluster::lloyd_block(m, c, spherical, s, n, p)
    })
}

type FarthestOut<'py> = (
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<i64>>,
    Bound<'py, PyArray2<f32>>,
);

/// The `e` rows of the block `x` farthest from their nearest centroid
/// (`cluster::farthest_rows`): `(rows within the block, distances, labels, training
/// rows)`, farthest first, ties to the lower row.
#[pyfunction]
#[pyo3(signature = (x, centroids, spherical, e, progress=None))]
fn cluster_kmeans_farthest<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    centroids: PyReadonlyArray2<'py, f32>,
    spherical: bool,
    e: usize,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<FarthestOut<'py>> {
    let m = mat(py, &x, "X")?;
    let c = mat(py, &centroids, "centroids")?;
    let f = run(py, progress, |p| {
        cluster::farthest_rows(m, c, spherical, e, p)
    })?;
    let rows = f.rows.len();
    Ok((
        vec1(py, f.rows.into_iter().map(|i| i as i64).collect()),
        vec1(py, f.dist),
        vec1(py, f.labels),
        vec2(py, f.values, rows, m.cols())?,
    ))
}

/// The end of a Lloyd iteration (`cluster::lloyd_update`): re-seed the empty clusters
/// with `reseed` (their labels `reseed_labels`), divide, normalise when spherical.
/// `sums` and `counts` are updated in place; returns `(new centroids, shift)`.
#[pyfunction]
fn cluster_kmeans_update<'py>(
    py: Python<'py>,
    mut sums: PyReadwriteArray2<'py, f64>,
    mut counts: PyReadwriteArray1<'py, i64>,
    centroids: PyReadonlyArray2<'py, f32>,
    spherical: bool,
    reseed: PyReadonlyArray2<'py, f32>,
    reseed_labels: PyReadonlyArray1<'py, i64>,
) -> PyResult<(Bound<'py, PyArray2<f32>>, f64)> {
    let c = mat(py, &centroids, "centroids")?;
    let r = mat(py, &reseed, "reseed")?;
    let rl = reseed_labels.as_slice()?;
    let s = slice_mut(py, &mut sums, "sums")?;
    let n = slice_mut(py, &mut counts, "counts")?;
    let (new, shift) = run(py, None, |_| {
        cluster::lloyd_update(s, n, c.as_slice(), spherical, r, rl)
    })?;
    Ok((vec2(py, new, c.rows(), c.cols())?, shift))
}

/// Adds the rows of the block `x` (unit length when spherical) to the per-feature
/// float64 sums `acc` in place (`cluster::feature_sums_block`).
#[pyfunction]
fn cluster_kmeans_feature_sums<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    spherical: bool,
    mut acc: PyReadwriteArray1<'py, f64>,
) -> PyResult<()> {
    let m = mat(py, &x, "X")?;
    let a = slice_mut(py, &mut acc, "acc")?;
    run(py, None, |_| cluster::feature_sums_block(m, spherical, a))
}

/// `acc` plus the squared deviations of the block `x` from `mean`
/// (`cluster::sq_deviations_block`).
#[pyfunction]
fn cluster_kmeans_sq_deviations<'py>(
    py: Python<'py>,
    x: PyReadonlyArray2<'py, f32>,
    spherical: bool,
    mean: PyReadonlyArray1<'py, f64>,
    acc: f64,
) -> PyResult<f64> {
    let m = mat(py, &x, "X")?;
    let mean = mean.as_slice()?;
    run(py, None, |_| {
        cluster::sq_deviations_block(m, spherical, mean, acc)
    })
}

/// One node of the fixed super-chunk tree (`cluster::add_into`): `left += right` in place.
#[pyfunction]
fn cluster_tree_add<'py>(
    py: Python<'py>,
    mut left: PyReadwriteArrayDyn<'py, f64>,
    right: PyReadonlyArrayDyn<'py, f64>,
) -> PyResult<()> {
    if left.shape() != right.shape() {
        return Err(invalid_input(
            py,
            format!(
                "partials of shapes {:?} and {:?} cannot be added",
                left.shape(),
                right.shape()
            ),
        ));
    }
    let r = right
        .as_slice()
        .map_err(|_| invalid_input(py, "right must be C-contiguous".to_string()))?;
    let l = slice_mut(py, &mut left, "left")?;
    run(py, None, |_| cluster::add_into(l, r))
}

/// The sorted rows `init="random"` starts from when k-means trains on all `n` rows.
#[pyfunction]
fn cluster_kmeans_random_init_rows<'py>(
    py: Python<'py>,
    n: usize,
    n_clusters: usize,
    seed: u64,
) -> Bound<'py, PyArray1<i64>> {
    vec1(
        py,
        cluster::random_init_rows(n, n_clusters, seed)
            .into_iter()
            .map(|i| i as i64)
            .collect(),
    )
}

/// k-means' first centroids from `init` (`cluster::start_centroids`): given centroids,
/// or (`from_rows`) the raw rows of `cluster_kmeans_random_init_rows`.
#[pyfunction]
fn cluster_kmeans_start<'py>(
    py: Python<'py>,
    init: PyReadonlyArray2<'py, f32>,
    spherical: bool,
    from_rows: bool,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let m = mat(py, &init, "init")?;
    let c = run(py, None, |_| {
        cluster::start_centroids(m, spherical, from_rows)
    })?;
    vec2(py, c, m.rows(), m.cols())
}

/// Rows per super-chunk of k-means' order-dependent sums (`cluster::SUPER_CHUNK`).
#[pyfunction]
fn cluster_kmeans_super_chunk() -> usize {
    cluster::SUPER_CHUNK
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(cluster_kmeans_super_chunk, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_lloyd_block, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_farthest, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_update, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_feature_sums, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_sq_deviations, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_tree_add, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_random_init_rows, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_start, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_training_sample, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans, m)?)?;
    m.add_function(wrap_pyfunction!(cluster_kmeans_assign, m)?)?;
    Ok(())
}
