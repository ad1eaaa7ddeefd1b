//! A cache-blocked `f32` matrix product `C = A · Bᵀ` for row-major `A` (m x d) and
//! `B` (n x d), the shape of every "all pairwise dot products" problem in thrifty
//! (nearest neighbours, class means, k-means, pruning scores).
//!
//! # Design
//! The classic BLIS structure, specialised to the "NT" case:
//! * both operands are **packed** into panels — `A` into panels of [`Isa::mr`] rows,
//!   `B` into panels of [`Isa::nr`] rows — stored depth-major (`panel[p * w + i]`), zero
//!   padded past the last row, optionally scaling each row by an `f64` factor while
//!   packing (cosine metrics normalise rows this way, with no extra copy);
//! * a **register-tiled micro-kernel** computes one `mr x nr` tile of `C` with
//!   `mr * nr / lanes` vector accumulators;
//! * [`compute_block`] runs the micro-kernel over a block of `A` panels (kept in L1 one
//!   at a time) against a block of `B` panels (sized for L2 by the caller, see
//!   [`b_block_rows`]), in depth chunks of at most [`KC`].
//!
//! The instruction set is picked at run time ([`Isa::detect`]; arg-max products of at
//! most 16 columns: [`Isa::for_columns`]): AVX-512F (12 x 32 tile),
//! AVX2 + FMA (6 x 16 tile) or portable scalar code (4 x 8 tile). Release builds never
//! assume a CPU (`target-cpu` is not set).
//!
//! # Numerical semantics
//! Every entry is computed as `c = fma(a[p], b[p], c)` for `p = 0, 1, ..., d - 1`,
//! starting from `c = 0`, in `f32`. The sequence does not depend on where the entry lies
//! in a tile, on the block sizes, on the thread count, or on the instruction set (the
//! AVX2 and AVX-512 kernels give bit-identical results), so identical rows of `B` give
//! bit-identical entries and results never depend on how the work was split. Only the
//! scalar fallback differs: it rounds after the multiply and after the add (no FMA).

use crate::alloc::AllocError;
use std::ops::Range;

use rayon::prelude::*;

use crate::linalg::MatRef;

/// Depth chunk: the `A` panel (`KC * mr` floats) stays in L1 while a block of `B`
/// panels streams from L2.
pub const KC: usize = 384;

/// The micro-kernel family used for a product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust (mul then add, no FMA); 4 x 8 tiles.
    Scalar,
    /// AVX2 + FMA; 6 x 16 tiles.
    Avx2Fma,
    /// AVX-512F; 12 x 32 tiles.
    Avx512,
}

impl Isa {
    /// The kernel of [`crate::cpu::level`]: the fastest the running CPU supports,
    /// capped by `THRIFTY_ISA` (`scalar`, `avx2`, `avx512`).
    pub fn detect() -> Isa {
        match crate::cpu::level() {
            crate::cpu::Level::Scalar => Isa::Scalar,
            crate::cpu::Level::Avx2 => Isa::Avx2Fma,
            crate::cpu::Level::Avx512 => Isa::Avx512,
        }
    }

    /// The kernel for an arg-max product against `cols` rows of `B` (the columns of
    /// `C`, e.g. k-means centroids): [`Isa::detect`], except that AVX-512 hands products
    /// of at most 16 columns to the AVX2 kernel, whose 6 x 16 tile leaves none of its
    /// columns idle where the 12 x 32 tile leaves half or more (k-means at k = 16 on
    /// 20k x 64: about 20% faster). The kernels agree bit for bit.
    pub fn for_columns(cols: usize) -> Isa {
        match Isa::detect() {
            Isa::Avx512 if cols <= Isa::Avx2Fma.nr() => Isa::Avx2Fma,
            isa => isa,
        }
    }

    /// Every kernel the running CPU supports, slowest first (always includes `Scalar`;
    /// `THRIFTY_ISA` does not limit this list, which tests use to compare kernels).
    pub fn available() -> Vec<Isa> {
        let mut v = vec![Isa::Scalar];
        let detected = crate::cpu::detected();
        if detected >= crate::cpu::Level::Avx2 {
            v.push(Isa::Avx2Fma);
        }
        if detected >= crate::cpu::Level::Avx512 {
            v.push(Isa::Avx512);
        }
        v
    }

    /// Rows of `A` per micro-tile.
    pub const fn mr(self) -> usize {
        match self {
            Isa::Scalar => 4,
            Isa::Avx2Fma => 6,
            Isa::Avx512 => 12,
        }
    }

    /// Rows of `B` (columns of `C`) per micro-tile.
    pub const fn nr(self) -> usize {
        match self {
            Isa::Scalar => 8,
            Isa::Avx2Fma => 16,
            Isa::Avx512 => 32,
        }
    }

    /// Lanes of the running arg-max state per row in [`compute_block_argmax`]: each
    /// micro-tile row is two vectors of `nr / 2` columns.
    pub const fn argmax_lanes(self) -> usize {
        self.nr() / 2
    }

    /// Short name, as shown by diagnostics.
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Avx512 => "avx512f",
        }
    }
}

/// A heap buffer of `f32` aligned to 64 bytes (one cache line, one AVX-512 vector).
pub struct AlignedBuf {
    blocks: Vec<Line>,
    len: usize,
}

#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

impl AlignedBuf {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        Self {
            blocks: vec![Line([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }

    /// The contents.
    pub fn as_slice(&self) -> &[f32] {
        // SAFETY: `Line` is `repr(C)` over `[f32; 16]`, so the blocks are a contiguous
        // run of at least `len` initialised f32 values.
        unsafe { std::slice::from_raw_parts(self.blocks.as_ptr().cast::<f32>(), self.len) }
    }

    /// The contents, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        // SAFETY: as in `as_slice`, and we hold the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.blocks.as_mut_ptr().cast::<f32>(), self.len) }
    }
}

/// Number of floats [`pack_rows`] writes for `rows` rows of depth `d` in panels of `w`.
pub fn packed_len(rows: usize, d: usize, w: usize) -> usize {
    rows.div_ceil(w) * w * d
}

/// Pack rows `rows` of `x` into panels of `w` rows: panel `q`, depth `p`, row `i` goes to
/// `out[(q * d + p) * w + i]`. Rows past the range are zero. With `scale`, row `r` is
/// multiplied by `scale[r]` in `f64` and rounded once to `f32` (exactly what
/// [`crate::linalg::normalize_rows`] does with `1 / norm`).
pub fn pack_rows(
    x: MatRef<'_>,
    rows: Range<usize>,
    scale: Option<&[f64]>,
    w: usize,
    out: &mut [f32],
) {
    let d = x.cols();
    let n = rows.len();
    assert_eq!(
        out.len(),
        packed_len(n, d, w),
        "packed buffer has the wrong size"
    );
    if out.is_empty() {
        return; // no rows, or no columns
    }
    for (q, panel) in out.chunks_exact_mut(w * d).enumerate() {
        let mut i0 = 0;
        if scale.is_none() {
            // whole groups of four rows: 4 x 4 blocks transposed in registers
            while i0 + 4 <= w && q * w + i0 + 4 <= n {
                let src: [&[f32]; 4] = std::array::from_fn(|k| x.row(rows.start + q * w + i0 + k));
                transpose_rows4(src, &mut panel[i0..], w);
                i0 += 4;
            }
        }
        for i in i0..w {
            let r = q * w + i;
            if r >= n {
                for p in 0..d {
                    panel[p * w + i] = 0.0;
                }
                continue;
            }
            let src = x.row(rows.start + r);
            match scale {
                None => {
                    for (p, &v) in src.iter().enumerate() {
                        panel[p * w + i] = v;
                    }
                }
                Some(s) => {
                    let s = s[rows.start + r];
                    for (p, &v) in src.iter().enumerate() {
                        panel[p * w + i] = (f64::from(v) * s) as f32;
                    }
                }
            }
        }
    }
}

/// `panel[p * w + k] = src[k][p]` for the four rows `src` (of equal length `d`) and
/// every depth `p`: [`pack_rows`]'s layout for four consecutive rows of a panel, with
/// `panel` starting at the first of them. Four depths at a time as 4 x 4 transposes
/// (SSE, part of every x86-64 CPU), the tail one value at a time.
fn transpose_rows4(src: [&[f32]; 4], panel: &mut [f32], w: usize) {
    let d = src[0].len();
    assert!(w >= 4 && src.iter().all(|r| r.len() == d));
    assert!(d == 0 || panel.len() > (d - 1) * w + 3);
    let mut p = 0;
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        while p + 4 <= d {
            // SAFETY: depths p..p+4 lie within every row (p + 4 <= d), and the stores
            // reach at most index (p + 3) * w + 3 <= (d - 1) * w + 3 < panel.len()
            // (asserted above); SSE is part of x86-64.
            unsafe {
                let [a, b, c, e] = src.map(|r| _mm_loadu_ps(r.as_ptr().add(p)));
                let (ab_lo, ce_lo) = (_mm_unpacklo_ps(a, b), _mm_unpacklo_ps(c, e));
                let (ab_hi, ce_hi) = (_mm_unpackhi_ps(a, b), _mm_unpackhi_ps(c, e));
                let o = panel.as_mut_ptr().add(p * w);
                _mm_storeu_ps(o, _mm_movelh_ps(ab_lo, ce_lo));
                _mm_storeu_ps(o.add(w), _mm_movehl_ps(ce_lo, ab_lo));
                _mm_storeu_ps(o.add(2 * w), _mm_movelh_ps(ab_hi, ce_hi));
                _mm_storeu_ps(o.add(3 * w), _mm_movehl_ps(ce_hi, ab_hi));
            }
            p += 4;
        }
    }
    for p in p..d {
        for (k, r) in src.iter().enumerate() {
            panel[p * w + k] = r[p];
        }
    }
}

/// Rows of `B` per L2 block for depth `d`: about 384 KiB of packed panels, a multiple of
/// `isa.nr()`, at least one panel.
pub fn b_block_rows(isa: Isa, d: usize) -> usize {
    let nr = isa.nr();
    let kc = d.clamp(1, KC);
    let rows = (384 * 1024 / 4) / kc;
    (rows / nr).max(1) * nr
}

/// `C = A · Bᵀ` for one block: `a` holds whole packed panels of `isa.mr()` rows and `b`
/// whole packed panels of `isa.nr()` rows, both of depth `d`. `c` is row-major with row
/// stride `ldc >= (b panels) * nr` and at least `(a panels) * mr` rows; it is overwritten.
pub fn compute_block(isa: Isa, d: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize) {
    let (mr, nr) = (isa.mr(), isa.nr());
    assert!(d > 0 && a.len().is_multiple_of(mr * d) && b.len().is_multiple_of(nr * d));
    let (pa, pb) = (a.len() / (mr * d), b.len() / (nr * d));
    assert!(ldc >= pb * nr && c.len() >= (pa * mr - 1) * ldc + pb * nr);
    // SAFETY: the sizes were checked above; the target features were detected at run
    // time before `isa` could be constructed with them (`Isa::available`).
    unsafe {
        match isa {
            Isa::Scalar => block_scalar(d, pa, pb, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => x86::block_avx2(d, pa, pb, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                x86::block_avx512(d, pa, pb, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc)
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernels on a non-x86 target"),
        }
    }
}

/// The arg-max epilogue of [`compute_block_argmax`]: score `alpha * c + bias[j]` for
/// column `j` of the block (one FMA, so `alpha = 2` and `bias = -|b|²` give exactly the
/// `f32` value of `2 c - |b|²`, and `alpha = 1`, `bias = 0` give `c`), and the running
/// best score and column of every row, kept per lane (see [`Isa::argmax_lanes`]).
pub struct ArgMax<'a> {
    /// One value per column of the block, padded to whole panels (`-inf` marks padding).
    pub bias: &'a [f32],
    /// Scale of the product: 1 or 2 (exact, so every kernel rounds the score once).
    pub alpha: f32,
    /// Global index of the block's first column.
    pub col0: usize,
    /// Best score so far, `lanes` per row of `A` (start at `-inf`, see [`argmax_init`]).
    pub val: &'a mut [f32],
    /// Column of the best score, `lanes` per row (start at 0).
    pub idx: &'a mut [i32],
}

/// Set a running arg-max state to "nothing seen" (`-inf` at column 0).
pub fn argmax_init(val: &mut [f32], idx: &mut [i32]) {
    val.fill(f32::NEG_INFINITY);
    idx.fill(0);
}

/// The best `(score, column)` of one row's lanes: the largest score, ties to the lowest
/// column. Together with the lane-wise update (a lane takes a score only when it is
/// strictly greater, and every lane sees its columns in increasing order) this is exactly
/// the first maximum of a scan over all columns in order; a row that never saw a score
/// above `-inf` (or only NaN) gets column 0.
pub fn argmax_reduce(val: &[f32], idx: &[i32]) -> (f32, usize) {
    let mut best = (f32::NEG_INFINITY, 0i32);
    for (&v, &i) in val.iter().zip(idx) {
        if v > best.0 || (v == best.0 && i < best.1) {
            best = (v, i);
        }
    }
    (best.0, best.1 as usize)
}

/// [`compute_block`] fused with a row-wise arg-max: instead of storing the block of `C`,
/// every row's running best of `am.alpha * C[i, j] + am.bias[j]` is updated while the
/// micro-tile is still in registers (the distance matrix is never written). Every
/// product is the same FMA chain as in [`compute_block`], so the scores are bit-identical
/// to scoring a stored `C`.
///
/// `c` is scratch for depth chunks before the last one (only when `d > KC`, same shape
/// rules as in [`compute_block`]; otherwise it may be empty). `am.val` and `am.idx` hold
/// `isa.argmax_lanes()` entries per row of the `A` panels.
pub fn compute_block_argmax(
    isa: Isa,
    d: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    am: ArgMax<'_>,
) {
    let (mr, nr) = (isa.mr(), isa.nr());
    assert!(d > 0 && a.len().is_multiple_of(mr * d) && b.len().is_multiple_of(nr * d));
    let (pa, pb) = (a.len() / (mr * d), b.len() / (nr * d));
    if d > KC {
        assert!(ldc >= pb * nr && c.len() >= (pa * mr - 1) * ldc + pb * nr);
    }
    let lanes = isa.argmax_lanes();
    assert!(am.alpha == 1.0 || am.alpha == 2.0, "alpha must be 1 or 2");
    assert!(am.bias.len() >= pb * nr);
    assert!(am.val.len() >= pa * mr * lanes && am.idx.len() >= pa * mr * lanes);
    assert!(am.col0 + pb * nr <= i32::MAX as usize);
    let ep = Epilogue {
        bias: am.bias.as_ptr(),
        alpha: am.alpha,
        col0: am.col0 as i32,
        val: am.val.as_mut_ptr(),
        idx: am.idx.as_mut_ptr(),
    };
    // SAFETY: the sizes were checked above (`c` is only touched when `d > KC`); the
    // target features were detected at run time before `isa` could be constructed.
    unsafe {
        match isa {
            Isa::Scalar => {
                block_scalar_argmax(d, pa, pb, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, ep)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                x86::block_avx2_argmax(d, pa, pb, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, ep)
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                x86::block_avx512_argmax(d, pa, pb, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, ep)
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("x86 kernels on a non-x86 target"),
        }
    }
}

/// Raw pointers of an [`ArgMax`], for the kernels.
#[derive(Clone, Copy)]
struct Epilogue {
    bias: *const f32,
    alpha: f32,
    col0: i32,
    val: *mut f32,
    idx: *mut i32,
}

/// The loop nest of [`compute_block_argmax`]: as [`block_loops`], but the last depth chunk
/// runs the fused kernel (which reads the earlier chunks' partial sums from `c`).
macro_rules! block_loops_argmax {
    ($kernel:ident, $fused:ident, $mr:expr, $nr:expr, $d:ident, $pa:ident, $pb:ident, $a:ident, $b:ident, $c:ident, $ldc:ident, $ep:ident) => {{
        let lanes = $nr / 2;
        let mut p0 = 0;
        while p0 < $d {
            let kc = ($d - p0).min(KC);
            let last = p0 + kc == $d;
            for ia in 0..$pa {
                let ap = $a.add(ia * $mr * $d + p0 * $mr);
                // `c` may be empty (d <= KC): never offset it in bounds-checked ways.
                let cp = $c.wrapping_add(ia * $mr * $ldc);
                let val = $ep.val.add(ia * $mr * lanes);
                let idx = $ep.idx.add(ia * $mr * lanes);
                for jb in 0..$pb {
                    let bp = $b.add(jb * $nr * $d + p0 * $nr);
                    if last {
                        $fused(
                            kc,
                            ap,
                            bp,
                            cp.wrapping_add(jb * $nr),
                            $ldc,
                            p0 > 0,
                            $ep.bias.add(jb * $nr),
                            $ep.alpha,
                            $ep.col0 + (jb * $nr) as i32,
                            val,
                            idx,
                        );
                    } else {
                        $kernel(kc, ap, bp, cp.wrapping_add(jb * $nr), $ldc, p0 > 0);
                    }
                }
            }
            p0 += kc;
        }
    }};
}

const SCALAR_MR: usize = 4;
const SCALAR_NR: usize = 8;

/// The portable `4 x 8` tile `C (+)= A_panel · B_panel` over `kc` steps (loaded from `c`
/// first when `acc`).
#[inline(always)]
unsafe fn acc_scalar(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *const f32,
    ldc: usize,
    acc: bool,
) -> [[f32; SCALAR_NR]; SCALAR_MR] {
    const MR: usize = SCALAR_MR;
    const NR: usize = SCALAR_NR;
    let mut t = [[0.0f32; NR]; MR];
    if acc {
        for (i, row) in t.iter_mut().enumerate() {
            for (j, v) in row.iter_mut().enumerate() {
                *v = *c.add(i * ldc + j);
            }
        }
    }
    let a = std::slice::from_raw_parts(a, kc * MR);
    let b = std::slice::from_raw_parts(b, kc * NR);
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for (row, &ai) in t.iter_mut().zip(ap) {
            for (v, &bj) in row.iter_mut().zip(bp) {
                *v += ai * bj;
            }
        }
    }
    t
}

/// # Safety
/// As [`block_scalar`], plus the epilogue buffers of [`compute_block_argmax`].
#[allow(clippy::too_many_arguments)]
unsafe fn block_scalar_argmax(
    d: usize,
    pa: usize,
    pb: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    ep: Epilogue,
) {
    block_loops_argmax!(
        kernel_scalar,
        kernel_scalar_argmax,
        4,
        8,
        d,
        pa,
        pb,
        a,
        b,
        c,
        ldc,
        ep
    );
}

#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_scalar_argmax(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    acc: bool,
    bias: *const f32,
    alpha: f32,
    col0: i32,
    val: *mut f32,
    idx: *mut i32,
) {
    const LANES: usize = SCALAR_NR / 2;
    let t = acc_scalar(kc, a, b, c, ldc, acc);
    for (i, row) in t.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            // alpha is 1 or 2: the product is exact, so this is one rounding as the FMA
            let s = alpha * v + *bias.add(j);
            let l = i * LANES + j % LANES;
            if s > *val.add(l) {
                *val.add(l) = s;
                *idx.add(l) = col0 + j as i32;
            }
        }
    }
}

/// The loop nest shared by every kernel: depth chunks, then `A` panels (L1), then `B`
/// panels (L2).
macro_rules! block_loops {
    ($kernel:ident, $mr:expr, $nr:expr, $d:ident, $pa:ident, $pb:ident, $a:ident, $b:ident, $c:ident, $ldc:ident) => {{
        let mut p0 = 0;
        while p0 < $d {
            let kc = ($d - p0).min(KC);
            for ia in 0..$pa {
                let ap = $a.add(ia * $mr * $d + p0 * $mr);
                let cp = $c.add(ia * $mr * $ldc);
                for jb in 0..$pb {
                    let bp = $b.add(jb * $nr * $d + p0 * $nr);
                    $kernel(kc, ap, bp, cp.add(jb * $nr), $ldc, p0 > 0);
                }
            }
            p0 += kc;
        }
    }};
}

/// # Safety
/// `a`, `b`, `c` must cover `pa` / `pb` packed panels and the `C` rows and columns.
unsafe fn block_scalar(
    d: usize,
    pa: usize,
    pb: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
) {
    block_loops!(kernel_scalar, 4, 8, d, pa, pb, a, b, c, ldc);
}

#[inline(always)]
unsafe fn kernel_scalar(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    acc: bool,
) {
    let t = acc_scalar(kc, a, b, c, ldc, acc);
    for (i, row) in t.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            *c.add(i * ldc + j) = v;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Epilogue, KC};
    use std::arch::x86_64::*;

    /// The kernels of one x86 vector width: an `MR x 2W` register tile (`W` lanes per
    /// vector) computing `C (+)= A_panel · B_panel`, stored, or folded into the running
    /// arg-max of [`super::compute_block_argmax`]. The two widths differ only in the
    /// intrinsics named here and in three small helpers per width (`$iota`, `$load_idx`,
    /// `$update`, `$store_idx`): the loops are one text.
    macro_rules! tile_kernels {
        (
            feature = $feat:literal, mr = $mr:literal, w = $w:literal, vec = $v:ty,
            zero = $zero:ident, load = $load:ident, store = $store:ident,
            splat = $splat:ident, fma = $fma:ident,
            acc = $acc:ident, kernel = $kernel:ident, block = $block:ident,
            kernel_argmax = $kargmax:ident, block_argmax = $bargmax:ident,
            iota = $iota:ident, load_idx = $load_idx:ident, update = $update:ident,
            store_idx = $store_idx:ident
        ) => {
            /// The register tile `C (+)= A_panel · B_panel` over `kc` steps (loaded
            /// from `c` first when `acc`); callers store it or run an epilogue on it.
            #[inline(always)]
            unsafe fn $acc(
                kc: usize,
                a: *const f32,
                b: *const f32,
                c: *const f32,
                ldc: usize,
                acc: bool,
            ) -> [[$v; 2]; $mr] {
                let mut r = [[$zero(); 2]; $mr];
                if acc {
                    for (i, ri) in r.iter_mut().enumerate() {
                        ri[0] = $load(c.add(i * ldc));
                        ri[1] = $load(c.add(i * ldc + $w));
                    }
                }
                for p in 0..kc {
                    let b0 = $load(b.add(p * 2 * $w));
                    let b1 = $load(b.add(p * 2 * $w + $w));
                    let ap = a.add(p * $mr);
                    for (i, ri) in r.iter_mut().enumerate() {
                        let av = $splat(*ap.add(i));
                        ri[0] = $fma(av, b0, ri[0]);
                        ri[1] = $fma(av, b1, ri[1]);
                    }
                }
                r
            }

            #[inline(always)]
            unsafe fn $kernel(
                kc: usize,
                a: *const f32,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                acc: bool,
            ) {
                let r = $acc(kc, a, b, c, ldc, acc);
                for (i, ri) in r.iter().enumerate() {
                    $store(c.add(i * ldc), ri[0]);
                    $store(c.add(i * ldc + $w), ri[1]);
                }
            }

            /// # Safety
            /// The target features must be available; pointers as in `compute_block`.
            #[target_feature(enable = $feat)]
            pub unsafe fn $block(
                d: usize,
                pa: usize,
                pb: usize,
                a: *const f32,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
            ) {
                block_loops!($kernel, $mr, 2 * $w, d, pa, pb, a, b, c, ldc);
            }

            /// # Safety
            /// The target features must be available; pointers as in
            /// `compute_block_argmax`.
            #[target_feature(enable = $feat)]
            #[allow(clippy::too_many_arguments)]
            pub(super) unsafe fn $bargmax(
                d: usize,
                pa: usize,
                pb: usize,
                a: *const f32,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                ep: Epilogue,
            ) {
                block_loops_argmax!($kernel, $kargmax, $mr, 2 * $w, d, pa, pb, a, b, c, ldc, ep);
            }

            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn $kargmax(
                kc: usize,
                a: *const f32,
                b: *const f32,
                c: *mut f32,
                ldc: usize,
                acc: bool,
                bias: *const f32,
                alpha: f32,
                col0: i32,
                val: *mut f32,
                idx: *mut i32,
            ) {
                let r = $acc(kc, a, b, c, ldc, acc);
                let al = $splat(alpha);
                let bias0 = $load(bias);
                let bias1 = $load(bias.add($w));
                let (i0, i1) = $iota(col0);
                for (i, ri) in r.iter().enumerate() {
                    let vp = val.add(i * $w);
                    let ip = idx.add(i * $w);
                    let (mut v, mut x) = ($load(vp), $load_idx(ip));
                    (v, x) = $update(v, x, $fma(al, ri[0], bias0), i0);
                    (v, x) = $update(v, x, $fma(al, ri[1], bias1), i1);
                    $store(vp, v);
                    $store_idx(ip, x);
                }
            }
        };
    }

    tile_kernels!(
        feature = "avx2,fma",
        mr = 6,
        w = 8,
        vec = __m256,
        zero = _mm256_setzero_ps,
        load = _mm256_loadu_ps,
        store = _mm256_storeu_ps,
        splat = _mm256_set1_ps,
        fma = _mm256_fmadd_ps,
        acc = acc_avx2,
        kernel = kernel_avx2,
        block = block_avx2,
        kernel_argmax = kernel_avx2_argmax,
        block_argmax = block_avx2_argmax,
        iota = iota_avx2,
        load_idx = load_idx_avx2,
        update = update_avx2,
        store_idx = store_idx_avx2
    );

    tile_kernels!(
        feature = "avx512f",
        mr = 12,
        w = 16,
        vec = __m512,
        zero = _mm512_setzero_ps,
        load = _mm512_loadu_ps,
        store = _mm512_storeu_ps,
        splat = _mm512_set1_ps,
        fma = _mm512_fmadd_ps,
        acc = acc_avx512,
        kernel = kernel_avx512,
        block = block_avx512,
        kernel_argmax = kernel_avx512_argmax,
        block_argmax = block_avx512_argmax,
        iota = iota_avx512,
        load_idx = load_idx_avx512,
        update = update_avx512,
        store_idx = store_idx_avx512
    );

    /// The column indices `col0 + 0..8` and `col0 + 8..16`, as float bit patterns (the
    /// AVX2 blends select floats).
    #[inline(always)]
    unsafe fn iota_avx2(col0: i32) -> (__m256, __m256) {
        let i0 = _mm256_add_epi32(
            _mm256_set1_epi32(col0),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        );
        let i1 = _mm256_add_epi32(i0, _mm256_set1_epi32(8));
        (_mm256_castsi256_ps(i0), _mm256_castsi256_ps(i1))
    }

    #[inline(always)]
    unsafe fn load_idx_avx2(p: *const i32) -> __m256 {
        _mm256_loadu_ps(p.cast::<f32>())
    }

    #[inline(always)]
    unsafe fn store_idx_avx2(p: *mut i32, x: __m256) {
        _mm256_storeu_ps(p.cast::<f32>(), x)
    }

    /// Lanes where `s > v` take `s` and the index `i`.
    #[inline(always)]
    unsafe fn update_avx2(v: __m256, x: __m256, s: __m256, i: __m256) -> (__m256, __m256) {
        let m = _mm256_cmp_ps::<_CMP_GT_OQ>(s, v);
        (_mm256_blendv_ps(v, s, m), _mm256_blendv_ps(x, i, m))
    }

    /// The column indices `col0 + 0..16` and `col0 + 16..32`.
    #[inline(always)]
    unsafe fn iota_avx512(col0: i32) -> (__m512i, __m512i) {
        let i0 = _mm512_add_epi32(
            _mm512_set1_epi32(col0),
            _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        );
        (i0, _mm512_add_epi32(i0, _mm512_set1_epi32(16)))
    }

    #[inline(always)]
    unsafe fn load_idx_avx512(p: *const i32) -> __m512i {
        _mm512_loadu_epi32(p)
    }

    #[inline(always)]
    unsafe fn store_idx_avx512(p: *mut i32, x: __m512i) {
        _mm512_storeu_epi32(p, x)
    }

    /// Lanes where `s > v` take `s` and the index `i`.
    #[inline(always)]
    unsafe fn update_avx512(v: __m512, x: __m512i, s: __m512, i: __m512i) -> (__m512, __m512i) {
        let m = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(s, v);
        (
            _mm512_mask_blend_ps(m, v, s),
            _mm512_mask_blend_epi32(m, x, i),
        )
    }
}

/// `C = A · Bᵀ` (row-major `m x n`), rows of `A` and `B` optionally scaled as in
/// [`pack_rows`]. Parallel over blocks of `A` rows; the result does not depend on the
/// thread count. Both inputs must have the same number of columns (> 0).
pub fn matmul_nt(
    isa: Isa,
    a: MatRef<'_>,
    a_scale: Option<&[f64]>,
    b: MatRef<'_>,
    b_scale: Option<&[f64]>,
) -> Result<Vec<f32>, AllocError> {
    let (m, n, d) = (a.rows(), b.rows(), a.cols());
    assert_eq!(d, b.cols(), "inner dimensions differ");
    let len = crate::alloc::checked_len(m, n, "a matrix product")?;
    let mut out = crate::alloc::try_vec(0.0f32, len, "a matrix product")?;
    if m == 0 || n == 0 || d == 0 {
        return Ok(out);
    }
    let (mr, nr) = (isa.mr(), isa.nr());
    let nb = b_block_rows(isa, d);
    let b_packed = pack_all(b, b_scale, nr, nb);
    let mq = 8 * mr;
    out.par_chunks_mut(mq * n)
        .enumerate()
        .for_each(|(qi, dst)| {
            let r0 = qi * mq;
            let rows = r0..(r0 + mq).min(m);
            let mut ap = AlignedBuf::zeros(packed_len(rows.len(), d, mr));
            pack_rows(a, rows.clone(), a_scale, mr, ap.as_mut_slice());
            let ldc = nb.div_ceil(nr) * nr;
            let mut tile = AlignedBuf::zeros(rows.len().div_ceil(mr) * mr * ldc);
            for (bi, bp) in b_packed.iter().enumerate() {
                let c0 = bi * nb;
                let cols = (n - c0).min(nb);
                compute_block(
                    isa,
                    d,
                    ap.as_slice(),
                    bp.as_slice(),
                    tile.as_mut_slice(),
                    ldc,
                );
                for (i, row) in dst.chunks_exact_mut(n).enumerate() {
                    row[c0..c0 + cols].copy_from_slice(&tile.as_slice()[i * ldc..i * ldc + cols]);
                }
            }
        });
    Ok(out)
}

/// Pack every row of `b` into blocks of `nb` rows (in parallel), each block in panels of
/// `nr` rows.
pub fn pack_all(b: MatRef<'_>, scale: Option<&[f64]>, nr: usize, nb: usize) -> Vec<AlignedBuf> {
    crate::parallel::fixed_chunks(b.rows(), nb)
        .into_par_iter()
        .map(|r| {
            let mut buf = AlignedBuf::zeros(packed_len(r.len(), b.cols(), nr));
            pack_rows(b, r, scale, nr, buf.as_mut_slice());
            buf
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::parallel::install;

    pub(crate) fn lcg(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn naive(a: &[f32], b: &[f32], m: usize, n: usize, d: usize) -> Vec<f64> {
        let mut c = vec![0.0; m * n];
        for i in 0..m {
            for j in 0..n {
                c[i * n + j] = (0..d)
                    .map(|p| f64::from(a[i * d + p]) * f64::from(b[j * d + p]))
                    .sum();
            }
        }
        c
    }

    #[test]
    fn matches_naive_for_every_kernel_and_odd_shapes() {
        for &(m, n, d) in &[
            (1, 1, 1),
            (13, 37, 5),
            (30, 70, 400),
            (5, 300, 800),
            (25, 9, 3),
        ] {
            let a = lcg(m * d, 1);
            let b = lcg(n * d, 2);
            let want = naive(&a, &b, m, n, d);
            let am = MatRef::new(&a, m, d).unwrap();
            let bm = MatRef::new(&b, n, d).unwrap();
            for isa in Isa::available() {
                let got = matmul_nt(isa, am, None, bm, None).unwrap();
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (f64::from(*g) - w).abs() < 1e-5 * (d as f64),
                        "{isa:?} {g} {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn simd_kernels_agree_bitwise_and_exact_on_integers() {
        let (m, n, d) = (29, 77, 777);
        let a: Vec<f32> = lcg(m * d, 3).iter().map(|v| (v * 8.0).round()).collect();
        let b: Vec<f32> = lcg(n * d, 4).iter().map(|v| (v * 8.0).round()).collect();
        let am = MatRef::new(&a, m, d).unwrap();
        let bm = MatRef::new(&b, n, d).unwrap();
        let want = naive(&a, &b, m, n, d);
        let results: Vec<Vec<f32>> = Isa::available()
            .into_iter()
            .map(|isa| matmul_nt(isa, am, None, bm, None).unwrap())
            .collect();
        for r in &results {
            let exact: Vec<f32> = want.iter().map(|&v| v as f32).collect();
            assert_eq!(r, &exact);
        }
        let x = lcg(m * d, 5);
        let xm = MatRef::new(&x, m, d).unwrap();
        let simd: Vec<Vec<u32>> = Isa::available()
            .into_iter()
            .filter(|&i| i != Isa::Scalar)
            .map(|isa| {
                matmul_nt(isa, xm, None, bm, None)
                    .unwrap()
                    .iter()
                    .map(|v| v.to_bits())
                    .collect()
            })
            .collect();
        for w in simd.windows(2) {
            assert_eq!(w[0], w[1]);
        }
    }

    #[test]
    fn thread_count_and_duplicate_rows_do_not_change_bits() {
        let (m, n, d) = (100, 90, 129);
        let a = lcg(m * d, 6);
        let mut b = lcg(n * d, 7);
        let row5 = b[5 * d..6 * d].to_vec();
        b[77 * d..78 * d].copy_from_slice(&row5);
        let am = MatRef::new(&a, m, d).unwrap();
        let bm = MatRef::new(&b, n, d).unwrap();
        let isa = Isa::detect();
        let one = install(1, || matmul_nt(isa, am, None, bm, None).unwrap());
        let three = install(3, || matmul_nt(isa, am, None, bm, None).unwrap());
        assert_eq!(one, three);
        for i in 0..m {
            assert_eq!(one[i * n + 5].to_bits(), one[i * n + 77].to_bits());
        }
    }

    /// The fused arg-max against storing the block and scanning each row in order
    /// (first maximum wins), for every kernel: same columns and bit-identical scores,
    /// also past one depth chunk, with padding columns, all-negative scores and ties.
    #[test]
    fn fused_argmax_equals_store_then_scan() {
        for &(m, n, d) in &[
            (1, 1, 1),
            (13, 37, 5),
            (30, 70, 400),
            (25, 9, 3),
            (7, 100, 800),
        ] {
            let a = lcg(m * d, 11);
            let mut b = lcg(n * d, 12);
            // a duplicate column: ties must go to the lower index
            if n > 4 {
                let r = b[d..2 * d].to_vec();
                b[(n - 2) * d..(n - 1) * d].copy_from_slice(&r);
            }
            let am = MatRef::new(&a, m, d).unwrap();
            let bm = MatRef::new(&b, n, d).unwrap();
            for isa in Isa::available() {
                let (mr, nr, lanes) = (isa.mr(), isa.nr(), isa.argmax_lanes());
                let c = matmul_nt(isa, am, None, bm, None).unwrap();
                for (alpha, shift) in [(1.0f32, 0.0f32), (2.0, 1.5), (1.0, -1e3)] {
                    let bias: Vec<f32> = (0..n.div_ceil(nr) * nr)
                        .map(|j| {
                            if j < n {
                                shift - j as f32 * 1e-3
                            } else {
                                f32::NEG_INFINITY
                            }
                        })
                        .collect();
                    let mut ap = vec![0.0; packed_len(m, d, mr)];
                    pack_rows(am, 0..m, None, mr, &mut ap);
                    let ldc = n.div_ceil(nr) * nr;
                    let mut bp = vec![0.0; packed_len(n, d, nr)];
                    pack_rows(bm, 0..n, None, nr, &mut bp);
                    let mut scratch = vec![0.0; m.div_ceil(mr) * mr * ldc];
                    let rows = m.div_ceil(mr) * mr * lanes;
                    let (mut val, mut idx) = (vec![0.0; rows], vec![0; rows]);
                    argmax_init(&mut val, &mut idx);
                    // two column blocks, as callers with many centroids run them
                    let split = (n.div_ceil(nr) / 2) * nr;
                    for (c0, c1) in [(0, split), (split, ldc)] {
                        if c0 == c1 {
                            continue;
                        }
                        compute_block_argmax(
                            isa,
                            d,
                            &ap,
                            &bp[c0 * d..c1 * d],
                            &mut scratch,
                            ldc,
                            ArgMax {
                                bias: &bias[c0..c1],
                                alpha,
                                col0: c0,
                                val: &mut val,
                                idx: &mut idx,
                            },
                        );
                    }
                    for i in 0..m {
                        let mut want = (f32::NEG_INFINITY, 0);
                        for j in 0..n {
                            let s = alpha * c[i * n + j] + bias[j];
                            if s > want.0 {
                                want = (s, j);
                            }
                        }
                        let got = argmax_reduce(
                            &val[i * lanes..(i + 1) * lanes],
                            &idx[i * lanes..(i + 1) * lanes],
                        );
                        assert_eq!(got.1, want.1, "{isa:?} {m}x{n}x{d} row {i}");
                        assert_eq!(got.0.to_bits(), want.0.to_bits(), "{isa:?} row {i}");
                    }
                }
            }
        }
    }

    #[test]
    fn few_columns_take_the_narrower_tile() {
        let isa = Isa::detect();
        for cols in [1, 4, 16, 17, 32, 1024] {
            let want = if isa == Isa::Avx512 && cols <= 16 {
                Isa::Avx2Fma
            } else {
                isa
            };
            assert_eq!(Isa::for_columns(cols), want, "{cols}");
        }
    }

    /// The packed layout, value by value, for panel widths with and without whole
    /// groups of four rows (the transposed path), depths with and without a tail, a
    /// range that starts inside the matrix and ends in a partial panel.
    #[test]
    fn packing_is_the_documented_layout() {
        let m = 45;
        for d in [0usize, 1, 3, 4, 5, 8, 11] {
            let a = lcg(m * d.max(1), 3 + d as u64);
            let am = MatRef::new(&a[..m * d], m, d).unwrap();
            for w in [4usize, 6, 8, 12, 32] {
                for rows in [0..m, 5..m, 3..10, 7..7] {
                    let n = rows.len();
                    let mut packed = vec![f32::NAN; packed_len(n, d, w)];
                    pack_rows(am, rows.clone(), None, w, &mut packed);
                    for q in 0..n.div_ceil(w) {
                        for p in 0..d {
                            for i in 0..w {
                                let r = q * w + i;
                                let want = if r < n {
                                    am.row(rows.start + r)[p]
                                } else {
                                    0.0
                                };
                                let got = packed[(q * d + p) * w + i];
                                assert_eq!(
                                    got.to_bits(),
                                    want.to_bits(),
                                    "d {d} w {w} r {r} p {p}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn scaled_packing_equals_normalize_rows() {
        let (m, d) = (7, 19);
        let a = lcg(m * d, 8);
        let am = MatRef::new(&a, m, d).unwrap();
        let inv: Vec<f64> = (0..m)
            .map(|i| 1.0 / crate::linalg::sq_norm_f64(am.row(i)).sqrt())
            .collect();
        let mut packed = vec![0.0; packed_len(m, d, 4)];
        pack_rows(am, 0..m, Some(&inv), 4, &mut packed);
        let normed = crate::linalg::normalize_rows(am).unwrap();
        for i in 0..m {
            for p in 0..d {
                assert_eq!(packed[(i / 4 * d + p) * 4 + i % 4], normed[i * d + p]);
            }
        }
    }
}
