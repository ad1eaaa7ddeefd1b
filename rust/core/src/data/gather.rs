//! Copying rows (or overlapping windows) of a byte buffer into a fresh batch buffer.
//!
//! A [`RowSource`] describes `n_rows` rows inside a byte buffer: row `r` is the
//! `width` bytes starting at `r * stride`. With `stride == width` these are the rows of
//! a C-contiguous matrix; with `stride < width` they overlap (token windows of
//! `seq_len + 1` tokens advancing by `seq_len`). The output is allocated with the
//! alignment of the element size ([`Buf`]), so it can be handed to numpy as a typed
//! array without a copy.

use rayon::prelude::*;

use super::{invalid, DataError};
use crate::alloc::{try_vec, try_with_capacity};

/// Batches at least this many bytes are copied in parallel.
pub const PAR_BYTES: usize = 1 << 20;

/// An owned, element-aligned output buffer (the element size picks the variant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buf {
    /// 1-byte elements.
    U8(Vec<u8>),
    /// 2-byte elements.
    U16(Vec<u16>),
    /// 4-byte elements.
    U32(Vec<u32>),
    /// 8-byte elements.
    U64(Vec<u64>),
}

impl Buf {
    /// A zeroed buffer of `n` elements of `elem_size` bytes (1, 2, 4 or 8).
    pub fn zeroed(elem_size: usize, n: usize) -> Result<Self, DataError> {
        const WHAT: &str = "a batch";
        Ok(match elem_size {
            1 => Buf::U8(try_vec(0, n, WHAT)?),
            2 => Buf::U16(try_vec(0, n, WHAT)?),
            4 => Buf::U32(try_vec(0, n, WHAT)?),
            8 => Buf::U64(try_vec(0, n, WHAT)?),
            _ => {
                return Err(invalid(format!(
                    "element size must be 1, 2, 4 or 8 bytes, got {elem_size}"
                )))
            }
        })
    }

    /// The buffer as mutable bytes.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        fn cast<T>(v: &mut [T]) -> &mut [u8] {
            let len = std::mem::size_of_val(v);
            // SAFETY: plain integer elements have no padding or invalid bit patterns;
            // the byte view covers exactly the same memory and borrows it mutably.
            unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), len) }
        }
        match self {
            Buf::U8(v) => cast(v),
            Buf::U16(v) => cast(v),
            Buf::U32(v) => cast(v),
            Buf::U64(v) => cast(v),
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Buf::U8(v) => v.len(),
            Buf::U16(v) => v.len(),
            Buf::U32(v) => v.len(),
            Buf::U64(v) => v.len(),
        }
    }

    /// True when the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Check that `n_rows` rows of `width` elements, `stride` apart, fit in `len` bytes.
fn check_layout(
    len: u128,
    elem_size: usize,
    stride: usize,
    width: usize,
    n_rows: u64,
) -> Result<(), DataError> {
    if !matches!(elem_size, 1 | 2 | 4 | 8) {
        return Err(invalid(format!(
            "element size must be 1, 2, 4 or 8 bytes, got {elem_size}"
        )));
    }
    if width == 0 {
        return Err(invalid("rows must have at least one element"));
    }
    if n_rows > 0 {
        let need = (n_rows as u128 - 1) * stride as u128 + width as u128;
        let need_bytes = need * elem_size as u128;
        if need_bytes > len {
            return Err(DataError::Format(format!(
                "buffer holds {len} bytes but {n_rows} rows need {need_bytes}"
            )));
        }
    }
    Ok(())
}

fn check_rows(rows: &[u64], n_rows: u64) -> Result<(), DataError> {
    match rows.iter().find(|&&r| r >= n_rows) {
        Some(&bad) => Err(invalid(format!("row {bad} out of range for {n_rows} rows"))),
        None => Ok(()),
    }
}

/// An open file that must keep at least `need` bytes while rows are read from it.
///
/// A memory mapping of a file that another process truncates raises `SIGBUS` on the
/// first touch of a vanished page, and a positional read comes up short. Checking the
/// size (`fstat`) before every batch turns a truncation between batches into a
/// [`DataError::Format`].
#[derive(Debug)]
pub struct SizeGuard {
    file: std::fs::File,
    path: std::path::PathBuf,
    need: u64,
}

impl SizeGuard {
    /// Open `path` and check that it holds at least `need` bytes.
    pub fn open(path: &std::path::Path, need: u64) -> Result<Self, DataError> {
        let io = |e: std::io::Error| DataError::Io(format!("{}: {e}", path.display()));
        let file = std::fs::File::open(path).map_err(io)?;
        let guard = SizeGuard {
            file,
            path: path.to_path_buf(),
            need,
        };
        let len = guard.len()?;
        if len < need {
            return Err(DataError::Format(format!(
                "{} holds {len} bytes but its rows need {need}",
                path.display()
            )));
        }
        Ok(guard)
    }

    fn len(&self) -> Result<u64, DataError> {
        let meta = self.file.metadata();
        let meta = meta.map_err(|e| DataError::Io(format!("{}: {e}", self.path.display())))?;
        Ok(meta.len())
    }

    fn shrunk(&self, now: Option<u64>) -> DataError {
        let now = now.map_or_else(|| "fewer".to_string(), |n| n.to_string());
        DataError::Format(format!(
            "{} changed size while it was being read: its rows need {} bytes but it now \
             has {now}; do not truncate or rewrite a file that a loader is reading",
            self.path.display(),
            self.need
        ))
    }

    /// Fail when the file no longer holds `need` bytes.
    pub fn check(&self) -> Result<(), DataError> {
        let len = self.len()?;
        if len < self.need {
            return Err(self.shrunk(Some(len)));
        }
        Ok(())
    }
}

/// Bytes from the start of a buffer that `n_rows` rows of `width` elements, `stride`
/// apart, occupy (saturating).
pub fn rows_extent(elem_size: usize, stride: usize, width: usize, n_rows: u64) -> u64 {
    if n_rows == 0 {
        return 0;
    }
    let elems = (n_rows as u128 - 1) * stride as u128 + width as u128;
    u64::try_from(elems * elem_size as u128).unwrap_or(u64::MAX)
}

/// Rows of a file read with positional reads (`pread`).
///
/// Nothing is memory-mapped: streaming a file larger than memory keeps the resident
/// memory at the batches in flight, and a file that shrinks while it is read (another
/// process truncating or rewriting it) gives a [`DataError::Format`], never a
/// `SIGBUS`: the size is checked before every batch ([`SizeGuard`]) and a read that
/// comes up short is reported the same way. Row `r` is the `width` elements at byte
/// `offset + r * stride * elem_size`; runs of consecutive non-overlapping rows are read
/// with one call.
#[derive(Debug)]
pub struct FileRows {
    guard: SizeGuard,
    offset: u64,
    elem_size: usize,
    stride: usize,
    width: usize,
    n_rows: u64,
}

/// Reads of consecutive rows are merged up to this many bytes (larger runs are split
/// so that a big batch is still read by several threads).
const RUN_BYTES: usize = 1 << 20;

impl FileRows {
    /// Open `path` and check that the rows fit in it.
    pub fn open(
        path: &std::path::Path,
        offset: u64,
        elem_size: usize,
        stride: usize,
        width: usize,
        n_rows: u64,
    ) -> Result<Self, DataError> {
        let io = |e: std::io::Error| DataError::Io(format!("{}: {e}", path.display()));
        let len = std::fs::metadata(path).map_err(io)?.len();
        check_layout(
            len.saturating_sub(offset) as u128,
            elem_size,
            stride,
            width,
            n_rows,
        )?;
        let need = offset.saturating_add(rows_extent(elem_size, stride, width, n_rows));
        Ok(FileRows {
            guard: SizeGuard::open(path, need)?,
            offset,
            elem_size,
            stride,
            width,
            n_rows,
        })
    }

    /// Number of rows.
    pub fn n_rows(&self) -> u64 {
        self.n_rows
    }

    /// Elements per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Bytes per element.
    pub fn elem_size(&self) -> usize {
        self.elem_size
    }

    /// Read `rows` into a fresh buffer, as [`RowSource::gather`].
    pub fn gather(&self, rows: &[u64]) -> Result<Buf, DataError> {
        use std::os::unix::fs::FileExt;
        check_rows(rows, self.n_rows)?;
        self.guard.check()?;
        let n = crate::alloc::checked_len(rows.len(), self.width, "a batch")?;
        let mut out = Buf::zeroed(self.elem_size, n)?;
        let row_bytes = self.width * self.elem_size;
        let stride_bytes = (self.stride * self.elem_size) as u64;
        // Runs of consecutive rows (only where rows do not overlap: then a run is one
        // contiguous range of the file and of the output).
        let max_run = (RUN_BYTES / row_bytes).max(1);
        let mut runs: Vec<(&mut [u8], u64)> = try_with_capacity(rows.len(), "a batch's reads")?;
        let mut rest = out.bytes_mut();
        let mut i = 0;
        while i < rows.len() {
            let mut len = 1;
            if self.stride == self.width {
                while i + len < rows.len() && len < max_run && rows[i + len] == rows[i] + len as u64
                {
                    len += 1;
                }
            }
            let (dst, tail) = std::mem::take(&mut rest).split_at_mut(len * row_bytes);
            runs.push((dst, rows[i]));
            rest = tail;
            i += len;
        }
        let read = |(dst, r): &mut (&mut [u8], u64)| {
            self.guard
                .file
                .read_exact_at(dst, self.offset + *r * stride_bytes)
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => self.guard.shrunk(None),
                    _ => DataError::Io(format!(
                        "{}: reading row {r}: {e}",
                        self.guard.path.display()
                    )),
                })
        };
        if rows.len() * row_bytes >= PAR_BYTES && runs.len() > 1 {
            runs.par_iter_mut().try_for_each(read)?;
        } else {
            runs.iter_mut().try_for_each(read)?;
        }
        drop(runs);
        Ok(out)
    }
}

/// How many rows ahead [`RowSource::gather`] asks the CPU to fetch: shuffled rows
/// are scattered over the source, and each one's first cache lines (and its page's
/// translation) would otherwise be a full memory latency of its own.
const PREFETCH_ROWS: usize = 8;
/// Bytes of each row fetched ahead (the hardware prefetcher follows the rest).
const PREFETCH_BYTES: usize = 1024;

/// Hint the CPU to fetch the first [`PREFETCH_BYTES`] of `row` into the cache.
#[inline(always)]
fn prefetch(row: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for k in (0..row.len().min(PREFETCH_BYTES)).step_by(64) {
        // SAFETY: a prefetch only hints the cache; the address lies within `row`.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                row.as_ptr().add(k) as *const i8,
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = row;
}

/// Rows of `width` elements every `stride` elements inside a byte buffer.
#[derive(Debug, Clone, Copy)]
pub struct RowSource<'a> {
    bytes: &'a [u8],
    elem_size: usize,
    stride: usize,
    width: usize,
    n_rows: u64,
}

impl<'a> RowSource<'a> {
    /// Validate that `n_rows` rows of `width` elements, `stride` apart, fit in `bytes`.
    pub fn new(
        bytes: &'a [u8],
        elem_size: usize,
        stride: usize,
        width: usize,
        n_rows: u64,
    ) -> Result<Self, DataError> {
        check_layout(bytes.len() as u128, elem_size, stride, width, n_rows)?;
        Ok(RowSource {
            bytes,
            elem_size,
            stride,
            width,
            n_rows,
        })
    }

    /// Number of rows.
    pub fn n_rows(&self) -> u64 {
        self.n_rows
    }

    /// Elements per row.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Copy `rows` (each `< n_rows`) into a fresh buffer of `rows.len() * width`
    /// elements, in order.
    pub fn gather(&self, rows: &[u64]) -> Result<Buf, DataError> {
        check_rows(rows, self.n_rows)?;
        let n = crate::alloc::checked_len(rows.len(), self.width, "a batch")?;
        let row_bytes = self.width * self.elem_size;
        let stride_bytes = self.stride * self.elem_size;
        let src = self.bytes;
        // Every byte of the output is written exactly once below, so the buffer is
        // allocated without zeroing it first (a full extra pass over the batch).
        let fill = |dst: *mut u8| {
            let dst = dst as usize; // raw pointers are not Send; the rows are disjoint
            let copy = |(i, &r): (usize, &u64), ahead: Option<&u64>| {
                if let Some(&a) = ahead {
                    prefetch(
                        &src[a as usize * stride_bytes..a as usize * stride_bytes + row_bytes],
                    );
                }
                let start = r as usize * stride_bytes;
                let row = &src[start..start + row_bytes];
                // SAFETY: row i of the output is bytes [i * row_bytes, (i+1) * row_bytes)
                // of an allocation of rows.len() * row_bytes bytes; rows are disjoint.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        row.as_ptr(),
                        (dst as *mut u8).add(i * row_bytes),
                        row_bytes,
                    )
                };
            };
            if n * self.elem_size >= PAR_BYTES && rows.len() > 1 {
                rows.par_iter()
                    .enumerate()
                    .for_each(|(i, r)| copy((i, r), rows.get(i + PREFETCH_ROWS)));
            } else {
                for (i, r) in rows.iter().enumerate() {
                    copy((i, r), rows.get(i + PREFETCH_ROWS));
                }
            }
        };
        fn filled<T>(n: usize, fill: impl FnOnce(*mut u8)) -> Result<Vec<T>, DataError> {
            let mut v = try_with_capacity::<T>(n, "a batch")?;
            fill(v.as_mut_ptr().cast::<u8>());
            // SAFETY: `fill` initialised all n elements (integers: any bits are valid).
            unsafe { v.set_len(n) };
            Ok(v)
        }
        let out = match self.elem_size {
            1 => Buf::U8(filled(n, fill)?),
            2 => Buf::U16(filled(n, fill)?),
            4 => Buf::U32(filled(n, fill)?),
            _ => Buf::U64(filled(n, fill)?),
        };
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gathers_rows_and_windows() {
        let data: Vec<u16> = (0..20).collect();
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        // matrix 5 x 4
        let src = RowSource::new(&bytes, 2, 4, 4, 5).unwrap();
        let Buf::U16(out) = src.gather(&[3, 0]).unwrap() else {
            panic!()
        };
        assert_eq!(out, vec![12, 13, 14, 15, 0, 1, 2, 3]);
        // windows of 4 advancing by 3 over 20 tokens: (20 - 1) / 3 = 6 windows
        let src = RowSource::new(&bytes, 2, 3, 4, 6).unwrap();
        let Buf::U16(out) = src.gather(&[5, 1]).unwrap() else {
            panic!()
        };
        assert_eq!(out, vec![15, 16, 17, 18, 3, 4, 5, 6]);
    }

    #[test]
    fn parallel_path_matches_serial() {
        let n = 4096usize;
        let w = 300usize;
        let data: Vec<u32> = (0..(n * w) as u32).collect();
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let src = RowSource::new(&bytes, 4, w, w, n as u64).unwrap();
        let rows: Vec<u64> = (0..n as u64).rev().step_by(3).collect();
        let Buf::U32(out) = src.gather(&rows).unwrap() else {
            panic!()
        };
        for (i, &r) in rows.iter().enumerate() {
            assert_eq!(out[i * w], r as u32 * w as u32);
            assert_eq!(out[i * w + w - 1], r as u32 * w as u32 + w as u32 - 1);
        }
    }

    #[test]
    fn file_rows_match_memory_rows() {
        let data: Vec<u32> = (0..3000).collect();
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let path = std::env::temp_dir().join(format!("thrifty-gather-{}.bin", std::process::id()));
        let mut file_bytes = vec![7u8; 16];
        file_bytes.extend_from_slice(&bytes);
        std::fs::write(&path, &file_bytes).unwrap();
        let rows: Vec<u64> = vec![5, 0, 98, 42];
        let mem = RowSource::new(&bytes, 4, 30, 31, 99).unwrap();
        let file = FileRows::open(&path, 16, 4, 30, 31, 99).unwrap();
        assert_eq!(mem.gather(&rows).unwrap(), file.gather(&rows).unwrap());
        assert!(FileRows::open(&path, 16, 4, 30, 31, 100).is_err());
        assert!(file.gather(&[99]).is_err());
        std::fs::remove_file(&path).unwrap();
        let e = FileRows::open(&path, 0, 4, 1, 1, 1).unwrap_err();
        assert!(matches!(e, DataError::Io(_)));
    }

    fn temp_file(tag: &str, bytes: &[u8]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("thrifty-gather-{tag}-{}.bin", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        path
    }

    #[test]
    fn file_runs_are_read_whole_and_match_memory() {
        let data: Vec<u16> = (0..40_000).map(|i| i as u16).collect();
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        let path = temp_file("runs", &bytes);
        let mem = RowSource::new(&bytes, 2, 40, 40, 1000).unwrap();
        let file = FileRows::open(&path, 0, 2, 40, 40, 1000).unwrap();
        // runs, single rows, a run longer than RUN_BYTES, and repeats
        let mut rows: Vec<u64> = (10..20).chain([3, 999, 4, 4]).collect();
        rows.extend(0..1000);
        assert_eq!(mem.gather(&rows).unwrap(), file.gather(&rows).unwrap());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_file_that_shrinks_is_an_error() {
        let bytes = vec![1u8; 4000];
        let path = temp_file("shrink", &bytes);
        let file = FileRows::open(&path, 0, 4, 10, 10, 100).unwrap();
        assert!(file.gather(&[99, 0]).is_ok());
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(2000).unwrap();
        let e = file.gather(&[0]).unwrap_err();
        assert!(matches!(e, DataError::Format(_)), "{e}");
        assert!(e.to_string().contains("changed size"), "{e}");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn impossible_batches_are_allocation_errors() {
        let e = Buf::zeroed(8, usize::MAX / 16).unwrap_err();
        assert!(matches!(e, DataError::OutOfMemory(_)), "{e}");
        let e = Buf::zeroed(1, usize::MAX).unwrap_err();
        assert!(e.to_string().contains("cannot allocate a batch"), "{e}");
    }

    #[test]
    fn truncated_and_bad() {
        let bytes = vec![0u8; 30];
        let e = RowSource::new(&bytes, 4, 2, 2, 4).unwrap_err();
        assert!(matches!(e, DataError::Format(_)));
        assert!(RowSource::new(&bytes, 3, 2, 2, 1).is_err());
        let src = RowSource::new(&bytes, 4, 2, 2, 3).unwrap();
        assert!(src.gather(&[3]).is_err());
    }
}
