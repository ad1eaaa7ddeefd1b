//! Exact lengths of zlib's level-9 raw deflate streams, without zlib.
//!
//! Compression kNN needs `C(x + " " + y)` for every query `x` and reference `y`, and
//! nothing but the length of that stream. This module reproduces zlib's level-9
//! decisions (`deflate_slow` lazy parsing, then `_tr_flush_block`'s Huffman trees and
//! stored/static/dynamic choice) and counts bits instead of writing them. These things
//! make it much cheaper than running zlib per pair:
//!
//! * the parse of the query's own bytes is shared by all references: it runs once per
//!   query up to the first decision that could depend on what follows (a candidate
//!   match running into the unknown reference), and each pair resumes from there;
//! * a match finder with exact trigram verification and word-wide comparisons, whose
//!   hash chains for joint texts of at most `SHORT_INPUT` bytes use a 12-bit hash
//!   that keeps them in L1 (exact there: see `SHORT_INPUT`);
//! * zlib's Huffman heap run exactly, with the bit accounting around it reduced to dot
//!   products, node weights and a walk over the used symbols (`block_cost`), and the
//!   literal heaps of two pairs merged in lockstep ([`Pairs::raw_len2`]).
//!
//! **Why it is exact.** For inputs of at most [`MAX_INPUT`] = 16382 bytes the whole
//! input sits in zlib's 64 KiB window (no slide, no distance above `MAX_DIST`) and
//! produces fewer than `lit_bufsize - 1 = 16383` symbols, so there is exactly one
//! block, emitted at `Z_FINISH`. The parse replays `deflate_slow` step by step with
//! zlib's own hash chains (or, up to `SHORT_INPUT` bytes, chains that provably find
//! the same matches): the same 15-bit hash (so the same collisions), positions
//! inserted in the same order, the walk cut after `max_chain = 4096` entries (a quarter
//! once the previous match reaches `good_length = 32`), colliding entries counted,
//! position 0 acting as zlib's `NIL`, the first strictly longer candidate kept, the walk
//! stopped at `nice_match = min(258, left)`, and `TOO_FAR` applied to the match start
//! zlib holds. Which candidate wins never depends on bytes past the end (a match that
//! reaches them is clamped and stops the walk). zlib's quick rejects skip only
//! candidates that cannot win, and with a hash of at least 8 bits two positions with
//! equal hashes and equal first two bytes share the third. The bit counts follow
//! zlib's `build_tree` (same heap, same tie rule on node depth), `gen_bitlen` (same
//! overflow repair), `scan_tree` and `build_bl_tree`, which is what zlib itself uses to
//! pick the block type. The tests compare every length with zlib on adversarial and
//! real inputs and fail if any of the constants above is changed.
//!
//! **Longer inputs** go through the same parse with absolute positions, zlib's block
//! split (a block ends when its 16383rd symbol is tallied), the per-block
//! stored/static/dynamic choice with bit-exact accounting across blocks (a stored
//! block pads to a byte), and zlib's window slides replayed by an offset (see
//! `long_raw_len`): no zlib call at any length.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::alloc::{try_reserve, AllocError};

/// Longest input of the one-block fast path (and of a query with its reference for
/// shared prefixes); longer inputs take the multi-block path ([`Pairs::single_len`]).
pub const MAX_INPUT: usize = 16_382;

const MIN_MATCH: usize = 3;
const MAX_MATCH: usize = 258;
const NICE: usize = 258;
const LAZY: usize = 258;
/// zlib's hash at `memLevel = 8`: 15 bits, shift 5 (Python's gzip settings).
const HASH_BITS: u32 = 15;
const HASH_SIZE: usize = 1 << HASH_BITS;
/// Level 9's `max_chain` and `good_length` (the walk is cut to a quarter after a
/// match of at least `good_length`), and `TOO_FAR`.
const MAX_CHAIN: usize = 4096;
const GOOD: usize = 32;
const TOO_FAR: usize = 4096;
/// Bytes of slack after the input so that word-wide comparisons never read past it.
const PAD: usize = 16;
const NIL: u16 = u16::MAX;

const L_CODES: usize = 286;
const D_CODES: usize = 30;
const BL_CODES: usize = 19;
const HEAP_SIZE: usize = 2 * L_CODES + 1;
const END_BLOCK: usize = 256;

/// RFC 1951 length codes 257..285: base lengths and extra bits.
const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// RFC 1951 distance codes 0..29: base distances and extra bits.
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];
/// Extra bits of the code-length alphabet (16: 2, 17: 3, 18: 7).
const BL_EXTRA: [u8; BL_CODES] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 3, 7];
/// Order in which code-length code lengths are sent.
const BL_ORDER: [usize; BL_CODES] = [
    16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
];

/// Length code index (0..29) of a match length 3..=258.
const fn length_code(len: usize) -> usize {
    let mut c = 28;
    if len == 258 {
        return 28;
    }
    c -= 1;
    while LEN_BASE[c] as usize > len {
        c -= 1;
    }
    c
}

/// Distance code (0..29) of a distance 1..=32768.
const fn dist_code(dist: usize) -> usize {
    let mut c = 29;
    while DIST_BASE[c] as usize > dist {
        c -= 1;
    }
    c
}

/// Lookup tables built at compile time from the RFC bases.
struct Tables {
    len_code: [u8; MAX_MATCH + 1],
    dist_code: [u8; MAX_INPUT + 1],
}

const TABLES: Tables = {
    let mut len_code = [0u8; MAX_MATCH + 1];
    let mut l = MIN_MATCH;
    while l <= MAX_MATCH {
        len_code[l] = length_code(l) as u8;
        l += 1;
    }
    let mut dist_code_t = [0u8; MAX_INPUT + 1];
    let mut d = 1;
    while d <= MAX_INPUT {
        dist_code_t[d] = dist_code(d) as u8;
        d += 1;
    }
    Tables {
        len_code,
        dist_code: dist_code_t,
    }
};

/// Static (fixed) code lengths of the literal/length alphabet.
const fn static_lit_len(n: usize) -> u32 {
    match n {
        0..=143 => 8,
        144..=255 => 9,
        256..=279 => 7,
        _ => 8,
    }
}

/// Symbol counts of the block being built.
#[derive(Clone)]
struct Freqs {
    lit: [u32; L_CODES],
    dist: [u32; D_CODES],
}

impl Freqs {
    fn new() -> Self {
        let mut lit = [0u32; L_CODES];
        lit[END_BLOCK] = 1;
        Self {
            lit,
            dist: [0; D_CODES],
        }
    }
}

/// `deflate_slow`'s state between two steps.
#[derive(Clone)]
struct Parse {
    strstart: usize,
    match_available: bool,
    match_length: usize,
    match_start: usize,
    freqs: Freqs,
}

impl Parse {
    fn new() -> Self {
        Self {
            strstart: 0,
            match_available: false,
            match_length: MIN_MATCH - 1,
            match_start: 0,
            freqs: Freqs::new(),
        }
    }

    #[inline]
    fn literal(&mut self, c: u8) {
        self.freqs.lit[c as usize] += 1;
    }

    #[inline]
    fn matched(&mut self, dist: usize, len: usize) {
        self.freqs.lit[257 + TABLES.len_code[len] as usize] += 1;
        self.freqs.dist[TABLES.dist_code[dist] as usize] += 1;
    }
}

/// Trigram hash chains: `head[key]` is the newest position with that key, `prev[p]`
/// the next older one (`NIL` ends a chain). Keys can collide; candidates are verified.
struct Chains {
    head: Vec<u16>,
    prev: Vec<u16>,
}

impl Chains {
    fn new() -> Self {
        Self {
            head: vec![NIL; HASH_SIZE],
            prev: vec![NIL; MAX_INPUT],
        }
    }

    /// Chains of [`chain_key::<true>`] for joint texts of at most [`SHORT_INPUT`] bytes.
    fn short() -> Self {
        Self {
            head: vec![NIL; SHORT_HASH_SIZE],
            prev: vec![NIL; SHORT_INPUT],
        }
    }

    #[inline]
    fn insert(&mut self, key: usize, p: usize) {
        self.prev[p] = self.head[key];
        self.head[key] = p as u16;
    }
}

/// The three bytes at `p` (one 4-byte load: buffers keep `PAD` bytes after the input).
#[inline]
fn trigram(buf: &[u8], p: usize) -> u32 {
    u32::from_le_bytes(buf[p..p + 4].try_into().unwrap()) & 0x00ff_ffff
}

/// zlib's `UPDATE_HASH` over three bytes: `((c0 << 10) ^ (c1 << 5) ^ c2) & 0x7fff`.
/// Chains must use zlib's own hash: its collisions count towards the chain limit.
#[inline]
fn key_of(tri: u32) -> usize {
    let (c0, c1, c2) = (tri & 0xff, (tri >> 8) & 0xff, tri >> 16);
    (((c0 << 10) ^ (c1 << 5) ^ c2) & (HASH_SIZE as u32 - 1)) as usize
}

/// Joint texts of at most this many bytes are parsed with chains of a smaller hash
/// ([`chain_key::<true>`]): zlib walks a chain until it ends, finds a match of
/// `nice_match` bytes or has visited `max_chain` entries, a quarter of them (1024) once
/// the previous match is `good_length` long. A chain holds at most one entry per
/// earlier position, so with at most 1024 positions the cut never applies, the colliding
/// entries zlib also walks change nothing (every candidate's trigram is checked), and
/// any hash that puts equal trigrams on one chain, newest first, finds zlib's matches.
/// The smaller hash keeps the chain heads (8 KB instead of 64 KB) in L1.
const SHORT_INPUT: usize = 1024;
const SHORT_HASH_BITS: u32 = 12;
const SHORT_HASH_SIZE: usize = 1 << SHORT_HASH_BITS;

/// The chain key of a trigram: zlib's hash ([`key_of`]) or, for joint texts of at most
/// [`SHORT_INPUT`] bytes (`SHORT`), a multiplicative hash to [`SHORT_HASH_BITS`] bits.
#[inline(always)]
fn chain_key<const SHORT: bool>(tri: u32) -> usize {
    if SHORT {
        (tri.wrapping_mul(0x9E37_79B1) >> (32 - SHORT_HASH_BITS)) as usize
    } else {
        key_of(tri)
    }
}

#[inline]
fn load2(buf: &[u8], p: usize) -> u16 {
    u16::from_le_bytes([buf[p], buf[p + 1]])
}

#[inline]
fn load8(buf: &[u8], p: usize) -> u64 {
    u64::from_le_bytes(buf[p..p + 8].try_into().unwrap())
}

/// Common prefix length of `buf[a..]` and `buf[b..]`, at most `limit`
/// (`buf` must have `PAD` readable bytes beyond `b + limit`).
#[inline]
fn common_prefix(buf: &[u8], a: usize, b: usize, limit: usize) -> usize {
    let mut n = 0;
    while n < limit {
        let x = load8(buf, a + n) ^ load8(buf, b + n);
        if x != 0 {
            return (n + (x.trailing_zeros() / 8) as usize).min(limit);
        }
        n += 8;
    }
    limit
}

/// What a search at one position found.
struct Found {
    len: usize,
    start: usize,
    /// Some candidate matched every byte up to `limit` (prefix runs: the result may
    /// depend on the bytes after the prefix).
    reached_limit: bool,
}

/// zlib's `longest_match` (see the module docs): walk the chain of `s`'s hash newest
/// first, at most `max_chain` entries (a quarter once `best >= good_length`), colliding
/// entries included; keep the first candidate longer than `best`; stop at `nice`.
/// `None` when zlib would not search (`hash_head == NIL`: no earlier position with
/// this hash, position 0 being zlib's NIL).
#[inline]
fn search<const SHORT: bool>(
    buf: &[u8],
    chains: &Chains,
    s: usize,
    limit: usize,
    nice: usize,
    mut best: usize,
    exhaustive: bool,
) -> Option<Found> {
    let tri = trigram(buf, s);
    let mut c = chains.head[chain_key::<SHORT>(tri)];
    if c == NIL || c == 0 {
        return None;
    }
    let mut chain = if best >= GOOD {
        MAX_CHAIN >> 2
    } else {
        MAX_CHAIN
    };
    let mut start = usize::MAX;
    let mut reached_limit = false;
    loop {
        let p = c as usize;
        // Equal hashes and equal first two bytes imply an equal third (15-bit hash).
        if trigram(buf, p) == tri && (exhaustive || best >= limit || buf[p + best] == buf[s + best])
        {
            let len = common_prefix(buf, p, s, limit);
            reached_limit |= len == limit;
            if len > best {
                best = len;
                start = p;
                if len >= nice {
                    break;
                }
            }
        }
        c = chains.prev[p];
        chain -= 1;
        if c == NIL || c == 0 || chain == 0 {
            break;
        }
    }
    Some(Found {
        len: best,
        start,
        reached_limit,
    })
}

/// Runs `deflate_slow` over `buf[..total]` from `st`, with `chains` holding every
/// position before `st.strstart`. With `prefix = Some(end)`, `buf[..end]` is only the
/// start of the input (at least one more byte follows): the run stops, leaving `st`
/// and `chains` untouched for that step, at the first step whose outcome could depend
/// on the bytes after `end`. Returns whether the input was consumed.
/// `SHORT`: `chains` use [`chain_key::<true>`] (`total <= SHORT_INPUT`).
fn run<const SHORT: bool>(
    st: &mut Parse,
    chains: &mut Chains,
    buf: &[u8],
    total: usize,
    prefix: bool,
) -> bool {
    loop {
        let s = st.strstart;
        let lookahead = total - s;
        if lookahead == 0 {
            if prefix {
                return false;
            }
            if st.match_available {
                st.literal(buf[s - 1]);
                st.match_available = false;
            }
            return true;
        }
        if prefix && s + MIN_MATCH > total {
            return false;
        }
        let prev_length = st.match_length;
        let prev_match = st.match_start;
        let mut match_length = MIN_MATCH - 1;
        let mut match_start = st.match_start;
        let searchable = lookahead >= MIN_MATCH;
        if searchable && prev_length < LAZY {
            let limit = MAX_MATCH.min(lookahead);
            let found = search::<SHORT>(
                buf,
                chains,
                s,
                limit,
                NICE.min(lookahead),
                prev_length,
                prefix,
            );
            if let Some(f) = found {
                if prefix && f.reached_limit && limit < MAX_MATCH {
                    return false;
                }
                if f.len > prev_length {
                    match_start = f.start;
                }
                match_length = f.len;
                // zlib drops a 3-byte match that is too far away (with the start of
                // the last match found, as zlib keeps it in `s->match_start`).
                if match_length == MIN_MATCH && s - match_start > TOO_FAR {
                    match_length = MIN_MATCH - 1;
                }
            }
        }
        let emit = prev_length >= MIN_MATCH && match_length <= prev_length;
        // A prefix run cannot hash positions whose trigram reaches past `total`.
        if prefix && emit && s + prev_length - 2 + MIN_MATCH > total {
            return false;
        }
        if searchable {
            chains.insert(chain_key::<SHORT>(trigram(buf, s)), s);
        }
        if emit {
            // Emit the previous match; insert the strings it covers.
            let max_insert = s + lookahead - MIN_MATCH;
            st.matched(s - 1 - prev_match, prev_length);
            for p in s + 1..s + prev_length - 1 {
                if p <= max_insert {
                    chains.insert(chain_key::<SHORT>(trigram(buf, p)), p);
                }
            }
            st.strstart = s + prev_length - 1;
            st.match_available = false;
            st.match_length = MIN_MATCH - 1;
            st.match_start = match_start;
        } else {
            if st.match_available {
                st.literal(buf[s - 1]);
            }
            st.match_available = true;
            st.strstart = s + 1;
            st.match_length = match_length;
            st.match_start = match_start;
        }
    }
}

/// Which of the block's three Huffman trees is being built.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Tree {
    Lit,
    Dist,
    Bl,
}

impl Tree {
    /// Code length of symbol `n` in the static tree (unused for `Bl`).
    #[inline]
    fn static_len(self, n: usize) -> u32 {
        match self {
            Tree::Lit => static_lit_len(n),
            Tree::Dist => 5,
            Tree::Bl => 0,
        }
    }

    /// Extra bits sent after symbol `n`.
    #[inline]
    fn extra(self, n: usize) -> u32 {
        u32::from(match self {
            Tree::Lit if n >= 257 => LEN_EXTRA[n - 257],
            Tree::Lit => 0,
            Tree::Dist => DIST_EXTRA[n],
            Tree::Bl => BL_EXTRA[n],
        })
    }

    fn max_length(self) -> u32 {
        if self == Tree::Bl {
            7
        } else {
            15
        }
    }
}

// Heap entries pack (frequency, depth, node) so that zlib's `smaller` (frequency, then
// depth, ties count as smaller) is one integer comparison of `entry >> NODE_BITS`.
const NODE_BITS: u32 = 10;
const DEPTH_BITS: u32 = 8;
const FREQ_SHIFT: u32 = NODE_BITS + DEPTH_BITS;

#[inline(always)]
fn rank(e: u64) -> u64 {
    e >> NODE_BITS
}

/// `rank(a) <= rank(b)`: equal ranks differ only in the node bits.
#[inline(always)]
fn rank_le(a: u64, b: u64) -> bool {
    a <= b | ((1 << NODE_BITS) - 1)
}

#[inline(always)]
fn node_of(e: u64) -> usize {
    (e & ((1 << NODE_BITS) - 1)) as usize
}

/// Heap storage: 1-based, plus a sentinel slot after the last entry.
type Heap = [u64; HEAP_SIZE + 2];
/// Ranks above every real entry: the sentinel kept at `heap[heap_len + 1]`.
const SENTINEL: u64 = u64::MAX;

/// zlib's `pqdownheap` on packed entries (needs `heap[heap_len + 1] == SENTINEL`):
/// the child choice is branch-free, which is most of the cost of building trees.
/// The chosen child is selected from the two entries already loaded (no second,
/// dependent load), and `rank(a) <= rank(b)` is computed as `a <= b | NODE_MASK`.
#[inline(always)]
fn sift_down(heap: &mut Heap, heap_len: usize, mut k: usize) {
    let v = heap[k];
    let mut j = k << 1;
    while j <= heap_len {
        let (l, r) = (heap[j], heap[j + 1]);
        let right = rank_le(r, l);
        let c = if right { r } else { l };
        j += usize::from(right);
        if rank_le(v, c) {
            break;
        }
        heap[k] = c;
        k = j;
        j <<= 1;
    }
    heap[k] = v;
}

/// [`sift_down`] from the root without a data-dependent exit: it always runs
/// `floor(log2(heap_len))` levels (enough to reach any position) and, once the entry
/// has found its place, keeps rewriting it there. Needs [`SENTINEL`] at every position
/// from `heap_len + 1` to `2 * heap_len + 1`. The fixed trip count avoids a mispredicted
/// exit per sift and lets two heaps merged in lockstep ([`block_cost2`]) overlap.
#[inline(always)]
fn sift_root(heap: &mut Heap, heap_len: usize) {
    let v = heap[1];
    let mut k = 1;
    for _ in 0..heap_len.ilog2() {
        let j = k << 1;
        let (l, r) = (heap[j], heap[j + 1]);
        let right = rank_le(r, l);
        let c = if right { r } else { l };
        let down = !rank_le(v, c);
        heap[k] = if down { c } else { v };
        k = if down { j + usize::from(right) } else { k };
    }
    heap[k] = v;
}

/// Work arrays of [`build_tree`], reused between trees (every entry that is read is
/// written first).
pub(crate) struct TreeScratch {
    heap: Heap,
    /// Nodes in the order zlib's `heap[heap_max..]` holds them.
    order: [u16; HEAP_SIZE],
    /// Parent of every node.
    dad: [u16; HEAP_SIZE],
    /// Code length of every node.
    len: [u32; HEAP_SIZE],
}

impl TreeScratch {
    fn new() -> Box<Self> {
        Box::new(Self {
            heap: [SENTINEL; HEAP_SIZE + 2],
            order: [0; HEAP_SIZE],
            dad: [0; HEAP_SIZE],
            len: [0; HEAP_SIZE],
        })
    }
}

/// One Huffman tree's code lengths as zlib's `build_tree` + `gen_bitlen` compute them,
/// adding the bits it costs to `opt_len` / `static_len` (zlib's block accounting).
/// Returns `max_code`; `lens` receives the code lengths.
fn build_tree<const ELEMS: usize>(
    scratch: &mut TreeScratch,
    tree: Tree,
    freq_in: &[u32; ELEMS],
    lens: &mut [u32; ELEMS],
    opt_len: &mut i64,
    static_len: &mut i64,
) -> usize {
    let mut freq = *freq_in;
    let TreeScratch {
        heap,
        order,
        dad,
        len,
    } = scratch;
    let mut heap_len = 0usize;
    let mut max_code: isize = -1;
    for (n, &f) in freq_in.iter().enumerate() {
        // Branch-free: write the slot, keep it only for a used symbol.
        heap[heap_len + 1] = u64::from(f) << FREQ_SHIFT | n as u64;
        let used = f != 0;
        heap_len += usize::from(used);
        max_code = if used { n as isize } else { max_code };
    }
    // At least two codes of non-zero frequency.
    while heap_len < 2 {
        let node = if max_code < 2 {
            max_code += 1;
            max_code as usize
        } else {
            0
        };
        heap_len += 1;
        heap[heap_len] = 1 << FREQ_SHIFT | node as u64;
        freq[node] = 1;
        *opt_len -= 1;
        *static_len -= i64::from(tree.static_len(node));
    }
    heap[heap_len + 1] = SENTINEL;
    let max_code = max_code as usize;
    for k in (1..=heap_len / 2).rev() {
        sift_down(heap, heap_len, k);
    }
    // Nodes in the order zlib's `heap[heap_max..]` holds them; parents of all nodes.
    let mut heap_max = HEAP_SIZE;
    let mut node = ELEMS;
    loop {
        let a = heap[1];
        heap[1] = heap[heap_len];
        heap[heap_len] = SENTINEL;
        heap_len -= 1;
        sift_down(heap, heap_len, 1);
        let b = heap[1];
        heap_max -= 2;
        order[heap_max + 1] = node_of(a) as u16;
        order[heap_max] = node_of(b) as u16;
        let f = (a >> FREQ_SHIFT) + (b >> FREQ_SHIFT);
        let depth = ((rank(a) & 0xff).max(rank(b) & 0xff) + 1) & 0xff;
        dad[node_of(a)] = node as u16;
        dad[node_of(b)] = node as u16;
        heap[1] = f << FREQ_SHIFT | depth << NODE_BITS | node as u64;
        node += 1;
        sift_down(heap, heap_len, 1);
        if heap_len < 2 {
            break;
        }
    }
    heap_max -= 1;
    order[heap_max] = node_of(heap[1]) as u16;

    // gen_bitlen
    let max_length = tree.max_length();
    len[order[heap_max] as usize] = 0;
    let mut bl_count = [0u32; 16];
    let mut overflow = 0i32;
    for &n in &order[heap_max + 1..HEAP_SIZE] {
        let n = n as usize;
        let mut bits = len[dad[n] as usize] + 1;
        if bits > max_length {
            bits = max_length;
            overflow += 1;
        }
        len[n] = bits;
        if n > max_code {
            continue;
        }
        bl_count[bits as usize] += 1;
        let f = i64::from(freq[n]);
        let xbits = tree.extra(n);
        *opt_len += f * i64::from(bits + xbits);
        if tree != Tree::Bl {
            *static_len += f * i64::from(tree.static_len(n) + xbits);
        }
    }
    if overflow > 0 {
        loop {
            let mut bits = max_length as usize - 1;
            while bl_count[bits] == 0 {
                bits -= 1;
            }
            bl_count[bits] -= 1;
            bl_count[bits + 1] += 2;
            bl_count[max_length as usize] -= 1;
            overflow -= 2;
            if overflow <= 0 {
                break;
            }
        }
        let mut h = HEAP_SIZE;
        for bits in (1..=max_length).rev() {
            let mut n = bl_count[bits as usize];
            while n != 0 {
                h -= 1;
                let m = order[h] as usize;
                if m > max_code {
                    continue;
                }
                if len[m] != bits {
                    *opt_len += (i64::from(bits) - i64::from(len[m])) * i64::from(freq[m]);
                    len[m] = bits;
                }
                n -= 1;
            }
        }
    }
    for (n, l) in lens.iter_mut().enumerate() {
        // Unused symbols (all those above max_code among them) get length 0.
        *l = if freq[n] != 0 { len[n] } else { 0 };
    }
    max_code
}

/// zlib's `scan_tree`: counts of the code-length alphabet for sending `lens[..=max_code]`.
///
/// zlib walks the lengths one by one; this walks runs of equal lengths, which gives the
/// same counts: every run starts with zlib's limits reset (`max 138, min 3` for zeros,
/// `max 7, min 4` otherwise) and is cut into pieces of at most 138 zeros, or 7 and then
/// 6 equal non-zero lengths; a piece shorter than `min` is sent literally, a longer one
/// as a repeat code (16 after sending the length once, 17 for 3-10 zeros, 18 for 11-138).
fn scan_tree(lens: &[u32], max_code: usize, bl_freq: &mut [u32; BL_CODES]) {
    let mut i = 0;
    while i <= max_code {
        let v = lens[i];
        let mut j = i + 1;
        while j <= max_code && lens[j] == v {
            j += 1;
        }
        let run = (j - i) as u32;
        if v == 0 {
            bl_freq[18] += run / 138;
            match run % 138 {
                0 => {}
                rem @ 1..=2 => bl_freq[0] += rem,
                3..=10 => bl_freq[17] += 1,
                _ => bl_freq[18] += 1,
            }
        } else {
            let first = run.min(7);
            if first < 4 {
                bl_freq[v as usize] += first;
            } else {
                bl_freq[v as usize] += 1;
                bl_freq[16] += 1;
            }
            let rest = run - first;
            bl_freq[16] += rest / 6;
            match rest % 6 {
                0 => {}
                rem @ 1..=2 => bl_freq[v as usize] += rem,
                _ => bl_freq[16] += 1,
            }
        }
        i = j;
    }
}

/// Bytes of the single final block zlib emits for these symbol counts and
/// `stored_len` input bytes.
fn block_bytes(scratch: &mut TreeScratch, freqs: &Freqs, stored_len: usize) -> u64 {
    final_block_bytes(block_cost(scratch, freqs), stored_len)
}

/// Bytes of the single final block with zlib's `(opt_len, static_len)`.
fn final_block_bytes((opt_len, static_len): (i64, i64), stored_len: usize) -> u64 {
    let opt_lenb = ((opt_len + 3 + 7) >> 3) as u64;
    let static_lenb = ((static_len + 3 + 7) >> 3) as u64;
    let best = opt_lenb.min(static_lenb);
    if stored_len as u64 + 4 <= best {
        stored_len as u64 + 5
    } else {
        best
    }
}

/// zlib's `opt_len` (bits of the dynamic block, trees included) and `static_len`
/// (bits with the static trees) for these symbol counts, block header excluded.
///
/// The fast path builds each tree with zlib's own heap ([`heap_fill`]) but does the
/// accounting around it with less work, exactly:
///
/// * `static_len` and the extra bits of `opt_len` do not depend on the trees: they are
///   dot products of the counts with constant tables;
/// * without length overflow, `sum(freq * len)` over the leaves equals the sum of the
///   weights of all internal nodes (each leaf's count is added once per ancestor), which
///   the merge loop adds up as it goes;
/// * `scan_tree` only needs the used symbols in order ([`scan_used`]).
///
/// A tree with fewer than two used symbols (zlib's forced nodes) or a code longer than
/// its limit (zlib's overflow repair, which depends on the heap's node order) goes
/// through [`block_cost_heap`] or [`build_tree`], zlib's path.
fn block_cost(scratch: &mut TreeScratch, freqs: &Freqs) -> (i64, i64) {
    block_cost_fast(scratch, freqs).unwrap_or_else(|| block_cost_heap(scratch, freqs))
}

/// [`block_cost`]'s fast path; `None` when the literal tree has fewer than two used
/// symbols or a literal or distance code overflows.
#[inline]
fn block_cost_fast(scratch: &mut TreeScratch, freqs: &Freqs) -> Option<(i64, i64)> {
    let [cost] = block_costs([scratch], [freqs]);
    cost
}

/// [`block_cost`] of two symbol counts at once: each of their trees is merged in
/// lockstep with the other's, which lets the processor overlap the two heaps' dependent
/// loads (each heap alone is a chain of them). Same results as two [`block_cost`]s.
fn block_cost2(scratch: [&mut TreeScratch; 2], freqs: [&Freqs; 2]) -> [(i64, i64); 2] {
    let [sa, sb] = scratch;
    let [a, b] = block_costs([&mut *sa, &mut *sb], freqs);
    [
        a.unwrap_or_else(|| block_cost_heap(sa, freqs[0])),
        b.unwrap_or_else(|| block_cost_heap(sb, freqs[1])),
    ]
}

/// Runs the merges of `N` heaps, in lockstep while all of them have work (a merge with
/// `heap_len < 2`, finished or never started, has none).
#[inline(always)]
fn merge_lockstep<const N: usize>(scratch: &mut [&mut TreeScratch; N], merges: &mut [Merge; N]) {
    while merges.iter().all(|m| m.heap_len >= 2) {
        for (s, m) in scratch.iter_mut().zip(merges.iter_mut()) {
            heap_round(s, m);
        }
    }
    for (s, m) in scratch.iter_mut().zip(merges.iter_mut()) {
        while m.heap_len >= 2 {
            heap_round(s, m);
        }
    }
}

/// The fast path of [`block_cost`] for `N` symbol counts at once (see [`block_cost2`]);
/// `None` for a count whose literal tree has fewer than two used symbols or whose
/// literal or distance codes overflow (zlib's path handles those).
#[inline(always)]
fn block_costs<const N: usize>(
    mut scratch: [&mut TreeScratch; N],
    freqs: [&Freqs; N],
) -> [Option<(i64, i64)>; N] {
    let mut ok = [true; N];
    let mut merges: [Merge; N] = std::array::from_fn(|_| Merge::IDLE);

    // Literal trees.
    let mut lsyms = [[0u16; L_CODES]; N];
    let mut nl = [0; N];
    for i in 0..N {
        nl[i] = used_symbols(&freqs[i].lit, &mut lsyms[i]);
        ok[i] = nl[i] >= 2;
        if ok[i] {
            merges[i] = heap_fill(scratch[i], &freqs[i].lit, &lsyms[i][..nl[i]]);
        }
    }
    merge_lockstep(&mut scratch, &mut merges);
    let mut llens = [[0u8; L_CODES]; N];
    let mut wl = [0; N];
    for i in 0..N {
        if ok[i] {
            let lens = heap_lens(
                scratch[i],
                &lsyms[i][..nl[i]],
                &merges[i],
                15,
                &mut llens[i],
            );
            (ok[i], wl[i]) = (lens.is_some(), lens.unwrap_or(0));
        }
    }

    // Distance trees.
    let mut dsyms = [[0u16; D_CODES]; N];
    let mut nd = [0; N];
    let mut dlens = [[0u8; D_CODES]; N];
    let mut dist_count = [0u32; N];
    for i in 0..N {
        merges[i] = Merge::IDLE;
        nd[i] = used_symbols(&freqs[i].dist, &mut dsyms[i]);
        dist_count[i] = freqs[i].dist.iter().sum();
        if !ok[i] {
            continue;
        }
        if nd[i] >= 2 {
            merges[i] = heap_fill(scratch[i], &freqs[i].dist, &dsyms[i][..nd[i]]);
        } else {
            // zlib's forced nodes: fewer than two used distance codes get partners of
            // count 1 (codes 0 and 1, or the next code up, or code 0), whose bits it
            // then takes back from `opt_len` and `static_len`; two leaves have one bit
            // each.
            let forced = match (nd[i], dsyms[i][0]) {
                (0, _) => [0, 1],
                (_, s @ 0..=1) => [s, s + 1],
                (_, s) => [0, s],
            };
            for &s in &forced {
                dlens[i][s as usize] = 1;
            }
            dsyms[i][..2].copy_from_slice(&forced);
        }
    }
    merge_lockstep(&mut scratch, &mut merges);
    let mut wd = [0; N];
    for i in 0..N {
        if !ok[i] {
            continue;
        }
        if nd[i] >= 2 {
            let lens = heap_lens(
                scratch[i],
                &dsyms[i][..nd[i]],
                &merges[i],
                15,
                &mut dlens[i],
            );
            (ok[i], wd[i]) = (lens.is_some(), lens.unwrap_or(0));
        } else {
            (nd[i], wd[i]) = (2, u64::from(dist_count[i]));
        }
    }

    // Code-length trees.
    let mut bl_freq = [[0u32; BL_CODES]; N];
    let mut bsyms = [[0u16; BL_CODES]; N];
    let mut nb = [0; N];
    for i in 0..N {
        merges[i] = Merge::IDLE;
        if !ok[i] {
            continue;
        }
        scan_used(&lsyms[i][..nl[i]], &llens[i], &mut bl_freq[i]);
        scan_used(&dsyms[i][..nd[i]], &dlens[i], &mut bl_freq[i]);
        nb[i] = used_symbols(&bl_freq[i], &mut bsyms[i]);
        if nb[i] >= 2 {
            merges[i] = heap_fill(scratch[i], &bl_freq[i], &bsyms[i][..nb[i]]);
        }
    }
    merge_lockstep(&mut scratch, &mut merges);

    let mut out = [None; N];
    for i in 0..N {
        if !ok[i] {
            continue;
        }
        let f = freqs[i];
        let bl_freq = &bl_freq[i];
        let dist_extra = dot(&f.dist, &COST_TABLES.dist_extra);
        let mut opt_len = (wl[i] + wd[i]) as i64
            + i64::from(dot(&f.lit, &COST_TABLES.lit_extra))
            + i64::from(dist_extra);
        let static_len = i64::from(dot(&f.lit, &COST_TABLES.lit_static))
            + i64::from(dist_extra)
            + 5 * i64::from(dist_count[i]);
        let mut bllens = [0u8; BL_CODES];
        let fast_bl = if nb[i] >= 2 {
            heap_lens(scratch[i], &bsyms[i][..nb[i]], &merges[i], 7, &mut bllens)
        } else {
            None
        };
        if let Some(wb) = fast_bl {
            opt_len += wb as i64 + i64::from(2 * bl_freq[16] + 3 * bl_freq[17] + 7 * bl_freq[18]);
        } else {
            // Fewer than two code-length codes, or codes over 7 bits: zlib's path.
            let mut lens = [0u32; BL_CODES];
            let mut unused = 0i64;
            build_tree(
                scratch[i],
                Tree::Bl,
                bl_freq,
                &mut lens,
                &mut opt_len,
                &mut unused,
            );
            for (b, &l) in bllens.iter_mut().zip(&lens) {
                *b = l as u8;
            }
        }
        let mut max_blindex = BL_CODES - 1;
        while max_blindex >= 3 && bllens[BL_ORDER[max_blindex]] == 0 {
            max_blindex -= 1;
        }
        opt_len += 3 * (max_blindex as i64 + 1) + 5 + 5 + 4;
        out[i] = Some((opt_len, static_len));
    }
    out
}

/// Writes the symbols of non-zero count to `syms`, in increasing order; returns how many.
#[inline(always)]
fn used_symbols<const E: usize>(freq: &[u32; E], syms: &mut [u16; E]) -> usize {
    let mut n = 0;
    for (i, &f) in freq.iter().enumerate() {
        // Branch-free: write the slot, keep it only for a used symbol.
        syms[n.min(E - 1)] = i as u16;
        n += usize::from(f != 0);
    }
    n
}

/// `sum(f[i] * t[i])` (counts and per-symbol bits are small: no overflow).
#[inline(always)]
fn dot<const E: usize>(f: &[u32; E], t: &[u32; E]) -> u32 {
    f.iter().zip(t).map(|(&a, &b)| a * b).sum()
}

/// Per-symbol bits that do not depend on the trees.
struct CostTables {
    /// Extra bits of literal/length symbols.
    lit_extra: [u32; L_CODES],
    /// Static code length plus extra bits of literal/length symbols.
    lit_static: [u32; L_CODES],
    /// Extra bits of distance symbols.
    dist_extra: [u32; D_CODES],
}

const COST_TABLES: CostTables = {
    let mut lit_extra = [0u32; L_CODES];
    let mut lit_static = [0u32; L_CODES];
    let mut n = 0;
    while n < L_CODES {
        let x = if n >= 257 {
            LEN_EXTRA[n - 257] as u32
        } else {
            0
        };
        lit_extra[n] = x;
        lit_static[n] = static_lit_len(n) + x;
        n += 1;
    }
    let mut dist_extra = [0u32; D_CODES];
    let mut d = 0;
    while d < D_CODES {
        dist_extra[d] = DIST_EXTRA[d] as u32;
        d += 1;
    }
    CostTables {
        lit_extra,
        lit_static,
        dist_extra,
    }
};

/// A heap being merged: zlib's `heap_len`, the next internal node, and the weights of
/// the internal nodes so far (in the end `sum(freq * depth)` over the leaves).
struct Merge {
    heap_len: usize,
    node: usize,
    weights: u64,
}

impl Merge {
    /// No merge to run.
    const IDLE: Merge = Merge {
        heap_len: 0,
        node: 0,
        weights: 0,
    };
}

/// zlib's `build_tree` heap for the used symbols `syms` (at least two, in increasing
/// order) of a tree of `E` symbols: the same heap, filled in the same order and merged
/// ([`heap_round`]) with the same tie rule, so every node gets zlib's depth.
#[inline(always)]
fn heap_fill<const E: usize>(scratch: &mut TreeScratch, freq: &[u32; E], syms: &[u16]) -> Merge {
    let heap = &mut scratch.heap;
    for (slot, &s) in heap[1..].iter_mut().zip(syms) {
        *slot = u64::from(freq[s as usize]) << FREQ_SHIFT | u64::from(s);
    }
    let n = syms.len();
    // Sentinels under every position a sift from the root can look at.
    heap[n + 1..=2 * n + 1].fill(SENTINEL);
    for k in (1..=n / 2).rev() {
        sift_down(heap, n, k);
    }
    Merge {
        heap_len: n,
        node: E,
        weights: 0,
    }
}

/// One step of zlib's `build_tree` loop: take the two least nodes and put their parent
/// in the heap. Callers loop while `heap_len >= 2` (zlib's do-while: a heap starts
/// with at least two nodes).
#[inline(always)]
fn heap_round(scratch: &mut TreeScratch, m: &mut Merge) {
    let TreeScratch { heap, dad, .. } = scratch;
    let a = heap[1];
    heap[1] = heap[m.heap_len];
    heap[m.heap_len] = SENTINEL;
    m.heap_len -= 1;
    sift_root(heap, m.heap_len);
    let b = heap[1];
    let f = (a >> FREQ_SHIFT) + (b >> FREQ_SHIFT);
    m.weights += f;
    let depth = ((rank(a) & 0xff).max(rank(b) & 0xff) + 1) & 0xff;
    dad[node_of(a)] = m.node as u16;
    dad[node_of(b)] = m.node as u16;
    heap[1] = f << FREQ_SHIFT | depth << NODE_BITS | m.node as u64;
    m.node += 1;
    sift_root(heap, m.heap_len);
}

/// The code lengths of a merged heap's leaves `syms`, written to `lens`; returns
/// `sum(freq * len)`, or `None` when a code is longer than `max_length` (zlib then
/// repairs the lengths in the heap's node order: [`build_tree`] does that).
#[inline(always)]
fn heap_lens<const E: usize>(
    scratch: &mut TreeScratch,
    syms: &[u16],
    m: &Merge,
    max_length: u32,
    lens: &mut [u8; E],
) -> Option<u64> {
    let TreeScratch { dad, len, .. } = scratch;
    // Depths from the root (the last node) down: a parent is created after its children.
    len[m.node - 1] = 0;
    for k in (E..m.node - 1).rev() {
        len[k] = len[dad[k] as usize] + 1;
    }
    let mut longest = 0;
    for &s in syms {
        let l = len[dad[s as usize] as usize] + 1;
        lens[s as usize] = l as u8;
        longest = longest.max(l);
    }
    (longest <= max_length).then_some(m.weights)
}

/// Longest run of zeros or of equal lengths [`scan_used`] can meet, plus one.
const RUN_TABLE: usize = L_CODES + 2;

/// [`scan_tree`]'s counts for one run, as increments: `NONZERO_RUN[r]` is what a run of
/// `r` equal non-zero lengths adds over one of `r - 1` (its literal count, then its
/// count of code 16); `ZERO_RUN[r]` is what a run of `r` zeros adds to codes 0, 17
/// and 18.
const NONZERO_RUN: [[i8; 2]; RUN_TABLE] = {
    let mut t = [[0i8; 2]; RUN_TABLE];
    let (mut prev_lit, mut prev_rep) = (0i32, 0i32);
    let mut r = 1;
    while r < RUN_TABLE {
        let first = if r < 7 { r } else { 7 };
        let (mut lit, mut rep) = if first < 4 { (first, 0) } else { (1, 1) };
        let rest = r - first;
        rep += rest / 6;
        match rest % 6 {
            0 => {}
            rem @ 1..=2 => lit += rem,
            _ => rep += 1,
        }
        t[r] = [(lit as i32 - prev_lit) as i8, (rep as i32 - prev_rep) as i8];
        (prev_lit, prev_rep) = (lit as i32, rep as i32);
        r += 1;
    }
    t
};
const ZERO_RUN: [[u8; 3]; RUN_TABLE] = {
    let mut t = [[0u8; 3]; RUN_TABLE];
    let mut r = 1;
    while r < RUN_TABLE {
        let mut c = [0u8, 0, (r / 138) as u8];
        match r % 138 {
            0 => {}
            rem @ 1..=2 => c[0] = rem as u8,
            3..=10 => c[1] = 1,
            _ => c[2] += 1,
        }
        t[r] = c;
        r += 1;
    }
    t
};

/// [`scan_tree`] over a tree whose used symbols are `syms` (increasing, the last one
/// being `max_code`) with code lengths `lens[sym]`: the zeros between two used symbols
/// form one run, and consecutive used symbols of equal length extend a run.
#[inline(always)]
fn scan_used<const E: usize>(syms: &[u16], lens: &[u8; E], bl_freq: &mut [u32; BL_CODES]) {
    let mut next = 0usize; // the symbol after the previous used one
    let mut run_len = 0u8;
    let mut run = 0usize;
    let (mut zero, mut rep, mut rep_short, mut rep_long) = (0u32, 0u32, 0u32, 0u32);
    for &s in syms {
        let s = s as usize;
        let l = lens[s];
        let gap = s - next;
        let z = ZERO_RUN[gap];
        zero += u32::from(z[0]);
        rep_short += u32::from(z[1]);
        rep_long += u32::from(z[2]);
        run = if gap == 0 && l == run_len { run + 1 } else { 1 };
        run_len = l;
        let [dl, dr] = NONZERO_RUN[run];
        bl_freq[l as usize] = bl_freq[l as usize].wrapping_add(dl as i32 as u32);
        rep = rep.wrapping_add(dr as i32 as u32);
        next = s + 1;
    }
    bl_freq[0] += zero;
    bl_freq[16] = bl_freq[16].wrapping_add(rep);
    bl_freq[17] += rep_short;
    bl_freq[18] += rep_long;
}

/// [`block_cost`] the way zlib computes it: every tree through [`build_tree`] (the
/// general path, and the oracle of the fast one's tests).
fn block_cost_heap(scratch: &mut TreeScratch, freqs: &Freqs) -> (i64, i64) {
    let mut opt_len = 0i64;
    let mut static_len = 0i64;
    let mut llens = [0u32; L_CODES];
    let mut dlens = [0u32; D_CODES];
    let lmax = build_tree(
        scratch,
        Tree::Lit,
        &freqs.lit,
        &mut llens,
        &mut opt_len,
        &mut static_len,
    );
    let dmax = build_tree(
        scratch,
        Tree::Dist,
        &freqs.dist,
        &mut dlens,
        &mut opt_len,
        &mut static_len,
    );
    let mut bl_freq = [0u32; BL_CODES];
    scan_tree(&llens, lmax, &mut bl_freq);
    scan_tree(&dlens, dmax, &mut bl_freq);
    let mut bllens = [0u32; BL_CODES];
    let mut unused = 0i64;
    build_tree(
        scratch,
        Tree::Bl,
        &bl_freq,
        &mut bllens,
        &mut opt_len,
        &mut unused,
    );
    let mut max_blindex = BL_CODES - 1;
    while max_blindex >= 3 && bllens[BL_ORDER[max_blindex]] == 0 {
        max_blindex -= 1;
    }
    opt_len += 3 * (max_blindex as i64 + 1) + 5 + 5 + 4;
    (opt_len, static_len)
}

// ---------------------------------------------------------------------------------
// Inputs of any length: several blocks and a sliding window.

/// zlib's window size `w_size` (`windowBits = 15`); the window buffer holds twice that.
const WSIZE: usize = 1 << 15;
/// `MIN_LOOKAHEAD`: zlib refills (and, if needed, slides) the window below this.
const MIN_LOOKAHEAD: usize = MAX_MATCH + MIN_MATCH + 1;
/// `MAX_DIST`: the farthest match distance zlib looks at.
const MAX_DIST: usize = WSIZE - MIN_LOOKAHEAD;
/// Symbols per block: `_tr_tally` reports a full buffer at `sym_end =
/// (lit_bufsize - 1) * 3` bytes of 3-byte symbols, `lit_bufsize = 16384` at memLevel 8.
const BLOCK_SYMBOLS: u32 = (1 << 14) - 1;
const NIL32: u32 = u32::MAX;
/// Inputs up to this size leave their scratch allocated for the next one.
const LONG_KEEP: usize = 1 << 20;
/// Longest input [`Pairs::single_len`] takes (absolute positions are `u32`, with
/// `u32::MAX` as `NIL`); callers use zlib beyond.
pub const MAX_LONG_INPUT: usize = 1 << 31;

/// Distance code of any distance 1..=32768.
#[inline]
fn dist_code_any(d: usize) -> usize {
    if d <= MAX_INPUT {
        TABLES.dist_code[d] as usize
    } else {
        dist_code(d)
    }
}

/// Scratch of [`long_raw_len`]: hash heads and one chain link per input position,
/// by absolute position (zlib's `prev[p & w_mask]` never aliases within reach: a
/// link is followed only within `MAX_DIST < w_size` of the position being searched).
struct LongChains {
    head: Vec<u32>,
    prev: Vec<u32>,
}

/// zlib's `deflate_slow` over an input of any length with `_tr_flush_block`'s
/// choices per block, counting bits. Positions are absolute; zlib's window slides are
/// replayed by `offset`, the absolute position of the window's start:
///
/// * `fill_window` runs when the lookahead is below `MIN_LOOKAHEAD`, and slides the
///   window by `w_size` when `strstart >= w_size + MAX_DIST` (input left or not);
///   the lookahead is what the window holds, `min(len, offset + 2 w_size) - strstart`;
/// * sliding maps every hash entry below the new window to `NIL` and the entry at
///   its first byte to 0, which is `NIL` too: an entry `p` is usable iff
///   `p > offset`; `longest_match` walks while `p > offset + limit`, with zlib's
///   `limit = strstart - MAX_DIST` (relative, when positive), and no search starts
///   from a head more than `MAX_DIST` back;
/// * a block ends when its 16383rd symbol is tallied (after a match the block runs
///   to the match's end; after a literal to the current position), and at the end;
///   it is stored (3 header bits, padding to a byte, 4 length bytes, the bytes) when
///   `stored_len + 4 <= min(opt_lenb, static_lenb)` and zlib still holds its bytes
///   (`block_start` not slid out), static when `static_lenb <= opt_lenb`, else
///   dynamic;
/// * `match_start` keeps its absolute value across slides: zlib's unsigned
///   `strstart - match_start` is the same difference modulo 2^32.
fn long_raw_len(
    scratch: &mut TreeScratch,
    chains: &mut LongChains,
    buf: &[u8],
    total: usize,
) -> u64 {
    chains.head.clear();
    chains.head.resize(HASH_SIZE, NIL32);
    chains.prev.clear();
    chains.prev.resize(total, NIL32);
    let mut st = LongParse::new();
    long_run(&mut st, scratch, chains, buf, total, None);
    long_finish(st, scratch)
}

/// [`long_run`]'s state between two steps: `deflate_slow`'s, the block being built and
/// the bits of the blocks before it.
#[derive(Clone)]
struct LongParse {
    freqs: Freqs,
    /// Symbols tallied in the current block.
    syms: u32,
    /// Bits of the finished blocks.
    bits: u64,
    block_start: usize,
    /// Absolute position of the window's start.
    offset: usize,
    strstart: usize,
    match_available: bool,
    match_length: usize,
    match_start: usize,
}

impl LongParse {
    fn new() -> Self {
        Self {
            freqs: Freqs::new(),
            syms: 0,
            bits: 0,
            block_start: 0,
            offset: 0,
            strstart: 0,
            match_available: false,
            match_length: MIN_MATCH - 1,
            match_start: 0,
        }
    }

    /// `_tr_flush_block`'s choice for the block ending at `end`, counted into `bits`.
    fn flush(&mut self, scratch: &mut TreeScratch, end: usize) {
        let stored_len = (end - self.block_start) as u64;
        let (opt_len, static_len) = block_cost(scratch, &self.freqs);
        let mut opt_lenb = ((opt_len + 3 + 7) >> 3) as u64;
        let static_lenb = ((static_len + 3 + 7) >> 3) as u64;
        if static_lenb <= opt_lenb {
            opt_lenb = static_lenb;
        }
        if stored_len + 4 <= opt_lenb && self.block_start >= self.offset {
            self.bits = (self.bits + 3).div_ceil(8) * 8 + 32 + 8 * stored_len;
        } else if static_lenb == opt_lenb {
            self.bits += 3 + static_len as u64;
        } else {
            self.bits += 3 + opt_len as u64;
        }
        self.freqs = Freqs::new();
        self.block_start = end;
        self.syms = 0;
    }
}

/// The end of [`long_run`] over a whole input (which tallied the pending literal): the
/// last block, and the stream's length in bytes.
fn long_finish(mut st: LongParse, scratch: &mut TreeScratch) -> u64 {
    let end = st.strstart;
    st.flush(scratch, end);
    st.bits.div_ceil(8)
}

/// `deflate_slow` over `buf[..total]` from `st` (see [`long_raw_len`] for zlib's rules
/// it follows), with `chains` holding every position before `st.strstart`. With
/// `prefix = Some(end)`, more bytes follow `buf[..end]` (`total == end`): the run stops
/// at the first step closer than `MIN_LOOKAHEAD` to `end`. Until then every search,
/// insertion and window slide reads and decides only on bytes before `end`, so the
/// state it leaves is the state of any longer input with the same start.
fn long_run(
    st: &mut LongParse,
    scratch: &mut TreeScratch,
    chains: &mut LongChains,
    buf: &[u8],
    total: usize,
    prefix: Option<usize>,
) {
    loop {
        let s = st.strstart;
        if prefix.is_some_and(|end| s + MIN_LOOKAHEAD > end) {
            return;
        }
        let mut lookahead = total.min(st.offset + 2 * WSIZE) - s;
        if lookahead < MIN_LOOKAHEAD {
            if s - st.offset >= WSIZE + MAX_DIST {
                st.offset += WSIZE;
                lookahead = total.min(st.offset + 2 * WSIZE) - s;
            }
            if lookahead == 0 {
                break;
            }
        }
        let offset = st.offset;
        let mut hash_head = NIL32;
        if lookahead >= MIN_MATCH {
            let key = key_of(trigram(buf, s));
            hash_head = chains.head[key];
            chains.prev[s] = hash_head;
            chains.head[key] = s as u32;
        }
        let prev_length = st.match_length;
        let prev_match = st.match_start;
        let mut match_length = MIN_MATCH - 1;
        let mut match_start = st.match_start;
        if hash_head != NIL32
            && hash_head as usize > offset
            && prev_length < LAZY
            && s - hash_head as usize <= MAX_DIST
        {
            // longest_match
            let limit_rel = (s - offset).saturating_sub(MAX_DIST);
            let floor = offset + limit_rel;
            let nice = NICE.min(lookahead);
            let cap = MAX_MATCH.min(lookahead);
            let mut chain = if prev_length >= GOOD {
                MAX_CHAIN >> 2
            } else {
                MAX_CHAIN
            };
            let mut best = prev_length;
            let mut c = hash_head as usize;
            loop {
                // No candidate can beat a `best` at the cap: the walk changes nothing.
                if best >= cap {
                    break;
                }
                // zlib's quick rejects: the two bytes ending at `best`, then the first
                // two (a chain holds one hash key, so equal first two bytes imply an
                // equal third). Only candidates that cannot beat `best` are skipped.
                if load2(buf, c + best - 1) == load2(buf, s + best - 1)
                    && load2(buf, c) == load2(buf, s)
                {
                    let len = common_prefix(buf, c, s, cap);
                    if len > best {
                        match_start = c;
                        best = len;
                        if len >= nice {
                            break;
                        }
                    }
                }
                let next = chains.prev[c];
                chain -= 1;
                if next == NIL32 || next as usize <= floor || chain == 0 {
                    break;
                }
                c = next as usize;
            }
            match_length = best.min(lookahead);
            if match_length == MIN_MATCH && s - match_start > TOO_FAR {
                match_length = MIN_MATCH - 1;
            }
        }
        if prev_length >= MIN_MATCH && match_length <= prev_length {
            let max_insert = s + lookahead - MIN_MATCH;
            let dist = s - 1 - prev_match;
            st.freqs.lit[257 + TABLES.len_code[prev_length] as usize] += 1;
            st.freqs.dist[dist_code_any(dist)] += 1;
            st.syms += 1;
            for p in s + 1..s + prev_length - 1 {
                if p <= max_insert {
                    let key = key_of(trigram(buf, p));
                    chains.prev[p] = chains.head[key];
                    chains.head[key] = p as u32;
                }
            }
            st.match_available = false;
            st.match_length = MIN_MATCH - 1;
            st.match_start = match_start;
            st.strstart = s + prev_length - 1;
            if st.syms == BLOCK_SYMBOLS {
                st.flush(scratch, st.strstart);
            }
        } else if st.match_available {
            st.freqs.lit[buf[s - 1] as usize] += 1;
            st.syms += 1;
            st.match_length = match_length;
            st.match_start = match_start;
            st.strstart = s + 1;
            if st.syms == BLOCK_SYMBOLS {
                st.flush(scratch, s);
            }
        } else {
            st.match_available = true;
            st.match_length = match_length;
            st.match_start = match_start;
            st.strstart = s + 1;
        }
    }
    if st.match_available {
        st.freqs.lit[buf[st.strstart - 1] as usize] += 1;
        st.match_available = false;
    }
}

/// Exact length of zlib's level-9 raw deflate stream of `data` (up to
/// [`MAX_LONG_INPUT`] bytes). (Allocates its scratch; [`Pairs::single_len`] reuses one.)
pub fn raw_len(data: &[u8]) -> Result<u64, AllocError> {
    Pairs::new().single_len(data)
}

/// A query's shared work: the parse of `query + separator` up to the first step that
/// depends on the reference.
pub struct Prefix {
    /// Unique per prefix (so scratch can tell which prefix it has loaded).
    id: u64,
    text: Vec<u8>,
    st: Parse,
    head: Vec<u16>,
    prev: Vec<u16>,
    /// The same chains with the short-input hash (empty when the prefix has
    /// [`SHORT_INPUT`] bytes or more: no joint text can then be short).
    short_head: Vec<u16>,
    short_prev: Vec<u16>,
}

impl Prefix {
    /// `query + separator`, parsed as far as it is independent of what follows.
    /// `None` when the query alone is too long for [`MAX_INPUT`].
    pub fn new(query: &[u8], separator: &[u8]) -> Option<Self> {
        let mut p = Self {
            id: 0,
            text: Vec::new(),
            st: Parse::new(),
            head: Vec::new(),
            prev: Vec::new(),
            short_head: Vec::new(),
            short_prev: Vec::new(),
        };
        p.rebuild(query, separator).then_some(p)
    }

    /// [`Prefix::new`] in place, reusing this prefix's buffers (a worker builds one
    /// prefix per query; allocating them afresh each time costs page faults that
    /// show up as lost parallel scaling). Returns `false`, leaving the prefix
    /// unusable, when the query is too long.
    pub fn rebuild(&mut self, query: &[u8], separator: &[u8]) -> bool {
        // A fresh id even on failure: scratch that loaded the old prefix must reload.
        self.id = next_prefix_id();
        let n = query.len() + separator.len();
        self.text.clear();
        if n >= MAX_INPUT {
            return false;
        }
        self.text.extend_from_slice(query);
        self.text.extend_from_slice(separator);
        // `run` reads up to PAD bytes past the end: pad, run, then drop the padding.
        self.text.resize(n + PAD, 0);
        self.st = Parse::new();
        let mut chains = Chains {
            head: std::mem::take(&mut self.head),
            prev: std::mem::take(&mut self.prev),
        };
        chains.head.clear();
        chains.head.resize(HASH_SIZE, NIL);
        chains.prev.clear();
        chains.prev.resize(MAX_INPUT, NIL);
        run::<false>(&mut self.st, &mut chains, &self.text, n, true);
        // The run inserted every position before its stop, in order: the short-input
        // chains hold the same positions under the other hash.
        self.short_head.clear();
        self.short_prev.clear();
        if n < SHORT_INPUT {
            self.short_head.resize(SHORT_HASH_SIZE, NIL);
            for p in 0..self.st.strstart {
                let key = chain_key::<true>(trigram(&self.text, p));
                self.short_prev.push(self.short_head[key]);
                self.short_head[key] = p as u16;
            }
        }
        self.text.truncate(n);
        chains.prev.truncate(self.st.strstart);
        self.head = chains.head;
        self.prev = chains.prev;
        true
    }

    /// The query bytes plus separator this prefix was built from.
    pub fn text(&self) -> &[u8] {
        &self.text
    }
}

/// A fresh prefix id (shared by [`Prefix`] and [`LongPrefix`]: `Pairs` tells the
/// prefix its buffers hold by id).
fn next_prefix_id() -> u64 {
    static NEXT_ID: AtomicU64 = AtomicU64::new(1);
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A query's shared work for joint texts longer than [`MAX_INPUT`]: the multi-block
/// parse of `query + separator` up to its last `MIN_LOOKAHEAD` bytes (blocks finished
/// in the query are counted once, not per pair), with its hash chains.
pub struct LongPrefix {
    id: u64,
    text: Vec<u8>,
    st: LongParse,
    head: Vec<u32>,
    /// Chain links of the positions before the parse's stop.
    prev: Vec<u32>,
}

impl LongPrefix {
    /// `query + separator`, parsed as far as it is independent of what follows. Fails
    /// only when its scratch (about 5 bytes per query byte) cannot be allocated.
    pub fn new(scratch: &mut Pairs, query: &[u8], separator: &[u8]) -> Result<Self, AllocError> {
        let n = query.len() + separator.len();
        assert!(n <= MAX_LONG_INPUT, "query too long for a LongPrefix");
        let mut text = Vec::new();
        try_reserve(&mut text, n + PAD, "the gzip query prefix")?;
        text.extend_from_slice(query);
        text.extend_from_slice(separator);
        text.resize(n + PAD, 0);
        let mut chains = LongChains::new();
        try_reserve(&mut chains.head, HASH_SIZE, "the gzip hash chains")?;
        try_reserve(&mut chains.prev, n, "the gzip hash chains")?;
        chains.head.resize(HASH_SIZE, NIL32);
        chains.prev.resize(n, NIL32);
        let mut st = LongParse::new();
        long_run(&mut st, &mut scratch.trees, &mut chains, &text, n, Some(n));
        text.truncate(n);
        chains.prev.truncate(st.strstart);
        Ok(Self {
            id: next_prefix_id(),
            text,
            st,
            head: chains.head,
            prev: chains.prev,
        })
    }

    /// The query bytes plus separator this prefix was built from.
    pub fn text(&self) -> &[u8] {
        &self.text
    }
}

/// Per-worker scratch for [`Pairs::raw_len`].
pub struct Pairs {
    buf: Vec<u8>,
    trees: Box<TreeScratch>,
    /// The second tree scratch of [`Pairs::raw_len2`].
    trees2: Box<TreeScratch>,
    chains: Chains,
    /// Id of the prefix whose `prev` entries are loaded in `chains.prev` (0: none).
    loaded: u64,
    /// Chains of joint texts of at most [`SHORT_INPUT`] bytes, and the id of the
    /// prefix loaded in them.
    short: Chains,
    short_loaded: u64,
    /// Id of the prefix whose text starts `buf` (0: none).
    buf_prefix: u64,
    /// Chains of inputs longer than [`MAX_INPUT`].
    long: LongChains,
    /// Id of the long prefix whose `prev` entries are loaded in `long.prev` (0: none).
    long_loaded: u64,
}

impl LongChains {
    fn new() -> Self {
        Self {
            head: Vec::new(),
            prev: Vec::new(),
        }
    }
}

impl Default for Pairs {
    fn default() -> Self {
        Self::new()
    }
}

impl Pairs {
    /// Empty scratch.
    pub fn new() -> Self {
        Self {
            buf: Vec::with_capacity(MAX_INPUT + PAD),
            trees: TreeScratch::new(),
            trees2: TreeScratch::new(),
            chains: Chains::new(),
            loaded: 0,
            short: Chains::short(),
            short_loaded: 0,
            buf_prefix: 0,
            long: LongChains::new(),
            long_loaded: 0,
        }
    }

    /// Exact raw deflate length (zlib level 9) of `data` (several blocks and window
    /// slides beyond [`MAX_INPUT`] bytes; at most [`MAX_LONG_INPUT`] bytes). Fails
    /// only when the scratch for a long input (5 bytes per input byte) cannot be
    /// allocated.
    pub fn single_len(&mut self, data: &[u8]) -> Result<u64, AllocError> {
        assert!(
            data.len() <= MAX_LONG_INPUT,
            "input too long for single_len"
        );
        self.buf_prefix = 0;
        if data.len() > MAX_INPUT {
            self.long_loaded = 0;
            self.buf.clear();
            try_reserve(&mut self.buf, data.len() + PAD, "the gzip length scratch")?;
            self.long.prev.clear();
            try_reserve(&mut self.long.prev, data.len(), "the gzip hash chains")?;
            self.buf.extend_from_slice(data);
            self.buf.resize(data.len() + PAD, 0);
            let n = long_raw_len(&mut self.trees, &mut self.long, &self.buf, data.len());
            // Keep the buffers for the next long text, unless this one was huge.
            if self.buf.capacity() > LONG_KEEP {
                self.buf = Vec::with_capacity(MAX_INPUT + PAD);
                self.long = LongChains::new();
            }
            return Ok(n);
        }
        self.loaded = 0;
        self.chains.head.fill(NIL);
        self.buf.clear();
        self.buf.extend_from_slice(data);
        self.buf.resize(data.len() + PAD, 0);
        let mut st = Parse::new();
        run::<false>(&mut st, &mut self.chains, &self.buf, data.len(), false);
        Ok(block_bytes(&mut self.trees, &st.freqs, data.len()))
    }

    /// Exact raw deflate length (zlib level 9) of `prefix.text() + reference`, of any
    /// length up to [`MAX_LONG_INPUT`], resuming the prefix's parse. Fails only when
    /// the scratch (5 bytes per joint byte) cannot be allocated.
    pub fn long_raw_len(
        &mut self,
        prefix: &LongPrefix,
        reference: &[u8],
    ) -> Result<u64, AllocError> {
        let n = prefix.text.len();
        let total = n + reference.len();
        assert!(
            total <= MAX_LONG_INPUT,
            "joint text too long for long_raw_len"
        );
        if self.buf_prefix != prefix.id {
            self.buf.clear();
            try_reserve(&mut self.buf, total + PAD, "the gzip length scratch")?;
            self.buf.extend_from_slice(&prefix.text);
            self.buf_prefix = prefix.id;
        }
        self.buf.truncate(n);
        try_reserve(
            &mut self.buf,
            reference.len() + PAD,
            "the gzip length scratch",
        )?;
        self.buf.extend_from_slice(reference);
        self.buf.resize(total + PAD, 0);
        // Links before the prefix's stop are the prefix's and are never rewritten; the
        // pair writes every link after it before reading it.
        if self.long_loaded != prefix.id {
            self.long.prev.clear();
            try_reserve(&mut self.long.prev, total, "the gzip hash chains")?;
            self.long.prev.extend_from_slice(&prefix.prev);
            self.long_loaded = prefix.id;
        }
        if self.long.prev.len() < total {
            let more = total - self.long.prev.len();
            try_reserve(&mut self.long.prev, more, "the gzip hash chains")?;
            self.long.prev.resize(total, NIL32);
        }
        self.long.head.clear();
        self.long.head.extend_from_slice(&prefix.head);
        let mut st = prefix.st.clone();
        long_run(
            &mut st,
            &mut self.trees,
            &mut self.long,
            &self.buf,
            total,
            None,
        );
        Ok(long_finish(st, &mut self.trees))
    }

    /// Exact raw deflate length (zlib level 9) of `prefix.text() + reference`;
    /// `None` when the joint text is longer than [`MAX_INPUT`] or `reference` is empty.
    pub fn raw_len(&mut self, prefix: &Prefix, reference: &[u8]) -> Option<u64> {
        let freqs = self.parse_pair(prefix, reference)?;
        let total = prefix.text.len() + reference.len();
        Some(block_bytes(&mut self.trees, &freqs, total))
    }

    /// [`Pairs::raw_len`] of two references after the same prefix, with the two
    /// blocks' trees built together (faster than one pair at a time).
    pub fn raw_len2(&mut self, prefix: &Prefix, references: [&[u8]; 2]) -> [Option<u64>; 2] {
        let a = self.parse_pair(prefix, references[0]);
        let b = self.parse_pair(prefix, references[1]);
        let totals = references.map(|r| prefix.text.len() + r.len());
        match (a, b) {
            (Some(fa), Some(fb)) => {
                let [ca, cb] = block_cost2([&mut self.trees, &mut self.trees2], [&fa, &fb]);
                [
                    Some(final_block_bytes(ca, totals[0])),
                    Some(final_block_bytes(cb, totals[1])),
                ]
            }
            (a, b) => [
                a.map(|f| block_bytes(&mut self.trees, &f, totals[0])),
                b.map(|f| block_bytes(&mut self.trees, &f, totals[1])),
            ],
        }
    }

    /// The symbol counts of the single block of `prefix.text() + reference` (see
    /// [`Pairs::raw_len`]).
    fn parse_pair(&mut self, prefix: &Prefix, reference: &[u8]) -> Option<Freqs> {
        let total = prefix.text.len() + reference.len();
        // The prefix run assumed at least one byte after it.
        if total > MAX_INPUT || reference.is_empty() {
            return None;
        }
        // The prefix's text stays at the start of `buf` between its pairs.
        if self.buf_prefix != prefix.id {
            self.buf.clear();
            self.buf.extend_from_slice(&prefix.text);
            self.buf_prefix = prefix.id;
        }
        self.buf.truncate(prefix.text.len());
        self.buf.extend_from_slice(reference);
        self.buf.resize(total + PAD, 0);
        let mut st = prefix.st.clone();
        // After the run `head` must be the prefix's again (the `prev` entries the pair
        // wrote are unreachable from it): the short chains' 8 KB are copied back, which
        // is cheaper than rehashing the pair's positions; zlib's 64 KB are not.
        if total <= SHORT_INPUT {
            if self.short_loaded != prefix.id {
                self.short.prev[..prefix.short_prev.len()].copy_from_slice(&prefix.short_prev);
                self.short_loaded = prefix.id;
            }
            self.short.head.copy_from_slice(&prefix.short_head);
            run::<true>(&mut st, &mut self.short, &self.buf, total, false);
        } else {
            if self.loaded != prefix.id {
                self.chains.prev[..prefix.prev.len()].copy_from_slice(&prefix.prev);
                self.chains.head.copy_from_slice(&prefix.head);
                self.loaded = prefix.id;
            }
            run::<false>(&mut st, &mut self.chains, &self.buf, total, false);
            // Undo the insertions: every position from the prefix's stop with a full
            // trigram.
            let from = prefix.st.strstart;
            for p in from..(total + 1).saturating_sub(MIN_MATCH).max(from) {
                let key = key_of(trigram(&self.buf, p));
                self.chains.head[key] = prefix.head[key];
            }
        }
        Some(st.freqs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::codec::zlib_raw_len;

    fn zlib_len(_: &mut (), data: &[u8]) -> u64 {
        zlib_raw_len(9, data)
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Inputs from many families: tiny alphabets, runs, repeated phrases with edits,
    /// random bytes, words.
    fn sample(rng: &mut Rng, len: usize) -> Vec<u8> {
        let words: [&[u8]; 8] = [
            b"the ", b"cat ", b"sat ", b"on ", b"mat ", b"a ", b"th", b"e",
        ];
        match rng.below(7) {
            0 => {
                let k = 2 + rng.below(3);
                (0..len).map(|_| b'a' + rng.below(k) as u8).collect()
            }
            1 => (0..len).map(|_| rng.next() as u8).collect(),
            2 => {
                let mut t = Vec::new();
                while t.len() < len {
                    t.extend_from_slice(words[rng.below(8) as usize]);
                }
                t.truncate(len);
                t
            }
            3 => {
                let period = 1 + rng.below(300) as usize;
                let blk: Vec<u8> = (0..period).map(|_| b'a' + rng.below(4) as u8).collect();
                let mut t: Vec<u8> = blk.iter().copied().cycle().take(len).collect();
                for _ in 0..rng.below(20) {
                    if len > 0 {
                        let i = rng.below(len as u64) as usize;
                        t[i] = b'a' + rng.below(5) as u8;
                    }
                }
                t
            }
            4 => vec![b'z'; len],
            // Rare trigram matches, often more than TOO_FAR = 4096 bytes apart.
            5 => (0..len).map(|_| b'!' + rng.below(48) as u8).collect(),
            _ => (0..len)
                .map(|_| if rng.below(20) == 0 { 0x15 } else { 0x05 })
                .collect(),
        }
    }

    /// Symbol counts that stress the tree code: many ties (counts of 1-3), steep
    /// (Fibonacci-like) counts whose codes overflow 15 or 7 bits, skewed counts, and
    /// trees with 0, 1 or 2 used symbols (zlib's forced nodes).
    fn random_counts<const E: usize>(rng: &mut Rng, counts: &mut [u32; E]) {
        counts.fill(0);
        let used = match rng.below(6) {
            0 => rng.below(4) as usize,
            1 => E,
            _ => 1 + rng.below(E as u64) as usize,
        };
        let kind = rng.below(5);
        let (mut a, mut b) = (1u32, 1u32);
        for _ in 0..used {
            let sym = rng.below(E as u64) as usize;
            counts[sym] = match kind {
                0 => 1 + rng.below(3) as u32,
                1 => {
                    // Fibonacci counts give the deepest trees.
                    (a, b) = (b, (a + b).min(1 << 14));
                    a
                }
                2 => 1 + (1000 >> rng.below(11)) as u32,
                3 => 1 + rng.below(40) as u32,
                _ => 1 + (rng.below(64) * rng.below(64) / (1 + rng.below(64))) as u32,
            };
        }
    }

    #[test]
    fn fast_tree_accounting_equals_zlibs_heap_path() {
        let mut rng = Rng(0x7ee5_0fc0_de00);
        let (mut fast, mut fast2, mut heap) =
            (TreeScratch::new(), TreeScratch::new(), TreeScratch::new());
        let mut freqs = Freqs::new();
        let mut prev = Freqs::new();
        let mut taken = 0;
        let cases = 40_000;
        for case in 0..cases {
            random_counts(&mut rng, &mut freqs.lit);
            random_counts(&mut rng, &mut freqs.dist);
            let want = block_cost_heap(&mut heap, &freqs);
            if let Some(got) = block_cost_fast(&mut fast, &freqs) {
                assert_eq!(got, want, "case {case}");
                taken += 1;
            }
            assert_eq!(block_cost(&mut fast, &freqs), want, "case {case}");
            // Two tables at once give each one's cost.
            let other = prev.clone();
            let want_other = block_cost_heap(&mut heap, &other);
            assert_eq!(
                block_cost2([&mut fast, &mut fast2], [&freqs, &other]),
                [want, want_other],
                "case {case}"
            );
            prev = freqs.clone();
        }
        // Most cases take the fast path (the rest need forced nodes or overflow repair).
        assert!(taken > cases / 3, "fast path taken {taken} times");
    }

    #[test]
    fn tables_follow_the_rfc() {
        assert_eq!(TABLES.len_code[3], 0);
        assert_eq!(TABLES.len_code[10], 7);
        assert_eq!(TABLES.len_code[11], 8);
        assert_eq!(TABLES.len_code[12], 8);
        assert_eq!(TABLES.len_code[227], 27);
        assert_eq!(TABLES.len_code[257], 27);
        assert_eq!(TABLES.len_code[258], 28);
        assert_eq!(TABLES.dist_code[1], 0);
        assert_eq!(TABLES.dist_code[5], 4);
        assert_eq!(TABLES.dist_code[6], 4);
        assert_eq!(TABLES.dist_code[1024], 19);
    }

    #[test]
    fn single_texts_equal_zlib() {
        let mut e = ();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for i in 0..6000 {
            let len = match i % 3 {
                0 => 1 + rng.below(40) as usize,
                1 => 1 + rng.below(1100) as usize,
                // Long inputs (fewer: debug builds run these tests too): zlib's chain
                // cut-offs, hash collisions and TOO_FAR all matter here.
                _ if i % 30 == 2 => MAX_INPUT - rng.below(2 * MAX_INPUT as u64 / 3) as usize,
                _ => 1 + rng.below(1100) as usize,
            };
            let t = sample(&mut rng, len);
            assert_eq!(
                raw_len(&t).unwrap(),
                zlib_len(&mut e, &t),
                "case {i}, len {len}"
            );
        }
    }

    #[test]
    fn long_texts_equal_zlib_at_block_and_window_boundaries() {
        // Lengths around the one-block limit (16382 bytes, 16383 symbols per block),
        // MAX_DIST (32506), the first window slide (65274) and several slides, with
        // inputs that make literal-only blocks (random bytes: a block ends exactly at
        // a 16383-symbol boundary, often stored), long matches (runs), and text.
        let mut e = ();
        let mut rng = Rng(0x005e_ed0f_b10c);
        let centres = [16_382usize, 16_384, 32_506, 32_768, 49_149, 65_274, 65_536];
        for i in 0..60 {
            let len = if i < 42 {
                centres[i % centres.len()] + rng.below(9) as usize - 4
            } else {
                MAX_INPUT + 1 + rng.below(160_000) as usize
            };
            let mut t = sample(&mut rng, len);
            if i % 5 == 4 {
                // Text with a random tail, and random bytes with a repeated tail.
                let cut = rng.below(len as u64) as usize;
                for b in &mut t[cut..] {
                    *b = rng.next() as u8;
                }
            }
            assert_eq!(
                raw_len(&t).unwrap(),
                zlib_len(&mut e, &t),
                "case {i}, len {len}"
            );
        }
    }

    #[test]
    fn pairs_around_the_short_input_limit_equal_zlib() {
        // Joint texts of SHORT_INPUT +- 12 bytes switch between the short-hash chains and
        // zlib's; tiny alphabets and runs make chains of hundreds of entries.
        let mut e = ();
        let mut rng = Rng(0x5407_1024);
        let mut pairs = Pairs::new();
        for q in 0..120 {
            let qlen = 1 + rng.below(SHORT_INPUT as u64 - 2) as usize;
            let query = sample(&mut rng, qlen);
            let prefix = Prefix::new(&query, b" ").unwrap();
            for r in 0..6 {
                let total = SHORT_INPUT - 12 + rng.below(25) as usize;
                let Some(rlen) = total.checked_sub(qlen + 1).filter(|&n| n > 0) else {
                    continue;
                };
                let reference = if r % 2 == 0 {
                    query.iter().copied().cycle().skip(r).take(rlen).collect()
                } else {
                    sample(&mut rng, rlen)
                };
                let mut joint = query.clone();
                joint.push(b' ');
                joint.extend_from_slice(&reference);
                assert_eq!(
                    pairs.raw_len(&prefix, &reference),
                    Some(zlib_len(&mut e, &joint)),
                    "query {q} ref {r}"
                );
            }
        }
    }

    #[test]
    fn pairs_equal_zlib_and_reuse_prefixes() {
        let mut e = ();
        let mut rng = Rng(0x0fed_cba9_8765_4321);
        let mut pairs = Pairs::new();
        for q in 0..150 {
            let qlen = 1 + rng.below(if q % 15 == 0 { 9000 } else { 600 }) as usize;
            let query = sample(&mut rng, qlen);
            let prefix = Prefix::new(&query, b" ").unwrap();
            // The previous reference, for pairs of references (the query itself first).
            let mut last = query.clone();
            let mut last_want = (2 * qlen < MAX_INPUT).then(|| {
                let joint = [&query[..], b" ", &query[..]].concat();
                zlib_len(&mut e, &joint)
            });
            for r in 0..25 {
                let rlen = 1 + rng.below(if r == 7 { 9000 } else { 700 }) as usize;
                // References that continue the query make the prefix stop early.
                let reference = if r % 4 == 0 {
                    query.iter().copied().cycle().skip(r).take(rlen).collect()
                } else {
                    sample(&mut rng, rlen)
                };
                let mut joint = query.clone();
                joint.push(b' ');
                joint.extend_from_slice(&reference);
                let want = (joint.len() <= MAX_INPUT).then(|| zlib_len(&mut e, &joint));
                assert_eq!(
                    pairs.raw_len(&prefix, &reference),
                    want,
                    "query {q} ref {r}"
                );
                // Two at once, this reference first and then second.
                let [a, b] = pairs.raw_len2(&prefix, [&reference, &last]);
                assert_eq!((a, b), (want, last_want), "query {q} ref {r}");
                let [a, b] = pairs.raw_len2(&prefix, [&last, &reference]);
                assert_eq!((a, b), (last_want, want), "query {q} ref {r}");
                (last, last_want) = (reference, want);
            }
        }
    }

    #[test]
    fn long_pairs_resume_the_query_parse_and_equal_zlib() {
        // Queries of 0.3-70 KB (short ones stop before any block; long ones end blocks
        // and slide the window inside the query), each with references that make the
        // joint text cross the block limit, MAX_DIST and a window slide; references
        // that continue the query make matches run across the separator. Pairs of
        // different queries interleave on one scratch, and single texts in between.
        let mut e = ();
        let mut rng = Rng(0x1234_0fed_5678_9abc);
        let mut pairs = Pairs::new();
        let qlens = [300usize, 5_000, 16_500, 33_000, 66_000, 70_000];
        let prefixes: Vec<(Vec<u8>, LongPrefix)> = qlens
            .iter()
            .map(|&n| {
                let query = sample(&mut rng, n);
                let prefix = LongPrefix::new(&mut pairs, &query, b" ").unwrap();
                (query, prefix)
            })
            .collect();
        for case in 0..40 {
            let (query, prefix) = &prefixes[case % prefixes.len()];
            let rlen = match case % 4 {
                0 => 16_382 - query.len().min(16_000) + rng.below(9) as usize,
                1 => 65_274usize.saturating_sub(query.len()) + rng.below(9) as usize,
                2 => 1 + rng.below(40_000) as usize,
                _ => rng.below(3) as usize,
            };
            let reference: Vec<u8> = if case % 3 == 0 {
                query
                    .iter()
                    .copied()
                    .cycle()
                    .skip(case)
                    .take(rlen)
                    .collect()
            } else {
                sample(&mut rng, rlen)
            };
            let joint = [&query[..], b" ", &reference[..]].concat();
            // A query that ends in a repeated unit, and a reference that continues it
            // after the separator (the unit starts with it): maximal matches run
            // across the query's end from every position of its last MIN_LOOKAHEAD
            // bytes (the random length moves where the parse's steps land).
            let unit: Vec<u8> = [&b" "[..], &sample(&mut rng, 1 + case)[..]].concat();
            let reps = 600 + rng.below(600) as usize;
            let periodic: Vec<u8> = query[..query.len() / 2]
                .iter()
                .chain(unit.iter().cycle().take(reps))
                .copied()
                .collect();
            let tail: Vec<u8> = unit
                .iter()
                .cycle()
                .skip(reps + 1)
                .take(rlen + 1)
                .copied()
                .collect();
            let p = LongPrefix::new(&mut pairs, &periodic, b" ").unwrap();
            let pj = [&periodic[..], b" ", &tail[..]].concat();
            assert_eq!(
                pairs.long_raw_len(&p, &tail).unwrap(),
                zlib_len(&mut e, &pj),
                "periodic case {case}"
            );
            let want = zlib_len(&mut e, &joint);
            assert_eq!(
                pairs.long_raw_len(prefix, &reference).unwrap(),
                want,
                "case {case}, query {}, reference {rlen}",
                query.len()
            );
            if case % 7 == 0 {
                assert_eq!(pairs.single_len(&joint).unwrap(), want);
            }
        }
    }
}
