//! A bounded background producer.
//!
//! [`Prefetcher::spawn`] starts one thread that calls `make(i)` for `i` in a range and
//! sends the results through a channel holding at most `depth` finished items. The
//! consumer receives them in order. Dropping the [`Prefetcher`] disconnects the channel
//! and raises a stop flag; the thread notices at its next send (or before its next
//! item) and the drop joins it, so an abandoned stream never leaves a thread behind.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

static ACTIVE: AtomicUsize = AtomicUsize::new(0);

/// Number of producer threads currently alive (for tests and diagnostics).
pub fn active_producers() -> usize {
    ACTIVE.load(Ordering::SeqCst)
}

struct ActiveGuard;

impl ActiveGuard {
    fn new() -> Self {
        ACTIVE.fetch_add(1, Ordering::SeqCst);
        ActiveGuard
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a receive attempt found.
#[derive(Debug)]
pub enum Next<T, E> {
    /// The next item (or the error that ended the stream).
    Item(Result<T, E>),
    /// Nothing arrived within the timeout; try again.
    Pending,
    /// Every item has been received.
    Done,
}

/// The consumer side of a background producer thread.
pub struct Prefetcher<T, E> {
    rx: Option<Receiver<Result<T, E>>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl<T: Send + 'static, E: Send + 'static> Prefetcher<T, E> {
    /// Produce `make(i)` for `i in range` on a background thread, at most `depth`
    /// items ahead of the consumer (`depth` 0 is treated as 1). An error ends the
    /// stream after it is delivered. Fails (instead of panicking) when the operating
    /// system refuses the thread, e.g. at a process limit.
    pub fn spawn<F>(
        range: std::ops::Range<usize>,
        depth: usize,
        mut make: F,
    ) -> Result<Self, std::io::Error>
    where
        F: FnMut(usize) -> Result<T, E> + Send + 'static,
    {
        let (tx, rx) = sync_channel::<Result<T, E>>(depth.max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stop_t = Arc::clone(&stop);
        let guard = ActiveGuard::new();
        let handle = std::thread::Builder::new()
            .name("thrifty-loader".into())
            .spawn(move || {
                let _guard = guard;
                for i in range {
                    if stop_t.load(Ordering::Relaxed) {
                        break;
                    }
                    let r = make(i);
                    let failed = r.is_err();
                    if tx.send(r).is_err() || failed {
                        break;
                    }
                }
            })?;
        Ok(Prefetcher {
            rx: Some(rx),
            stop,
            handle: Some(handle),
        })
    }

    /// Wait up to `timeout` for the next item.
    pub fn next_timeout(&self, timeout: Duration) -> Next<T, E> {
        let Some(rx) = &self.rx else {
            return Next::Done;
        };
        match rx.recv_timeout(timeout) {
            Ok(r) => Next::Item(r),
            Err(RecvTimeoutError::Timeout) => Next::Pending,
            Err(RecvTimeoutError::Disconnected) => Next::Done,
        }
    }
}

impl<T, E> Drop for Prefetcher<T, E> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.rx.take()); // unblocks a producer waiting in `send`
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn drain<T: Send + 'static, E: Send + 'static>(p: &Prefetcher<T, E>) -> Vec<Result<T, E>> {
        let mut out = Vec::new();
        loop {
            match p.next_timeout(Duration::from_secs(5)) {
                Next::Item(r) => out.push(r),
                Next::Pending => panic!("producer stalled"),
                Next::Done => return out,
            }
        }
    }

    #[test]
    fn yields_in_order() {
        let p = Prefetcher::<usize, ()>::spawn(3..10, 2, |i| Ok(i * i)).unwrap();
        let got: Vec<usize> = drain(&p).into_iter().map(|r| r.unwrap()).collect();
        assert_eq!(got, (3..10).map(|i| i * i).collect::<Vec<_>>());
    }

    #[test]
    fn error_ends_stream() {
        let p = Prefetcher::<usize, String>::spawn(0..10, 1, |i| {
            if i == 2 {
                Err("boom".into())
            } else {
                Ok(i)
            }
        })
        .unwrap();
        let got = drain(&p);
        assert_eq!(got.len(), 3);
        assert!(got[2].is_err());
    }

    #[test]
    fn drop_stops_promptly() {
        let before = active_producers();
        let t = Instant::now();
        {
            let p = Prefetcher::<Vec<u8>, ()>::spawn(0..usize::MAX, 2, |_| {
                std::thread::sleep(Duration::from_millis(1));
                Ok(vec![0u8; 16])
            })
            .unwrap();
            assert!(matches!(
                p.next_timeout(Duration::from_secs(5)),
                Next::Item(Ok(_))
            ));
            assert!(active_producers() > before);
        }
        assert!(t.elapsed() < Duration::from_secs(2));
        // The counter is global (other tests run in parallel), so only check that the
        // drop joined our thread: the elapsed time above, and no hang.
    }
}
