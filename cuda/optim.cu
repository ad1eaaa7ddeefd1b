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
// python/thrifty/cuda/optim.py computes the same formulas with torch.
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#define THRIFTY_OPT_THREADS 256

namespace thrifty_opt {

template <typename T> __device__ __forceinline__ float ld(const T* p, long long i);
template <> __device__ __forceinline__ float ld<float>(const float* p, long long i) { return p[i]; }
template <> __device__ __forceinline__ float ld<__half>(const __half* p, long long i) { return __half2float(p[i]); }
template <> __device__ __forceinline__ float ld<__nv_bfloat16>(const __nv_bfloat16* p, long long i) {
    return __bfloat162float(p[i]);
}
template <typename T> __device__ __forceinline__ void st(T* p, long long i, float v);
template <> __device__ __forceinline__ void st<float>(float* p, long long i, float v) { p[i] = v; }
template <> __device__ __forceinline__ void st<__half>(__half* p, long long i, float v) { p[i] = __float2half_rn(v); }
template <> __device__ __forceinline__ void st<__nv_bfloat16>(__nv_bfloat16* p, long long i, float v) {
    p[i] = __float2bfloat16_rn(v);
}

// Block-wide sum in a fixed tree order; every thread must call it; thread 0 gets it.
__device__ __forceinline__ float block_sum(float v, float* sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] += sh[threadIdx.x + w];
        __syncthreads();
    }
    float r = sh[0];
    __syncthreads();
    return r;
}

// op 0: sum (x + c y)^2   op 1: sum x y   op 2: sum (x y)^2
template <typename T>
__device__ void partials(const T* x, const T* y, long long n, int op, float c, float* out) {
    __shared__ float sh[THRIFTY_OPT_THREADS];
    float acc = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float a = ld<T>(x, i);
        float v;
        if (op == 0) {
            float t = (c != 0.f) ? a + c * ld<T>(y, i) : a;
            v = t * t;
        } else if (op == 1) {
            v = a * ld<T>(y, i);
        } else {
            float t = a * ld<T>(y, i);
            v = t * t;
        }
        acc += v;
    }
    float s = block_sum(acc, sh);
    if (threadIdx.x == 0) out[blockIdx.x] = s;
}

template <typename T>
__device__ void sam_perturb(T* w, const T* g, T* old, long long n, const float* norm, float rho, int adaptive) {
    const float scale = rho / (*norm + 1e-12f);
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float x = ld<T>(w, i);
        float gr = ld<T>(g, i);
        old[i] = w[i];
        float e = (adaptive ? x * x * gr : gr) * scale;
        st<T>(w, i, x + e);
    }
}

template <typename T>
__device__ void dog_update(T* w, const T* g, long long n, const float* eta, float wd) {
    const float lr = *eta;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float x = ld<T>(w, i);
        float gr = ld<T>(g, i);
        if (wd != 0.f) gr = gr + wd * x;
        st<T>(w, i, x - lr * gr);
    }
}

template <typename T>
__device__ void momo_moments(const T* w, const T* g, float* d, long long n, float beta, float* out3, int nblocks_total) {
    __shared__ float sh[THRIFTY_OPT_THREADS];
    float xg = 0.f, xd = 0.f, dd = 0.f;
    for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;
         i += (long long)gridDim.x * blockDim.x) {
        float x = ld<T>(w, i);
        float gr = ld<T>(g, i);
        float di = d[i] * beta + gr * (1.f - beta);
        d[i] = di;
        xg += x * gr;
        xd += x * di;
        dd += di * di;
    }
    float s0 = block_sum(xg, sh);
    float s1 = block_sum(xd, sh);
    float s2 = block_sum(dd, sh);
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
        float x = ld<T>(w, i) - t * d[i];
        if (c != 1.f) x = x / c;
        st<T>(w, i, x);
    }
}

}  // namespace thrifty_opt

extern "C" {

// out[s] = sum of partials[offsets[s] .. offsets[s + 1]) (one block per segment),
// square-rooted when take_sqrt. Fixed order: thread t adds t, t + 256, ..., then a tree.
__global__ void mt_segment_sum(const float* partials, const long long* offsets, int nseg, float* out,
                               int take_sqrt) {
    __shared__ float sh[THRIFTY_OPT_THREADS];
    int s = blockIdx.x;
    if (s >= nseg) return;
    float acc = 0.f;
    for (long long i = offsets[s] + threadIdx.x; i < offsets[s + 1]; i += blockDim.x) acc += partials[i];
    float r = thrifty_opt::block_sum(acc, sh);
    if (threadIdx.x == 0) out[s] = take_sqrt ? sqrtf(r) : r;
}

#define THRIFTY_OPT_KERNELS(SUFFIX, T)                                                              \
    __global__ void mt_partials_##SUFFIX(const T* x, const T* y, long long n, int op, float c,       \
                                         float* out) {                                              \
        thrifty_opt::partials<T>(x, y, n, op, c, out);                                              \
    }                                                                                               \
    __global__ void sam_perturb_##SUFFIX(T* w, const T* g, T* old, long long n, const float* norm,   \
                                         float rho, int adaptive) {                                 \
        thrifty_opt::sam_perturb<T>(w, g, old, n, norm, rho, adaptive);                             \
    }                                                                                               \
    __global__ void dog_update_##SUFFIX(T* w, const T* g, long long n, const float* eta, float wd) { \
        thrifty_opt::dog_update<T>(w, g, n, eta, wd);                                               \
    }                                                                                               \
    __global__ void momo_moments_##SUFFIX(const T* w, const T* g, float* d, long long n, float beta, \
                                          float* out3, int nblocks_total) {                         \
        thrifty_opt::momo_moments<T>(w, g, d, n, beta, out3, nblocks_total);                        \
    }                                                                                               \
    __global__ void momo_update_##SUFFIX(T* w, const float* d, long long n, const float* tau, float c) { \
        thrifty_opt::momo_update<T>(w, d, n, tau, c);                                               \
    }

THRIFTY_OPT_KERNELS(f32, float)
THRIFTY_OPT_KERNELS(f16, __half)
THRIFTY_OPT_KERNELS(bf16, __nv_bfloat16)
}
