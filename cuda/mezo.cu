// MeZO (memory-efficient zeroth-order SGD) perturbation and update, in place, with no
// noise tensor: z is regenerated from a counter-based generator every time it is needed.
//
// Generator (the CPU fallback in thrifty.torch._cuda.mezo implements exactly the same thing):
//   Philox4x32-10 (Salmon et al., SC'11), written out below.
//   key     = (seed mod 2^32, seed >> 32)
//   counter = (block mod 2^32, tensor_id, step mod 2^32, step >> 32)
//   where element i of a tensor belongs to block i / 4 and takes lane i % 4 of the
//   block's four 32-bit outputs x0..x3. Box-Muller, computed in double precision:
//     pair (x0, x1) -> lanes 0, 1;  pair (x2, x3) -> lanes 2, 3
//     u1 = (x_even + 1) * 2^-32  in (0, 1]     u2 = x_odd * 2^-32  in [0, 1)
//     r = sqrt(-2 log u1), t = 2 pi u2;  lane even: r cos t, lane odd: r sin t
//   then rounded once to float32 (round to nearest even).
//
// Perturbation (all float32 arithmetic, rounded per operation, no contraction to FMA):
//   d = eps * z;  x = x + s * d   with s in {+1, -2, +1}  (s * d is exact)
// Update (restore fused with the SGD step, one pass):
//   x = x + d;  g = pg * z (+ wd * x);  x = x - lr * g
// Half-precision parameters are widened to float32, updated, rounded back once.
#include "thrifty_common.cuh"

namespace thrifty_mezo {

struct u4 { unsigned int x0, x1, x2, x3; };

__device__ __forceinline__ u4 philox_round(u4 c, unsigned int k0, unsigned int k1) {
    const unsigned int M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
    unsigned long long p0 = (unsigned long long)M0 * c.x0;  // mul.hi / mul.lo
    unsigned long long p1 = (unsigned long long)M1 * c.x2;
    unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
    unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
    u4 r;
    r.x0 = hi1 ^ c.x1 ^ k0;
    r.x1 = lo1;
    r.x2 = hi0 ^ c.x3 ^ k1;
    r.x3 = lo0;
    return r;
}

__device__ __forceinline__ u4 philox4x32_10(u4 c, unsigned int k0, unsigned int k1) {
    const unsigned int W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
#pragma unroll
    for (int i = 0; i < 10; ++i) {
        c = philox_round(c, k0, k1);
        k0 += W0;
        k1 += W1;
    }
    return c;
}

// The four standard normals of one Philox block.
__device__ __forceinline__ void normals4(unsigned long long block, unsigned int tensor_id,
                                         unsigned long long seed, unsigned long long step,
                                         float z[4]) {
    u4 c;
    c.x0 = (unsigned int)(block & 0xFFFFFFFFull);
    c.x1 = tensor_id;
    c.x2 = (unsigned int)(step & 0xFFFFFFFFull);
    c.x3 = (unsigned int)(step >> 32);
    u4 r = philox4x32_10(c, (unsigned int)(seed & 0xFFFFFFFFull), (unsigned int)(seed >> 32));
    const double two_m32 = 2.3283064365386963e-10;  // 2^-32
    const double two_pi = 6.283185307179586;
    unsigned int w[4] = {r.x0, r.x1, r.x2, r.x3};
#pragma unroll
    for (int j = 0; j < 2; ++j) {
        double u1 = ((double)w[2 * j] + 1.0) * two_m32;
        double u2 = (double)w[2 * j + 1] * two_m32;
        double rad = sqrt(-2.0 * log(u1));
        double s, co;
        sincos(two_pi * u2, &s, &co);
        z[2 * j] = __double2float_rn(rad * co);
        z[2 * j + 1] = __double2float_rn(rad * s);
    }
}

// f(i, z[i]) for every i < n: one thread per Philox block of four elements (grid-stride
// loop), its lanes in order.
template <typename F>
__device__ __forceinline__ void for_each_normal(long long n, unsigned int tensor_id, unsigned long long seed,
                                                unsigned long long step, F f) {
    long long nblocks = (n + 3) / 4;
    for (long long b = blockIdx.x * (long long)blockDim.x + threadIdx.x; b < nblocks;
         b += (long long)gridDim.x * blockDim.x) {
        float z[4];
        normals4((unsigned long long)b, tensor_id, seed, step, z);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            long long i = 4 * b + j;
            if (i < n) f(i, z[j]);
        }
    }
}

// x[i] += scale * (eps * z[i]) for i < n.
template <typename T>
__device__ void perturb(T* x, long long n, unsigned int tensor_id, unsigned long long seed,
                        unsigned long long step, float eps, float scale) {
    for_each_normal(n, tensor_id, seed, step, [&](long long i, float z) {
        float d = __fmul_rn(eps, z);
        th_store<T>(x, i, __fadd_rn(th_load<T>(x, i), __fmul_rn(scale, d)));
    });
}

// Restore (x += eps z) and SGD step x -= lr (pg z + wd x); pg is read from device memory.
template <typename T>
__device__ void update(T* x, long long n, unsigned int tensor_id, unsigned long long seed,
                       unsigned long long step, float eps, const float* pg_ptr, float lr, float wd) {
    const float pg = *pg_ptr;
    for_each_normal(n, tensor_id, seed, step, [&](long long i, float z) {
        float w = __fadd_rn(th_load<T>(x, i), __fmul_rn(eps, z));
        float g = __fmul_rn(pg, z);
        if (wd != 0.0f) g = __fadd_rn(g, __fmul_rn(wd, w));
        th_store<T>(x, i, __fsub_rn(w, __fmul_rn(lr, g)));
    });
}

}  // namespace thrifty_mezo

// z[i] for i < n (tests and benchmarks only; the optimizer never materialises z).
extern "C" __global__ void mezo_normal(float* out, long long n, unsigned int tensor_id,
                            unsigned long long seed, unsigned long long step) {
    thrifty_mezo::for_each_normal(n, tensor_id, seed, step, [&](long long i, float z) { out[i] = z; });
}

// Raw Philox4x32-10 on (counter, key) words, for the known-answer test on the device.
extern "C" __global__ void mezo_philox(const unsigned int* ctr_key, unsigned int* out, int count) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= count) return;
    const unsigned int* q = ctr_key + 6 * t;
    thrifty_mezo::u4 c = {q[0], q[1], q[2], q[3]};
    thrifty_mezo::u4 r = thrifty_mezo::philox4x32_10(c, q[4], q[5]);
    out[4 * t] = r.x0;
    out[4 * t + 1] = r.x1;
    out[4 * t + 2] = r.x2;
    out[4 * t + 3] = r.x3;
}

// Entry points <kernel>_f32 / _f16 / _bf16 (thrifty_common.cuh: TH_FOR_FLOAT_TYPES).
#define TH_MEZO_KERNELS(S, T)                                                                       \
    extern "C" __global__ void mezo_perturb_##S(T* x, long long n, unsigned int tensor_id,         \
                                                unsigned long long seed, unsigned long long step,  \
                                                float eps, float scale) {                          \
        thrifty_mezo::perturb<T>(x, n, tensor_id, seed, step, eps, scale);                         \
    }                                                                                              \
    extern "C" __global__ void mezo_update_##S(T* x, long long n, unsigned int tensor_id,          \
                                               unsigned long long seed, unsigned long long step,   \
                                               float eps, const float* pg, float lr, float wd) {   \
        thrifty_mezo::update<T>(x, n, tensor_id, seed, step, eps, pg, lr, wd);                     \
    }

TH_FOR_FLOAT_TYPES(TH_MEZO_KERNELS)
