//! Fallible allocation for every size that comes from user input.
//!
//! `Vec::with_capacity(n)` / `vec![x; n]` abort the process when the allocator says no
//! ("memory allocation of N bytes failed"). Every buffer whose length a caller controls
//! (k, n, a window, a batch size, a file header) goes through these helpers instead, so
//! an impossible request becomes an [`AllocError`] (Python: `thrifty.OutOfMemoryError`,
//! a `MemoryError`) and the interpreter survives.

use crate::error::{Classify, ErrorKind};

/// An allocation of `bytes` bytes was refused (or its size overflowed `usize`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot allocate {what}: {bytes} bytes requested")]
pub struct AllocError {
    /// What the buffer was for (shown in the message).
    pub what: &'static str,
    /// The requested size in bytes (`usize::MAX` when the size itself overflowed).
    pub bytes: usize,
}

impl Classify for AllocError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::OutOfMemory
    }
}

fn size_of_n<T>(n: usize, what: &'static str) -> Result<usize, AllocError> {
    n.checked_mul(std::mem::size_of::<T>())
        .filter(|&b| b <= isize::MAX as usize)
        .ok_or(AllocError {
            what,
            bytes: usize::MAX,
        })
}

/// An empty `Vec` with room for `n` elements, or an [`AllocError`].
pub fn try_with_capacity<T>(n: usize, what: &'static str) -> Result<Vec<T>, AllocError> {
    let bytes = size_of_n::<T>(n, what)?;
    let mut v = Vec::new();
    v.try_reserve_exact(n)
        .map_err(|_| AllocError { what, bytes })?;
    Ok(v)
}

/// `vec![value; n]`, or an [`AllocError`].
pub fn try_vec<T: Clone>(value: T, n: usize, what: &'static str) -> Result<Vec<T>, AllocError> {
    let mut v = try_with_capacity(n, what)?;
    v.resize(n, value);
    Ok(v)
}

/// Reserve room for `additional` more elements in `v`, or an [`AllocError`].
pub fn try_reserve<T>(
    v: &mut Vec<T>,
    additional: usize,
    what: &'static str,
) -> Result<(), AllocError> {
    let bytes = size_of_n::<T>(additional, what)?;
    v.try_reserve_exact(additional)
        .map_err(|_| AllocError { what, bytes })
}

/// `a * b` for sizes derived from user input, or an [`AllocError`] naming `what`
/// when the product overflows `usize`.
pub fn checked_len(a: usize, b: usize, what: &'static str) -> Result<usize, AllocError> {
    a.checked_mul(b).ok_or(AllocError {
        what,
        bytes: usize::MAX,
    })
}

/// Refuse `n` elements of `bytes_each` bytes (in one or several buffers) when they
/// exceed the machine's memory plus swap: each buffer alone may be granted (memory
/// is overcommitted) and the process killed later, while the pages are filled.
pub fn check_total(n: usize, bytes_each: usize, what: &'static str) -> Result<(), AllocError> {
    let bytes = checked_len(n, bytes_each, what)?;
    match memory_limit() {
        Some(limit) if bytes as u128 > limit => Err(AllocError { what, bytes }),
        _ => Ok(()),
    }
}

/// Physical memory plus swap, in bytes, when the system says.
fn memory_limit() -> Option<u128> {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: `sysinfo` only writes the struct it is given.
        let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
        if unsafe { libc::sysinfo(&mut info) } == 0 {
            let unit = u128::from(info.mem_unit.max(1));
            return Some((u128::from(info.totalram) + u128::from(info.totalswap)) * unit);
        }
    }
    None
}

/// Advise the 2 MiB-aligned interior of a large fresh buffer as a transparent huge
/// page region (`MADV_HUGEPAGE`) before it is touched.
///
/// Large outputs are dominated by page faults on their first write (the kernels run at
/// a fraction of the cost); huge pages cut the faults 512-fold where the kernel allows
/// it. Elsewhere, and when the advice is refused, this does nothing.
pub(crate) fn advise_huge(start: usize, bytes: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        if bytes >= 4 * HUGE {
            let lo = start.next_multiple_of(HUGE);
            let hi = (start + bytes) / HUGE * HUGE;
            if hi > lo {
                // SAFETY: [lo, hi) lies inside the caller's allocation; MADV_HUGEPAGE only
                // changes how its pages are backed, never their contents.
                unsafe {
                    libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
                }
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (start, bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absurd_sizes_are_errors_not_aborts() {
        let e = try_vec(0u64, usize::MAX / 4, "test").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutOfMemory);
        assert!(try_with_capacity::<f32>(1usize << 60, "test").is_err());
        assert!(checked_len(usize::MAX, 2, "test").is_err());
        assert!(check_total(1 << 62, 8, "test").is_err());
        assert!(check_total(1 << 50, 1 << 20, "test").is_err());
        let mut v: Vec<u8> = Vec::new();
        assert!(try_reserve(&mut v, usize::MAX, "test").is_err());
    }

    #[test]
    fn small_sizes_work() {
        assert_eq!(try_vec(7u8, 3, "test").unwrap(), vec![7, 7, 7]);
        assert!(try_with_capacity::<f32>(10, "test").unwrap().capacity() >= 10);
        assert_eq!(checked_len(3, 4, "test").unwrap(), 12);
        assert!(check_total(1000, 8, "test").is_ok());
    }
}
