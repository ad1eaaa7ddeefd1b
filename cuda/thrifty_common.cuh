// thrifty_common.cuh — device helpers shared by thrifty's kernels.
//
// Self-contained: no CUDA, CCCL or C++ standard library headers, so every .cu file that
// includes it compiles with NVRTC given only this folder as include path.
//
// Every function here is a line-by-line port of the Rust core (rust/core/src/quant/),
// which is the specification; the kernels are compiled with --fmad=false and use the
// explicitly rounded intrinsics (__fadd_rn, __fmul_rn, __fdiv_rn) where the CPU's
// float32 arithmetic must be reproduced bit for bit.
#pragma once

typedef unsigned char th_u8;
typedef unsigned short th_u16;
typedef unsigned int th_u32;
typedef int th_i32;
typedef unsigned long long th_u64;
typedef long long th_i64;

#define TH_DEV __device__ __forceinline__

// ---------------------------------------------------------------------------- RNG
// rng.rs: element i of a tensor quantized with seed s draws
// u = mix(mix(s) ^ (i + 1) * 0x9E3779B97F4A7C15) (SplitMix64 finaliser); the uniform
// variate is the top 32 bits of u divided by 2^32 (a double).

TH_DEV th_u64 th_mix(th_u64 z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

// The stream key is mix(seed), computed once on the host or here.
TH_DEV th_u64 th_stream_key(th_u64 seed) { return th_mix(seed); }

TH_DEV double th_uniform(th_u64 key, th_u64 i) {
    th_u64 u = th_mix(key ^ ((i + 1ULL) * 0x9E3779B97F4A7C15ULL));
    return (double)(u >> 32) * (1.0 / 4294967296.0);
}

// Round half to even to an integer for |v| <= 2^22: the low bits of v + 1.5 * 2^23.
TH_DEV th_i32 th_rne_i32(float v) {
    const float M = 12582912.0f;
    return (th_i32)(__float_as_uint(__fadd_rn(v, M)) - __float_as_uint(M));
}

// Stream::round: floor(v) + Bernoulli(v - floor(v)), |v| <= 2^22.
TH_DEV float th_stochastic_round(th_u64 key, float v, th_u64 i) {
    float r = (float)th_rne_i32(v);
    float f = r > v ? __fadd_rn(r, -1.0f) : r;
    double p = (double)__fadd_rn(v, -f);
    return th_uniform(key, i) < p ? __fadd_rn(f, 1.0f) : f;
}

TH_DEV float th_clamp(float v, float lo, float hi) {
    // Rust f32::clamp for non-NaN v
    return v < lo ? lo : (v > hi ? hi : v);
}

TH_DEV float th_max(float a, float b) { return a > b ? a : b; }
TH_DEV float th_min(float a, float b) { return a < b ? a : b; }
TH_DEV float th_abs(float v) { return __uint_as_float(__float_as_uint(v) & 0x7fffffffu); }

// ---------------------------------------------------------------------------- small floats
// float.rs: round to nearest even on the float32 bit pattern.

enum th_kind { TH_E4M3 = 0, TH_E5M2 = 1, TH_E2M1 = 2, TH_F16 = 3 };

struct th_spec {
    th_kind kind;
    th_u32 mbits, ebits, bias, max_code;
};

TH_DEV th_spec th_spec_of(th_kind k) {
    th_spec s;
    s.kind = k;
    switch (k) {
    case TH_E4M3: s.mbits = 3; s.ebits = 4; s.bias = 7; s.max_code = 0x7E; break;
    case TH_E5M2: s.mbits = 2; s.ebits = 5; s.bias = 15; s.max_code = 0x7B; break;
    case TH_E2M1: s.mbits = 1; s.ebits = 2; s.bias = 1; s.max_code = 0x7; break;
    default: s.mbits = 10; s.ebits = 5; s.bias = 15; s.max_code = 0x7BFF; break;
    }
    return s;
}

// encode_one
TH_DEV th_u32 th_encode(float x, th_spec spec, bool saturate) {
    th_u32 bits = __float_as_uint(x);
    th_u32 abs = bits & 0x7fffffffu;
    th_u32 neg = bits >> 31;
    th_u32 sign = neg * (1u << (spec.ebits + spec.mbits));
    th_u32 min_normal = (127u - spec.bias + 1u) << 23;
    float magic = __uint_as_float((127u + 23u + 1u - spec.bias - spec.mbits) << 23);
    th_u32 sub = __float_as_uint(__fadd_rn(__uint_as_float(abs), magic)) - __float_as_uint(magic);
    th_u32 shift = 23u - spec.mbits;
    th_u32 rounded = abs + ((1u << (shift - 1u)) - 1u) + ((abs >> shift) & 1u);
    th_u32 norm = (rounded >> shift) - ((127u - spec.bias) << spec.mbits);
    th_u32 mag = abs < min_normal ? sub : norm;
    th_u32 nan, inf, over;
    switch (spec.kind) {
    case TH_E4M3: nan = 0x7F | sign; inf = 0x7F | sign; over = 0x7F | sign; break;
    case TH_E5M2: nan = 0x7E | sign; inf = 0x7C | sign; over = 0x7C | sign; break;
    case TH_E2M1: nan = (1u - neg) << 3; inf = 0x7 | sign; over = 0x7 | sign; break;
    default: nan = 0x7E00 | sign; inf = 0x7C00 | sign; over = 0x7C00 | sign; break;
    }
    if (saturate) over = spec.max_code | sign;
    th_u32 finite = mag > spec.max_code ? over : (mag | sign);
    if (abs > 0x7f800000u) return nan;
    if (abs == 0x7f800000u) return inf;
    return finite;
}

// 2^k as a float32 for -126 <= k <= 127
TH_DEV float th_pow2(int k) { return __uint_as_float((th_u32)(127 + k) << 23); }

// decode_one (exact: every value of these formats is a float32)
TH_DEV float th_decode(th_u32 code, th_spec spec) {
    th_u32 nbits = spec.ebits + spec.mbits;
    code &= (1u << (nbits + 1u)) - 1u;
    bool neg = (code >> nbits) != 0;
    th_u32 e = (code >> spec.mbits) & ((1u << spec.ebits) - 1u);
    th_u32 m = code & ((1u << spec.mbits) - 1u);
    th_u32 emax_field = (1u << spec.ebits) - 1u;
    bool is_nan = false, is_inf = false;
    if (spec.kind == TH_E4M3) {
        is_nan = e == emax_field && m == (1u << spec.mbits) - 1u;
    } else if ((spec.kind == TH_E5M2 || spec.kind == TH_F16) && e == emax_field) {
        is_inf = m == 0;
        is_nan = m != 0;
    }
    if (is_nan) {
        th_u32 b = 0x7f800000u | (m << (23u - spec.mbits)) | 0x00400000u;
        return __uint_as_float(neg ? (b | 0x80000000u) : b);
    }
    float v;
    if (is_inf) {
        v = __uint_as_float(0x7f800000u);
    } else if (e == 0) {
        v = __fmul_rn((float)m, th_pow2(1 - (int)spec.bias - (int)spec.mbits));
    } else {
        v = __fmul_rn((float)((1u << spec.mbits) + m), th_pow2((int)e - (int)spec.bias - (int)spec.mbits));
    }
    return neg ? -v : v;
}

TH_DEV th_u16 th_f32_to_f16(float x) { return (th_u16)th_encode(x, th_spec_of(TH_F16), false); }

TH_DEV float th_f16_to_f32(th_u16 hh) {
    th_u32 h = hh;
    th_u32 sign = (h & 0x8000u) << 16;
    th_u32 e = (h >> 10) & 0x1fu;
    th_u32 m = h & 0x3ffu;
    th_u32 bits;
    if (e == 0) {
        bits = m == 0 ? 0u : __float_as_uint(__fmul_rn((float)m, __uint_as_float((127u - 24u) << 23)));
    } else if (e == 0x1f) {
        bits = 0x7f800000u | (m << 13);
    } else {
        bits = ((e + 127u - 15u) << 23) | (m << 13);
    }
    return __uint_as_float(bits | sign);
}

// E8M0 scale code -> value (2^(e-127), 0xFF = NaN)
TH_DEV float th_e8m0_value(th_u8 code) {
    if (code == 0xFF) return __uint_as_float(0x7fc00000u);
    if (code == 0) return __uint_as_float(1u << 22);
    return __uint_as_float((th_u32)code << 23);
}

// floor(log2(|x|)) for finite nonzero x, subnormals included
TH_DEV int th_floor_log2(float x) {
    th_u32 abs = __float_as_uint(x) & 0x7fffffffu;
    int e = (int)(abs >> 23);
    if (e == 0) return 31 - __clz((int)abs) - 149;
    return e - 127;
}

// bfloat16 / float16 storage -> float32 (for kernels reading torch tensors)
TH_DEV float th_bf16_to_f32(th_u16 b) { return __uint_as_float((th_u32)b << 16); }

// ---------------------------------------------------------------------------- torch tensors
// Half-precision tensors are read and written through their 16-bit patterns (no
// cuda_fp16.h / cuda_bf16.h), so the kernels also compile as plain C++ for the host
// test harness. float32 <- bfloat16/float16 is exact; float32 -> bfloat16/float16
// rounds to nearest even, NaN stays NaN, overflow gives inf (what torch's .to() does).

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

// Dtype-generic kernels: a template body plus one extern "C" entry point per parameter
// dtype, named <kernel>_<suffix>. A file defines its entry points once, in a macro of
// (S, T) that names each one <kernel>_##S with parameters in T, and instantiates them
// with TH_FOR_FLOAT_TYPES(MACRO); the launcher (thrifty.torch._cuda._runtime) reads the
// same two macros to find the entry point of a tensor's dtype.
#define TH_FOR_FLOAT_TYPES(X) X(f32, float) X(f16, th_f16) X(bf16, th_bf16)

// ---------------------------------------------------------------------------- block helpers
// Global index of this thread in a 1-D launch.
TH_DEV th_u64 th_tid() { return (th_u64)blockIdx.x * blockDim.x + threadIdx.x; }

// Max of v over the 256 threads of the block, a tree in red[256] (shared memory). Every
// thread of the block must call it (it synchronises the block); all get the result.
TH_DEV float th_block_max256(float v, float* red) {
    int tid = threadIdx.x;
    red[tid] = v;
    __syncthreads();
    for (int s = 128; s > 0; s >>= 1) {
        if (tid < s) red[tid] = th_max(red[tid], red[tid + s]);
        __syncthreads();
    }
    return red[0];
}
