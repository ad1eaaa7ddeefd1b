//! Progress reporting and cooperative cancellation for long-running work.
//!
//! A [`Progress`] is shared by reference between the caller and the worker threads.
//! Workers call [`Progress::set_total`] once and [`Progress::inc`] as units of work
//! finish, and call [`Progress::check`] at chunk boundaries so that a caller can stop
//! them with [`Progress::cancel`]. The caller either polls [`Progress::snapshot`]
//! (the Python binding does this from the interpreter's main thread, so that its
//! callback runs there and Ctrl-C is noticed) or installs a callback with
//! [`Progress::with_callback`], which workers invoke after each `inc`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::error::Cancelled;

type Callback = Box<dyn Fn(u64, u64) + Send + Sync>;

/// Shared progress counter with an optional callback and a cancellation flag.
#[derive(Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    cancelled: AtomicBool,
    callback: Option<Callback>,
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (done, total) = self.snapshot();
        f.debug_struct("Progress")
            .field("done", &done)
            .field("total", &total)
            .field("cancelled", &self.is_cancelled())
            .field("callback", &self.callback.is_some())
            .finish()
    }
}

impl Progress {
    /// A progress tracker without a callback.
    pub fn new() -> Self {
        Self::default()
    }

    /// A progress tracker that calls `callback(done, total)` after every [`inc`](Self::inc).
    ///
    /// The callback may run on any worker thread, concurrently with itself.
    pub fn with_callback(callback: impl Fn(u64, u64) + Send + Sync + 'static) -> Self {
        Self {
            callback: Some(Box::new(callback)),
            ..Self::default()
        }
    }

    /// Declare how many units of work there are.
    pub fn set_total(&self, total: u64) {
        self.total.store(total, Ordering::Relaxed);
        self.done.store(0, Ordering::Relaxed);
        if let Some(cb) = &self.callback {
            cb(0, total);
        }
    }

    /// Record that `n` more units of work are done.
    pub fn inc(&self, n: u64) {
        let done = self.done.fetch_add(n, Ordering::Relaxed) + n;
        if let Some(cb) = &self.callback {
            cb(done, self.total.load(Ordering::Relaxed));
        }
    }

    /// `(done, total)` as of now.
    pub fn snapshot(&self) -> (u64, u64) {
        (
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }

    /// Ask the workers to stop at their next [`check`](Self::check).
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// `Err(Cancelled)` once [`cancel`](Self::cancel) was called.
    pub fn check(&self) -> Result<(), Cancelled> {
        if self.is_cancelled() {
            Err(Cancelled)
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::Mutex;

    #[test]
    fn callback_sees_every_increment() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let p = Progress::with_callback(move |d, t| s.lock().unwrap().push((d, t)));
        p.set_total(3);
        p.inc(1);
        p.inc(2);
        assert_eq!(*seen.lock().unwrap(), vec![(0, 3), (1, 3), (3, 3)]);
        assert_eq!(p.snapshot(), (3, 3));
    }

    #[test]
    fn cancel_is_observed() {
        let p = Progress::new();
        assert!(p.check().is_ok());
        p.cancel();
        assert_eq!(p.check(), Err(Cancelled));
    }
}
