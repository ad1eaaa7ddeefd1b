//! Explicit AVX2 kernels where the compiler's vectorisation falls short, each with
//! its portable twin (the reference the tests compare it with, and what runs on CPUs
//! without AVX2). Results are bit-identical between the two.

/// `out[j] = table[code_j] * scales[j / block]` for the 4-bit codes of `bytes`, in
/// blocks of `block` values (an even count; `block / 2` bytes each): element `2i` is the
/// LOW nibble of byte `i` when `low_first`, else the high one. `out` may end in a short
/// block, and may be one value shorter than `2 * bytes.len()` (an odd tail).
#[inline(always)]
pub(crate) fn lut4_decode(
    bytes: &[u8],
    out: &mut [f32],
    table: &[f32; 16],
    scales: &[f32],
    block: usize,
    low_first: bool,
) {
    assert!(
        out.len() <= 2 * bytes.len()
            && block >= 2
            && block.is_multiple_of(2)
            && scales.len() >= out.len().div_ceil(block)
    );
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above); lengths checked above.
        unsafe { lut4_decode_avx2(bytes, out, table, scales, block, low_first) };
        return;
    }
    lut4_decode_scalar(bytes, out, table, scales, block, low_first)
}

#[inline(always)]
pub(crate) fn lut4_decode_scalar(
    bytes: &[u8],
    out: &mut [f32],
    table: &[f32; 16],
    scales: &[f32],
    block: usize,
    low_first: bool,
) {
    for ((ob, bb), &s) in out
        .chunks_mut(block)
        .zip(bytes.chunks(block / 2))
        .zip(scales)
    {
        lut4_block_scalar(bb, ob, table, s, low_first);
    }
}

/// One block of [`lut4_decode_scalar`] (also the tail of the AVX2 kernel).
#[inline(always)]
fn lut4_block_scalar(bytes: &[u8], out: &mut [f32], table: &[f32; 16], s: f32, low_first: bool) {
    let (first, second) = if low_first { (0, 4) } else { (4, 0) };
    let half = out.len() / 2;
    let mut it = out.chunks_exact_mut(2);
    for (pair, &b) in (&mut it).zip(bytes) {
        pair[0] = table[((b >> first) & 15) as usize] * s;
        pair[1] = table[((b >> second) & 15) as usize] * s;
    }
    if let [last] = it.into_remainder() {
        *last = table[((bytes[half] >> first) & 15) as usize] * s;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lut4_decode_avx2(
    bytes: &[u8],
    out: &mut [f32],
    table: &[f32; 16],
    scales: &[f32],
    block: usize,
    low_first: bool,
) {
    use std::arch::x86_64::*;
    let tlo = _mm256_loadu_ps(table.as_ptr());
    let thi = _mm256_loadu_ps(table.as_ptr().add(8));
    let shifts = if low_first {
        _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28)
    } else {
        _mm256_setr_epi32(4, 0, 12, 8, 20, 16, 28, 24)
    };
    let m15 = _mm256_set1_epi32(15);
    for ((ob, bb), &s) in out
        .chunks_mut(block)
        .zip(bytes.chunks(block / 2))
        .zip(scales)
    {
        let vs = _mm256_set1_ps(s);
        let full = ob.len() / 8;
        let (bp, op) = (bb.as_ptr(), ob.as_mut_ptr());
        for i in 0..full {
            // SAFETY: 8 values per step, 4 bytes each: within this block of `out` and
            // of `bytes` (`out.len() <= 2 * bytes.len()`, blocks of `block / 2` bytes).
            let w = (bp.add(4 * i) as *const u32).read_unaligned();
            let idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(w as i32), shifts), m15);
            let lo = _mm256_permutevar8x32_ps(tlo, idx);
            let hi = _mm256_permutevar8x32_ps(thi, idx);
            // bit 3 of the code moved to the sign bit selects the upper half of the table
            let v = _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32(idx, 28)));
            _mm256_storeu_ps(op.add(8 * i), _mm256_mul_ps(v, vs));
        }
        lut4_block_scalar(&bb[4 * full..], &mut ob[8 * full..], table, s, low_first);
    }
}

/// `out[j] = table[(bytes[j] >> shift) & 3]`: 2-bit codes, one per byte at bit `shift`
/// (`out` and `bytes` of the same length).
#[inline(always)]
pub(crate) fn lut2_decode(bytes: &[u8], shift: u32, table: &[f32; 4], out: &mut [f32]) {
    assert!(out.len() == bytes.len() && shift <= 6);
    #[cfg(target_arch = "x86_64")]
    if super::has_avx2() {
        // SAFETY: the CPU supports AVX2 (checked just above); lengths checked above.
        unsafe { lut2_decode_avx2(bytes, shift, table, out) };
        return;
    }
    lut2_decode_scalar(bytes, shift, table, out)
}

#[inline(always)]
pub(crate) fn lut2_decode_scalar(bytes: &[u8], shift: u32, table: &[f32; 4], out: &mut [f32]) {
    for (o, &b) in out.iter_mut().zip(bytes) {
        *o = table[((b >> shift) & 3) as usize];
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lut2_decode_avx2(bytes: &[u8], shift: u32, table: &[f32; 4], out: &mut [f32]) {
    use std::arch::x86_64::*;
    // `vpermilps` picks within each 128-bit lane by the low 2 bits of each index: the
    // 4-entry table in both lanes, and no mask needed after the shift.
    let t4 = _mm_loadu_ps(table.as_ptr());
    let tab = _mm256_set_m128(t4, t4);
    let cnt = _mm_cvtsi32_si128(shift as i32);
    let full = out.len() / 32;
    let (bp, op) = (bytes.as_ptr(), out.as_mut_ptr());
    for i in 0..full {
        for k in 0..4 {
            let at = 32 * i + 8 * k;
            // SAFETY: 32 values per step: within `bytes` and `out` (same length).
            let b = _mm_loadl_epi64(bp.add(at) as *const __m128i);
            let idx = _mm256_srl_epi32(_mm256_cvtepu8_epi32(b), cnt);
            _mm256_storeu_ps(op.add(at), _mm256_permutevar_ps(tab, idx));
        }
    }
    lut2_decode_scalar(&bytes[32 * full..], shift, table, &mut out[32 * full..]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lut2_matches_scalar() {
        let table = [-0.37f32, -0.0, 1.5e-39, f32::NAN];
        let bytes: Vec<u8> = (0..301u32).map(|i| (i * 97 + 13) as u8).collect();
        for len in [0, 1, 7, 8, 31, 32, 33, 64, 95, 301] {
            for shift in [0, 2, 4, 6] {
                let mut a = vec![0f32; len];
                let mut b = vec![1f32; len];
                lut2_decode(&bytes[..len], shift, &table, &mut a);
                lut2_decode_scalar(&bytes[..len], shift, &table, &mut b);
                let ab: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
                let bb: Vec<u32> = b.iter().map(|v| v.to_bits()).collect();
                assert_eq!(ab, bb, "len {len} shift {shift}");
            }
        }
    }

    #[test]
    fn lut4_matches_scalar() {
        let table: [f32; 16] = std::array::from_fn(|i| (i as f32 - 7.3) * 0.37);
        let bytes: Vec<u8> = (0..301u32).map(|i| (i * 97 + 13) as u8).collect();
        let scales = [1.0f32, -0.5, 3.1e-3, f32::from_bits(1), 7.0, -0.0];
        for len in [0usize, 1, 2, 7, 8, 9, 15, 16, 17, 63, 64, 65, 601, 602] {
            for low in [false, true] {
                for block in [2, 16, 32, 64, 602] {
                    let nb = len.div_ceil(block);
                    let sc: Vec<f32> = (0..nb).map(|k| scales[k % scales.len()]).collect();
                    let mut a = vec![0f32; len];
                    let mut b = vec![0f32; len];
                    lut4_decode(&bytes, &mut a, &table, &sc, block, low);
                    lut4_decode_scalar(&bytes, &mut b, &table, &sc, block, low);
                    let ab: Vec<u32> = a.iter().map(|v| v.to_bits()).collect();
                    let bb: Vec<u32> = b.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(ab, bb, "len {len} low {low} block {block}");
                    // the scalar twin against the formula itself
                    for (j, v) in b.iter().enumerate() {
                        let byte = bytes[j / 2];
                        let first = j % 2 == 0;
                        let code = if first == low { byte & 15 } else { byte >> 4 };
                        let want = table[code as usize] * sc[j / block];
                        assert_eq!(v.to_bits(), want.to_bits());
                    }
                }
            }
        }
    }
}
