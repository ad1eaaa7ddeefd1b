// quant.cu — GPU encode/decode of the thrifty.quant formats.
//
// Each kernel ports the matching loop of rust/core/src/quant/{ternary,int,mx}.rs; the
// names of the Rust functions are given above each kernel. Inputs are contiguous
// float32, seen as `rows x cols` (groups along cols) or flattened (nf4, mx*, nvfp4).
// Launch: 1-D grids of 256-thread blocks (th_tensor_amax, th_group_amax,
// th_group_minmax, th_absmean_chunks, th_tq_pack and th_block_encode reduce within a
// block in shared memory and rely on that size).
//
// Memory access, for bandwidth: the element-wise encoders and decoders take 4
// consecutive elements per thread, read as one 16-byte float4 load (4 codes as one
// 4-byte load) and written as one 4-byte (16-byte) store, so a warp moves 512 contiguous
// bytes of float32 per instruction; group indices are advanced per element instead of
// divided. A ragged end or an unaligned view falls back to scalar accesses in the same
// thread (th_load4 ...), which gives the same values.
//
// Reductions and why they match the CPU bit for bit:
// * max-type reductions (absmax per group/block/tensor, min/max for asymmetric int4)
//   are exact and order-independent, so atomics on the float bit patterns are used;
// * the absmean of `ternary` is a float64 sum whose rounding depends on the order:
//   th_absmean_chunks / th_ternary_scale_mean replay the CPU order exactly (chunks of
//   65536, 16 float64 lanes per chunk, lanes summed in order, then the remainder, then
//   the chunks in order).
//
// Input checks without an extra pass: the encoders set bit TH_ST_NONFINITE of a status
// word when they read a NaN or an infinity, the scale kernels set TH_ST_RANGE when a
// group's dequantized range overflows float32, th_tq_pack sets TH_ST_TQ_SCALE when a
// block scale rounds to an infinite float16; the host reads the word once, after the
// encode, and raises (thrifty/torch/quant.py).
#include "thrifty_common.cuh"

#define TH_CHUNK 65536ULL
#define TH_ST_NONFINITE 1u
#define TH_ST_RANGE 2u
#define TH_ST_TQ_SCALE 4u
#define TH_ST_CODE3 8u

// ---------------------------------------------------------------------------- memory
struct alignas(16) th_f4 {
    float a, b, c, d;
};

TH_DEV bool th_al(const void* p, th_u64 bytes) { return ((th_u64)p & (bytes - 1ULL)) == 0; }

// v[k] = x[i + k] (k < 4), 0 past n: one 16-byte load when in range and aligned.
TH_DEV void th_load4(const float* __restrict__ x, th_u64 i, th_u64 n, float* v) {
    if (i + 4 <= n && th_al(x + i, 16)) {
        th_f4 q = *(const th_f4*)(x + i);
        v[0] = q.a; v[1] = q.b; v[2] = q.c; v[3] = q.d;
    } else {
        for (int k = 0; k < 4; ++k) v[k] = i + k < n ? x[i + k] : 0.0f;
    }
}

// y[i + k] = v[k] for i + k < n: one 16-byte store when in range and aligned.
TH_DEV void th_store4(float* __restrict__ y, th_u64 i, th_u64 n, const float* v) {
    if (i + 4 <= n && th_al(y + i, 16)) {
        th_f4 q;
        q.a = v[0]; q.b = v[1]; q.c = v[2]; q.d = v[3];
        *(th_f4*)(y + i) = q;
    } else {
        for (int k = 0; k < 4; ++k)
            if (i + k < n) y[i + k] = v[k];
    }
}

// c[k] = p[i + k] (k < 4), 0 past n: one 4-byte load when in range and aligned.
TH_DEV void th_load4_u8(const th_u8* __restrict__ p, th_u64 i, th_u64 n, th_u32* c) {
    if (i + 4 <= n && th_al(p + i, 4)) {
        th_u32 w = *(const th_u32*)(p + i);
        for (int k = 0; k < 4; ++k) c[k] = (w >> (8 * k)) & 0xffu;
    } else {
        for (int k = 0; k < 4; ++k) c[k] = i + k < n ? (th_u32)p[i + k] : 0u;
    }
}

// p[i + k] = c[k] (low byte) for i + k < n: one 4-byte store when in range and aligned.
TH_DEV void th_store4_u8(th_u8* __restrict__ p, th_u64 i, th_u64 n, const th_u32* c) {
    if (i + 4 <= n && th_al(p + i, 4)) {
        *(th_u32*)(p + i) = (c[0] & 0xffu) | ((c[1] & 0xffu) << 8) | ((c[2] & 0xffu) << 16) | ((c[3] & 0xffu) << 24);
    } else {
        for (int k = 0; k < 4; ++k)
            if (i + k < n) p[i + k] = (th_u8)c[k];
    }
}

// c[k] = p[i + k] (k < 2), 0 past n: one 2-byte load when in range and aligned.
TH_DEV void th_load2_u8(const th_u8* __restrict__ p, th_u64 i, th_u64 n, th_u32* c) {
    if (i + 2 <= n && th_al(p + i, 2)) {
        th_u32 w = *(const th_u16*)(p + i);
        c[0] = w & 0xffu;
        c[1] = w >> 8;
    } else {
        c[0] = i < n ? (th_u32)p[i] : 0u;
        c[1] = i + 1 < n ? (th_u32)p[i + 1] : 0u;
    }
}

// Two bytes at p[i], p[i + 1] (i even): one 2-byte store when aligned; only p[i] when !both.
TH_DEV void th_store2_u8(th_u8* __restrict__ p, th_u64 i, th_u32 b0, th_u32 b1, bool both) {
    if (both && th_al(p + i, 2)) {
        *(th_u16*)(p + i) = (th_u16)((b0 & 0xffu) | ((b1 & 0xffu) << 8));
    } else {
        p[i] = (th_u8)b0;
        if (both) p[i + 1] = (th_u8)b1;
    }
}

// Sets TH_ST_NONFINITE when one of the first cnt values is NaN or infinite.
TH_DEV void th_check_finite(const float* v, int cnt, th_u32* status) {
    bool bad = false;
    for (int k = 0; k < cnt; ++k) bad |= (__float_as_uint(v[k]) & 0x7fffffffu) >= 0x7f800000u;
    if (bad) atomicOr(status, TH_ST_NONFINITE);
}

TH_DEV int th_count4(th_u64 i, th_u64 n) { return n - i < 4 ? (int)(n - i) : 4; }

// Order-preserving maps of float32 to uint32 (for atomicMin / atomicMax on floats).
TH_DEV th_u32 th_ord(float v) {
    th_u32 b = __float_as_uint(v);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}
TH_DEV float th_unord(th_u32 o) {
    return __uint_as_float((o & 0x80000000u) ? (o & 0x7fffffffu) : ~o);
}

// ============================================================================ ternary
// ternary_gamma (absmean), per chunk of 65536 values: one 256-thread block per chunk.
// Lane k (thread k < 16) sums |x| of the chunk's elements 16 q + k, q over the whole
// 16-groups, in float64 and in order; then thread 0 sums the 16 lanes in order, adds the
// remainder summed in order, and writes parts[chunk]. The other 240 threads stream the
// chunk through shared memory in tiles of 4096 values (16-byte loads), filling the next
// tile while the lanes add the current one, so the ordered adds never wait on DRAM.
#define TH_TILE 4096
extern "C" __global__ void th_absmean_chunks(const float* __restrict__ x, th_u64 n,
                                             double* __restrict__ parts) {
    __shared__ float tile[2][TH_TILE];
    __shared__ double lane[16];
    int tid = threadIdx.x;
    th_u64 c = blockIdx.x;
    th_u64 start = c * TH_CHUNK;
    th_u64 len = n - start < TH_CHUNK ? n - start : TH_CHUNK;
    th_u64 full = len / 16 * 16;  // the 16-groups
    th_u64 ntiles = (full + TH_TILE - 1) / TH_TILE;
    double acc = 0.0;
    // loaders: threads 16..255 fill tile buffer b with tile t
    for (th_u64 t = 0; t <= ntiles; ++t) {
        if (tid >= 16 && t < ntiles) {
            th_u64 base = t * TH_TILE;
            th_u64 tlen = full - base < TH_TILE ? full - base : TH_TILE;
            float* dst = tile[t & 1];
            for (th_u64 v = (th_u64)(tid - 16) * 4; v < tlen; v += 240 * 4) {
                float q[4];
                th_load4(x + start + base, v, tlen, q);
                dst[v] = q[0]; dst[v + 1] = q[1]; dst[v + 2] = q[2]; dst[v + 3] = q[3];
            }
        }
        if (tid < 16 && t > 0) {  // lanes: add tile t - 1
            th_u64 base = (t - 1) * TH_TILE;
            th_u64 groups = (full - base < TH_TILE ? full - base : TH_TILE) / 16;
            const float* src = tile[(t - 1) & 1];
            for (th_u64 q = 0; q < groups; ++q) acc = __dadd_rn(acc, (double)th_abs(src[16 * q + tid]));
        }
        __syncthreads();
    }
    if (tid < 16) lane[tid] = acc;
    __syncthreads();
    if (tid == 0) {
        double s = -0.0;
        for (int k = 0; k < 16; ++k) s = __dadd_rn(s, lane[k]);
        double r = -0.0;
        for (th_u64 j = full; j < len; ++j) r = __dadd_rn(r, (double)th_abs(x[start + j]));
        parts[c] = __dadd_rn(s, r);
    }
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

TH_DEV th_u32 th_ternary_code(float v, float s, int stochastic, th_u64 key, th_u64 idx) {
    if (!stochastic) {
        float q = __fmul_rn(v, s);
        return 1u + (q > 0.5f ? 1u : 0u) - (q < -0.5f ? 1u : 0u);
    }
    float q = th_clamp(__fmul_rn(v, s), -1.0f, 1.0f);
    float rq = th_stochastic_round(key, q, idx);
    return (th_u32)((th_i32)rq + 1);
}

// quantize_ternary: one thread per 4 consecutive packed bytes (r, j .. j + 3) of the
// (R, inner) output, R = ceil(out_rows / 4); bits 2i..2i+1 of byte (r, j) hold row
// r + i R. When the 4 bytes lie in one row, each source row is read with one 16-byte load.
extern "C" __global__ void th_ternary_pack(const float* __restrict__ x, th_u64 out_rows,
                                           th_u64 inner, const float* __restrict__ sbuf,
                                           int stochastic, th_u64 seed, th_u8* __restrict__ out,
                                           th_u32* __restrict__ status) {
    th_u64 big_r = (out_rows + 3) / 4;
    th_u64 total = big_r * inner, n = out_rows * inner;
    th_u64 u0 = 4 * th_tid();
    if (u0 >= total) return;
    int cnt = th_count4(u0, total);
    float s = sbuf[0];
    th_u64 key = th_stream_key(seed);
    th_u64 r = u0 / inner, j = u0 - r * inner;
    th_u32 bytes[4] = {0u, 0u, 0u, 0u};
    if (cnt == 4 && j + 4 <= inner) {
        for (th_u32 i = 0; i < 4; ++i) {
            th_u64 src = r + i * big_r;
            if (src >= out_rows) break;
            float v[4];
            th_load4(x, src * inner + j, n, v);
            th_check_finite(v, 4, status);
            for (int k = 0; k < 4; ++k)
                bytes[k] |= th_ternary_code(v[k], s, stochastic, key, src * inner + j + k) << (2 * i);
        }
    } else {
        for (int k = 0; k < cnt; ++k) {
            th_u64 rk = (u0 + k) / inner, jk = (u0 + k) - rk * inner;
            for (th_u32 i = 0; i < 4; ++i) {
                th_u64 src = rk + i * big_r;
                if (src >= out_rows) break;
                float v = x[src * inner + jk];
                th_check_finite(&v, 1, status);
                bytes[k] |= th_ternary_code(v, s, stochastic, key, src * inner + jk) << (2 * i);
            }
        }
    }
    th_store4_u8(out, u0, total, bytes);
}

// dequantize_ternary: one thread per 4 consecutive output elements (src, j .. j + 3);
// a byte holding code 3 (in any of its 4 positions, as the CPU checks) sets TH_ST_CODE3.
extern "C" __global__ void th_ternary_unpack(const th_u8* __restrict__ data, th_u64 out_rows,
                                             th_u64 inner, const float* __restrict__ scale,
                                             float* __restrict__ y, th_u32* __restrict__ status) {
    th_u64 n = out_rows * inner;
    th_u64 e0 = 4 * th_tid();
    if (e0 >= n) return;
    th_u64 big_r = (out_rows + 3) / 4;
    int cnt = th_count4(e0, n);
    float sc = scale[0];
    th_u64 src = e0 / inner, j = e0 - src * inner;
    th_u32 b[4];
    th_u32 shift[4];
    if (cnt == 4 && j + 4 <= inner) {
        th_u64 r = src % big_r;
        th_load4_u8(data, r * inner + j, big_r * inner, b);
        for (int k = 0; k < 4; ++k) shift[k] = 2 * (th_u32)(src / big_r);
    } else {
        for (int k = 0; k < 4; ++k) {
            b[k] = 0u;
            shift[k] = 0u;
            if (k >= cnt) continue;
            th_u64 sk = (e0 + k) / inner, jk = (e0 + k) - sk * inner;
            b[k] = data[(sk % big_r) * inner + jk];
            shift[k] = 2 * (th_u32)(sk / big_r);
        }
    }
    float v[4];
    bool bad = false;
    for (int k = 0; k < 4; ++k) {
        bad |= k < cnt && (b[k] & (b[k] >> 1) & 0x55u) != 0u;
        th_u32 c = (b[k] >> shift[k]) & 3u;
        v[k] = __fmul_rn(__fadd_rn((float)c, -1.0f), sc);
    }
    if (bad) atomicOr(status, TH_ST_CODE3);
    th_store4(y, e0, n, v);
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
                                      th_u8* __restrict__ out, th_u32* __restrict__ status) {
    __shared__ float red[256];
    __shared__ th_u32 t[256];
    th_u64 blk = blockIdx.x;
    int e = threadIdx.x;
    if (blk >= nb) return;  // uniform per block
    const float* b = x + blk * 256;
    float v = b[e];
    th_check_finite(&v, 1, status);
    float d = th_block_max256(th_abs(v), red);
    float id = d == 0.0f ? 0.0f : __fdiv_rn(1.0f, d);
    t[e] = th_trit(__fmul_rn(v, id));
    __syncthreads();
    th_u16 h = th_f32_to_f16(d);
    if (e == 0 && (h & 0x7C00u) == 0x7C00u) atomicOr(status, TH_ST_TQ_SCALE);  // ternary.rs refuses it
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
// Largest |x| of the whole tensor (per-tensor int8 / fp8 scales, nvfp4's tensor scale):
// a grid-stride loop over 16-byte loads, a tree in shared memory, one atomic per block.
// The maximum is taken on the bit patterns of |x| (the order of non-negative floats,
// with infinities and NaN above every finite value). `amax` must be zeroed first.
extern "C" __global__ void th_tensor_amax(const float* __restrict__ x, th_u64 n, th_u32* __restrict__ amax) {
    __shared__ th_u32 red[256];
    th_u32 m = 0u;
    for (th_u64 i = 4 * th_tid(); i < n; i += 4ULL * gridDim.x * blockDim.x) {
        float v[4];
        th_load4(x, i, n, v);
        for (int k = 0; k < 4; ++k) {
            th_u32 a = __float_as_uint(v[k]) & 0x7fffffffu;
            m = a > m ? a : m;
        }
    }
    int tid = threadIdx.x;
    red[tid] = m;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (tid < s) red[tid] = red[tid] > red[tid + s] ? red[tid] : red[tid + s];
        __syncthreads();
    }
    if (tid == 0) atomicMax(amax, red[0]);
}

// Largest |x| per group of g consecutive elements; one thread per segment of `seg`
// elements. When a whole block's elements lie in one group (large groups), the block
// reduces in shared memory and issues one atomic; otherwise each thread issues one
// atomic per group piece it touches. `amax` holds uint32 bit patterns (non-negative
// floats order as their bits) and must be zeroed first. Launch with 256-thread blocks.
extern "C" __global__ void th_group_amax(const float* __restrict__ x, th_u64 n, th_u64 g,
                                         th_u64 seg, th_u32* __restrict__ amax) {
    __shared__ th_u32 red[256];
    th_u64 bstart = (th_u64)blockIdx.x * blockDim.x * seg;
    th_u64 bend = bstart + blockDim.x * seg < n ? bstart + blockDim.x * seg : n;
    bool one_group = bstart / g == (bend - 1) / g;  // uniform over the block
    th_u64 start = th_tid() * seg;
    th_u64 end = start + seg < n ? start + seg : n;
    th_u64 grp = start / g, rem = start - grp * g;  // advanced per element, never divided
    th_u32 m = 0u;
    for (th_u64 i = start; i < end; ++i, ++rem) {
        if (rem == g) {
            atomicMax(amax + grp, m);
            ++grp;
            rem = 0;
            m = 0u;
        }
        th_u32 a = __float_as_uint(x[i]) & 0x7fffffffu;
        m = a > m ? a : m;
    }
    if (!one_group) {
        if (start < n) atomicMax(amax + grp, m);
        return;
    }
    int tid = threadIdx.x;
    red[tid] = m;  // 0 for threads past the end
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
    th_u64 grp = start / g, rem = start - grp * g;
    th_u32 a = 0xffffffffu, b = 0u;
    for (th_u64 i = start; i < end; ++i, ++rem) {
        if (rem == g) {
            atomicMin(lo + grp, a);
            atomicMax(hi + grp, b);
            ++grp;
            rem = 0;
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

TH_DEV bool th_finite(float v) { return (__float_as_uint(v) & 0x7fffffffu) < 0x7f800000u; }

// Symmetric int8/int4 scales: max(amax / half, eps) (half = 127.5 or 7.5); TH_ST_RANGE
// when scale * lowest (-128 or -8) overflows (int.rs: the dequantized range must fit).
extern "C" __global__ void th_int_scales(const th_u32* __restrict__ amax, th_u64 ngroups,
                                         float half, float lowest, float* __restrict__ scales,
                                         th_u32* __restrict__ status) {
    th_u64 t = th_tid();
    if (t >= ngroups) return;
    float s = th_max(__fdiv_rn(__uint_as_float(amax[t]), half), 1.1920929e-07f);
    scales[t] = s;
    if (!th_finite(__fmul_rn(s, lowest))) atomicOr(status, TH_ST_RANGE);
}

// Asymmetric int4: scale = max((hi - lo) / 15, eps), zero point = lo + 8 scale;
// TH_ST_RANGE when -8 scale + zp or 7 scale + zp overflows.
extern "C" __global__ void th_int4_asym_scales(const th_u32* __restrict__ lo,
                                               const th_u32* __restrict__ hi, th_u64 ngroups,
                                               float* __restrict__ scales, float* __restrict__ zps,
                                               th_u32* __restrict__ status) {
    th_u64 t = th_tid();
    if (t >= ngroups) return;
    float l = th_unord(lo[t]), h = th_unord(hi[t]);
    float sc = th_max(__fdiv_rn(__fadd_rn(h, -l), 15.0f), 1.1920929e-07f);
    float zp = __fadd_rn(l, __fmul_rn(sc, 8.0f));
    scales[t] = sc;
    zps[t] = zp;
    if (!th_finite(__fadd_rn(__fmul_rn(-8.0f, sc), zp)) || !th_finite(__fadd_rn(__fmul_rn(7.0f, sc), zp)))
        atomicOr(status, TH_ST_RANGE);
}

// Scaled FP8: fp8_scale(amax, max); TH_ST_RANGE when scale * max overflows.
extern "C" __global__ void th_fp8_scales(const th_u32* __restrict__ amax, th_u64 ngroups,
                                         float maxv, float* __restrict__ scales,
                                         th_u32* __restrict__ status) {
    th_u64 t = th_tid();
    if (t >= ngroups) return;
    float a = __uint_as_float(amax[t]);
    float s = __fdiv_rn(a, maxv);
    s = a == 0.0f ? 1.0f : (s == 0.0f ? __uint_as_float(1u) : s);
    scales[t] = s;
    if (!th_finite(__fmul_rn(s, maxv))) atomicOr(status, TH_ST_RANGE);
}

// ============================================================================ int8 / int4
// quantize_int: 4 elements per thread (one 16-byte load; int8: one 4-byte store, int4:
// two bytes of two elements each, g even). zps is read only when asym.
extern "C" __global__ void th_int_encode(const float* __restrict__ x, th_u64 n, th_u64 g,
                                         const float* __restrict__ scales,
                                         const float* __restrict__ zps, int is4, int asym,
                                         int stochastic, th_u64 seed, th_u8* __restrict__ out,
                                         th_u32* __restrict__ status) {
    th_u64 first = 4 * th_tid();
    if (first >= n) return;
    int cnt = th_count4(first, n);
    float v[4];
    th_load4(x, first, n, v);
    th_check_finite(v, cnt, status);
    th_u64 key = th_stream_key(seed);
    float lo, hi;
    if (asym) { lo = 0.0f; hi = 15.0f; }
    else if (is4) { lo = -8.0f; hi = 7.0f; }
    else { lo = -128.0f; hi = 127.0f; }
    th_i32 bias = (is4 && !asym) ? 8 : 0;
    th_u64 grp = first / g, rem = first - grp * g;
    th_u64 cur = ~0ULL;
    float mul = 1.0f, sub = 0.0f, div = 1.0f;
    th_u32 codes[4] = {0u, 0u, 0u, 0u};
    for (int k = 0; k < cnt; ++k, ++rem) {
        if (rem == g) {
            ++grp;
            rem = 0;
        }
        if (grp != cur) {  // the group's constants, once per group
            cur = grp;
            float sc = scales[grp];
            if (asym) {
                sub = __fadd_rn(zps[grp], -__fmul_rn(sc, 8.0f));
                div = sc;
            } else {
                mul = __fdiv_rn(1.0f, sc);
            }
        }
        th_u64 idx = first + k;
        float q = asym ? __fdiv_rn(__fadd_rn(v[k], -sub), div) : __fmul_rn(v[k], mul);
        q = th_clamp(q, lo, hi);
        th_i32 qi = stochastic ? (th_i32)th_stochastic_round(key, q, idx) : th_rne_i32(q);
        codes[k] = (th_u32)(qi + bias) & 0xffu;
    }
    if (is4) {
        th_store2_u8(out, first / 2, (codes[0] & 15u) | (codes[1] << 4), (codes[2] & 15u) | (codes[3] << 4),
                     cnt == 4);
    } else {
        th_store4_u8(out, first, n, codes);
    }
}

// dequantize_int: 4 elements per thread (int8: one 4-byte load, int4: two bytes; one
// 16-byte store); zps read only when has_zp.
extern "C" __global__ void th_int_decode(const th_u8* __restrict__ data, th_u64 n, th_u64 g,
                                         const float* __restrict__ scales,
                                         const float* __restrict__ zps, int is4, int has_zp,
                                         float* __restrict__ y) {
    th_u64 first = 4 * th_tid();
    if (first >= n) return;
    int cnt = th_count4(first, n);
    th_u32 c[4];
    if (is4) {  // n even: bytes first / 2 and first / 2 + 1
        th_u32 b[2];
        th_load2_u8(data, first / 2, n / 2, b);
        c[0] = b[0] & 15u; c[1] = b[0] >> 4; c[2] = b[1] & 15u; c[3] = b[1] >> 4;
    } else {
        th_load4_u8(data, first, n, c);
    }
    th_u64 grp = first / g, rem = first - grp * g;
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k = 0; k < cnt; ++k, ++rem) {
        if (rem == g) {
            ++grp;
            rem = 0;
        }
        float sc = scales[grp];
        if (is4) {
            float zp = has_zp ? zps[grp] : 0.0f;
            v[k] = __fadd_rn(__fmul_rn(__fadd_rn((float)c[k], -8.0f), sc), zp);
        } else {
            v[k] = __fmul_rn((float)(signed char)(th_u8)c[k], sc);
        }
    }
    th_store4(y, first, n, v);
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
                                         const float* __restrict__ absmax, th_u8* __restrict__ out,
                                         th_u32* __restrict__ status) {
    th_u64 t = th_tid();
    if (t >= (n + 1) / 2) return;
    th_u64 e = 2 * t;
    float pair[2] = {x[e], e + 1 < n ? x[e + 1] : 0.0f};
    th_check_finite(pair, 2, status);
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

// quantize_fp8: 4 elements per thread (one 16-byte load, one 4-byte store); codes of
// x / scale.
extern "C" __global__ void th_fp8_encode(const float* __restrict__ x, th_u64 n, th_u64 g,
                                         const float* __restrict__ scales, int kind, int saturate,
                                         int stochastic, th_u64 seed, th_u8* __restrict__ out,
                                         th_u32* __restrict__ status) {
    th_u64 first = 4 * th_tid();
    if (first >= n) return;
    int cnt = th_count4(first, n);
    float v[4];
    th_load4(x, first, n, v);
    th_check_finite(v, cnt, status);
    th_spec spec = th_spec_of((th_kind)kind);
    th_u64 key = th_stream_key(seed);
    th_u64 grp = first / g, rem = first - grp * g;
    th_u32 c[4] = {0u, 0u, 0u, 0u};
    for (int k = 0; k < cnt; ++k, ++rem) {
        if (rem == g) {
            ++grp;
            rem = 0;
        }
        float w = __fdiv_rn(v[k], scales[grp]);
        // saturating encoders clamp a quotient that overflowed (a small fixed scale)
        if (saturate || stochastic) w = th_clamp(w, -3.40282347e+38f, 3.40282347e+38f);
        c[k] = stochastic ? th_sr_encode(w, spec, th_uniform(key, first + k))
                          : th_encode(w, spec, saturate != 0);
    }
    th_store4_u8(out, first, n, c);
}

// dequantize_fp8: 4 elements per thread (one 4-byte load, one 16-byte store).
extern "C" __global__ void th_fp8_decode(const th_u8* __restrict__ data, th_u64 n, th_u64 g,
                                         const float* __restrict__ scales, int kind,
                                         float* __restrict__ y) {
    th_u64 first = 4 * th_tid();
    if (first >= n) return;
    int cnt = th_count4(first, n);
    th_spec spec = th_spec_of((th_kind)kind);
    th_u32 c[4];
    th_load4_u8(data, first, n, c);
    th_u64 grp = first / g, rem = first - grp * g;
    float v[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k = 0; k < cnt; ++k, ++rem) {
        if (rem == g) {
            ++grp;
            rem = 0;
        }
        v[k] = __fmul_rn(th_decode(c[k], spec), scales[grp]);
    }
    th_store4(y, first, n, v);
}

// Element codecs (fp8_encode / fp4_encode): one code per byte, never fails; 4 per thread.
extern "C" __global__ void th_fp_encode(const float* __restrict__ x, th_u8* __restrict__ out,
                                        th_u64 n, int kind, int saturate) {
    th_u64 first = 4 * th_tid();
    if (first >= n) return;
    th_spec spec = th_spec_of((th_kind)kind);
    float v[4];
    th_load4(x, first, n, v);
    th_u32 c[4];
    for (int k = 0; k < 4; ++k) c[k] = th_encode(v[k], spec, saturate != 0);
    th_store4_u8(out, first, n, c);
}

extern "C" __global__ void th_fp_decode(const th_u8* __restrict__ codes, float* __restrict__ y,
                                        th_u64 n, int kind) {
    th_u64 first = 4 * th_tid();
    if (first >= n) return;
    th_spec spec = th_spec_of((th_kind)kind);
    th_u32 c[4];
    th_load4_u8(codes, first, n, c);
    float v[4];
    for (int k = 0; k < 4; ++k) v[k] = th_decode(c[k], spec);
    th_store4(y, first, n, v);
}

// ============================================================================ MX / NVFP4
// quantize_mx / quantize_nvfp4 (blocks_nearest / blocks_stochastic): 4 elements of the
// zero-padded blocks per thread (one 16-byte load), so a 256-thread block covers 1024
// elements: 32 MX blocks (8 threads each) or 64 NVFP4 blocks (4 threads each). Each
// thread writes the max of its 4 |values| to shared memory and, after one barrier, reads
// the maxima of its block's threads (max is exact in any order); then it encodes its 4
// values (one 4-byte store of fp8 codes, or one 2-byte store of 4 fp4 codes) and the
// block's first thread stores the scale code.
// mode 0: MX, E8M0 scale code floor(log2(amax)) - emax + 127 clamped to [0, 254],
//         elements v * 2^(127 - code); bsize 32.
// mode 1: NVFP4, E4M3 scale code of clamp((amax / 6) / pt, 2^-6, 448), elements
//         v * ((1 / pt) / scale); bsize 16; ptbuf[0] = pt.
extern "C" __global__ void th_block_encode(const float* __restrict__ x, th_u64 n, int bsize,
                                           int mode, int kind, int emax,
                                           const float* __restrict__ ptbuf, int stochastic,
                                           th_u64 seed, th_u8* __restrict__ data,
                                           th_u8* __restrict__ scales, th_u32* __restrict__ status) {
    __shared__ float red[256];
    int tid = threadIdx.x;
    th_u64 first = 4 * th_tid();
    th_u64 nb = (n + bsize - 1) / bsize;
    th_u64 padded = nb * (th_u64)bsize;
    bool live = first < padded;  // inside a (padded) block; uniform per group of threads
    float v[4];
    th_load4(x, first, n, v);  // 0 past n
    if (first < n) th_check_finite(v, th_count4(first, n), status);
    red[tid] = th_max(th_max(th_abs(v[0]), th_abs(v[1])), th_max(th_abs(v[2]), th_abs(v[3])));
    __syncthreads();
    int per = bsize / 4;  // threads per block
    int base = tid - tid % per;
    float a = red[base];
    for (int j = 1; j < per; ++j) a = th_max(a, red[base + j]);
    if (!live) return;
    th_u64 blk = first / (th_u64)bsize;
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
    if (tid % per == 0) scales[blk] = (th_u8)code;
    th_u64 key = th_stream_key(seed);
    th_u32 c[4];
    for (int k = 0; k < 4; ++k) {
        float w = __fdiv_rn(__fmul_rn(v[k], mul), div);
        c[k] = stochastic ? th_sr_encode(w, spec, th_uniform(key, first + k)) : th_encode(w, spec, true);
    }
    if (spec.kind != TH_E2M1) {
        th_store4_u8(data, first, padded, c);
    } else {
        th_store2_u8(data, first / 2, c[0] | (c[1] << 4), c[2] | (c[3] << 4), true);
    }
}

// nvfp4_tensor_scale from the tensor's amax (bit pattern); out[0] = per-tensor scale.
extern "C" __global__ void th_nvfp4_tensor_scale(const th_u32* __restrict__ amax,
                                                 float* __restrict__ out) {
    if (th_tid() != 0) return;
    float a = __uint_as_float(amax[0]);
    out[0] = a == 0.0f ? 1.0f : th_max(__fdiv_rn(a, 2688.0f), 1.17549435e-38f);
}

// dequantize_mx / dequantize_nvfp4 (dequantize_blocks): 4 elements of one block per
// thread (fp8 codes: one 4-byte load; fp4: one 2-byte load; one 16-byte store), the
// block's scale decoded once.
// mode 0: MX (E8M0 scale codes); mode 1: NVFP4 (E4M3 scale codes times tensor_scale).
extern "C" __global__ void th_block_decode(const th_u8* __restrict__ data,
                                           const th_u8* __restrict__ scales, th_u64 n, int bsize,
                                           int kind, int mode, float tensor_scale,
                                           float* __restrict__ y) {
    th_u64 first = 4 * th_tid();
    if (first >= n) return;
    th_spec spec = th_spec_of((th_kind)kind);
    th_u64 blk = first / (th_u64)bsize;  // the 4 elements share it: 4 divides bsize
    th_u64 padded = (n + bsize - 1) / bsize * (th_u64)bsize;
    float s = mode == 0 ? th_e8m0_value(scales[blk])
                        : __fmul_rn(tensor_scale, th_decode(scales[blk], th_spec_of(TH_E4M3)));
    th_u32 c[4];
    if (spec.kind == TH_E2M1) {
        th_u32 b[2];
        th_load2_u8(data, first / 2, padded / 2, b);
        c[0] = b[0] & 15u; c[1] = b[0] >> 4; c[2] = b[1] & 15u; c[3] = b[1] >> 4;
    } else {
        th_load4_u8(data, first, padded, c);
    }
    float v[4];
    for (int k = 0; k < 4; ++k) v[k] = __fmul_rn(th_decode(c[k], spec), s);
    th_store4(y, first, n, v);
}
