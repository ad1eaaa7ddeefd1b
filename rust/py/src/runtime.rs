//! The one helper every binding goes through: [`run`].
//!
//! `run` releases the GIL, executes the core closure on thrifty's pool of
//! `get_num_threads()` threads, and meanwhile keeps the interpreter's main thread
//! responsive: every `POLL` it re-acquires the GIL briefly to deliver signals
//! (Ctrl-C cancels the work and raises `KeyboardInterrupt`) and to call the Python
//! progress callback with `(done, total)`. A panic in the core is caught and raised as
//! `thrifty.InternalError`; it never unwinds into the interpreter.
//!
//! The pool comes from `thrifty_core::parallel`'s per-process cache, so a forked child
//! gets fresh threads; when the operating system refuses to start them the call raises
//! `thrifty.ThriftyIOError` (an `OSError`) instead of panicking.
//!
//! The thread count comes from the calling thread's override (set by the
//! `thrifty.threads(n)` context manager, so concurrent Python threads never race on a
//! shared setting), else from the global `set_num_threads`.

use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use pyo3::prelude::*;
use thrifty_core::parallel;
use thrifty_core::{Classify, Progress};

use crate::errors::{core_err, invalid_input, panic_err};

/// How often a waiting thread wakes to check signals and report progress.
pub const POLL: Duration = Duration::from_millis(50);

/// Thread count for the next call; 0 means all cores.
static NUM_THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This OS thread's override of [`NUM_THREADS`] (0 = none); one per Python thread.
    static LOCAL_THREADS: Cell<usize> = const { Cell::new(0) };
}

/// The thread count calls made from this thread will use now.
pub fn num_threads() -> usize {
    let local = LOCAL_THREADS.with(Cell::get);
    if local != 0 {
        return local;
    }
    match NUM_THREADS.load(Ordering::Relaxed) {
        0 => parallel::available_threads(),
        n => n,
    }
}

/// Set the calling thread's thread-count override (0 removes it) and return the
/// previous one (0 = none). Other threads and the global setting are not affected.
#[pyfunction]
fn _set_local_threads(py: Python<'_>, n: usize) -> PyResult<usize> {
    if n > 4096 {
        return Err(invalid_input(
            py,
            format!("n_threads must be between 1 and 4096, got {n}"),
        ));
    }
    Ok(LOCAL_THREADS.with(|c| c.replace(n)))
}

/// Set the number of threads used by subsequent calls (0 = all cores).
#[pyfunction]
fn set_num_threads(py: Python<'_>, n: usize) -> PyResult<()> {
    if n > 4096 {
        return Err(invalid_input(
            py,
            format!("n_threads must be between 1 and 4096, got {n}"),
        ));
    }
    NUM_THREADS.store(n, Ordering::Relaxed);
    Ok(())
}

/// Number of threads subsequent calls will use.
#[pyfunction]
fn get_num_threads() -> usize {
    num_threads()
}

type Caught<T, E> = std::thread::Result<Result<T, E>>;

/// Wait, without the GIL, for `next` to produce a value, keeping the interpreter
/// responsive: `next(POLL)` blocks for at most `POLL`, and between calls `tick` runs
/// with the GIL (deliver signals, report progress). The one waiting loop of the
/// bindings: [`run`] and the data loader's blocking `__next__` both use it.
///
/// Returns the value, or the first error of `tick` (e.g. `KeyboardInterrupt`) together
/// with `next`, so that a caller whose work must finish anyway can keep draining it.
/// Must be called with the GIL released.
pub fn wait<R, N>(
    mut next: N,
    mut tick: impl FnMut(Python<'_>) -> PyResult<()>,
) -> Result<R, (PyErr, N)>
where
    N: FnMut(Duration) -> Option<R>,
{
    loop {
        if let Some(r) = next(POLL) {
            return Ok(r);
        }
        if let Err(e) = Python::attach(&mut tick) {
            return Err((e, next));
        }
    }
}

/// Run `work` without the GIL on a pool of [`num_threads`] threads; see the module
/// docs.
///
/// `callback`, if given, is a Python callable taking `(done, total)`; it runs on the
/// calling thread, with the GIL held. If it raises, the work is cancelled and its
/// exception propagates.
pub fn run<T, E, F>(py: Python<'_>, callback: Option<&Bound<'_, PyAny>>, work: F) -> PyResult<T>
where
    T: Send,
    E: Classify,
    F: FnOnce(&Progress) -> Result<T, E> + Send,
{
    let threads = num_threads();
    let progress = Progress::new();
    let pool = parallel::try_pool(threads).map_err(|e| core_err(py, &e))?;
    let callback: Option<Py<PyAny>> = callback.map(|c| c.clone().unbind());

    let (result, py_error): (Caught<T, E>, Option<PyErr>) = py.detach(|| {
        let (tx, rx) = mpsc::channel::<Caught<T, E>>();
        let progress = &progress;
        let mut out: Option<(Caught<T, E>, Option<PyErr>)> = None;
        pool.in_place_scope(|scope| {
            scope.spawn(move |_| {
                let r = catch_unwind(AssertUnwindSafe(|| work(progress)));
                let _ = tx.send(r);
            });
            // A worker that ends without sending has panicked past `catch_unwind`
            // (impossible) or was dropped unrun; report it instead of waiting forever.
            let next = |t: Duration| match rx.recv_timeout(t) {
                Ok(r) => Some(r),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    Some(Err(Box::new("thrifty worker ended without a result")
                        as Box<dyn std::any::Any + Send>))
                }
            };
            let tick = |py: Python<'_>| -> PyResult<()> {
                py.check_signals()?;
                if let Some(cb) = &callback {
                    let (done, total) = progress.snapshot();
                    cb.call1(py, (done, total))?;
                }
                Ok(())
            };
            out = Some(match wait(next, tick) {
                Ok(r) => (r, None),
                Err((e, next)) => {
                    // Ctrl-C or a failing callback: stop the workers at their next
                    // check, and wait for them (they borrow this call's inputs).
                    progress.cancel();
                    let r = loop {
                        if let Some(r) = next(POLL) {
                            break r;
                        }
                    };
                    (r, Some(e))
                }
            });
        });
        out.expect("the scope ran to completion")
    });

    if let Some(e) = py_error {
        return Err(e);
    }
    match result {
        Err(payload) => Err(panic_err(py, payload)),
        Ok(Err(e)) => Err(core_err(py, &e)),
        Ok(Ok(v)) => {
            if let Some(cb) = &callback {
                let (done, total) = progress.snapshot();
                if total > 0 {
                    cb.call1(py, (done, total))?;
                }
            }
            Ok(v)
        }
    }
}

/// Thread counts of the cached pools, least recently used first (diagnostics for tests).
#[pyfunction]
fn _cached_pools() -> Vec<usize> {
    parallel::cached_pools()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(_cached_pools, m)?)?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(_set_local_threads, m)?)?;
    Ok(())
}
