#!/usr/bin/env bash
# One prepared run of every GPU check, for a lent GPU machine (the `device` tool).
#
# Build the abi3 wheel here first (the device has no Rust toolchain):
#     maturin build --release -o dist
# then, with the device tool, run from the repository root carrying `dist`:
#     run(command="bash benches/gpu/run_device_checks.sh", carry=["dist"], timeout_s=540)
# The device (Python 3.12, CUDA 13, cupy-cuda13x, torch 2.x+cu130) gets the wheel
# installed without dependencies; results land under $OUT (default: ./device-results).
# Total budget: about 8 minutes; each step has its own timeout so one hang cannot eat it.
set -u
OUT=${OUT:-$PWD/device-results}
mkdir -p "$OUT"
cd "$(dirname "$0")/../.."
T0=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - T0 )) s)" | tee -a "$OUT/steps.txt"; }

step "environment"
{
  nvidia-smi || true
  python -V
  python -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)"
  python -c "import cupy; print('cupy', cupy.__version__, 'runtime', cupy.cuda.runtime.runtimeGetVersion())"
} > "$OUT/env.txt" 2>&1

step "install the wheel"
WHEEL=$(ls dist/thrifty-*.whl 2>/dev/null | head -n 1)
if [ -z "$WHEEL" ]; then
  echo "no dist/thrifty-*.whl: build it with maturin and carry dist" | tee -a "$OUT/steps.txt"
  exit 2
fi
pip install --no-deps --no-index --force-reinstall "$WHEEL" > "$OUT/install.txt" 2>&1 || {
  echo "wheel install failed" | tee -a "$OUT/steps.txt"; exit 3; }
# `import thrifty` is the installed wheel (kernels from site-packages/thrifty/kernels):
# the checkout's python/ folder is never on sys.path here.
unset PYTHONPATH
python -c "import thrifty.cuda as c, thrifty.cuda._runtime as r; print('available', c.available()); print('kernels', r.kernels_dir()); print(r.kernel_names())" \
  > "$OUT/runtime.txt" 2>&1

step "GPU tests (pytest -m gpu)"
GPU_TESTS=$(ls tests/torch_api/test_cuda_*.py 2>/dev/null)
timeout 300 python -m pytest -m gpu -q -ra -p no:cacheprovider -o addopts="" $GPU_TESTS \
  --junitxml="$OUT/gpu-tests.xml" > "$OUT/gpu-tests.txt" 2>&1
echo "pytest exit $?" >> "$OUT/gpu-tests.txt"
tail -n 5 "$OUT/gpu-tests.txt"

step "bench: BitLinear"
timeout 120 python benches/gpu/bench_bitlinear.py --json "$OUT/bench_bitlinear.json" \
  > "$OUT/bench_bitlinear.txt" 2>&1
tail -n 20 "$OUT/bench_bitlinear.txt"

step "bench: quantize/dequantize"
timeout 120 python benches/gpu/bench_quant_gpu.py --json "$OUT/bench_quant_gpu.json" \
  > "$OUT/bench_quant_gpu.txt" 2>&1
tail -n 30 "$OUT/bench_quant_gpu.txt"

# ---- issue #11 (mezo / losses / optim) appends its section below this line ----

step "done"
