//! Explicit rayon thread pools.
//!
//! rayon's global pool can be configured only once per process, but users may change
//! the thread count between calls (`thrifty.set_num_threads`). So thrifty never uses the
//! global pool: callers run work through [`install`], which executes it on a pool of
//! exactly `n` threads. Pools are built lazily and cached per thread count.
//!
//! Thread count must never change results. Reductions therefore use
//! [`fixed_chunks`]: chunk boundaries depend only on the input length, and partial
//! results are combined in chunk order.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use rayon::{ThreadPool, ThreadPoolBuilder};

/// Number of hardware threads available to this process (at least 1).
pub fn available_threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn pools() -> &'static Mutex<HashMap<usize, Arc<ThreadPool>>> {
    static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();
    POOLS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// The cached pool with `n_threads` threads (0 means [`available_threads`]).
pub fn pool(n_threads: usize) -> Arc<ThreadPool> {
    let n = if n_threads == 0 {
        available_threads()
    } else {
        n_threads
    };
    let mut map = pools().lock().unwrap_or_else(|e| e.into_inner());
    map.entry(n)
        .or_insert_with(|| {
            Arc::new(
                ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("thrifty-{i}"))
                    .build()
                    .expect("failed to spawn thrifty worker threads"),
            )
        })
        .clone()
}

/// Run `f` on a pool of `n_threads` threads (0 means all cores); rayon calls inside
/// `f` use that pool.
pub fn install<R: Send>(n_threads: usize, f: impl FnOnce() -> R + Send) -> R {
    pool(n_threads).install(f)
}

/// Number of threads of the pool the caller is running on.
pub fn current_num_threads() -> usize {
    rayon::current_num_threads()
}

/// Split `0..len` into consecutive ranges of `chunk` items (the last may be shorter).
///
/// The split depends only on `len` and `chunk`, never on the thread count, so a
/// reduction that combines per-chunk results in order is deterministic.
pub fn fixed_chunks(len: usize, chunk: usize) -> Vec<std::ops::Range<usize>> {
    assert!(chunk > 0, "chunk size must be positive");
    (0..len.div_ceil(chunk))
        .map(|i| i * chunk..((i + 1) * chunk).min(len))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    #[test]
    fn install_uses_requested_thread_count() {
        for n in [1, 2, 3, 5] {
            assert_eq!(install(n, current_num_threads), n);
            let ids: std::collections::HashSet<_> = install(n, || {
                (0..64)
                    .into_par_iter()
                    .map(|_| {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                        rayon::current_thread_index().unwrap()
                    })
                    .collect()
            });
            assert!(ids.iter().all(|&i| i < n));
        }
        assert_eq!(install(0, current_num_threads), available_threads());
    }

    #[test]
    fn pools_are_cached() {
        assert!(Arc::ptr_eq(&pool(2), &pool(2)));
    }

    #[test]
    fn fixed_chunks_cover_exactly() {
        assert!(fixed_chunks(0, 4).is_empty());
        assert_eq!(fixed_chunks(10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(fixed_chunks(8, 4), vec![0..4, 4..8]);
    }
}
