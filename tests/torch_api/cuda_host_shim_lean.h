// Extra host shim for #11's kernels (mezo.cu, loss.cu, optim.cu) on top of
// tests/cuda_host_shim.h: libm, and a setter for gridDim (grid-stride loops need it).
#pragma once
#include "../cuda_host_shim.h"
#include <cmath>
using std::sqrt;
using std::log;
extern "C" void th_lean_set_grid(unsigned g) { gridDim.x = g; }
