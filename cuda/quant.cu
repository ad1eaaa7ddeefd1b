// quant.cu — GPU encode/decode of the thrifty.quant formats.
//
// Each kernel ports the matching loop of rust/core/src/quant/{ternary,int,mx}.rs; the
// names of the Rust functions are given above each kernel. Inputs are contiguous
// float32, seen as `rows x cols` (groups along cols) or flattened (nf4, mx*, nvfp4).
// Launch: 1-D grids of 256-thread blocks (th_group_amax, th_group_minmax, th_tq_pack and
// th_block_encode reduce within a block in shared memory and rely on that size); one
// thread per output item (element, byte or block, as noted above each kernel).
//
// Reductions and why they match the CPU bit for bit:
// * max-type reductions (absmax per group/block/tensor, min/max for asymmetric int4)
//   are exact and order-independent, so atomics on the float bit patterns are used;
// * the absmean of `ternary` is a float64 sum whose rounding depends on the order: the
//   kernels th_absmean_lanes / th_absmean_parts / th_ternary_scale_mean replay the CPU
//   order exactly (chunks of 65536, 16 float64 lanes per chunk, lanes summed in order,
//   then the remainder, then the chunks in order).
#include "thrifty_common.cuh"

#define TH_CHUNK 65536ULL


// Order-preserving maps of float32 to uint32 (for atomicMin / atomicMax on floats).
TH_DEV th_u32 th_ord(float v) {
    th_u32 b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
TH_DEV float th_unord(th_u32 o) {
    return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

// ============================================================================ ternary
// ternary_gamma (absmean): part 1, one thread per (chunk, lane); lane k of a chunk sums
// |x| of the chunk's elements 16 q + k, q over the whole 16-groups, in float64.
extern "C" __global__ void th_absmean_lanes(const float* __restrict__ x, th_u64 n,
                                            double* __restrict__ lanes) {
    th_u64 t = th_tid();
    th_u64 nchunks = (n + TH_CHUNK - 1) / TH_CHUNK;
    if (t >= nchunks * 16) return;
    th_u64 c = t / 16, k = t % 16;
    th_u64 start = c * TH_CHUNK;
    th_u64 len = n - start < TH_CHUNK ? n - start : TH_CHUNK;
    th_u64 groups = len / 16;
    const float* p = x + start + k;
    double acc = 0.0;
    // unrolled so that the loads are issued ahead of the (ordered) float64 adds
#pragma unroll 16
    for (th_u64 q = 0; q < groups; ++q) acc = __dadd_rn(acc, (double)th_abs(p[16 * q]));
    lanes[t] = acc;
}

// part 2, one thread per chunk: lanes summed in order, plus the remainder summed in order.
extern "C" __global__ void th_absmean_parts(const float* __restrict__ x, th_u64 n,
                                            const double* __restrict__ lanes,
                                            double* __restrict__ parts) {
    th_u64 c = th_tid();
    th_u64 nchunks = (n + TH_CHUNK - 1) / TH_CHUNK;
    if (c >= nchunks) return;
    th_u64 start = c * TH_CHUNK;
    th_u64 len = n - start < TH_CHUNK ? n - start : TH_CHUNK;
    double s = -0.0;
    for (int k = 0; k < 16; ++k) s = __dadd_rn(s, lanes[c * 16 + k]);
    double r = -0.0;
    for (th_u64 j = len / 16 * 16; j < len; ++j) r = __dadd_rn(r, (double)th_abs(x[start + j]));
    parts[c] = __dadd_rn(s, r);
}

// part 3, one thread: gamma = (sum of parts in order / n) as f32; s = 1 / max(gamma, 1e-5).
// out[0] = s, out[1] = 1 / s (the stored scale).
extern "C" __global__ void th_ternary_scale_mean(const double* __restrict__ parts, th_u64 nchunks,
                                                 th_u64 n, float* __restrict__ out) {
    if (th_tid() != 0) return;
    double t = -0.0;
    for (th_u64 c = 0; c < nchunks; ++c) t = __dadd_rn(t, parts[c]);
    float gamma = __double2float_rn(__ddiv_rn(t, (double)n));
    float s = __fdiv_rn(1.0f, th_max(gamma, 1e-5f));
    out[0] = s;
    out[1] = __fdiv_rn(1.0f, s);
}

// absmedian: gamma is given (the lower median, selected by torch); same scale rule.
extern "C" __global__ void th_ternary_scale_gamma(const float* __restrict__ gamma,
                                                  float* __restrict__ out) {
    if (th_tid() != 0) return;
    float s = __fdiv_rn(1.0f, th_max(gamma[0], 1e-5f));
    out[0] = s;
    out[1] = __fdiv_rn(1.0f, s);
}

// quantize_ternary: one thread per packed byte (r, j) of the (R, inner) output,
// R = ceil(out_rows / 4); bits 2i..2i+1 hold row r + i R.
extern "C" __global__ void th_ternary_pack(const float* __restrict__ x, th_u64 out_rows,
                                           th_u64 inner, const float* __restrict__ sbuf,
                                           int stochastic, th_u64 seed, th_u8* __restrict__ out) {
    th_u64 big_r = (out_rows + 3) / 4;
    th_u64 t = th_tid();
    if (t >= big_r * inner) return;
    th_u64 r = t / inner, j = t % inner;
    float s = sbuf[0];
    th_u64 key = th_stream_key(seed);
    th_u32 byte = 0;
    for (th_u32 i = 0; i < 4; ++i) {
        th_u64 src = r + i * big_r;
        if (src >= out_rows) break;
        float v = x[src * inner + j];
        th_u32 c;
        if (!stochastic) {
            float q = __fmul_rn(v, s);
            c = 1u + (q > 0.5f ? 1u : 0u) - (q < -0.5f ? 1u : 0u);
        } else {
            float q = th_clamp(__fmul_rn(v, s), -1.0f, 1.0f);
            float rq = th_stochastic_round(key, q, src * inner + j);
            c = (th_u32)((th_i32)rq + 1);
        }
        byte |= c << (2 * i);
    }
    out[t] = (th_u8)byte;
}

// dequantize_ternary: one thread per output element (src, j).
extern "C" __global__ void th_ternary_unpack(const th_u8* __restrict__ data, th_u64 out_rows,
                                             th_u64 inner, const float* __restrict__ scale,
                                             float* __restrict__ y) {
    th_u64 t = th_tid();
    if (t >= out_rows * inner) return;
    th_u64 big_r = (out_rows + 3) / 4;
    th_u64 src = t / inner, j = t % inner;
    th_u64 r = src % big_r, i = src / big_r;
    th_u32 c = (data[r * inner + j] >> (2 * i)) & 3u;
    y[t] = __fmul_rn(__fadd_rn((float)c, -1.0f), scale[0]);
}

// ============================================================================ TQ1_0 / TQ2_0
// llama.cpp's ternary code: lroundf(v) + 1 for |v| <= 1 (half away from zero).
TH_DEV th_u32 th_trit(float v) { return 1u + (v >= 0.5f ? 1u : 0u) - (v <= -0.5f ? 1u : 0u); }

TH_DEV th_u32 th_pack5(th_u32 t0, th_u32 t1, th_u32 t2, th_u32 t3, th_u32 t4) {
    th_u32 v = t0 * 81u + t1 * 27u + t2 * 9u + t3 * 3u + t4;
    return (v * 256u + 242u) / 243u;
}

// amax of a slice (order-independent: max of |v|)
TH_DEV float th_amax(const float* b, th_u64 len) {
    float m = 0.0f;
    for (th_u64 i = 0; i < len; ++i) {
        float a = th_abs(b[i]);
        m = a > m ? a : m;
    }
    return m;
}

// quantize_tq (tq1_block / tq2_block): one 256-thread block per 256-value GGUF block;
// each thread loads one value (coalesced), the block's amax is reduced in shared memory,
// each thread computes its trit, then the first 52 (TQ1_0) / 64 (TQ2_0) threads pack
// the bytes and thread 0 writes the fp16 scale.
extern "C" __global__ void th_tq_pack(const float* __restrict__ x, th_u64 nb, int tq1,
                                      th_u8* __restrict__ out) {
    __shared__ float red[256];
    __shared__ th_u32 t[256];
    th_u64 blk = blockIdx.x;
    int e = threadIdx.x;
    if (blk >= nb) return;  // uniform per block
    const float* b = x + blk * 256;
    float v = b[e];
    float d = th_block_max256(th_abs(v), red);
    float id = d == 0.0f ? 0.0f : __fdiv_rn(1.0f, d);
    t[e] = th_trit(__fmul_rn(v, id));
    __syncthreads();
    th_u16 h = th_f32_to_f16(d);
    if (tq1) {
        th_u8* o = out + blk * 54;
        if (e < 32) {
            o[e] = (th_u8)th_pack5(t[e], t[e + 32], t[e + 64], t[e + 96], t[e + 128]);
        } else if (e < 48) {
            int q = 160 + (e - 32);
            o[e] = (th_u8)th_pack5(t[q], t[q + 16], t[q + 32], t[q + 48], t[q + 64]);
        } else if (e < 52) {
            int q = 240 + (e - 48);
            o[e] = (th_u8)th_pack5(t[q], t[q + 4], t[q + 8], t[q + 12], 0u);
        } else if (e == 52) {
            o[52] = (th_u8)(h & 0xff);
            o[53] = (th_u8)(h >> 8);
        }
    } else {
        th_u8* o = out + blk * 66;
        if (e < 64) {
            int j = e / 32, m = e % 32;
            th_u32 byte = 0;
            for (int q = 0; q < 4; ++q) byte |= t[128 * j + m + 32 * q] << (2 * q);
            o[e] = (th_u8)byte;
        } else if (e == 64) {
            o[64] = (th_u8)(h & 0xff);
            o[65] = (th_u8)(h >> 8);
        }
    }
}

// dequantize_tq: one thread per output element.
extern "C" __global__ void th_tq_unpack(const th_u8* __restrict__ data, th_u64 nb, int tq1,
                                        float* __restrict__ y) {
    th_u64 t = th_tid();
    if (t >= nb * 256) return;
    th_u64 blk = t / 256;
    th_u32 e = (th_u32)(t % 256);
    th_u64 tb = tq1 ? 54 : 66;
    const th_u8* b = data + blk * tb;
    float d = th_f16_to_f32((th_u16)(b[tb - 2] | (b[tb - 1] << 8)));
    float v;
    if (!tq1) {
        th_u32 j = e / 128, n = (e % 128) / 32, m = e % 32;
        th_u32 c = (b[32 * j + m] >> (2 * n)) & 3u;
        v = __fadd_rn((float)c, -1.0f);
    } else {
        th_u32 byte, n;
        if (e < 160) {
            n = e / 32; byte = b[e % 32];
        } else if (e < 240) {
            n = (e - 160) / 16; byte = b[32 + (e - 160) % 16];
        } else {
            n = (e - 240) / 4; byte = b[48 + (e - 240) % 4];
        }
        const th_u32 pow3[5] = {1u, 3u, 9u, 27u, 81u};
        th_u32 q = (byte * pow3[n]) & 0xffu;
        v = __fadd_rn((float)((q * 3u) >> 8), -1.0f);
    }
    y[t] = __fmul_rn(v, d);
}

// ============================================================================ group reductions
// Largest |x| per group of g consecutive elements; one thread per segment of `seg`
// elements. When a whole block's elements lie in one group (large groups, per-tensor),
// the block reduces in shared memory and issues one atomic; otherwise each thread issues
// one atomic per group piece it touches. `amax` holds uint32 bit patterns (non-negative
// floats order as their bits) and must be zeroed first. Launch with 256-thread blocks.
extern "C" __global__ void th_group_amax(const float* __restrict__ x, th_u64 n, th_u64 g,
                                         th_u64 seg, th_u32* __restrict__ amax) {
    __shared__ th_u32 red[256];
    th_u64 bstart = (th_u64)blockIdx.x * blockDim.x * seg;
    th_u64 bend = bstart + blockDim.x * seg < n ? bstart + blockDim.x * seg : n;
    bool one_group = bstart / g == (bend - 1) / g;  // uniform over the block
    th_u64 start = th_tid() * seg;
    th_u64 end = start + seg < n ? start + seg : n;
    th_u64 grp = start / g;
    float m = 0.0f;
    for (th_u64 i = start; i < end; ++i) {
        th_u64 gi = i / g;
        if (gi != grp) {
            atomicMax(amax + grp, __float_as_uint(m));
            grp = gi;
            m = 0.0f;
        }
        float a = th_abs(x[i]);
        m = a > m ? a : m;
    }
    if (!one_group) {
        if (start < n) atomicMax(amax + grp, __float_as_uint(m));
        return;
    }
    int tid = threadIdx.x;
    red[tid] = __float_as_uint(m);  // 0 for threads past the end
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (tid < s) red[tid] = red[tid] > red[tid + s] ? red[tid] : red[tid + s];
        __syncthreads();
    }
    if (tid == 0) atomicMax(amax + bstart / g, red[0]);
}

// (min, max) per group as order-preserving codes (th_ord); lo must start at 0xFFFFFFFF,
// hi at 0. Same structure as th_group_amax.
extern "C" __global__ void th_group_minmax(const float* __restrict__ x, th_u64 n, th_u64 g,
                                           th_u64 seg, th_u32* __restrict__ lo,
                                           th_u32* __restrict__ hi) {
    __shared__ th_u32 rlo[256];
    __shared__ th_u32 rhi[256];
    th_u64 bstart = (th_u64)blockIdx.x * blockDim.x * seg;
    th_u64 bend = bstart + blockDim.x * seg < n ? bstart + blockDim.x * seg : n;
    bool one_group = bstart / g == (bend - 1) / g;
    th_u64 start = th_tid() * seg;
    th_u64 end = start + seg < n ? start + seg : n;
    th_u64 grp = start / g;
    th_u32 a = 0xffffffffu, b = 0u;
    for (th_u64 i = start; i < end; ++i) {
        th_u64 gi = i / g;
        if (gi != grp) {
            atomicMin(lo + grp, a);
            atomicMax(hi + grp, b);
            grp = gi;
            a = 0xffffffffu;
            b = 0u;
        }
        th_u32 o = th_ord(x[i]);
        a = o < a ? o : a;
        b = o > b ? o : b;
    }
    if (!one_group) {
        if (start < n) {
            atomicMin(lo + grp, a);
            atomicMax(hi + grp, b);
        }
        return;
    }
    int tid = threadIdx.x;
    rlo[tid] = a;
    rhi[tid] = b;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (tid < s) {
            rlo[tid] = rlo[tid] < rlo[tid + s] ? rlo[tid] : rlo[tid + s];
            rhi[tid] = rhi[tid] > rhi[tid + s] ? rhi[tid] : rhi[tid + s];
        }
        __syncthreads();
    }
    if (tid == 0) {
        atomicMin(lo + bstart / g, rlo[0]);
        atomicMax(hi + bstart / g, rhi[0]);
    }
}

// Symmetric int8/int4 scales: max(amax / half, eps) (half = 127.5 or 7.5).
extern "C" __global__ void th_int_scales(const th_u32* __restrict__ amax, th_u64 ngroups,
                                         float half, float* __restrict__ scales) {
    th_u64 t = th_tid();
    if (t >= ngroups) return;
    scales[t] = th_max(__fdiv_rn(__uint_as_float(amax[t]), half), 1.1920929e-07f);
}

// Asymmetric int4: scale = max((hi - lo) / 15, eps), zero point = lo + 8 scale.
extern "C" __global__ void th_int4_asym_scales(const th_u32* __restrict__ lo,
                                               const th_u32* __restrict__ hi, th_u64 ngroups,
                                               float* __restrict__ scales, float* __restrict__ zps) {
    th_u64 t = th_tid();
    if (t >= ngroups) return;
    float l = th_unord(lo[t]), h = th_unord(hi[t]);
    float sc = th_max(__fdiv_rn(__fadd_rn(h, -l), 15.0f), 1.1920929e-07f);
    scales[t] = sc;
    zps[t] = __fadd_rn(l, __fmul_rn(sc, 8.0f));
}

// Scaled FP8: fp8_scale(amax, max).
extern "C" __global__ void th_fp8_scales(const th_u32* __restrict__ amax, th_u64 ngroups,
                                         float maxv, float* __restrict__ scales) {
    th_u64 t = th_tid();
    if (t >= ngroups) return;
    float a = __uint_as_float(amax[t]);
    float s = __fdiv_rn(a, maxv);
    scales[t] = a == 0.0f ? 1.0f : (s == 0.0f ? __uint_as_float(1u) : s);
}

// ============================================================================ int8 / int4
// quantize_int: int8 one thread per element; int4 one thread per byte (two elements
// of the same group: g is even). zps is read only when asym.
extern "C" __global__ void th_int_encode(const float* __restrict__ x, th_u64 n, th_u64 g,
                                         const float* __restrict__ scales,
                                         const float* __restrict__ zps, int is4, int asym,
                                         int stochastic, th_u64 seed, th_u8* __restrict__ out) {
    th_u64 t = th_tid();
    th_u64 items = is4 ? n / 2 : n;
    if (t >= items) return;
    th_u64 key = th_stream_key(seed);
    th_u64 first = is4 ? 2 * t : t;
    th_u64 grp = first / g;
    float sc = scales[grp];
    float mul = 1.0f, sub = 0.0f, div = 1.0f;
    if (asym) {
        sub = __fadd_rn(zps[grp], -__fmul_rn(sc, 8.0f));
        div = sc;
    } else {
        mul = __fdiv_rn(1.0f, sc);
    }
    float lo, hi;
    if (asym) { lo = 0.0f; hi = 15.0f; }
    else if (is4) { lo = -8.0f; hi = 7.0f; }
    else { lo = -128.0f; hi = 127.0f; }
    th_i32 bias = (is4 && !asym) ? 8 : 0;
    th_u32 codes[2];
    int cnt = is4 ? 2 : 1;
    for (int k = 0; k < cnt; ++k) {
        th_u64 idx = first + k;
        float v = x[idx];
        float q = asym ? __fdiv_rn(__fadd_rn(v, -sub), div) : __fmul_rn(v, mul);
        q = th_clamp(q, lo, hi);
        th_i32 qi = stochastic ? (th_i32)th_stochastic_round(key, q, idx) : th_rne_i32(q);
        codes[k] = (th_u32)(qi + bias) & 0xffu;
    }
    out[t] = is4 ? (th_u8)((codes[0] & 15u) | (codes[1] << 4)) : (th_u8)codes[0];
}

// dequantize_int: one thread per element; zps read only when has_zp.
extern "C" __global__ void th_int_decode(const th_u8* __restrict__ data, th_u64 n, th_u64 g,
                                         const float* __restrict__ scales,
                                         const float* __restrict__ zps, int is4, int has_zp,
                                         float* __restrict__ y) {
    th_u64 t = th_tid();
    if (t >= n) return;
    th_u64 grp = t / g;
    float sc = scales[grp];
    if (is4) {
        th_u8 b = data[t / 2];
        th_u32 nib = (t % 2 == 0) ? (b & 15u) : (b >> 4);
        float zp = has_zp ? zps[grp] : 0.0f;
        y[t] = __fadd_rn(__fmul_rn(__fadd_rn((float)nib, -8.0f), sc), zp);
    } else {
        y[t] = __fmul_rn((float)(signed char)data[t], sc);
    }
}

// ============================================================================ NF4
__constant__ float TH_NF4_CODE[16] = {
    -1.0f, -0.6961928009986877f, -0.5250730514526367f, -0.39491748809814453f,
    -0.28444138169288635f, -0.18477343022823334f, -0.09105003625154495f, 0.0f,
    0.07958029955625534f, 0.16093020141124725f, 0.24611230194568634f, 0.33791524171829224f,
    0.44070982933044434f, 0.5626170039176941f, 0.7229568362236023f, 1.0f};

// Largest |x| per block of B over the flattened tensor (ragged tail); one thread per block.
extern "C" __global__ void th_block_amax(const float* __restrict__ x, th_u64 n, th_u64 bsize,
                                         float* __restrict__ out) {
    th_u64 blk = th_tid();
    th_u64 start = blk * bsize;
    if (start >= n) return;
    th_u64 len = n - start < bsize ? n - start : bsize;
    out[blk] = th_amax(x + start, len);
}

TH_DEV th_u32 th_nf4_code(float v, float inv) {
    v = __fmul_rn(v, inv);
    th_u32 c = 0;
    for (int i = 0; i < 15; ++i) {
        // float64 midpoint rounded to float32 (nf4_thresholds)
        float t = __double2float_rn(__ddiv_rn(__dadd_rn((double)TH_NF4_CODE[i], (double)TH_NF4_CODE[i + 1]), 2.0));
        c += v > t ? 1u : 0u;
    }
    return c;
}

// quantize_nf4: one thread per output byte (elements 2i (high nibble) and 2i+1).
extern "C" __global__ void th_nf4_encode(const float* __restrict__ x, th_u64 n, th_u64 g,
                                         const float* __restrict__ absmax, th_u8* __restrict__ out) {
    th_u64 t = th_tid();
    if (t >= (n + 1) / 2) return;
    th_u64 e = 2 * t;
    float a = absmax[e / g];
    float inv = a == 0.0f ? 0.0f : __fdiv_rn(1.0f, a);
    th_u32 hiq = th_nf4_code(x[e], inv);
    th_u32 loq = e + 1 < n ? th_nf4_code(x[e + 1], inv) : 0u;
    out[t] = (th_u8)((hiq << 4) | loq);
}

extern "C" __global__ void th_nf4_decode(const th_u8* __restrict__ data, th_u64 n, th_u64 g,
                                         const float* __restrict__ absmax, float* __restrict__ y) {
    th_u64 t = th_tid();
    if (t >= n) return;
    th_u8 b = data[t / 2];
    th_u32 c = (t % 2 == 0) ? (b >> 4) : (b & 15u);
    y[t] = __fmul_rn(TH_NF4_CODE[c], absmax[t / g]);
}

// ============================================================================ scaled FP8
// sr_encode: stochastic rounding between the two codes that bracket v (clamped to max).
TH_DEV th_u32 th_sr_encode(float v, th_spec spec, double u) {
    th_u32 sign = (1u << (spec.ebits + spec.mbits)) * (__float_as_uint(v) >> 31);
    th_u32 c = th_encode(v, spec, true);
    th_u32 mag = c & ~sign;
    float a = th_abs(v);
    double ad = (double)a;
    double vm = (double)th_decode(mag, spec);
    th_u32 lo, hi;
    if (vm > ad) {
        lo = mag - 1; hi = mag;
    } else if (mag < spec.max_code && vm < ad) {
        lo = mag; hi = mag + 1;
    } else {
        return c;
    }
    double vlo = (double)th_decode(lo, spec), vhi = (double)th_decode(hi, spec);
    double p = __ddiv_rn(__dadd_rn(ad, -vlo), __dadd_rn(vhi, -vlo));
    return (u < p ? hi : lo) | sign;
}

// quantize_fp8: one thread per element; codes of x / scale.
extern "C" __global__ void th_fp8_encode(const float* __restrict__ x, th_u64 n, th_u64 g,
                                         const float* __restrict__ scales, int kind, int saturate,
                                         int stochastic, th_u64 seed, th_u8* __restrict__ out) {
    th_u64 t = th_tid();
    if (t >= n) return;
    th_spec spec = th_spec_of((th_kind)kind);
    float v = __fdiv_rn(x[t], scales[t / g]);
    // saturating encoders clamp a quotient that overflowed (a small fixed scale)
    if (saturate || stochastic) v = th_clamp(v, -3.40282347e+38f, 3.40282347e+38f);
    th_u32 c = stochastic ? th_sr_encode(v, spec, th_uniform(th_stream_key(seed), t))
                          : th_encode(v, spec, saturate != 0);
    out[t] = (th_u8)c;
}

extern "C" __global__ void th_fp8_decode(const th_u8* __restrict__ data, th_u64 n, th_u64 g,
                                         const float* __restrict__ scales, int kind,
                                         float* __restrict__ y) {
    th_u64 t = th_tid();
    if (t >= n) return;
    y[t] = __fmul_rn(th_decode(data[t], th_spec_of((th_kind)kind)), scales[t / g]);
}

// Element codecs (fp8_encode / fp4_encode): one code per byte, never fails.
extern "C" __global__ void th_fp_encode(const float* __restrict__ x, th_u8* __restrict__ out,
                                        th_u64 n, int kind, int saturate) {
    th_u64 i = th_tid();
    if (i < n) out[i] = (th_u8)th_encode(x[i], th_spec_of((th_kind)kind), saturate != 0);
}

extern "C" __global__ void th_fp_decode(const th_u8* __restrict__ codes, float* __restrict__ y,
                                        th_u64 n, int kind) {
    th_u64 i = th_tid();
    if (i < n) y[i] = th_decode(codes[i], th_spec_of((th_kind)kind));
}

// ============================================================================ MX / NVFP4
// quantize_mx / quantize_nvfp4 (blocks_nearest / blocks_stochastic): one thread per
// element of the zero-padded blocks (coalesced loads and stores), 256-thread blocks
// holding 8 MX blocks or 16 NVFP4 blocks; each block's amax is reduced in shared memory.
// mode 0: MX, E8M0 scale code floor(log2(amax)) - emax + 127 clamped to [0, 254],
//         elements v * 2^(127 - code); bsize 32.
// mode 1: NVFP4, E4M3 scale code of clamp((amax / 6) / pt, 2^-6, 448), elements
//         v * ((1 / pt) / scale); bsize 16; ptbuf[0] = pt.
extern "C" __global__ void th_block_encode(const float* __restrict__ x, th_u64 n, int bsize,
                                           int mode, int kind, int emax,
                                           const float* __restrict__ ptbuf, int stochastic,
                                           th_u64 seed, th_u8* __restrict__ data,
                                           th_u8* __restrict__ scales) {
    __shared__ float red[256];
    __shared__ th_u32 codes[256];
    int tid = threadIdx.x;
    th_u64 idx = th_tid();
    th_u64 nb = (n + bsize - 1) / bsize;
    bool live = idx < nb * (th_u64)bsize;  // inside a (padded) block
    float v = idx < n ? x[idx] : 0.0f;
    red[tid] = th_abs(v);
    __syncthreads();
    int lane = tid % bsize;
    for (int s = bsize / 2; s > 0; s >>= 1) {
        if (lane < s) red[tid] = th_max(red[tid], red[tid + s]);
        __syncthreads();
    }
    float a = red[tid - lane];
    th_u64 blk = idx / bsize;
    th_spec spec = th_spec_of((th_kind)kind);
    th_u32 code;
    float mul = 1.0f, div = 1.0f;
    if (mode == 0) {
        code = 0;
        if (a != 0.0f) {
            int e = th_floor_log2(a) - emax + 127;
            code = (th_u32)(e < 0 ? 0 : (e > 254 ? 254 : e));
        }
        mul = th_e8m0_value((th_u8)(254u - code));  // e8m0_inverse
    } else {
        float pt = ptbuf[0];
        float bs = th_clamp(__fdiv_rn(__fdiv_rn(a, 6.0f), pt), 0.015625f, 448.0f);
        th_spec e4 = th_spec_of(TH_E4M3);
        code = th_encode(bs, e4, true);
        mul = __fdiv_rn(__fdiv_rn(1.0f, pt), th_decode(code, e4));  // torchao's order
    }
    if (live && lane == 0) scales[blk] = (th_u8)code;
    float w = __fdiv_rn(__fmul_rn(v, mul), div);
    th_u32 c = stochastic ? th_sr_encode(w, spec, th_uniform(th_stream_key(seed), idx))
                          : th_encode(w, spec, true);
    if (spec.kind != TH_E2M1) {
        if (live) data[idx] = (th_u8)c;
        return;
    }
    codes[tid] = c;
    __syncthreads();
    if (live && tid % 2 == 0) data[idx / 2] = (th_u8)(codes[tid] | (codes[tid + 1] << 4));
}

// nvfp4_tensor_scale from the tensor's amax (bit pattern); out[0] = per-tensor scale.
extern "C" __global__ void th_nvfp4_tensor_scale(const th_u32* __restrict__ amax,
                                                 float* __restrict__ out) {
    if (th_tid() != 0) return;
    float a = __uint_as_float(amax[0]);
    out[0] = a == 0.0f ? 1.0f : th_max(__fdiv_rn(a, 2688.0f), 1.17549435e-38f);
}

// dequantize_mx / dequantize_nvfp4 (dequantize_blocks): one thread per element.
// mode 0: MX (E8M0 scale codes); mode 1: NVFP4 (E4M3 scale codes times tensor_scale).
extern "C" __global__ void th_block_decode(const th_u8* __restrict__ data,
                                           const th_u8* __restrict__ scales, th_u64 n, int bsize,
                                           int kind, int mode, float tensor_scale,
                                           float* __restrict__ y) {
    th_u64 t = th_tid();
    if (t >= n) return;
    th_spec spec = th_spec_of((th_kind)kind);
    th_u64 blk = t / (th_u64)bsize;
    float s = mode == 0 ? th_e8m0_value(scales[blk])
                        : __fmul_rn(tensor_scale, th_decode(scales[blk], th_spec_of(TH_E4M3)));
    th_u32 c;
    if (spec.kind == TH_E2M1) {
        th_u8 b = data[t / 2];
        c = (t % 2 == 0) ? (b & 15u) : (b >> 4);
    } else {
        c = data[t];
    }
    y[t] = __fmul_rn(th_decode(c, spec), s);
}
