// Multi-tensor pieces of SAM, DoG/LDoG and MoMo that keep a whole optimizer step on the
// device (no host synchronisation, so the step can be captured in a CUDA graph). Each
// entry point runs over a whole list of tensors in one launch:
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
//
// The tensor table (built once per list of tensors by optim.py and kept on the device):
// int64 words; tensor i of n has K pointers, then numel, then aux at tab[i (K + 2) ..];
// starts[0..n] follow at tab[n (K + 2)]: block b of the grid works for the tensor i with
// starts[i] <= b < starts[i + 1], as its block b - starts[i] of starts[i + 1] - starts[i].
// Reductions give tensor i the blocks a per-tensor launch gave it (min(1024, ceil(numel /
// 256))), with the same grid-stride order, so every partial sum is bit-identical to one
// launch per tensor; aux is the tensor's first partial. Element-wise updates give it
// ceil(numel / TH_MT_CHUNK) blocks of TH_MT_CHUNK consecutive elements; aux is the
// tensor's index in the caller's list (its step size in dog_update).
#include "thrifty_common.cuh"

#define THRIFTY_OPT_THREADS 256
#define TH_MT_CHUNK 8192LL  // elements per block of an element-wise launch (32 per thread,
#define TH_MT_ILP 4         // in rounds of 4 whose loads are issued together)

namespace thrifty_opt {

struct slot {
    const long long* e;  // the tensor's K pointers, numel, aux
    long long b, nb;     // this block's rank among the tensor's blocks, and their number
};

// The tensor of this block: the largest i with starts[i] <= blockIdx.x (binary search).
template <int K>
TH_DEV slot locate(const long long* tab, int n) {
    const long long* starts = tab + (long long)n * (K + 2);
    long long blk = blockIdx.x;
    int lo = 0, hi = n;
    while (hi - lo > 1) {
        int mid = (lo + hi) / 2;
        if (starts[mid] <= blk) lo = mid; else hi = mid;
    }
    slot s;
    s.e = tab + (long long)lo * (K + 2);
    s.b = blk - starts[lo];
    s.nb = starts[lo + 1] - starts[lo];
    return s;
}

template <typename P>
TH_DEV P* ptr(const long long* e, int k) { return (P*)(th_u64)e[k]; }

// op 0: sum (x + c y)^2   op 1: sum x y   op 2: sum (x y)^2
template <typename T>
__device__ void partials(const long long* tab, int n, int op, float c, float* out) {
    __shared__ float sh[THRIFTY_OPT_THREADS];
    slot s = locate<2>(tab, n);
    const T* x = ptr<const T>(s.e, 0);
    const T* y = ptr<const T>(s.e, 1);
    long long numel = s.e[2];
    float acc = 0.f;
    for (long long i = s.b * blockDim.x + threadIdx.x; i < numel; i += s.nb * blockDim.x) {
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
    float r = th_block_sum(acc, sh);
    if (threadIdx.x == 0) out[s.e[3] + s.b] = r;
}

template <typename T>
__device__ void momo_moments(const long long* tab, int n, float beta, float* out3, long long total) {
    __shared__ float sh[THRIFTY_OPT_THREADS];
    slot s = locate<3>(tab, n);
    const T* w = ptr<const T>(s.e, 0);
    const T* g = ptr<const T>(s.e, 1);
    float* d = ptr<float>(s.e, 2);
    long long numel = s.e[3];
    float xg = 0.f, xd = 0.f, dd = 0.f;
    for (long long i = s.b * blockDim.x + threadIdx.x; i < numel; i += s.nb * blockDim.x) {
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
        long long o = s.e[4] + s.b;
        out3[o] = s0;
        out3[total + o] = s1;
        out3[2 * total + o] = s2;
    }
}

// Element-wise: this block's chunk [lo, hi) of its tensor; the thread takes elements
// lo + threadIdx.x + r blockDim.x (r < TH_MT_ILP) per round (coalesced loads).
struct span {
    long long lo, hi;
};
TH_DEV span chunk(slot s, long long numel) {
    span p;
    p.lo = s.b * TH_MT_CHUNK;
    p.hi = p.lo + TH_MT_CHUNK < numel ? p.lo + TH_MT_CHUNK : numel;
    return p;
}

template <typename T>
__device__ void sam_perturb(const long long* tab, int n, const float* norm, float rho, int adaptive) {
    slot s = locate<3>(tab, n);
    T* w = ptr<T>(s.e, 0);
    const T* g = ptr<const T>(s.e, 1);
    T* old = ptr<T>(s.e, 2);
    span p = chunk(s, s.e[3]);
    const float scale = rho / (*norm + 1e-12f);
    for (long long j = p.lo + threadIdx.x; j < p.hi; j += TH_MT_ILP * blockDim.x) {
        float x[TH_MT_ILP], gr[TH_MT_ILP];
#pragma unroll
        for (int r = 0; r < TH_MT_ILP; ++r) {
            long long i = j + r * (long long)blockDim.x;
            if (i < p.hi) {
                x[r] = th_load<T>(w, i);
                gr[r] = th_load<T>(g, i);
            }
        }
#pragma unroll
        for (int r = 0; r < TH_MT_ILP; ++r) {
            long long i = j + r * (long long)blockDim.x;
            if (i < p.hi) {
                th_store<T>(old, i, x[r]);  // exact: x is w[i] widened
                float e = (adaptive ? x[r] * x[r] * gr[r] : gr[r]) * scale;
                th_store<T>(w, i, x[r] + e);
            }
        }
    }
}

template <typename T>
__device__ void dog_update(const long long* tab, int n, const float* eta, int eta_stride, float wd) {
    slot s = locate<2>(tab, n);
    T* w = ptr<T>(s.e, 0);
    const T* g = ptr<const T>(s.e, 1);
    span p = chunk(s, s.e[2]);
    const float lr = eta[s.e[3] * eta_stride];
    for (long long j = p.lo + threadIdx.x; j < p.hi; j += TH_MT_ILP * blockDim.x) {
        float x[TH_MT_ILP], gr[TH_MT_ILP];
#pragma unroll
        for (int r = 0; r < TH_MT_ILP; ++r) {
            long long i = j + r * (long long)blockDim.x;
            if (i < p.hi) {
                x[r] = th_load<T>(w, i);
                gr[r] = th_load<T>(g, i);
            }
        }
#pragma unroll
        for (int r = 0; r < TH_MT_ILP; ++r) {
            long long i = j + r * (long long)blockDim.x;
            if (i < p.hi) {
                float q = gr[r];
                if (wd != 0.f) q = q + wd * x[r];
                th_store<T>(w, i, x[r] - lr * q);
            }
        }
    }
}

template <typename T>
__device__ void momo_update(const long long* tab, int n, const float* tau, float c) {
    slot s = locate<2>(tab, n);
    T* w = ptr<T>(s.e, 0);
    const float* d = ptr<const float>(s.e, 1);
    span p = chunk(s, s.e[2]);
    const float t = *tau;
    for (long long j = p.lo + threadIdx.x; j < p.hi; j += TH_MT_ILP * blockDim.x) {
        float x[TH_MT_ILP], dv[TH_MT_ILP];
#pragma unroll
        for (int r = 0; r < TH_MT_ILP; ++r) {
            long long i = j + r * (long long)blockDim.x;
            if (i < p.hi) {
                x[r] = th_load<T>(w, i);
                dv[r] = d[i];
            }
        }
#pragma unroll
        for (int r = 0; r < TH_MT_ILP; ++r) {
            long long i = j + r * (long long)blockDim.x;
            if (i < p.hi) {
                float v = x[r] - t * dv[r];
                if (c != 1.f) v = v / c;
                th_store<T>(w, i, v);
            }
        }
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


// Entry points <kernel>_f32 / _f16 / _bf16 (thrifty_common.cuh: TH_FOR_FLOAT_TYPES); `tab`
// is the tensor table above (K = 2: x, y / w, g / w, d; K = 3: w, g, old / w, g, d).
#define TH_OPTIM_KERNELS(S, T)                                                                     \
    extern "C" __global__ void mt_partials_##S(const long long* tab, int n, int op, float c, float* out) { \
        /* block-cooperative (__syncthreads) */                                                     \
        thrifty_opt::partials<T>(tab, n, op, c, out);                                              \
    }                                                                                              \
    extern "C" __global__ void sam_perturb_##S(const long long* tab, int n, const float* norm, float rho, \
                                               int adaptive) {                                     \
        thrifty_opt::sam_perturb<T>(tab, n, norm, rho, adaptive);                                  \
    }                                                                                              \
    extern "C" __global__ void dog_update_##S(const long long* tab, int n, const float* eta, int eta_stride, \
                                              float wd) {                                          \
        thrifty_opt::dog_update<T>(tab, n, eta, eta_stride, wd);                                   \
    }                                                                                              \
    extern "C" __global__ void momo_moments_##S(const long long* tab, int n, float beta, float* out3, \
                                                long long total) {                                 \
        /* block-cooperative (__syncthreads) */                                                     \
        thrifty_opt::momo_moments<T>(tab, n, beta, out3, total);                                   \
    }                                                                                              \
    extern "C" __global__ void momo_update_##S(const long long* tab, int n, const float* tau, float c) { \
        thrifty_opt::momo_update<T>(tab, n, tau, c);                                               \
    }

TH_FOR_FLOAT_TYPES(TH_OPTIM_KERNELS)
