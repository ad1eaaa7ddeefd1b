//! Build and machine information for `thrifty.show_config()`.

use pyo3::prelude::*;
use pyo3::types::PyDict;
use thrifty_core::{cpu, parallel};

#[pyfunction]
fn build_info(py: Python<'_>) -> PyResult<Bound<'_, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("version", env!("CARGO_PKG_VERSION"))?;
    d.set_item("core_version", thrifty_core::VERSION)?;
    d.set_item("rustc", env!("THRIFTY_RUSTC_VERSION"))?;
    d.set_item("profile", env!("THRIFTY_PROFILE"))?;
    d.set_item("target", env!("THRIFTY_TARGET"))?;
    d.set_item("arch", cpu::arch())?;
    d.set_item("simd", cpu::simd_features())?;
    d.set_item("isa", cpu::level().name())?;
    d.set_item("isa_detected", cpu::detected().name())?;
    let (setting, ignored) = match cpu::isa_setting() {
        Some((v, ignored)) => (Some(v), ignored),
        None => (None, false),
    };
    d.set_item("isa_setting", setting)?;
    d.set_item("isa_setting_ignored", ignored)?;
    d.set_item("available_threads", parallel::available_threads())?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(build_info, m)?)?;
    Ok(())
}
