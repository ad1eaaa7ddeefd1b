//! Bindings for `thrifty_core::data`: the streaming batch loader (a pyclass that
//! owns a background producer thread), the temperature sampler and the loss filter.
//!
//! Python hands the loader its data as a flat `uint8` view of a C-contiguous array (a
//! numpy array, or a memory map of a file whose size the core checks before every
//! batch), or a file path the core reads with positional reads. The core plans and
//! gathers the batches; this binding only keeps the arrays alive: the producer thread
//! reads their bytes without the GIL and is joined before the array references are
//! released (field order), so it never outlives the memory.

use std::sync::Mutex;
use std::time::Duration;

use numpy::{IntoPyArray, PyArray1, PyArrayMethods, PyReadonlyArray1, PyUntypedArrayMethods};
use pyo3::prelude::*;
use thrifty_core::data::batches::{Batch, Batches, Layout, Rows};
use thrifty_core::data::filter::{self, LossFilter as CoreLossFilter};
use thrifty_core::data::gather::{rows_extent, Buf, FileRows, SizeGuard};
use thrifty_core::data::perm;
use thrifty_core::data::plan::{validate_keep, BatchPlan, PlanOptions};
use thrifty_core::data::sampler::{Cooldown, TemperatureSampler};
use thrifty_core::data::stream::{active_producers, Next, Prefetcher};
use thrifty_core::data::DataError;

use crate::arrays::vec1;
use crate::errors::{core_err, invalid_input};
use crate::runtime::{num_threads, run, wait};

/// A borrowed byte range of a numpy array kept alive by its owner.
#[derive(Clone, Copy)]
struct Bytes {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the memory belongs to a numpy array that the owning `BatchStream` keeps
// alive until the producer thread has been joined; it is only read.
unsafe impl Send for Bytes {}
unsafe impl Sync for Bytes {}

impl Bytes {
    fn of(py: Python<'_>, a: &Bound<'_, PyArray1<u8>>, name: &str) -> PyResult<Self> {
        if !a.is_c_contiguous() {
            return Err(invalid_input(py, format!("{name} must be contiguous")));
        }
        let len = a.len();
        let ptr = if len == 0 {
            std::ptr::NonNull::<u8>::dangling().as_ptr() as *const u8
        } else {
            a.data() as *const u8
        };
        Ok(Bytes { ptr, len })
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        // SAFETY: a `Bytes` only exists inside a `BatchStream` (or the call building
        // one), which keeps the owning array alive for as long as the bytes are read.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// What `__next__` hands to Python: `(x, y or None)`.
type PyBatch<'py> = (Bound<'py, PyAny>, Option<Bound<'py, PyAny>>);

fn buf_to_py<'py>(py: Python<'py>, b: Buf, rows: usize) -> PyResult<Bound<'py, PyAny>> {
    let width = b.len().checked_div(rows).unwrap_or(0);
    let shape = [rows, width];
    Ok(match b {
        Buf::U8(v) => v.into_pyarray(py).reshape(shape)?.into_any(),
        Buf::U16(v) => v.into_pyarray(py).reshape(shape)?.into_any(),
        Buf::U32(v) => v.into_pyarray(py).reshape(shape)?.into_any(),
        Buf::U64(v) => v.into_pyarray(py).reshape(shape)?.into_any(),
    })
}

fn pe(py: Python<'_>, e: DataError) -> PyErr {
    core_err(py, &e)
}

/// The batches of one epoch for one rank, produced by a background thread.
///
/// Yields `(x, y)` with `x` a `(rows, width)` unsigned-integer array holding the raw
/// elements (Python views it as the source dtype) and `y` the labels or `None`.
#[pyclass(module = "thrifty._core")]
struct BatchStream {
    // Declared first so that it is dropped (and its thread joined) before the arrays.
    stream: Mutex<Option<Prefetcher<Batch, DataError>>>,
    remaining: Mutex<usize>,
    _data: Option<Py<PyAny>>,
    _labels: Option<Py<PyAny>>,
}

#[pymethods]
impl BatchStream {
    #[new]
    #[pyo3(signature = (
        data, elem_size, stride, width, n_rows, *, path=None, offset=0, labels=None, label_elem_size=1,
        label_width=1, keep=None, batch_size, shuffle, seed, epoch, rank, world_size,
        drop_last, start_batch, prefetch
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        data: Option<Bound<'_, PyArray1<u8>>>,
        elem_size: usize,
        stride: usize,
        width: usize,
        n_rows: u64,
        path: Option<std::path::PathBuf>,
        offset: u64,
        labels: Option<Bound<'_, PyArray1<u8>>>,
        label_elem_size: usize,
        label_width: usize,
        keep: Option<PyReadonlyArray1<'_, u64>>,
        batch_size: usize,
        shuffle: bool,
        seed: u64,
        epoch: u64,
        rank: u64,
        world_size: u64,
        drop_last: bool,
        start_batch: usize,
        prefetch: usize,
    ) -> PyResult<Self> {
        // Rows come from the array `data` (a memory map of the file `path` when both
        // are given), or from the file `path` read with positional reads.
        let x_layout = Layout {
            elem_size,
            stride,
            width,
            n_rows,
        };
        let x = match (&data, path) {
            (Some(d), None) => Rows::Mem(Bytes::of(py, d, "data")?, x_layout),
            (Some(d), Some(p)) => {
                let need = offset.saturating_add(rows_extent(elem_size, stride, width, n_rows));
                let guard = SizeGuard::open(&p, need).map_err(|e| pe(py, e))?;
                Rows::Mapped(Bytes::of(py, d, "data")?, x_layout, guard)
            }
            (None, Some(p)) => Rows::File(
                FileRows::open(&p, offset, elem_size, stride, width, n_rows)
                    .map_err(|e| pe(py, e))?,
            ),
            (None, None) => return Err(invalid_input(py, "either data or path is required")),
        };
        let y = match &labels {
            Some(l) => Some((
                Bytes::of(py, l, "labels")?,
                Layout {
                    elem_size: label_elem_size,
                    stride: label_width,
                    width: label_width,
                    n_rows,
                },
            )),
            None => None,
        };
        let opts = plan_opts(
            batch_size, rank, world_size, drop_last, shuffle, seed, epoch,
        );
        let batches =
            Batches::new(x, y, keep_vec(keep)?, opts, num_threads()).map_err(|e| pe(py, e))?;
        let n_batches = batches.num_batches();
        let start = start_batch.min(n_batches);
        let stream = batches.stream(start, prefetch).map_err(|e| pe(py, e))?;
        Ok(BatchStream {
            stream: Mutex::new(Some(stream)),
            remaining: Mutex::new(n_batches - start),
            _data: data.map(|d| d.into_any().unbind()),
            _labels: labels.map(|l| l.into_any().unbind()),
        })
    }

    fn __iter__(slf: PyRef<'_, Self>) -> PyRef<'_, Self> {
        slf
    }

    fn __next__<'py>(&self, py: Python<'py>) -> PyResult<Option<PyBatch<'py>>> {
        let got = py.detach(|| {
            let next = |t: Duration| {
                let guard = self.stream.lock().expect("loader lock poisoned");
                match guard.as_ref().map(|s| s.next_timeout(t)) {
                    None | Some(Next::Done) => Some(None),
                    Some(Next::Item(r)) => Some(Some(r)),
                    Some(Next::Pending) => None,
                }
            };
            wait(next, |py| py.check_signals()).map_err(|(e, _)| e)
        });
        match got? {
            None => {
                self.close();
                Ok(None)
            }
            Some(Err(e)) => {
                self.close();
                Err(pe(py, e))
            }
            Some(Ok((x, rows, y))) => {
                *self.remaining.lock().expect("loader lock poisoned") -= 1;
                let x = buf_to_py(py, x, rows)?;
                let y = y.map(|y| buf_to_py(py, y, rows)).transpose()?;
                Ok(Some((x, y)))
            }
        }
    }

    /// Batches not yet received.
    fn __len__(&self) -> usize {
        *self.remaining.lock().expect("loader lock poisoned")
    }

    /// Stop the producer thread now (also done when the object is dropped).
    fn close(&self) {
        let s = self.stream.lock().expect("loader lock poisoned").take();
        drop(s);
    }
}

fn keep_vec(keep: Option<PyReadonlyArray1<'_, u64>>) -> PyResult<Option<Vec<u64>>> {
    Ok(match keep {
        Some(k) => Some(k.as_slice()?.to_vec()),
        None => None,
    })
}

fn plan_opts(
    batch_size: usize,
    rank: u64,
    world_size: u64,
    drop_last: bool,
    shuffle: bool,
    seed: u64,
    epoch: u64,
) -> PlanOptions {
    PlanOptions {
        batch_size,
        shuffle,
        seed,
        epoch,
        rank,
        world_size,
        drop_last,
    }
}

/// Batches per epoch of `n_items` items for one rank (validates the options).
#[pyfunction]
fn data_num_batches(
    py: Python<'_>,
    n_items: u64,
    batch_size: usize,
    rank: u64,
    world_size: u64,
    drop_last: bool,
) -> PyResult<usize> {
    let opts = plan_opts(batch_size, rank, world_size, drop_last, false, 0, 0);
    let plan = BatchPlan::new(n_items, None, opts).map_err(|e| pe(py, e))?;
    Ok(plan.num_batches())
}

/// Check a keep-list against `n_rows` (range and duplicates).
#[pyfunction]
fn data_check_keep(py: Python<'_>, keep: PyReadonlyArray1<'_, u64>, n_rows: u64) -> PyResult<()> {
    let k = keep.as_slice()?;
    run(py, None, |_| validate_keep(k, n_rows))
}

/// The rows of one rank's epoch, in yield order (batches concatenated).
#[pyfunction]
#[pyo3(signature = (n_rows, *, keep=None, batch_size, shuffle, seed, epoch, rank, world_size, drop_last))]
#[allow(clippy::too_many_arguments)]
fn data_epoch_rows<'py>(
    py: Python<'py>,
    n_rows: u64,
    keep: Option<PyReadonlyArray1<'py, u64>>,
    batch_size: usize,
    shuffle: bool,
    seed: u64,
    epoch: u64,
    rank: u64,
    world_size: u64,
    drop_last: bool,
) -> PyResult<Bound<'py, PyArray1<u64>>> {
    let keep = keep_vec(keep)?;
    let opts = plan_opts(
        batch_size, rank, world_size, drop_last, shuffle, seed, epoch,
    );
    let rows = run(py, None, move |_| {
        BatchPlan::new(n_rows, keep, opts)?.epoch_rows()
    })?;
    Ok(vec1(py, rows))
}

/// Positions `start .. start + count` of the keyed permutation of `0..n`.
#[pyfunction]
fn data_permutation<'py>(
    py: Python<'py>,
    n: u64,
    seed: u64,
    epoch: u64,
    start: u64,
    count: u64,
) -> PyResult<Bound<'py, PyArray1<u64>>> {
    let out = run(py, None, |_| perm::positions(n, seed, epoch, start, count))?;
    Ok(vec1(py, out))
}

/// Number of loader threads alive (diagnostics for tests).
#[pyfunction]
fn data_active_loaders() -> usize {
    active_producers()
}

fn sampler(
    py: Python<'_>,
    sizes: Vec<u64>,
    temperature: f64,
    cooldown: Option<(f64, u64, u64)>,
    seed: u64,
) -> PyResult<TemperatureSampler> {
    let c = cooldown.map(|(t_end, start, end)| Cooldown { t_end, start, end });
    TemperatureSampler::new(sizes, temperature, c, seed).map_err(|e| pe(py, e))
}

/// `(temperature, probabilities)` at `step`.
#[pyfunction]
#[pyo3(signature = (sizes, temperature, cooldown, step))]
fn data_temperature_probabilities<'py>(
    py: Python<'py>,
    sizes: Vec<u64>,
    temperature: f64,
    cooldown: Option<(f64, u64, u64)>,
    step: u64,
) -> PyResult<(f64, Bound<'py, PyArray1<f64>>)> {
    let s = sampler(py, sizes, temperature, cooldown, 0)?;
    Ok((s.temperature_at(step), vec1(py, s.probabilities(step))))
}

/// Per-domain loss weights of the up-weighting alternative at `step`.
#[pyfunction]
#[pyo3(signature = (sizes, temperature, cooldown, step))]
fn data_temperature_loss_weights<'py>(
    py: Python<'py>,
    sizes: Vec<u64>,
    temperature: f64,
    cooldown: Option<(f64, u64, u64)>,
    step: u64,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let s = sampler(py, sizes, temperature, cooldown, 0)?;
    Ok(vec1(py, s.loss_weights(step)))
}

/// Draw `n` `(domain, index)` pairs from `step`; returns them with the new counts.
#[pyfunction]
#[pyo3(signature = (sizes, temperature, cooldown, seed, step, counts, n))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn data_temperature_sample<'py>(
    py: Python<'py>,
    sizes: Vec<u64>,
    temperature: f64,
    cooldown: Option<(f64, u64, u64)>,
    seed: u64,
    step: u64,
    counts: Vec<u64>,
    n: usize,
) -> PyResult<(
    Bound<'py, PyArray1<u32>>,
    Bound<'py, PyArray1<u64>>,
    Bound<'py, PyArray1<u64>>,
)> {
    let s = sampler(py, sizes, temperature, cooldown, seed)?;
    let mut counts = counts;
    let (d, i, c) = run(py, None, move |_| {
        let (d, i) = s.sample(step, &mut counts, n)?;
        Ok::<_, DataError>((d, i, counts))
    })?;
    Ok((vec1(py, d), vec1(py, i), vec1(py, c)))
}

/// Which losses reach `threshold`.
#[pyfunction]
fn data_loss_mask<'py>(
    py: Python<'py>,
    losses: PyReadonlyArray1<'py, f64>,
    threshold: f64,
) -> PyResult<Bound<'py, PyArray1<bool>>> {
    let l = losses.as_slice()?;
    let m = run(py, None, |_| filter::mask_at_least(l, threshold))?;
    Ok(vec1(py, m))
}

/// Streaming loss filter (see `thrifty_core::data::filter`).
#[pyclass(module = "thrifty._core", name = "LossFilterCore")]
struct LossFilterCore {
    inner: Mutex<CoreLossFilter>,
}

#[pymethods]
impl LossFilterCore {
    #[new]
    fn new(py: Python<'_>, warmup_steps: u64, window: usize) -> PyResult<Self> {
        let inner = CoreLossFilter::new(warmup_steps, window).map_err(|e| pe(py, e))?;
        Ok(LossFilterCore {
            inner: Mutex::new(inner),
        })
    }

    fn update<'py>(
        &self,
        py: Python<'py>,
        losses: PyReadonlyArray1<'py, f64>,
    ) -> PyResult<Bound<'py, PyArray1<bool>>> {
        let l = losses.as_slice()?;
        let inner = &self.inner;
        let m = run(py, None, |_| {
            inner.lock().expect("filter lock poisoned").update(l)
        })?;
        Ok(vec1(py, m))
    }

    /// `(threshold or None, steps, seen, skipped)`.
    fn stats(&self) -> (Option<f64>, u64, u64, u64) {
        let f = self.inner.lock().expect("filter lock poisoned");
        (f.threshold(), f.steps(), f.seen(), f.skipped())
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<BatchStream>()?;
    m.add_class::<LossFilterCore>()?;
    m.add_function(wrap_pyfunction!(data_num_batches, m)?)?;
    m.add_function(wrap_pyfunction!(data_check_keep, m)?)?;
    m.add_function(wrap_pyfunction!(data_epoch_rows, m)?)?;
    m.add_function(wrap_pyfunction!(data_permutation, m)?)?;
    m.add_function(wrap_pyfunction!(data_active_loaders, m)?)?;
    m.add_function(wrap_pyfunction!(data_temperature_probabilities, m)?)?;
    m.add_function(wrap_pyfunction!(data_temperature_loss_weights, m)?)?;
    m.add_function(wrap_pyfunction!(data_temperature_sample, m)?)?;
    m.add_function(wrap_pyfunction!(data_loss_mask, m)?)?;
    Ok(())
}
