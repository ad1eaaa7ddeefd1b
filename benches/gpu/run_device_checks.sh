#!/usr/bin/env bash
# One prepared run of every GPU check, for a lent GPU machine (the `device` tool).
#
# Prepare here (the device has no Rust toolchain and no network):
#     maturin build --release -o dist                  # the abi3 wheel
#     pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --platform manylinux_2_28_x86_64 --platform any -d dist/wheelhouse \
#         torchao liger-kernel                         # the anchors the device image lacks
#     cp python/thrifty/_core.abi3.so dist/            # fallback if the wheel's glibc tag is refused
# then, with the device tool, run from the repository root carrying `dist`:
#     run(command="bash benches/gpu/run_device_checks.sh", carry=["dist"], timeout_s=540)
# The device (Python 3.12, CUDA 13, cupy-cuda13x, torch 2.x+cu130) gets the wheel
# installed without dependencies; results land under ./device-results.
# Total budget: about 8 minutes; each step has its own timeout so one hang cannot eat it.
set -u
# Results go to a folder of their own; where the device tool's $OUT exists (it returns at
# most 8 files), they are also packed into $OUT/device-results.tgz at the end.
BACK=${OUT:-}
OUT=$PWD/device-results
mkdir -p "$OUT"
pack() { [ -n "$BACK" ] && tar czf "$BACK/device-results.tgz" -C "$OUT" . && cp "$OUT/steps.txt" "$BACK/" 2>/dev/null; }
trap pack EXIT
cd "$(dirname "$0")/../.."
T0=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - T0 )) s)" | tee -a "$OUT/steps.txt"; }
# bench LABEL SCRIPT TIMEOUT_S TAIL_LINES: benches/gpu/SCRIPT.py writes $OUT/SCRIPT.json and
# $OUT/SCRIPT.txt (its output); the last TAIL_LINES lines are echoed.
bench() {
  step "bench: $1"
  timeout "$3" python "benches/gpu/$2.py" --json "$OUT/$2.json" > "$OUT/$2.txt" 2>&1
  tail -n "$4" "$OUT/$2.txt"
}

step "environment"
{
  nvidia-smi || true
  python -V
  python -c "import torch, numpy; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numpy', numpy.__version__)"
  python -c "import cupy; print('cupy', cupy.__version__, 'runtime', cupy.cuda.runtime.runtimeGetVersion())"
} > "$OUT/env.txt" 2>&1

step "install the wheel"
for mod in numpy pytest; do
  python -c "import $mod" 2>/dev/null || python -m pip install --no-index --find-links dist/wheelhouse "$mod" \
    >> "$OUT/install.txt" 2>&1 || echo "could not install $mod" | tee -a "$OUT/steps.txt"
done
for whl in dist/wheelhouse/torchao-*.whl dist/wheelhouse/liger_kernel-*.whl; do
  [ -f "$whl" ] && { python -m pip install --no-deps --no-index "$whl" >> "$OUT/install.txt" 2>&1 \
    || echo "could not install $whl" | tee -a "$OUT/steps.txt"; }
done
python -m pip list 2>/dev/null | grep -iE "^(torch|torchao|liger-kernel|cupy-cuda13x|triton|numpy|pytest) " >> "$OUT/env.txt"
unset PYTHONPATH
WHEEL=$(ls dist/thrifty-*.whl 2>/dev/null | head -n 1)
if [ -n "$WHEEL" ] && python -m pip install --no-deps --no-index --force-reinstall "$WHEEL" >> "$OUT/install.txt" 2>&1; then
  # `import thrifty` is the installed wheel (kernels from site-packages/thrifty/kernels)
  echo "installed $WHEEL" | tee -a "$OUT/steps.txt"
elif [ -f dist/_core.abi3.so ]; then
  # fallback: the checkout's python/ with the carried extension (kernels via the
  # python/thrifty/kernels links)
  cp dist/_core.abi3.so python/thrifty/_core.abi3.so
  export PYTHONPATH=$PWD/python
  echo "wheel not installable; using python/ + dist/_core.abi3.so" | tee -a "$OUT/steps.txt"
else
  echo "no installable dist/thrifty-*.whl and no dist/_core.abi3.so" | tee -a "$OUT/steps.txt"
  exit 2
fi
python -c "import thrifty.torch as t, thrifty.torch._cuda._runtime as r; print('available', t.cuda_available()); print('kernels', r.kernels_dir()); print(r.kernel_names())" \
  > "$OUT/runtime.txt" 2>&1

step "GPU tests (pytest -m gpu)"
timeout 220 python -m pytest -m gpu -q -ra --timeout=60 -p no:cacheprovider -o addopts="" tests/cuda tests/torch_api \
  --junitxml="$OUT/gpu-tests.xml" > "$OUT/gpu-tests.txt" 2>&1
echo "pytest exit $?" >> "$OUT/gpu-tests.txt"
tail -n 5 "$OUT/gpu-tests.txt"

bench "BitLinear" bench_bitlinear 90 20
bench "quantize/dequantize" bench_quant_gpu 90 30

bench "fused linear + loss" bench_fused_loss_gpu 120 14
bench "MeZO step" bench_mezo_gpu 60 6
bench "fused optimizer steps" bench_optim_gpu 60 8

step "done"
