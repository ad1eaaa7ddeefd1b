//! Bindings for `thrifty_core::prune`.

use numpy::{PyArray1, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyKeyError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use thrifty_core::prune::{DbpOptions, Method, Prefer, PruneOutput, SspOptions};

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
    &'static str,
);

type Counts<'py> = (Bound<'py, PyArray1<i64>>, Bound<'py, PyArray1<f64>>);

/// The option `key` of `params` (validated on the Python side).
fn param<'py, T: FromPyObjectOwned<'py>>(params: &Bound<'py, PyDict>, key: &str) -> PyResult<T> {
    let v = params
        .get_item(key)?
        .ok_or_else(|| PyKeyError::new_err(format!("pruning option {key:?} is missing")))?;
    v.extract().map_err(Into::into)
}

/// The method `name` with its options from `params`.
fn method(py: Python<'_>, name: &str, params: &Bound<'_, PyDict>) -> PyResult<Method> {
    let prefer =
        Prefer::parse(&param::<String>(params, "prefer")?).map_err(|e| core_err(py, &e))?;
    let seed = param(params, "seed")?;
    Ok(match name {
        "semdedup" => Method::SemDeDup {
            eps: param(params, "eps")?,
            prefer,
            seed,
        },
        "ssp" => Method::Ssp(SspOptions {
            keep_fraction: param(params, "keep_fraction")?,
            prefer,
            n_classes: param(params, "n_classes")?,
            seed,
        }),
        "dbp" => Method::Dbp(DbpOptions {
            keep_fraction: param(params, "keep_fraction")?,
            n_neighbors: param(params, "n_neighbors")?,
            temperature: param(params, "temperature")?,
            balance: param(params, "balance")?,
            prefer,
            n_classes: param(params, "n_classes")?,
            dedup_eps: param(params, "dedup_eps")?,
            seed,
        }),
        "select" => Method::Select {
            count: param(params, "count")?,
            prefer: prefer.fixed().ok_or_else(|| {
                PyKeyError::new_err(
                    "select needs a resolved prefer: \"hard\", \"easy\" or \"random\"",
                )
            })?,
            seed,
        },
        _ => {
            return Err(PyKeyError::new_err(format!(
                "unknown pruning method {name:?}"
            )))
        }
    })
}

/// Run pruning `method` ("semdedup", "ssp", "dbp", or "select": keep exactly
/// `params["count"]`) with the options in `params` (the dict `PruneResult.params`
/// records): `(keep, duplicate_of, similarity, score, keep_per_cluster, complexity,
/// prefer)`, `prefer` being the order used ("auto" resolved). `ids`: the rows' global
/// ids (strictly increasing) when they are a part of a larger set.
#[pyfunction]
#[pyo3(signature = (method_name, x, labels, centroids, params, progress=None, ids=None))]
#[allow(clippy::too_many_arguments)]
fn prune_run<'py>(
    py: Python<'py>,
    method_name: &str,
    x: PyReadonlyArray2<'py, f32>,
    labels: PyReadonlyArray1<'py, i64>,
    centroids: PyReadonlyArray2<'py, f32>,
    params: &Bound<'py, PyDict>,
    progress: Option<&Bound<'py, PyAny>>,
    ids: Option<PyReadonlyArray1<'py, i64>>,
) -> PyResult<Out<'py>> {
    let (xm, cm) = (mat(py, &x, "X")?, mat(py, &centroids, "centroids")?);
    let l = labels.as_slice()?;
    let g = match &ids {
        Some(a) => Some(a.as_slice()?),
        None => None,
    };
    let m = method(py, method_name, params)?;
    let o: PruneOutput = run(py, progress, |p| m.run_ids(xm, l, cm, g, p))?;
    Ok((
        vec1(py, o.keep),
        vec1(py, o.duplicate_of),
        vec1(py, o.similarity),
        vec1(py, o.score),
        vec1(py, o.keep_per_cluster),
        vec1(py, o.complexity),
        o.prefer.name(),
    ))
}

/// The DBP allocation from per-cluster statistics (`thrifty_core::prune::dbp_counts`):
/// `(keep_per_cluster, complexity)`; `n_input` is the size of the whole input.
/// `progress(done, total)` counts centroids; Ctrl-C stops it.
#[pyfunction]
#[pyo3(signature = (centroids, intra, sizes, n_input, params, progress=None))]
fn prune_dbp_counts<'py>(
    py: Python<'py>,
    centroids: PyReadonlyArray2<'py, f32>,
    intra: PyReadonlyArray1<'py, f64>,
    sizes: PyReadonlyArray1<'py, i64>,
    n_input: usize,
    params: &Bound<'py, PyDict>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Counts<'py>> {
    let cm = mat(py, &centroids, "centroids")?;
    let Method::Dbp(o) = method(py, "dbp", params)? else {
        unreachable!("method(\"dbp\") is Method::Dbp")
    };
    let intra = intra.as_slice()?.to_vec();
    let sizes: Vec<usize> = sizes
        .as_slice()?
        .iter()
        .map(|&s| s.max(0) as usize)
        .collect();
    let (counts, cx) = run(py, progress, |p| {
        p.set_total(cm.rows() as u64);
        let cn =
            thrifty_core::cluster::normalized(cm).map_err(thrifty_core::prune::PruneError::from)?;
        let unit = thrifty_core::linalg::MatRef::new(&cn, cm.rows(), cm.cols())
            .map_err(thrifty_core::prune::PruneError::from)?;
        let total = thrifty_core::prune::keep_count(n_input, o.keep_fraction)?;
        thrifty_core::prune::dbp_counts(unit, &intra, &sizes, total, &o, p)
    })?;
    Ok((
        vec1(py, counts.into_iter().map(|c| c as i64).collect()),
        vec1(py, cx),
    ))
}

/// The order `prefer` ("hard", "easy", "random" or "auto") resolves to when `kept`
/// samples are kept from `groups` groups (`thrifty_core::prune::Prefer::resolve`).
#[pyfunction]
fn prune_resolve_prefer(
    py: Python<'_>,
    prefer: &str,
    kept: usize,
    groups: usize,
) -> PyResult<&'static str> {
    let p = Prefer::parse(prefer).map_err(|e| core_err(py, &e))?;
    Ok(p.resolve(kept, groups).name())
}

/// The keys of the seeded random order (`thrifty_core::prune::random_keys`) for the
/// global row `ids` (non-negative): rows sort by `(key, id)` ascending as
/// `prefer="random"` orders them.
#[pyfunction]
fn prune_random_keys<'py>(
    py: Python<'py>,
    ids: PyReadonlyArray1<'py, i64>,
    seed: u64,
) -> PyResult<Bound<'py, PyArray1<u32>>> {
    let g = ids.as_slice()?;
    let keys = run(py, None, |_| thrifty_core::prune::random_keys(g, seed))?;
    Ok(vec1(py, keys))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(prune_run, m)?)?;
    m.add_function(wrap_pyfunction!(prune_dbp_counts, m)?)?;
    m.add_function(wrap_pyfunction!(prune_resolve_prefer, m)?)?;
    m.add_function(wrap_pyfunction!(prune_random_keys, m)?)?;
    Ok(())
}
