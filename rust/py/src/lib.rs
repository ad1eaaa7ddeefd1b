//! `thrifty._core`: thin PyO3 bindings over `thrifty-core`.
//!
//! Each binding converts arrays and options, runs the core function through
//! [`runtime::run`] (GIL released, thrifty's thread pool, panics caught, progress and
//! Ctrl-C handled) and converts the result back without copying. No algorithm lives here.

use pyo3::prelude::*;

mod arrays;
mod cluster;
mod data;
mod errors;
mod info;
mod linalg;
mod neighbors;
mod prune;
mod quant;
mod runtime;
mod text;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    runtime::register(m)?;
    info::register(m)?;
    linalg::register(m)?;
    text::register(m)?;
    neighbors::register(m)?;
    quant::register(m)?;
    data::register(m)?;
    cluster::register(m)?;
    prune::register(m)?;
    Ok(())
}
