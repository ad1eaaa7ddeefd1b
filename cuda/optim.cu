// Multi-tensor pieces of SAM, DoG/LDoG and MoMo that keep a whole optimizer step on the
// device (no host synchronisation, so the step can be captured in a CUDA graph):
//   mt_partials_*  one float partial sum per block of a per-tensor reduction, written
//                  at the tensor's offset of one shared partials buffer;
//   mt_segment_sum sums the partials of each segment (a tensor, a group or everything)
//                  in a fixed order (results do not depend on scheduling);
//   sam_perturb_*  old = w; w += e, e = (adaptive ? w*w*g : g) * rho / (norm + 1e-12);
//   dog_update_*   w -= eta * (g + wd * w), eta read from device memory;
//   momo_moments_* d = beta d + (1 - beta) g, and partial sums of <x,g>, <x,d>, <d,d>;
//   momo_update_*  w = (w - tau d) / c, tau read from device memory.
// Parameters may be float32, float16 or bfloat16 (arithmetic in float32, one rounding
// when stored); MoMo's averages are float32. The CPU fallback in
// python/thrifty/torch/_cuda/optim.py computes the same formulas with torch.
#include "thrifty_common.cuh"

#define THRIFTY_OPT_THREADS 256

namespace thrifty_opt {

// op 0: sum (x + c y)^2   op 1: sum x y   op 2: sum (x y)^2
template <typename T>
__device__ void partials(const T* x, const T* y, long long n, int op, float c, float* out) {
    __shared__ float sh[THRIFTY_OPT_THREADS];
    float acc = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float a = th_load<T>(x, i);
        float v;
        if (op == 0) {
            float t = (c != 0.f) ? a + c * th_load<T>(y, i) : a;
            v = t * t;
        } else if (op == 1) {
            v = a * th_load<T>(y, i);
        } else {
            float t = a * th_load<T>(y, i);
            v = t * t;
        }
        acc += v;
    }
    float s = th_block_sum(acc, sh);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

template <typename T>
__device__ void sam_perturb(T* w, const T* g, T* old, long long n, const float* norm, float rho, int adaptive) {
    const float scale = rho / (*norm + 1e-12f);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float x = th_load<T>(w, i);
        float gr = th_load<T>(g, i);
        th_store<T>(old, i, x);  // exact: x is w[i] widened
        float e = (adaptive ? x * x * gr : gr) * scale;
        th_store<T>(w, i, x + e);
    }
}

template <typename T>
__device__ void dog_update(T* w, const T* g, long long n, const float* eta, float wd) {
    const float lr = *eta;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float x = th_load<T>(w, i);
        float gr = th_load<T>(g, i);
        if (wd != 0.f) gr = gr + wd * x;
        th_store<T>(w, i, x - lr * gr);
    }
}

template <typename T>
__device__ void momo_moments(const T* w, const T* g, float* d, long long n, float beta, float* out3, int nblocks_total) {
    __shared__ float sh[THRIFTY_OPT_THREADS];
    float xg = 0.f, xd = 0.f, dd = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float x = th_load<T>(w, i);
        float gr = th_load<T>(g, i);
        float di = d[i] * beta + gr * (1.f - beta);
        d[i] = di;
        xg += x * gr;
        xd += x * di;
        dd += di * di;
    }
    float s0 = th_block_sum(xg, sh);
    float s1 = th_block_sum(xd, sh);
    float s2 = th_block_sum(dd, sh);
    if (threadIdx.x == 0) {
        out3[blockIdx.x] = s0;
        out3[nblocks_total + blockIdx.x] = s1;
        out3[2 * nblocks_total + blockIdx.x] = s2;
    }
}

template <typename T>
__device__ void momo_update(T* w, const float* d, long long n, const float* tau, float c) {
    const float t = *tau;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float x = th_load<T>(w, i) - t * d[i];
        if (c != 1.f) x = x / c;
        th_store<T>(w, i, x);
    }
}

}  // namespace thrifty_opt

// out[s] = sum of partials[offsets[s] .. offsets[s + 1]) (one block per segment),
// square-rooted when take_sqrt. Fixed order: thread t adds t, t + 256, ..., then a tree.
extern "C" __global__ void mt_segment_sum(const float* partials, const long long* offsets, int nseg, float* out,
                               int take_sqrt) {
    // block-cooperative (__syncthreads)
    __shared__ float sh[THRIFTY_OPT_THREADS];
    int s = blockIdx.x;
    if (s >= nseg) return;
    float acc = 0.f;
    for (long long i = offsets[s] + threadIdx.x; i < offsets[s + 1]; i += blockDim.x) acc += partials[i];
    float r = th_block_sum(acc, sh);
    if (threadIdx.x == 0) out[s] = take_sqrt ? sqrtf(r) : r;
}


// Entry points <kernel>_f32 / _f16 / _bf16 (thrifty_common.cuh: TH_FOR_FLOAT_TYPES).
#define TH_OPTIM_KERNELS(S, T)                                                                     \
    extern "C" __global__ void mt_partials_##S(const T* x, const T* y, long long n, int op, float c, \
                                               float* out) {                                       \
        /* block-cooperative (__syncthreads) */                                                     \
        thrifty_opt::partials<T>(x, y, n, op, c, out);                                             \
    }                                                                                              \
    extern "C" __global__ void sam_perturb_##S(T* w, const T* g, T* old, long long n, const float* norm, \
                                               float rho, int adaptive) {                          \
        thrifty_opt::sam_perturb<T>(w, g, old, n, norm, rho, adaptive);                            \
    }                                                                                              \
    extern "C" __global__ void dog_update_##S(T* w, const T* g, long long n, const float* eta, float wd) { \
        thrifty_opt::dog_update<T>(w, g, n, eta, wd);                                              \
    }                                                                                              \
    extern "C" __global__ void momo_moments_##S(const T* w, const T* g, float* d, long long n, float beta, \
                                                float* out3, int nblocks_total) {                  \
        /* block-cooperative (__syncthreads) */                                                     \
        thrifty_opt::momo_moments<T>(w, g, d, n, beta, out3, nblocks_total);                       \
    }                                                                                              \
    extern "C" __global__ void momo_update_##S(T* w, const float* d, long long n, const float* tau, float c) { \
        thrifty_opt::momo_update<T>(w, d, n, tau, c);                                              \
    }

TH_FOR_FLOAT_TYPES(TH_OPTIM_KERNELS)
