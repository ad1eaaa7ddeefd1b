// thrifty_lean.cuh — helpers shared by mezo.cu, loss.cu and optim.cu (issue #11).
//
// Half-precision tensors are read and written through their 16-bit patterns (no
// cuda_fp16.h / cuda_bf16.h), so the kernels also compile as plain C++ for the host
// test harness (tests/_cuda_host.py). float32 <- bfloat16/float16 is exact;
// float32 -> bfloat16/float16 rounds to nearest even, NaN stays NaN, overflow gives inf
// (what torch's .to() does).
#pragma once
#include "thrifty_common.cuh"

struct th_bf16 { th_u16 bits; };
struct th_f16 { th_u16 bits; };

TH_DEV th_u16 th_f32_to_bf16_bits(float f) {
    th_u32 b = __float_as_uint(f);
    if ((b & 0x7fffffffu) > 0x7f800000u) return (th_u16)((b >> 16) | 0x40u);
    return (th_u16)((b + 0x7fffu + ((b >> 16) & 1u)) >> 16);
}

template <typename T> TH_DEV float th_load(const T* p, th_i64 i);
template <> TH_DEV float th_load<float>(const float* p, th_i64 i) { return p[i]; }
template <> TH_DEV float th_load<th_bf16>(const th_bf16* p, th_i64 i) { return th_bf16_to_f32(p[i].bits); }
template <> TH_DEV float th_load<th_f16>(const th_f16* p, th_i64 i) { return th_f16_to_f32(p[i].bits); }

template <typename T> TH_DEV void th_store(T* p, th_i64 i, float v);
template <> TH_DEV void th_store<float>(float* p, th_i64 i, float v) { p[i] = v; }
template <> TH_DEV void th_store<th_bf16>(th_bf16* p, th_i64 i, float v) { p[i].bits = th_f32_to_bf16_bits(v); }
template <> TH_DEV void th_store<th_f16>(th_f16* p, th_i64 i, float v) { p[i].bits = th_f32_to_f16(v); }

// Block-wide sum in a fixed tree order (blockDim.x a power of two <= 256); every thread
// of the block must call it; all threads get the result.
TH_DEV float th_block_sum(float v, float* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (unsigned w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] = __fadd_rn(sh[threadIdx.x], sh[threadIdx.x + w]);
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}
