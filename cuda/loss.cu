// Chunk-level work of the fused linear + loss for large vocabularies
// (thrifty.torch.losses.linear_cross_entropy_loss). torch computes one logits tile
// o = h[rows] @ W[v0:v0+cols]^T (+ b) with cuBLAS; these kernels
//   lce_stats_*: fold the tile into running per-row statistics (online logsumexp:
//                running max m and sum s of exp(o - m); Welford mean / M2 over the
//                classes seen so far; sum of o_j^2 over j != target; o_target);
//   lce_grad_*:  overwrite the tile, in place, with dLoss/do (the gradient tile), which
//                torch then multiplies back into dH and dW.
// The CPU fallback in python/thrifty/torch/losses/linear.py does the same per tile with torch.
// All arithmetic in float32; tiles may be float32, float16 or bfloat16.
#include "thrifty_common.cuh"

namespace thrifty_loss {

// Partial statistics of a set of logits; merge() combines two of them.
struct Acc {
    float m;     // max
    float s;     // sum exp(o - m)
    float n;     // count
    float mean;  // Welford mean
    float m2;    // Welford sum of squared deviations
    float sq;    // sum of o^2 over non-target classes
};

__device__ __forceinline__ Acc empty_acc() {
    Acc a;
    a.m = __uint_as_float(0xff800000u); a.s = 0.f; a.n = 0.f; a.mean = 0.f; a.m2 = 0.f; a.sq = 0.f;
    return a;
}

__device__ __forceinline__ Acc merge(Acc a, Acc b) {
    Acc r;
    r.m = fmaxf(a.m, b.m);
    float sa = (a.s == 0.f) ? 0.f : a.s * expf(a.m - r.m);
    float sb = (b.s == 0.f) ? 0.f : b.s * expf(b.m - r.m);
    r.s = sa + sb;
    r.n = a.n + b.n;
    if (r.n == 0.f) {
        r.mean = 0.f; r.m2 = 0.f;
    } else {
        float d = b.mean - a.mean;
        r.mean = a.mean + d * (b.n / r.n);
        r.m2 = a.m2 + b.m2 + d * d * (a.n * b.n / r.n);
    }
    r.sq = a.sq + b.sq;
    return r;
}

__device__ __forceinline__ Acc push(Acc a, float x, bool is_target) {
    if (x > a.m) {
        a.s = a.s * expf(a.m - x) + 1.f;
        a.m = x;
    } else {
        a.s += expf(x - a.m);
    }
    a.n += 1.f;
    float d = x - a.mean;
    a.mean += d / a.n;
    a.m2 += d * (x - a.mean);
    if (!is_target) a.sq += x * x;
    return a;
}

// One block per row: fold columns [0, cols) of row r of the tile into the row's state.
// state layout per row (6 floats): m, s, mean, m2, sq, o_target. Rows whose target is
// outside this tile keep o_target.
template <typename T>
__device__ void stats(const T* o, long long ldo, int rows, int cols, long long v0,
                      const long long* target, float* state) {
    __shared__ Acc sh[256];
    int r = blockIdx.x;
    if (r >= rows) return;
    long long t = target[r] - v0;  // local target column (may be outside [0, cols))
    const T* row = o + (long long)r * ldo;
    Acc a = empty_acc();
    for (int j = threadIdx.x; j < cols; j += blockDim.x) a = push(a, th_load<T>(row, j), j == t);
    sh[threadIdx.x] = a;
    __syncthreads();
    for (int w = blockDim.x / 2; w > 0; w >>= 1) {
        if (threadIdx.x < w) sh[threadIdx.x] = merge(sh[threadIdx.x], sh[threadIdx.x + w]);
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        float* s = state + 6 * (long long)r;
        Acc prev;
        prev.m = s[0]; prev.s = s[1]; prev.n = (float)v0; prev.mean = s[2]; prev.m2 = s[3]; prev.sq = s[4];
        Acc c = merge(prev, sh[0]);
        s[0] = c.m; s[1] = c.s; s[2] = c.mean; s[3] = c.m2; s[4] = c.sq;
        if (t >= 0 && t < cols) s[5] = th_load<T>(row, t);
    }
}

// In place: tile <- dLoss/do * go[r]. kind 0: cross-entropy, 1: squentropy, 2: spherical
// Z-loss. rowp per row (4 floats): cross-entropy/squentropy: lse in [0]; Z-loss: z_target,
// mu, sigma, -sigmoid(a (b - z_target)) / sigma. go per row (0 for ignored rows).
// One block per row, threads stride over the columns (no index division).
template <typename T>
__device__ void grad(T* o, long long ldo, int rows, int cols, long long v0, const long long* target,
                     const float* rowp, const float* go, int kind, float n_classes) {
    int r = blockIdx.x;
    if (r >= rows) return;
    T* row = o + (long long)r * ldo;
    const float g = go[r];
    const long long t = target[r] - v0;
    const float* p = rowp + 4 * (long long)r;
    for (int j = threadIdx.x; j < cols; j += blockDim.x) {
        if (g == 0.f) {
            th_store<T>(row, j, 0.f);
            continue;
        }
        float x = th_load<T>(row, j);
        bool is_t = j == t;
        float d;
        if (kind == 2) {
            d = p[3] * ((is_t ? 1.f : 0.f) - 1.f / n_classes - p[0] * (x - p[1]) / (n_classes * p[2]));
        } else {
            d = expf(x - p[0]);
            if (is_t) d -= 1.f;
            else if (kind == 1) d += 2.f * x / (n_classes - 1.f);
        }
        th_store<T>(row, j, d * g);
    }
}

}  // namespace thrifty_loss

// Entry points <kernel>_f32 / _f16 / _bf16 (thrifty_common.cuh: TH_FOR_FLOAT_TYPES).
#define TH_LOSS_KERNELS(S, T)                                                                       \
    extern "C" __global__ void lce_stats_##S(const T* o, long long ldo, int rows, int cols, long long v0, \
                                             const long long* target, float* state) {              \
        /* block-cooperative (__syncthreads): one block of 256 threads per row */                   \
        thrifty_loss::stats<T>(o, ldo, rows, cols, v0, target, state);                             \
    }                                                                                              \
    extern "C" __global__ void lce_grad_##S(T* o, long long ldo, int rows, int cols, long long v0,  \
                                            const long long* target, const float* rowp,            \
                                            const float* go, int kind, float n_classes) {          \
        thrifty_loss::grad<T>(o, ldo, rows, cols, v0, target, rowp, go, kind, n_classes);          \
    }

TH_FOR_FLOAT_TYPES(TH_LOSS_KERNELS)
