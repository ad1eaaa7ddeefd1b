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
        _ => {
            return Err(PyKeyError::new_err(format!(
                "unknown pruning method {name:?}"
            )))
        }
    })
}

/// Run pruning `method` ("semdedup", "ssp" or "dbp") with the options in `params` (the
/// dict `PruneResult.params` records): `(keep, duplicate_of, similarity, score,
/// keep_per_cluster, complexity, prefer)`, `prefer` being the order used ("auto" resolved).
#[pyfunction]
#[pyo3(signature = (method_name, x, labels, centroids, params, progress=None))]
fn prune_run<'py>(
    py: Python<'py>,
    method_name: &str,
    x: PyReadonlyArray2<'py, f32>,
    labels: PyReadonlyArray1<'py, i64>,
    centroids: PyReadonlyArray2<'py, f32>,
    params: &Bound<'py, PyDict>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Out<'py>> {
    let (xm, cm) = (mat(py, &x, "X")?, mat(py, &centroids, "centroids")?);
    let l = labels.as_slice()?;
    let m = method(py, method_name, params)?;
    let o: PruneOutput = run(py, progress, |p| m.run(xm, l, cm, p))?;
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

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(prune_run, m)?)?;
    Ok(())
}
