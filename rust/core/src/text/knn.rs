//! Pairwise compression distances and top-k neighbour search.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use rayon::prelude::*;

use super::{check_texts, lens_unchecked, Compressor, Distance, TextError};
use crate::alloc::{checked_len, try_vec, try_with_capacity};
use crate::progress::Progress;

/// Pairs per parallel block of [`distance_matrix`].
const PAIR_BLOCK: usize = 512;
/// References per parallel task of [`kneighbors`].
const REF_CHUNK: usize = 1024;
/// Upper bound on partial-result entries held at once by [`kneighbors`].
const MAX_PARTIAL: usize = 1 << 22;

/// The dense `len(queries) x len(refs)` distance matrix, row-major.
pub fn distance_matrix(
    queries: &[&[u8]],
    refs: &[&[u8]],
    comp: Compressor,
    dist: Distance,
    progress: &Progress,
) -> Result<Vec<f64>, TextError> {
    check_texts(queries, "queries")?;
    check_texts(refs, "refs")?;
    let (nq, nr) = (queries.len(), refs.len());
    let pairs = checked_len(nq, nr, "the distance matrix")?;
    // Allocated before any work: an impossible matrix fails at once, not after hours.
    let mut out = try_vec(0.0f64, pairs, "the distance matrix")?;
    progress.set_total((nq + nr + pairs) as u64);
    let cq = lens_unchecked(queries, comp, progress)?;
    let cr = lens_unchecked(refs, comp, progress)?;
    out.par_chunks_mut(PAIR_BLOCK).enumerate().try_for_each(
        |(b, block)| -> Result<(), TextError> {
            progress.check()?;
            comp.with_engine(|engine| {
                let mut buf = Vec::new();
                let mut j = 0;
                while j < block.len() {
                    let flat = b * PAIR_BLOCK + j;
                    let (qi, ri) = (flat / nr, flat % nr);
                    // Two references of one query at a time where the block has them.
                    if j + 1 < block.len() && ri + 1 < nr {
                        let refs2 = [refs[ri], refs[ri + 1]];
                        let [c0, c1] = engine.joint_len2(queries[qi], refs2, &mut buf)?;
                        block[j] = dist.eval(cq[qi], cr[ri], c0);
                        block[j + 1] = dist.eval(cq[qi], cr[ri + 1], c1);
                        j += 2;
                    } else {
                        let cxy = engine.joint_len(queries[qi], refs[ri], &mut buf)?;
                        block[j] = dist.eval(cq[qi], cr[ri], cxy);
                        j += 1;
                    }
                }
                Ok(())
            })?;
            progress.inc(block.len() as u64);
            Ok(())
        },
    )?;
    Ok(out)
}

/// The `k` nearest references of each query.
#[derive(Debug, Clone, PartialEq)]
pub struct Neighbors {
    /// Neighbours per query.
    pub k: usize,
    /// `n_queries x k` reference indices, row-major, nearest first.
    pub indices: Vec<i64>,
    /// `n_queries x k` distances matching `indices`.
    pub distances: Vec<f64>,
}

/// A neighbour candidate, ordered by distance, then by reference index.
#[derive(Debug, Clone, Copy)]
struct Cand {
    d: f64,
    i: u32,
}

impl Ord for Cand {
    fn cmp(&self, other: &Self) -> Ordering {
        self.d.total_cmp(&other.d).then(self.i.cmp(&other.i))
    }
}
impl PartialOrd for Cand {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl PartialEq for Cand {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Cand {}

/// Keeps the `k` smallest candidates pushed so far.
struct TopK {
    k: usize,
    heap: BinaryHeap<Cand>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    #[inline]
    fn push(&mut self, c: Cand) {
        if self.heap.len() < self.k {
            self.heap.push(c);
        } else if let Some(mut top) = self.heap.peek_mut() {
            if c < *top {
                *top = c;
            }
        }
    }

    fn into_sorted(self) -> Vec<Cand> {
        self.heap.into_sorted_vec()
    }
}

/// The `k` nearest of `refs` for every query, by `dist`, with `ref_lens[j] = C(refs[j])`
/// (computed once, e.g. at fit time, with the same compressor).
///
/// Only top-k candidates are kept: memory is `O(n_queries * k)` plus a bounded amount
/// of partial results, whatever the number of references.
pub fn kneighbors(
    queries: &[&[u8]],
    refs: &[&[u8]],
    ref_lens: &[u64],
    k: usize,
    comp: Compressor,
    dist: Distance,
    progress: &Progress,
) -> Result<Neighbors, TextError> {
    check_texts(queries, "queries")?;
    check_texts(refs, "refs")?;
    let (nq, nr) = (queries.len(), refs.len());
    if ref_lens.len() != nr {
        return Err(TextError::Mismatch(format!(
            "{} reference lengths for {nr} references",
            ref_lens.len()
        )));
    }
    if k == 0 || k > nr {
        return Err(TextError::BadK { k, n_refs: nr });
    }
    if nr > u32::MAX as usize {
        return Err(TextError::Mismatch(format!("too many references ({nr})")));
    }
    let out_len = checked_len(nq, k, "the neighbour arrays")?;
    let mut indices = try_with_capacity(out_len, "the neighbour indices")?;
    let mut distances = try_with_capacity(out_len, "the neighbour distances")?;
    progress.set_total((nq as u64) * (nr as u64 + 1));
    let cq = lens_unchecked(queries, comp, progress)?;

    let n_chunks = nr.div_ceil(REF_CHUNK);
    let per_query = n_chunks * k.min(REF_CHUNK);
    let q_batch = (MAX_PARTIAL / per_query).clamp(1, 4096);

    for q0 in (0..nq).step_by(q_batch) {
        let q1 = (q0 + q_batch).min(nq);
        let tasks = (q1 - q0) * n_chunks;
        let partial: Vec<Vec<Cand>> = (0..tasks)
            .into_par_iter()
            .map(|t| -> Result<Vec<Cand>, TextError> {
                progress.check()?;
                let qi = q0 + t / n_chunks;
                let c = t % n_chunks;
                let (r0, r1) = (c * REF_CHUNK, ((c + 1) * REF_CHUNK).min(nr));
                let mut top = TopK::new(k.min(r1 - r0));
                let query = queries[qi];
                comp.with_engine(|engine| {
                    let mut buf = Vec::new();
                    // Two references at a time (see `Engine::joint_len2`).
                    let mut ri = r0;
                    while ri + 1 < r1 {
                        let refs2 = [refs[ri], refs[ri + 1]];
                        let cxy = engine.joint_len2(query, refs2, &mut buf)?;
                        for (i, c) in (ri..).zip(cxy) {
                            top.push(Cand {
                                d: dist.eval(cq[qi], ref_lens[i], c),
                                i: i as u32,
                            });
                        }
                        ri += 2;
                    }
                    if ri < r1 {
                        let cxy = engine.joint_len(query, refs[ri], &mut buf)?;
                        top.push(Cand {
                            d: dist.eval(cq[qi], ref_lens[ri], cxy),
                            i: ri as u32,
                        });
                    }
                    Ok(())
                })?;
                progress.inc((r1 - r0) as u64);
                Ok(top.into_sorted())
            })
            .collect::<Result<_, _>>()?;
        for parts in partial.chunks(n_chunks) {
            let mut top = TopK::new(k);
            for c in parts.iter().flatten() {
                top.push(*c);
            }
            for c in top.into_sorted() {
                indices.push(c.i as i64);
                distances.push(c.d);
            }
        }
    }
    Ok(Neighbors {
        k,
        indices,
        distances,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parallel::install;
    use crate::text::{compressed_lens, Codec};

    fn corpus(n: usize, seed: u64) -> Vec<Vec<u8>> {
        let words = [
            "the", "cat", "sat", "on", "mat", "stock", "market", "rose", "fell", "goal", "team",
            "won", "rain", "sun", "cloud",
        ];
        let mut s = seed;
        (0..n)
            .map(|_| {
                let mut t = Vec::new();
                for _ in 0..(5 + (s % 30)) {
                    s = s
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    t.extend_from_slice(words[(s >> 33) as usize % words.len()].as_bytes());
                    t.push(b' ');
                }
                t
            })
            .collect()
    }

    fn refs(v: &[Vec<u8>]) -> Vec<&[u8]> {
        v.iter().map(|t| t.as_slice()).collect()
    }

    #[test]
    fn kneighbors_agrees_with_sorted_matrix_rows() {
        let q = corpus(7, 1);
        let r = corpus(2500, 2); // several reference chunks
        let (q, r) = (refs(&q), refs(&r));
        let comp = Compressor::new(Codec::Gzip, None).unwrap();
        let p = Progress::new();
        let m = distance_matrix(&q, &r, comp, Distance::Ncd, &p).unwrap();
        let lens = compressed_lens(&r, comp, &p).unwrap();
        let k = 5;
        let nb = kneighbors(&q, &r, &lens, k, comp, Distance::Ncd, &p).unwrap();
        assert_eq!(p.snapshot(), (7 * 2501, 7 * 2501));
        for qi in 0..q.len() {
            let row = &m[qi * r.len()..(qi + 1) * r.len()];
            let mut order: Vec<usize> = (0..r.len()).collect();
            order.sort_by(|&a, &b| row[a].total_cmp(&row[b]).then(a.cmp(&b)));
            let want: Vec<i64> = order[..k].iter().map(|&i| i as i64).collect();
            assert_eq!(&nb.indices[qi * k..(qi + 1) * k], want.as_slice());
            for j in 0..k {
                assert_eq!(nb.distances[qi * k + j], row[order[j]]);
            }
        }
    }

    #[test]
    fn ties_go_to_lower_index_and_threads_do_not_matter() {
        // Identical references: every distance ties.
        let r: Vec<&[u8]> = vec![b"same text here"; 40];
        let q: Vec<&[u8]> = vec![b"query", b"another query"];
        let comp = Compressor::new(Codec::Zstd, None).unwrap();
        let lens = compressed_lens(&r, comp, &Progress::new()).unwrap();
        let run = |n| {
            install(n, || {
                kneighbors(&q, &r, &lens, 3, comp, Distance::Cdm, &Progress::new()).unwrap()
            })
        };
        let a = run(1);
        assert_eq!(a.indices, vec![0, 1, 2, 0, 1, 2]);
        assert_eq!(a, run(3));
    }

    proptest::proptest! {
        #[test]
        fn topk_equals_sorted_prefix(
            ds in proptest::collection::vec(0u8..6, 1..200),
            k in 1usize..20,
        ) {
            // Few distinct distances: many ties, which must go to the lower index.
            let mut top = TopK::new(k);
            for (i, &d) in ds.iter().enumerate() {
                top.push(Cand { d: d as f64 / 5.0, i: i as u32 });
            }
            let got: Vec<u32> = top.into_sorted().iter().map(|c| c.i).collect();
            let mut want: Vec<u32> = (0..ds.len() as u32).collect();
            want.sort_by_key(|&i| (ds[i as usize], i));
            want.truncate(k);
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn bad_k_and_mismatch() {
        let r: Vec<&[u8]> = vec![b"a", b"b"];
        let comp = Compressor::new(Codec::Gzip, None).unwrap();
        let p = Progress::new();
        let e = kneighbors(&r, &r, &[21, 21], 3, comp, Distance::Ncd, &p);
        assert!(matches!(e, Err(TextError::BadK { k: 3, n_refs: 2 })));
        let e = kneighbors(&r, &r, &[21], 1, comp, Distance::Ncd, &p);
        assert!(matches!(e, Err(TextError::Mismatch(_))));
        let e = distance_matrix(&[], &r, comp, Distance::Ncd, &p);
        assert!(matches!(e, Err(TextError::Empty("queries"))));
    }

    #[test]
    fn cancellation_stops_work() {
        let q = corpus(4, 3);
        let r = corpus(50, 4);
        let p = Progress::new();
        p.cancel();
        let comp = Compressor::new(Codec::Gzip, None).unwrap();
        let e = distance_matrix(&refs(&q), &refs(&r), comp, Distance::Ncd, &p);
        assert!(matches!(e, Err(TextError::Cancelled)));
    }
}
