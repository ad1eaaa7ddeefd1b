//! Bindings for `thrifty_core::quant`.

use numpy::{PyArray1, PyReadonlyArray1, PyReadwriteArray1};
use pyo3::prelude::*;
use pyo3::types::PyAny;
use thrifty_core::quant::{
    self, float::FloatKind, Format, PackedRef, QuantOptions, Rounding, ScaleMode, Scales,
};

use crate::arrays::vec1;
use crate::errors::{core_err, invalid_input};
use crate::runtime::run;

fn slice<'a, T: numpy::Element>(
    py: Python<'_>,
    a: &'a PyReadonlyArray1<'_, T>,
    name: &str,
) -> PyResult<&'a [T]> {
    a.as_slice()
        .map_err(|_| invalid_input(py, format!("{name} must be a contiguous 1-D array")))
}

fn kind(py: Python<'_>, fmt: &str) -> PyResult<FloatKind> {
    match fmt {
        "e4m3" => Ok(FloatKind::E4M3),
        "e5m2" => Ok(FloatKind::E5M2),
        "e2m1" => Ok(FloatKind::E2M1),
        _ => Err(invalid_input(py, format!("unknown element format {fmt:?}"))),
    }
}

fn core_format(py: Python<'_>, fmt: &str) -> PyResult<Format> {
    Format::parse(fmt).map_err(|e| core_err(py, &e))
}

#[pyfunction]
fn quant_fp_encode<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f32>,
    fmt: &str,
    saturate: bool,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let k = kind(py, fmt)?;
    let xs = slice(py, &x, "x")?;
    let out = run(py, None, |p| quant::mx::encode_slice(xs, k, saturate, p))?;
    Ok(vec1(py, out))
}

/// `quant_fp_encode` for float64 input, rounded directly from float64.
#[pyfunction]
fn quant_fp_encode_f64<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f64>,
    fmt: &str,
    saturate: bool,
) -> PyResult<Bound<'py, PyArray1<u8>>> {
    let k = kind(py, fmt)?;
    let xs = slice(py, &x, "x")?;
    let out = run(py, None, |p| {
        quant::mx::encode_slice_f64(xs, k, saturate, p)
    })?;
    Ok(vec1(py, out))
}

#[pyfunction]
fn quant_fp_decode<'py>(
    py: Python<'py>,
    codes: PyReadonlyArray1<'py, u8>,
    fmt: &str,
) -> PyResult<Bound<'py, PyArray1<f32>>> {
    let k = kind(py, fmt)?;
    let cs = slice(py, &codes, "codes")?;
    let out = run(py, None, |p| quant::mx::decode_slice(cs, k, p))?;
    Ok(vec1(py, out))
}

type QuantOut<'py> = (
    Bound<'py, PyArray1<u8>>,
    Option<Bound<'py, PyAny>>,
    Option<Bound<'py, PyArray1<f32>>>,
    Option<f32>,
    usize,
);

/// `scale`: "default", "absmean", "absmedian", "absmax" or "fixed" (then `scale_value`).
#[pyfunction]
#[pyo3(signature = (x, fmt, rows, cols, group_size, scale, scale_value, symmetric, seed, saturate))]
#[allow(clippy::too_many_arguments)]
fn quant_quantize<'py>(
    py: Python<'py>,
    x: PyReadonlyArray1<'py, f32>,
    fmt: &str,
    rows: usize,
    cols: usize,
    group_size: Option<usize>,
    scale: &str,
    scale_value: f32,
    symmetric: bool,
    seed: Option<u64>,
    saturate: bool,
) -> PyResult<QuantOut<'py>> {
    let mut o = QuantOptions::new(core_format(py, fmt)?);
    o.group_size = group_size;
    o.scale = match scale {
        "default" => ScaleMode::Default,
        "absmean" => ScaleMode::AbsMean,
        "absmedian" => ScaleMode::AbsMedian,
        "absmax" => ScaleMode::AbsMax,
        "fixed" => ScaleMode::Fixed(scale_value),
        s => return Err(invalid_input(py, format!("unknown scale mode {s:?}"))),
    };
    o.symmetric = symmetric;
    o.rounding = seed.map_or(Rounding::Nearest, Rounding::Stochastic);
    o.saturate = saturate;
    let xs = slice(py, &x, "x")?;
    let q = run(py, None, |p| quant::quantize(xs, rows, cols, &o, p))?;
    let scales = match q.scales {
        Scales::None => None,
        Scales::F32(v) => Some(vec1(py, v).into_any()),
        Scales::U8(v) => Some(vec1(py, v).into_any()),
    };
    Ok((
        vec1(py, q.data),
        scales,
        q.zero_points.map(|z| vec1(py, z)),
        q.tensor_scale,
        q.group_size,
    ))
}

#[pyfunction]
#[pyo3(signature = (fmt, rows, cols, group_size, data, scales_f32, scales_u8, zero_points, tensor_scale, out=None))]
#[allow(clippy::too_many_arguments)]
fn quant_dequantize<'py>(
    py: Python<'py>,
    fmt: &str,
    rows: usize,
    cols: usize,
    group_size: usize,
    data: PyReadonlyArray1<'py, u8>,
    scales_f32: Option<PyReadonlyArray1<'py, f32>>,
    scales_u8: Option<PyReadonlyArray1<'py, u8>>,
    zero_points: Option<PyReadonlyArray1<'py, f32>>,
    tensor_scale: Option<f32>,
    out: Option<PyReadwriteArray1<'py, f32>>,
) -> PyResult<Option<Bound<'py, PyArray1<f32>>>> {
    let format = core_format(py, fmt)?;
    let d = slice(py, &data, "data")?;
    let sf = match &scales_f32 {
        Some(a) => slice(py, a, "scales")?,
        None => &[],
    };
    let su = match &scales_u8 {
        Some(a) => slice(py, a, "scales")?,
        None => &[],
    };
    let zp = match &zero_points {
        Some(a) => Some(slice(py, a, "zero_points")?),
        None => None,
    };
    let r = PackedRef {
        format,
        rows,
        cols,
        data: d,
        scales_f32: sf,
        scales_u8: su,
        zero_points: zp,
        tensor_scale,
        group_size,
    };
    match out {
        Some(mut o) => {
            let o = o
                .as_slice_mut()
                .map_err(|_| invalid_input(py, "out must be a contiguous 1-D array"))?;
            run(py, None, |p| quant::dequantize_into(&r, o, p))?;
            Ok(None)
        }
        None => {
            let y = run(py, None, |p| quant::dequantize(&r, p))?;
            Ok(Some(vec1(py, y)))
        }
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(quant_fp_encode, m)?)?;
    m.add_function(wrap_pyfunction!(quant_fp_encode_f64, m)?)?;
    m.add_function(wrap_pyfunction!(quant_fp_decode, m)?)?;
    m.add_function(wrap_pyfunction!(quant_quantize, m)?)?;
    m.add_function(wrap_pyfunction!(quant_dequantize, m)?)?;
    Ok(())
}
