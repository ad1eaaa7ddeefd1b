// Host shim: compiles thrifty's CUDA kernels as plain C++ so that the CPU test suite can
// run every kernel thread by thread (tests/cuda/cuda_host.py) and compare it bit for bit
// with the Rust core and the torch references. Only what the kernels use is provided; semantics follow the CUDA docs
// (IEEE round-to-nearest intrinsics, atomics). Compile with -ffp-contract=off.
#pragma once
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __constant__
#define __shared__ static
#define __restrict__ __restrict

using std::log;
using std::sqrt;

struct th_shim_dim3 { unsigned x, y, z; };
static th_shim_dim3 blockIdx = {0, 0, 0}, blockDim = {1, 1, 1}, gridDim = {1, 1, 1};
static thread_local th_shim_dim3 threadIdx = {0, 0, 0};

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline float __double2float_rn(double d) { return (float)d; }
inline float __int2float_rn(int i) { return (float)i; }
inline unsigned __float_as_uint(float f) { unsigned u; std::memcpy(&u, &f, 4); return u; }
inline float __uint_as_float(unsigned u) { float f; std::memcpy(&f, &u, 4); return f; }
inline int __float_as_int(float f) { int u; std::memcpy(&u, &f, 4); return u; }
inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
// Atomics are real atomics: block-cooperative kernels run their threads concurrently.
inline unsigned atomicMax(unsigned* p, unsigned v) {
    unsigned o = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v > o && !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return o;
}
inline unsigned atomicMin(unsigned* p, unsigned v) {
    unsigned o = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (v < o && !__atomic_compare_exchange_n(p, &o, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return o;
}
inline unsigned atomicOr(unsigned* p, unsigned v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }
inline int atomicMax(int* p, int v) { int o = *p; if (v > o) *p = v; return o; }
inline int atomicAdd(int* p, int v) { int o = *p; *p = o + v; return o; }
inline float atomicAdd(float* p, float v) { float o = *p; *p = o + v; return o; }
inline int __dp4a(int a, int b, int c) {
    for (int j = 0; j < 4; ++j) c += (int)(signed char)(a >> (8 * j)) * (int)(signed char)(b >> (8 * j));
    return c;
}

// Block-cooperative kernels (__shared__ + __syncthreads) run one block at a time with one
// host thread per CUDA thread; __syncthreads is a generation barrier.
struct th_shim_barrier {
    std::mutex mu;
    std::condition_variable cv;
    unsigned count = 0, waiting = 0, generation = 0;
    void wait() {
        std::unique_lock<std::mutex> lk(mu);
        unsigned gen = generation;
        if (++waiting == count) {
            waiting = 0;
            ++generation;
            cv.notify_all();
        } else {
            cv.wait(lk, [&] { return gen != generation; });
        }
    }
};
static th_shim_barrier th_shim_bar;
inline void __syncthreads() { th_shim_bar.wait(); }

template <typename F>
inline void th_shim_run_block(unsigned threads, F body) {
    th_shim_bar.count = threads;
    std::vector<std::thread> ts;
    for (unsigned i = 0; i < threads; ++i)
        ts.emplace_back([i, &body] { threadIdx.x = i; body(); });
    for (auto& t : ts) t.join();
}
