//! Explicit rayon thread pools.
//!
//! rayon's global pool can be configured only once per process, but users may change
//! the thread count between calls (`thrifty.set_num_threads`). So thrifty never uses the
//! global pool: callers run work through [`install`], which executes it on a pool of
//! exactly `n` threads. Pools are built lazily and cached per thread count.
//!
//! # Resources
//! At most [`MAX_POOLS`] pools are cached (least recently used first out). A pool that
//! leaves the cache while a call still runs on it stays alive through that call's `Arc`
//! and its threads exit when the last user drops it, so cycling through many thread
//! counts never accumulates threads.
//!
//! # Fork
//! `fork()` copies only the calling thread: in a child process the cached pools have
//! no threads and a job sent to them would never run. The cache therefore remembers
//! the process id that built it; a child sees a different id, leaks the dead pools
//! (dropping or joining them would touch threads that do not exist) and builds fresh
//! ones. An at-fork handler holds the cache lock across `fork()`, so a child never
//! inherits it locked by a thread that no longer exists.
//!
//! # Failure
//! When the operating system refuses to start threads (`RLIMIT_NPROC`, cgroup pids
//! limit, memory), [`try_pool`] returns a [`ThreadsError`] instead of panicking.
//!
//! Thread count must never change results. Reductions therefore use
//! [`fixed_chunks`]: chunk boundaries depend only on the input length, and partial
//! results are combined in chunk order.

use std::sync::{Arc, Mutex, MutexGuard};

use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::error::{Classify, ErrorKind};

/// How many pools (distinct thread counts) are kept ready.
pub const MAX_POOLS: usize = 4;

/// Number of hardware threads available to this process (at least 1): the CPU
/// affinity mask and cgroup quota, as `std::thread::available_parallelism` reads them.
///
/// Read once per process and cached: reading them parses files under `/proc` and
/// `/sys/fs/cgroup` (about 40 us, which every call at the default thread count paid).
/// A forked child reads them again; a change of affinity or quota later in the same
/// process is not seen (`thrifty.set_num_threads` sets the count explicitly).
pub fn available_threads() -> usize {
    use std::sync::atomic::{AtomicU64, Ordering};
    // `pid << 32 | count` of the process that read it; 0 before the first read
    static CACHED: AtomicU64 = AtomicU64::new(0);
    let pid = u64::from(std::process::id());
    let c = CACHED.load(Ordering::Relaxed);
    if c != 0 && c >> 32 == pid {
        return (c & 0xFFFF_FFFF) as usize;
    }
    let n = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(u32::MAX as usize);
    CACHED.store(pid << 32 | n as u64, Ordering::Relaxed);
    n
}

/// The operating system refused to start the worker threads of a pool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cannot start {threads} worker threads ({reason}); lower the thread count with \
     thrifty.set_num_threads or raise the process limit (ulimit -u)"
)]
pub struct ThreadsError {
    /// Threads requested.
    pub threads: usize,
    /// What the operating system said.
    pub reason: String,
}

impl Classify for ThreadsError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::Io
    }
}

/// The cached pools of one process, most recently used last.
struct Cache {
    pid: u32,
    pools: Vec<(usize, Arc<ThreadPool>)>,
}

static CACHE: Mutex<Cache> = Mutex::new(Cache {
    pid: 0,
    pools: Vec::new(),
});

fn lock() -> MutexGuard<'static, Cache> {
    CACHE.lock().unwrap_or_else(|e| e.into_inner())
}

/// The cache, emptied first when it was built by another process (a fork parent).
fn lock_current() -> MutexGuard<'static, Cache> {
    let mut c = lock();
    let pid = std::process::id();
    if c.pid != pid {
        // The threads of these pools do not exist in this process: never drop them.
        for (_, p) in c.pools.drain(..) {
            std::mem::forget(p);
        }
        c.pid = pid;
    }
    c
}

#[cfg(target_os = "linux")]
mod atfork {
    use std::cell::RefCell;
    use std::sync::{MutexGuard, Once};

    thread_local! {
        static HELD: RefCell<Option<MutexGuard<'static, super::Cache>>> =
            const { RefCell::new(None) };
    }

    extern "C" fn prepare() {
        let g = super::lock();
        HELD.with(|h| *h.borrow_mut() = Some(g));
    }

    extern "C" fn release() {
        HELD.with(|h| drop(h.borrow_mut().take()));
    }

    /// Hold the cache lock across `fork()` (registered once per process).
    pub fn register() {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            // SAFETY: the handlers are plain functions that live as long as the
            // process; they only take and release a lock that is never held while
            // this thread forks.
            unsafe {
                libc::pthread_atfork(Some(prepare), Some(release), Some(release));
            }
        });
    }
}

#[cfg(not(target_os = "linux"))]
mod atfork {
    pub fn register() {}
}

fn resolve(n_threads: usize) -> usize {
    if n_threads == 0 {
        available_threads()
    } else {
        n_threads
    }
}

/// The cached pool with `n_threads` threads (0 means [`available_threads`]), built
/// when missing; a [`ThreadsError`] when its threads cannot be started.
pub fn try_pool(n_threads: usize) -> Result<Arc<ThreadPool>, ThreadsError> {
    atfork::register();
    let n = resolve(n_threads);
    {
        let mut c = lock_current();
        if let Some(pos) = c.pools.iter().position(|(t, _)| *t == n) {
            let entry = c.pools.remove(pos);
            let pool = entry.1.clone();
            c.pools.push(entry);
            return Ok(pool);
        }
    }
    // Built without the lock: starting threads takes a while.
    let built = ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(|i| format!("thrifty-{i}"))
        .build()
        .map_err(|e| ThreadsError {
            threads: n,
            reason: e.to_string(),
        })?;
    let built = Arc::new(built);
    let evicted: Vec<(usize, Arc<ThreadPool>)>;
    let pool;
    {
        let mut c = lock_current();
        if let Some(pos) = c.pools.iter().position(|(t, _)| *t == n) {
            // Another thread built one meanwhile; ours is dropped below.
            let entry = c.pools.remove(pos);
            pool = entry.1.clone();
            c.pools.push(entry);
        } else {
            pool = built.clone();
            c.pools.push((n, built.clone()));
        }
        let excess = c.pools.len().saturating_sub(MAX_POOLS);
        evicted = c.pools.drain(..excess).collect();
    }
    // Dropped outside the lock; pools still in use live on through their users.
    drop(evicted);
    drop(built);
    Ok(pool)
}

/// [`try_pool`] for callers that cannot report an error (tests, internal helpers).
///
/// # Panics
/// When the worker threads cannot be started.
pub fn pool(n_threads: usize) -> Arc<ThreadPool> {
    try_pool(n_threads).unwrap_or_else(|e| panic!("{e}"))
}

/// Thread counts of the cached pools, least recently used first (diagnostics).
pub fn cached_pools() -> Vec<usize> {
    lock_current().pools.iter().map(|(n, _)| *n).collect()
}

/// Run `f` on a pool of `n_threads` threads (0 means all cores); rayon calls inside
/// `f` use that pool.
///
/// # Panics
/// When the worker threads cannot be started; see [`try_install`].
pub fn install<R: Send>(n_threads: usize, f: impl FnOnce() -> R + Send) -> R {
    pool(n_threads).install(f)
}

/// [`install`], or a [`ThreadsError`] when the pool's threads cannot be started.
pub fn try_install<R: Send>(
    n_threads: usize,
    f: impl FnOnce() -> R + Send,
) -> Result<R, ThreadsError> {
    Ok(try_pool(n_threads)?.install(f))
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
        // Other tests use other thread counts concurrently and may evict this pool
        // between the two calls; it must be reused at least once in a few tries.
        assert!((0..20).any(|_| Arc::ptr_eq(&pool(2), &pool(2))));
    }

    #[test]
    fn cache_is_bounded_and_pools_in_use_survive_eviction() {
        let held = pool(7);
        for n in 8..8 + 2 * MAX_POOLS {
            assert_eq!(install(n, current_num_threads), n);
            assert!(cached_pools().len() <= MAX_POOLS);
        }
        // Evicted from the cache, but still a working pool for its holder.
        assert_eq!(held.install(current_num_threads), 7);
    }

    #[test]
    fn fixed_chunks_cover_exactly() {
        assert!(fixed_chunks(0, 4).is_empty());
        assert_eq!(fixed_chunks(10, 4), vec![0..4, 4..8, 8..10]);
        assert_eq!(fixed_chunks(8, 4), vec![0..4, 4..8]);
    }
}
