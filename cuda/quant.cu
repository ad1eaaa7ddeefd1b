// quant.cu — GPU encode/decode of the thrifty.quant formats (see thrifty_common.cuh).
#include "thrifty_common.cuh"

extern "C" __global__ void th_fp_encode(const float* __restrict__ x, th_u8* __restrict__ out,
                                        th_u64 n, int kind, int saturate) {
    th_u64 i = (th_u64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = (th_u8)th_encode(x[i], th_spec_of((th_kind)kind), saturate != 0);
}
