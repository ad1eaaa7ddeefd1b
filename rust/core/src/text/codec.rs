//! Compressed lengths with real zlib, bzip2, liblzma and zstd.
//!
//! An [`Engine`] holds one reusable compressor state; workers create one each (per
//! rayon job) and call [`Engine::compressed_len`] for every text, so zlib's ~256 KB
//! state is allocated once and reset between texts instead of being freed and
//! re-faulted on every call.
//!
//! Exactness: `gzip` lengths equal `len(gzip.compress(t, level))` of Python's `gzip`
//! (raw deflate from zlib with `windowBits = -15`, `memLevel = 8`, default strategy,
//! plus the 10-byte gzip header and 8-byte trailer); `bz2` equals `bz2.compress(t, level)`
//! (work factor 30, the default), `lzma` equals `lzma.compress(t, preset=level)` (`.xz`
//! container, CRC64 check). `zstd` is deterministic but has no Python counterpart in
//! the standard library of the versions thrifty supports.

use std::alloc::{alloc, dealloc, Layout};
use std::cell::RefCell;
use std::os::raw::{c_int, c_uint, c_void};

use libz_sys as z;

use super::{deflate9, TextError};

/// Bytes a gzip member adds around the raw deflate stream (header 10, trailer 8).
pub const GZIP_OVERHEAD: u64 = 18;

/// A compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// zlib deflate in a gzip member, as Python's `gzip.compress`.
    Gzip,
    /// bzip2, as Python's `bz2.compress`.
    Bz2,
    /// LZMA2 in an `.xz` container, as Python's `lzma.compress`.
    Lzma,
    /// Zstandard frame (single-threaded, hence deterministic).
    Zstd,
}

impl Codec {
    /// Every codec with its name.
    pub const ALL: [(Codec, &'static str); 4] = [
        (Codec::Gzip, "gzip"),
        (Codec::Bz2, "bz2"),
        (Codec::Lzma, "lzma"),
        (Codec::Zstd, "zstd"),
    ];

    /// Parse a codec name (`"gzip"`, `"bz2"`, `"lzma"`, `"zstd"`).
    pub fn from_name(name: &str) -> Result<Self, TextError> {
        Self::ALL
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(c, _)| *c)
            .ok_or_else(|| TextError::UnknownCompressor(name.to_string()))
    }

    /// The codec's name.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(c, _)| *c == self).unwrap().1
    }

    /// Level used when none is given (Python's defaults; zstd's default 3).
    pub fn default_level(self) -> i32 {
        match self {
            Codec::Gzip | Codec::Bz2 => 9,
            Codec::Lzma => 6,
            Codec::Zstd => 3,
        }
    }

    /// Inclusive range of accepted levels.
    pub fn level_range(self) -> (i32, i32) {
        match self {
            Codec::Gzip | Codec::Lzma => (0, 9),
            Codec::Bz2 => (1, 9),
            Codec::Zstd => (1, 22),
        }
    }
}

/// A codec with a validated level: cheap to copy, creates [`Engine`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compressor {
    codec: Codec,
    level: i32,
}

impl Compressor {
    /// `level = None` picks [`Codec::default_level`].
    pub fn new(codec: Codec, level: Option<i32>) -> Result<Self, TextError> {
        let level = level.unwrap_or(codec.default_level());
        let (lo, hi) = codec.level_range();
        if !(lo..=hi).contains(&level) {
            return Err(TextError::BadLevel {
                codec: codec.name(),
                level,
                lo,
                hi,
            });
        }
        Ok(Self { codec, level })
    }

    /// Parse a codec name and validate the level.
    pub fn from_name(name: &str, level: Option<i32>) -> Result<Self, TextError> {
        Self::new(Codec::from_name(name)?, level)
    }

    /// The codec.
    pub fn codec(&self) -> Codec {
        self.codec
    }

    /// The level in use.
    pub fn level(&self) -> i32 {
        self.level
    }

    /// Runs `f` with this thread's cached engine for this compressor, creating it on
    /// first use. Workers call this once per parallel job: an engine (zlib's state,
    /// the length-only deflate's scratch, about 250 KB) is then allocated once per
    /// thread and kept between jobs and calls, instead of once per job, whose fresh
    /// pages cost page faults that serialise threads in the kernel.
    pub fn with_engine<R>(
        &self,
        f: impl FnOnce(&mut Engine) -> Result<R, TextError>,
    ) -> Result<R, TextError> {
        // Taken out of the cache while in use, so a nested call would build its own.
        let cached = ENGINES.with(|c| {
            let mut v = c.borrow_mut();
            let i = v.iter().position(|e| e.spec == *self)?;
            Some(v.swap_remove(i))
        });
        let mut engine = match cached {
            Some(e) => e,
            None => self.engine()?,
        };
        let out = f(&mut engine);
        ENGINES.with(|c| {
            let mut v = c.borrow_mut();
            if v.len() >= MAX_CACHED_ENGINES {
                v.remove(0);
            }
            v.push(engine);
        });
        out
    }

    /// A fresh compressor state.
    pub fn engine(&self) -> Result<Engine, TextError> {
        let inner = match self.codec {
            Codec::Gzip => Inner::Gzip(Box::new(GzipEngine::new(self.level)?)),
            Codec::Bz2 => Inner::Bz2,
            Codec::Lzma => Inner::Lzma,
            Codec::Zstd => Inner::Zstd(
                zstd::bulk::Compressor::new(self.level)
                    .map_err(|e| TextError::Codec(format!("zstd init: {e}")))?,
            ),
        };
        Ok(Engine {
            spec: *self,
            inner,
            scratch: vec![0u8; SCRATCH],
        })
    }
}

/// Engines kept per thread by [`Compressor::with_engine`] (distinct codec/level pairs).
const MAX_CACHED_ENGINES: usize = 4;

thread_local! {
    static ENGINES: RefCell<Vec<Engine>> = const { RefCell::new(Vec::new()) };
}

/// Output is written here and discarded: only its length matters.
const SCRATCH: usize = 1 << 16;

enum Inner {
    Gzip(Box<GzipEngine>),
    Bz2,
    Lzma,
    Zstd(zstd::bulk::Compressor<'static>),
}

/// One reusable compressor state (not `Sync`; one per worker).
pub struct Engine {
    spec: Compressor,
    inner: Inner,
    scratch: Vec<u8>,
}

impl Engine {
    /// `C(query + b" " + reference)`, exactly as [`Engine::compressed_len`] of the
    /// joint text; `buf` is scratch for building it. For gzip at level 9 short pairs
    /// never build the joint text: the query's parse is shared between consecutive
    /// calls with the same query (see [`super::deflate9`]).
    pub fn joint_len(
        &mut self,
        query: &[u8],
        reference: &[u8],
        buf: &mut Vec<u8>,
    ) -> Result<u64, TextError> {
        if let Inner::Gzip(g) = &mut self.inner {
            if let Some(n) = g.joint_raw_len(query, reference) {
                return Ok(n + GZIP_OVERHEAD);
            }
        }
        buf.clear();
        buf.extend_from_slice(query);
        buf.push(b' ');
        buf.extend_from_slice(reference);
        self.compressed_len(buf)
    }

    /// [`Engine::joint_len`] of two references after the same query (for gzip at
    /// level 9 the two pairs' trees are built together, which is faster).
    pub fn joint_len2(
        &mut self,
        query: &[u8],
        references: [&[u8]; 2],
        buf: &mut Vec<u8>,
    ) -> Result<[u64; 2], TextError> {
        let fast = match &mut self.inner {
            Inner::Gzip(g) => g.joint_raw_len2(query, references),
            _ => [None, None],
        };
        let mut out = [0; 2];
        for ((o, f), r) in out.iter_mut().zip(fast).zip(references) {
            *o = match f {
                Some(n) => n + GZIP_OVERHEAD,
                None => self.joint_len(query, r, buf)?,
            };
        }
        Ok(out)
    }

    /// The exact compressed length of `data` (see the module docs).
    pub fn compressed_len(&mut self, data: &[u8]) -> Result<u64, TextError> {
        let level = self.spec.level;
        let scratch = &mut self.scratch;
        match &mut self.inner {
            Inner::Gzip(g) => Ok(g.raw_len(data, scratch)? + GZIP_OVERHEAD),
            Inner::Bz2 => bz2_len(data, level, scratch),
            Inner::Lzma => lzma_len(data, level, scratch),
            Inner::Zstd(c) => {
                let bound = zstd::zstd_safe::compress_bound(data.len());
                if scratch.len() < bound {
                    let more = bound - scratch.len();
                    crate::alloc::try_reserve(scratch, more, "zstd output")?;
                    scratch.resize(bound, 0);
                }
                c.compress_to_buffer(data, &mut scratch[..])
                    .map(|n| n as u64)
                    .map_err(|e| TextError::Codec(format!("zstd: {e}")))
            }
        }
    }
}

fn bz2_len(data: &[u8], level: i32, scratch: &mut [u8]) -> Result<u64, TextError> {
    use bzip2::{Action, Compress, Compression, Status};
    let mut c = Compress::new(Compression::new(level as u32), 30);
    loop {
        let consumed = c.total_in() as usize;
        let st = c
            .compress(&data[consumed..], scratch, Action::Finish)
            .map_err(|e| TextError::Codec(format!("bz2: {e}")))?;
        if st == Status::StreamEnd {
            return Ok(c.total_out());
        }
    }
}

fn lzma_len(data: &[u8], level: i32, scratch: &mut [u8]) -> Result<u64, TextError> {
    use liblzma::stream::{Action, Check, Status, Stream};
    let mut s = Stream::new_easy_encoder(level as u32, Check::Crc64)
        .map_err(|e| TextError::Codec(format!("lzma init: {e}")))?;
    loop {
        let consumed = s.total_in() as usize;
        let st = s
            .process(&data[consumed..], scratch, Action::Finish)
            .map_err(|e| TextError::Codec(format!("lzma: {e}")))?;
        if st == Status::StreamEnd {
            return Ok(s.total_out());
        }
    }
}

// ---------------------------------------------------------------------------------
// zlib raw deflate with one reused stream.

unsafe extern "C" fn zalloc(_opaque: *mut c_void, items: c_uint, size: c_uint) -> *mut c_void {
    // Store the allocation size in front of the block so that `zfree` can rebuild the
    // layout. 16 bytes keep the block 16-aligned.
    let Some(n) = (items as usize).checked_mul(size as usize) else {
        return std::ptr::null_mut();
    };
    let Ok(layout) = Layout::from_size_align(n + 16, 16) else {
        return std::ptr::null_mut();
    };
    // SAFETY: layout has non-zero size.
    let p = unsafe { alloc(layout) };
    if p.is_null() {
        return p.cast();
    }
    // SAFETY: p points to at least 16 writable, 16-aligned bytes.
    unsafe {
        (p as *mut usize).write(n + 16);
        p.add(16).cast()
    }
}

unsafe extern "C" fn zfree(_opaque: *mut c_void, ptr: *mut c_void) {
    if ptr.is_null() {
        return;
    }
    // SAFETY: ptr came from `zalloc`, which put the total size 16 bytes before it.
    unsafe {
        let base = (ptr as *mut u8).sub(16);
        let total = (base as *const usize).read();
        dealloc(base, Layout::from_size_align_unchecked(total, 16));
    }
}

/// The sizes by which CPython's `zlib.compress` grows its output buffer
/// (`BUFFER_BLOCK_SIZE` of its blocks output buffer), the last one repeated.
const PY_OUTPUT_BLOCKS: [usize; 17] = [
    32 << 10,
    64 << 10,
    256 << 10,
    1 << 20,
    4 << 20,
    8 << 20,
    16 << 20,
    16 << 20,
    32 << 20,
    32 << 20,
    32 << 20,
    32 << 20,
    64 << 20,
    64 << 20,
    128 << 20,
    128 << 20,
    256 << 20,
];

/// Python's gzip stream parameters: `windowBits = 15` (raw: -15), `memLevel = 8`.
const STD_WBITS: c_int = 15;
const STD_MEM_LEVEL: c_int = 8;

/// Raw-deflate lengths: zlib level 9 through the length-only deflate (any length),
/// other levels through one reused zlib stream.
struct GzipEngine {
    level: i32,
    /// Level 9: the last query's shared parse and the pair scratch.
    prefix: Option<deflate9::Prefix>,
    /// The same for joint texts longer than `deflate9::MAX_INPUT` (built on first use).
    long_prefix: Option<deflate9::LongPrefix>,
    pairs: deflate9::Pairs,
    /// Created on first use (short level-9 texts never need it).
    zlib: Option<Deflater>,
}

impl GzipEngine {
    fn new(level: i32) -> Result<Self, TextError> {
        Ok(Self {
            level,
            prefix: None,
            long_prefix: None,
            pairs: deflate9::Pairs::new(),
            zlib: None,
        })
    }

    /// Raw length of `query + b" " + reference` without zlib, at level 9: one block
    /// after the query's shared parse (joint texts of at most `deflate9::MAX_INPUT` =
    /// 16382 bytes), else the query's multi-block parse resumed. `None` at other levels,
    /// or when the long scratch cannot be allocated (the caller then compresses the
    /// joint text itself, which reports the error).
    fn joint_raw_len(&mut self, query: &[u8], reference: &[u8]) -> Option<u64> {
        self.load_prefix(query);
        if let Some(prefix) = &self.prefix {
            if let Some(n) = self.pairs.raw_len(prefix, reference) {
                return Some(n);
            }
        }
        self.long_joint_raw_len(query, reference)
    }

    /// [`GzipEngine::joint_raw_len`] for joint texts longer than `deflate9::MAX_INPUT`.
    fn long_joint_raw_len(&mut self, query: &[u8], reference: &[u8]) -> Option<u64> {
        let total = query.len() + 1 + reference.len();
        if self.level != 9 || total <= deflate9::MAX_INPUT || total > deflate9::MAX_LONG_INPUT {
            return None;
        }
        let same = self
            .long_prefix
            .as_ref()
            .is_some_and(|p| is_query_prefix(p.text(), query));
        if !same {
            self.long_prefix = None;
            self.long_prefix = deflate9::LongPrefix::new(&mut self.pairs, query, b" ").ok();
        }
        self.pairs
            .long_raw_len(self.long_prefix.as_ref()?, reference)
            .ok()
    }

    /// [`GzipEngine::joint_raw_len`] of two references (trees built together).
    fn joint_raw_len2(&mut self, query: &[u8], references: [&[u8]; 2]) -> [Option<u64>; 2] {
        self.load_prefix(query);
        match &self.prefix {
            Some(prefix) => self.pairs.raw_len2(prefix, references),
            None => [None, None],
        }
    }

    /// Makes `prefix` the shared parse of `query + b" "` (level 9; `None` for queries
    /// too long to share), rebuilding it when the query changes.
    fn load_prefix(&mut self, query: &[u8]) {
        if self.level != 9 {
            self.prefix = None;
            return;
        }
        let same = self
            .prefix
            .as_ref()
            .is_some_and(|p| is_query_prefix(p.text(), query));
        if !same {
            match &mut self.prefix {
                Some(p) => {
                    if !p.rebuild(query, b" ") {
                        self.prefix = None;
                    }
                }
                slot => *slot = deflate9::Prefix::new(query, b" "),
            }
        }
    }

    fn raw_len(&mut self, data: &[u8], scratch: &mut [u8]) -> Result<u64, TextError> {
        let level = self.level;
        if level == 9 && data.len() <= deflate9::MAX_LONG_INPUT {
            return Ok(self.pairs.single_len(data)?);
        }
        let deflater = match &mut self.zlib {
            Some(d) => d,
            slot => slot.insert(Deflater::new(level)?),
        };
        if level == 0 {
            return deflater.stored_len(data);
        }
        deflater.raw_len(data, scratch)
    }
}

/// Whether a prefix's text is `query + b" "` (the query it was built for).
fn is_query_prefix(text: &[u8], query: &[u8]) -> bool {
    text.len() == query.len() + 1 && text[..query.len()] == *query
}

/// A raw-deflate zlib stream, reset (`deflateReset`) between texts.
struct Deflater {
    // Boxed: zlib keeps a pointer back to the stream and checks it on every call.
    strm: Box<z::z_stream>,
}

// SAFETY: the stream is owned exclusively by this value; zlib has no thread affinity.
unsafe impl Send for Deflater {}

impl Deflater {
    /// Python's gzip configuration.
    fn new(level: i32) -> Result<Self, TextError> {
        let mut strm = Box::new(z::z_stream {
            next_in: std::ptr::null_mut(),
            avail_in: 0,
            total_in: 0,
            next_out: std::ptr::null_mut(),
            avail_out: 0,
            total_out: 0,
            msg: std::ptr::null_mut(),
            state: std::ptr::null_mut(),
            zalloc,
            zfree,
            opaque: std::ptr::null_mut(),
            data_type: 0,
            adler: 0,
            reserved: 0,
        });
        // Python's gzip: zlib.compressobj(level, DEFLATED, -MAX_WBITS, DEF_MEM_LEVEL=8, 0).
        // SAFETY: strm is a valid, boxed z_stream with allocator functions set.
        let rc = unsafe {
            z::deflateInit2_(
                &mut *strm,
                level as c_int,
                z::Z_DEFLATED,
                -STD_WBITS,
                STD_MEM_LEVEL,
                z::Z_DEFAULT_STRATEGY,
                z::zlibVersion(),
                std::mem::size_of::<z::z_stream>() as c_int,
            )
        };
        if rc != z::Z_OK {
            return Err(TextError::Codec(format!("deflateInit2 failed ({rc})")));
        }
        Ok(Self { strm })
    }

    /// Level 0: the raw length of `data` exactly as Python's `zlib.compress` makes it.
    ///
    /// Stored (level-0) output is not independent of the output buffer: zlib cuts a
    /// stored block wherever the caller's buffer runs out (and then emits the rest of
    /// its window as a block of its own), so the number of 5-byte block headers
    /// depends on where the buffer fills up. CPython grows its output buffer in blocks
    /// of [`PY_OUTPUT_BLOCKS`] bytes, calling `deflate` again only when the current
    /// block is full; this replays that schedule. A block is never made bigger than the
    /// whole remaining output can be, which changes nothing zlib decides (it only
    /// compares the room left against what it still has to write), and it is
    /// allocated fallibly: at most about the input's size.
    fn stored_len(&mut self, data: &[u8]) -> Result<u64, TextError> {
        // Stored blocks hold at least 16 KiB except the last ones; 5 bytes per header.
        let bound = data
            .len()
            .checked_add(5 * (data.len() / 16384 + 4) + 64)
            .ok_or(crate::alloc::AllocError {
                what: "level-0 output",
                bytes: usize::MAX,
            })?;
        let mut out: Vec<u8> = Vec::new();
        let strm = &mut *self.strm;
        let mut written = 0usize; // bytes of earlier output blocks
        let mut n_blocks = 0usize;
        strm.next_out = std::ptr::null_mut();
        let mut grow = |strm: &mut z::z_stream, written: &mut usize| -> Result<(), TextError> {
            if !strm.next_out.is_null() {
                *written += strm.next_out as usize - out.as_ptr() as usize;
            }
            let want = PY_OUTPUT_BLOCKS[n_blocks.min(PY_OUTPUT_BLOCKS.len() - 1)];
            n_blocks += 1;
            let size = want.min(bound.saturating_sub(*written) + 64);
            if out.len() < size {
                let more = size - out.len();
                crate::alloc::try_reserve(&mut out, more, "level-0 output")?;
                out.resize(size, 0);
            }
            strm.next_out = out.as_mut_ptr();
            strm.avail_out = size as c_uint;
            Ok(())
        };
        grow(strm, &mut written)?;
        let mut rest = data;
        loop {
            let take = rest.len().min(c_uint::MAX as usize);
            strm.next_in = rest.as_ptr() as *mut u8;
            strm.avail_in = take as c_uint;
            rest = &rest[take..];
            let flush = if rest.is_empty() {
                z::Z_FINISH
            } else {
                z::Z_NO_FLUSH
            };
            loop {
                if strm.avail_out == 0 {
                    grow(strm, &mut written)?;
                }
                // SAFETY: in/out pointers cover live buffers of the lengths given.
                let rc = unsafe { z::deflate(strm, flush) };
                if rc == z::Z_STREAM_ERROR {
                    return Err(TextError::Codec(format!("deflate failed ({rc})")));
                }
                if strm.avail_out != 0 {
                    break;
                }
            }
            if flush == z::Z_FINISH {
                break;
            }
        }
        #[allow(clippy::unnecessary_cast)] // uLong is u32 on some targets
        let n = strm.total_out as u64;
        // SAFETY: the stream was initialised by deflateInit2.
        let rc = unsafe { z::deflateReset(strm) };
        if rc != z::Z_OK {
            return Err(TextError::Codec(format!("deflateReset failed ({rc})")));
        }
        Ok(n)
    }

    /// Length of the raw deflate stream of `data`; the stream is reset afterwards.
    fn raw_len(&mut self, data: &[u8], scratch: &mut [u8]) -> Result<u64, TextError> {
        let strm = &mut *self.strm;
        let mut rest = data;
        loop {
            // avail_in is 32-bit: feed at most u32::MAX bytes per call.
            let take = rest.len().min(c_uint::MAX as usize);
            strm.next_in = rest.as_ptr() as *mut u8;
            strm.avail_in = take as c_uint;
            strm.next_out = scratch.as_mut_ptr();
            strm.avail_out = scratch.len() as c_uint;
            let flush = if take == rest.len() {
                z::Z_FINISH
            } else {
                z::Z_NO_FLUSH
            };
            // SAFETY: in/out pointers cover live buffers of the lengths given.
            let rc = unsafe { z::deflate(strm, flush) };
            let used = take - strm.avail_in as usize;
            rest = &rest[used..];
            match rc {
                z::Z_STREAM_END => break,
                z::Z_OK | z::Z_BUF_ERROR => continue,
                _ => return Err(TextError::Codec(format!("deflate failed ({rc})"))),
            }
        }
        #[allow(clippy::unnecessary_cast)] // uLong is u32 on some targets
        let n = strm.total_out as u64;
        // SAFETY: the stream was initialised by deflateInit2.
        let rc = unsafe { z::deflateReset(strm) };
        if rc != z::Z_OK {
            return Err(TextError::Codec(format!("deflateReset failed ({rc})")));
        }
        Ok(n)
    }
}

/// zlib's own raw deflate length of `data` (Python's gzip parameters), bypassing the
/// emulator: the reference the emulator is tested against.
#[cfg(test)]
pub(crate) fn zlib_raw_len(level: i32, data: &[u8]) -> u64 {
    let mut scratch = vec![0u8; SCRATCH];
    Deflater::new(level)
        .unwrap()
        .raw_len(data, &mut scratch)
        .unwrap()
}

impl Drop for Deflater {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`, ended exactly once here.
        unsafe {
            z::deflateEnd(&mut *self.strm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_levels_are_checked() {
        for (c, n) in Codec::ALL {
            assert_eq!(Codec::from_name(n).unwrap(), c);
            assert!(Compressor::new(c, None).is_ok());
        }
        assert!(Codec::from_name("brotli").is_err());
        assert!(Compressor::new(Codec::Gzip, Some(10)).is_err());
        assert!(Compressor::new(Codec::Bz2, Some(0)).is_err());
        assert!(Compressor::new(Codec::Zstd, Some(23)).is_err());
    }

    #[test]
    fn reused_engine_matches_fresh_engine() {
        let texts: Vec<Vec<u8>> = (0..50)
            .map(|i| format!("text number {i} says {} hello", "ab".repeat(i * 7)).into_bytes())
            .collect();
        for (c, _) in Codec::ALL {
            let spec = Compressor::new(c, None).unwrap();
            let mut reused = spec.engine().unwrap();
            for t in &texts {
                let fresh = spec.engine().unwrap().compressed_len(t).unwrap();
                assert_eq!(reused.compressed_len(t).unwrap(), fresh, "{c:?}");
            }
        }
    }

    #[test]
    fn gzip_known_lengths() {
        // len(gzip.compress(b"hello world", 9)) == 31; of b"a" * 1000 == 29.
        let mut e = Compressor::new(Codec::Gzip, None)
            .unwrap()
            .engine()
            .unwrap();
        assert_eq!(e.compressed_len(b"hello world").unwrap(), 31);
        assert_eq!(e.compressed_len(&[b'a'; 1000]).unwrap(), 29);
        // Larger than the scratch buffer: several deflate calls.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i * 7919 % 251) as u8).collect();
        let once = e.compressed_len(&big).unwrap();
        assert_eq!(e.compressed_len(&big).unwrap(), once);
    }
}
