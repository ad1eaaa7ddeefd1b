//! Bindings for `thrifty_core::text`: compressed lengths, distance matrices and
//! top-k neighbour search over texts. Python has already encoded every text to bytes.

use numpy::{PyArray1, PyArray2, PyReadonlyArray1};
use pyo3::prelude::*;
use pyo3::pybacked::PyBackedBytes;
use thrifty_core::text::{self, Compressor, Distance};

use crate::arrays::{vec1, vec2};
use crate::errors::{core_err, invalid_input};
use crate::runtime::run;

fn spec(py: Python<'_>, compressor: &str, level: Option<i32>) -> PyResult<Compressor> {
    Compressor::from_name(compressor, level).map_err(|e| core_err(py, &e))
}

fn distance(py: Python<'_>, name: &str) -> PyResult<Distance> {
    Distance::from_name(name).map_err(|e| core_err(py, &e))
}

fn slices(texts: &[PyBackedBytes]) -> Vec<&[u8]> {
    texts.iter().map(|t| t.as_ref()).collect()
}

#[pyfunction]
#[pyo3(signature = (texts, compressor, level=None, progress=None))]
fn text_compressed_len<'py>(
    py: Python<'py>,
    texts: Vec<PyBackedBytes>,
    compressor: &str,
    level: Option<i32>,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray1<i64>>> {
    let comp = spec(py, compressor, level)?;
    let t = slices(&texts);
    let lens = run(py, progress, |p| text::compressed_lens(&t, comp, p))?;
    Ok(vec1(py, lens.into_iter().map(|n| n as i64).collect()))
}

#[pyfunction]
#[pyo3(signature = (queries, refs, compressor, level=None, distance_name="ncd", progress=None))]
#[allow(clippy::too_many_arguments)]
fn text_ncd_matrix<'py>(
    py: Python<'py>,
    queries: Vec<PyBackedBytes>,
    refs: Vec<PyBackedBytes>,
    compressor: &str,
    level: Option<i32>,
    distance_name: &str,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyArray2<f64>>> {
    let comp = spec(py, compressor, level)?;
    let dist = distance(py, distance_name)?;
    let (q, r) = (slices(&queries), slices(&refs));
    let out = run(py, progress, |p| {
        text::distance_matrix(&q, &r, comp, dist, p)
    })?;
    vec2(py, out, q.len(), r.len())
}

type NeighborArrays<'py> = (Bound<'py, PyArray2<i64>>, Bound<'py, PyArray2<f64>>);

#[pyfunction]
#[pyo3(signature = (queries, refs, ref_lens, n_neighbors, compressor, level=None, distance_name="ncd", progress=None))]
#[allow(clippy::too_many_arguments)]
fn text_kneighbors<'py>(
    py: Python<'py>,
    queries: Vec<PyBackedBytes>,
    refs: Vec<PyBackedBytes>,
    ref_lens: PyReadonlyArray1<'py, i64>,
    n_neighbors: usize,
    compressor: &str,
    level: Option<i32>,
    distance_name: &str,
    progress: Option<&Bound<'py, PyAny>>,
) -> PyResult<NeighborArrays<'py>> {
    let comp = spec(py, compressor, level)?;
    let dist = distance(py, distance_name)?;
    let lens: Vec<u64> = ref_lens
        .as_slice()
        .map_err(|_| invalid_input(py, "ref_lens must be a contiguous int64 array"))?
        .iter()
        .map(|&n| u64::try_from(n).map_err(|_| invalid_input(py, "ref_lens must be >= 0")))
        .collect::<PyResult<_>>()?;
    let (q, r) = (slices(&queries), slices(&refs));
    let nb = run(py, progress, |p| {
        text::kneighbors(&q, &r, &lens, n_neighbors, comp, dist, p)
    })?;
    let nq = q.len();
    Ok((
        vec2(py, nb.indices, nq, nb.k)?,
        vec2(py, nb.distances, nq, nb.k)?,
    ))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(text_compressed_len, m)?)?;
    m.add_function(wrap_pyfunction!(text_ncd_matrix, m)?)?;
    m.add_function(wrap_pyfunction!(text_kneighbors, m)?)?;
    Ok(())
}
