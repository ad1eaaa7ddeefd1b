// bitlinear.cu — BitNet b1.58 linear layer: int8 activations x packed ternary weights.
//
// Formulas (thrifty.torch.nn.BitLinear, strength 1, act_bits 8):
//   activations, per row m of x (M x K): s_x = (1 / max(max_k |x|, 1e-5)) * 127 (torch's
//     rounding of `127 / t`),
//     xq = clamp(round_half_even(x * s_x), -128, 127)            (int8)
//   weights (N x K), per tensor: s_w = 1 / max(gamma, 1e-5) (gamma computed by torch),
//     q = clamp(round_half_even(w * s_w), -1, 1)                  (ternary)
//   y[m, n] = (sum_k xq[m, k] q[n, k]) / (s_x[m] s_w) (+ bias[n]), the sum in int32.
//
// Layouts (internal to thrifty.torch._cuda.bitlinear; thrifty.quant's "ternary" is the export
// format):
//   xq: int8 (M, Kp), Kp = K rounded up to 64, zero padded;
//   packed weights: uint32 (N, Kp / 16); word w of row n holds k = 16 w + j at bits
//   2j..2j+1 as the code q + 1 (0, 1, 2); padding holds code 1 (q = 0).
//
// Kernels: th_act_quant (one 256-thread block per row), th_wpack (one thread per word),
// th_bitlinear_gemm (one 256-thread block per 64 x 64 output tile, __dp4a on int8 x 4),
// th_bitlinear_gemv (M <= 8: one warp per output feature),
// th_wunpack / th_act_dequant (one thread per element, for the backward pass).
#include "thrifty_common.cuh"

#define TH_BM 64
#define TH_BN 64
#define TH_BK 64

extern "C" __global__ void th_act_quant(const float* __restrict__ x, th_u64 M, th_u64 K, th_u64 Kp,
                                        signed char* __restrict__ xq, float* __restrict__ s_x) {
    __shared__ float red[256];
    th_u64 m = blockIdx.x;
    int tid = threadIdx.x;
    if (m >= M) return;  // uniform per block
    const float* row = x + m * K;
    float mx = 0.0f;
    for (th_u64 k = tid; k < K; k += 256) mx = th_max(mx, th_abs(row[k]));
    // block-cooperative (__syncthreads): the host test harness runs whole blocks
    float amax = th_block_max256(mx, red);
    // torch evaluates `127 / t` as reciprocal(t) * 127: two roundings, reproduced here
    float s = __fmul_rn(__fdiv_rn(1.0f, th_max(amax, 1e-5f)), 127.0f);
    for (th_u64 k = tid; k < Kp; k += 256) {
        signed char q = 0;
        if (k < K) q = (signed char)th_rne_i32(th_clamp(__fmul_rn(row[k], s), -128.0f, 127.0f));
        xq[m * Kp + k] = q;
    }
    if (tid == 0) s_x[m] = s;
}

extern "C" __global__ void th_wpack(const float* __restrict__ w, th_u64 N, th_u64 K, th_u64 Kw,
                                    const float* __restrict__ s_w, th_u32* __restrict__ out) {
    th_u64 t = th_tid();
    if (t >= N * Kw) return;
    th_u64 n = t / Kw, wi = t % Kw;
    float s = s_w[0];
    th_u32 word = 0;
    for (th_u32 j = 0; j < 16; ++j) {
        th_u64 k = wi * 16 + j;
        th_u32 code = 1;
        if (k < K) {
            float q = __fmul_rn(w[n * K + k], s);
            code = 1u + (q > 0.5f ? 1u : 0u) - (q < -0.5f ? 1u : 0u);
        }
        word |= code << (2 * j);
    }
    out[t] = word;
}

extern "C" __global__ void th_wunpack(const th_u32* __restrict__ wp, th_u64 N, th_u64 K, th_u64 Kw,
                                      const float* __restrict__ s_w, float* __restrict__ out) {
    th_u64 t = th_tid();
    if (t >= N * K) return;
    th_u64 n = t / K, k = t % K;
    th_u32 code = (wp[n * Kw + k / 16] >> (2 * (k % 16))) & 3u;
    out[t] = __fdiv_rn(__fadd_rn((float)code, -1.0f), s_w[0]);
}

extern "C" __global__ void th_act_dequant(const signed char* __restrict__ xq, th_u64 M, th_u64 K,
                                          th_u64 Kp, const float* __restrict__ s_x,
                                          float* __restrict__ out) {
    th_u64 t = th_tid();
    if (t >= M * K) return;
    th_u64 m = t / K, k = t % K;
    out[t] = __fdiv_rn((float)xq[m * Kp + k], s_x[m]);
}

// The epilogue of both products: y = acc / (s_x[m] s_w) (+ bias[n]); den = s_x[m] s_w.
TH_DEV float th_bitlinear_out(int acc, float den, const float* __restrict__ bias, int has_bias, th_u64 n) {
    float v = __fdiv_rn((float)acc, den);
    if (has_bias) v = __fadd_rn(v, bias[n]);
    return v;
}

// Four ternary codes (bits 2j of `bits`, j = 0..3) as four int8 lanes of one word.
TH_DEV int th_codes_to_i8x4(th_u32 bits) {
    th_u32 out = 0;
    for (int j = 0; j < 4; ++j) {
        th_u32 code = (bits >> (2 * j)) & 3u;
        out |= ((code - 1u) & 0xffu) << (8 * j);
    }
    return (int)out;
}

extern "C" __global__ void th_bitlinear_gemm(const int* __restrict__ xq, const float* __restrict__ s_x,
                                             const th_u32* __restrict__ wp,
                                             const float* __restrict__ s_w,
                                             const float* __restrict__ bias, int has_bias,
                                             th_u64 M, th_u64 N, th_u64 Kp,
                                             float* __restrict__ y) {
    // A tile: 64 rows x 16 words (4 int8 each); B tile: 64 weight rows x 16 words.
    __shared__ int As[TH_BM][TH_BK / 4 + 1];
    __shared__ int Bs[TH_BN][TH_BK / 4 + 1];
    th_u64 tiles_n = (N + TH_BN - 1) / TH_BN;
    th_u64 m0 = (blockIdx.x / tiles_n) * TH_BM;
    th_u64 n0 = (blockIdx.x % tiles_n) * TH_BN;
    int tid = threadIdx.x;
    int tx = tid % 16, ty = tid / 16;
    int acc[4][4];
    for (int i = 0; i < 4; ++i)
        for (int j = 0; j < 4; ++j) acc[i][j] = 0;
    th_u64 arow = Kp / 4;   // int32 words per activation row
    th_u64 wrow = Kp / 16;  // uint32 words per weight row
    for (th_u64 k0 = 0; k0 < Kp; k0 += TH_BK) {
        for (int r = 0; r < 4; ++r) {
            int idx = tid + 256 * r;
            int row = idx / 16, col = idx % 16;
            th_u64 m = m0 + row;
            As[row][col] = m < M ? xq[m * arow + k0 / 4 + col] : 0;
        }
        {
            int row = tid / 4, col = tid % 4;
            th_u64 n = n0 + row;
            th_u32 w = n < N ? wp[n * wrow + k0 / 16 + col] : 0x55555555u;  // code 1 = 0
            for (int q = 0; q < 4; ++q) Bs[row][4 * col + q] = th_codes_to_i8x4(w >> (8 * q));
        }
        __syncthreads();
        for (int kk = 0; kk < TH_BK / 4; ++kk) {
            int a[4], b[4];
            for (int i = 0; i < 4; ++i) a[i] = As[ty + 16 * i][kk];
            for (int j = 0; j < 4; ++j) b[j] = Bs[tx + 16 * j][kk];
            for (int i = 0; i < 4; ++i)
                for (int j = 0; j < 4; ++j) acc[i][j] = __dp4a(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
    float sw = s_w[0];
    for (int i = 0; i < 4; ++i) {
        th_u64 m = m0 + ty + 16 * i;
        if (m >= M) continue;
        float den = __fmul_rn(s_x[m], sw);
        for (int j = 0; j < 4; ++j) {
            th_u64 n = n0 + tx + 16 * j;
            if (n >= N) continue;
            y[m * N + n] = th_bitlinear_out(acc[i][j], den, bias, has_bias, n);
        }
    }
}

// Small batches (M <= 8, e.g. decoding): a warp per output feature n reads the weight row
// once, coalesced (lane l takes words l, l + 32, ...), for all M rows; lanes' int32 sums
// are combined through shared memory. Same integer sums and epilogue as the GEMM, so the
// results are identical. One 256-thread block per 8 consecutive n.
#define TH_GEMV_MAXM 8
extern "C" __global__ void th_bitlinear_gemv(const int* __restrict__ xq, const float* __restrict__ s_x,
                                             const th_u32* __restrict__ wp,
                                             const float* __restrict__ s_w,
                                             const float* __restrict__ bias, int has_bias,
                                             th_u64 M, th_u64 N, th_u64 Kp,
                                             float* __restrict__ y) {
    __shared__ int part[8][32][TH_GEMV_MAXM];
    int tid = threadIdx.x;
    int warp = tid / 32, lane = tid % 32;
    th_u64 n = (th_u64)blockIdx.x * 8 + warp;
    th_u64 arow = Kp / 4, wrow = Kp / 16;
    int acc[TH_GEMV_MAXM];
    for (int m = 0; m < TH_GEMV_MAXM; ++m) acc[m] = 0;
    if (n < N) {
        for (th_u64 w = lane; w < wrow; w += 32) {
            th_u32 bits = wp[n * wrow + w];
            int b0 = th_codes_to_i8x4(bits), b1 = th_codes_to_i8x4(bits >> 8);
            int b2 = th_codes_to_i8x4(bits >> 16), b3 = th_codes_to_i8x4(bits >> 24);
            for (th_u64 m = 0; m < M; ++m) {
                const int* a = xq + m * arow + 4 * w;
                int s = acc[m];
                s = __dp4a(a[0], b0, s);
                s = __dp4a(a[1], b1, s);
                s = __dp4a(a[2], b2, s);
                s = __dp4a(a[3], b3, s);
                acc[m] = s;
            }
        }
    }
    for (int m = 0; m < TH_GEMV_MAXM; ++m) part[warp][lane][m] = acc[m];
    __syncthreads();
    if (tid < 8 * TH_GEMV_MAXM) {
        int wv = tid / TH_GEMV_MAXM, m = tid % TH_GEMV_MAXM;
        th_u64 nn = (th_u64)blockIdx.x * 8 + wv;
        if ((th_u64)m < M && nn < N) {
            int s = 0;
            for (int l = 0; l < 32; ++l) s += part[wv][l][m];
            y[(th_u64)m * N + nn] = th_bitlinear_out(s, __fmul_rn(s_x[m], s_w[0]), bias, has_bias, nn);
        }
    }
}
