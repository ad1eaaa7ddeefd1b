"""GPU benchmark: fused BitLinear (thrifty.torch.nn.BitLinear on CUDA) vs nn.Linear (bf16) vs the
plain-PyTorch BitLinear (thrifty.torch.nn.BitLinear's float path).

    python benches/gpu/bench_bitlinear.py [--json out.json] [--quick]

Times forward (inference, no grad), forward + backward (training) per layer shape with
CUDA events (median of repeats), and the weight memory of each variant. Needs a CUDA
device and CuPy; prints a table and optionally writes JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _gpu_timing import dump, timed  # noqa: E402


def timed_ms(fn, repeats):
    """Median milliseconds of ``fn`` (three warm-up calls)."""
    return timed(fn, repeats, warmup=3) * 1e3


@contextlib.contextmanager
def kernels(on: bool):
    """BitLinear's fused CUDA path on or off (the float path is the plain-PyTorch BitLinear)."""
    from thrifty.torch._cuda import _runtime as rt

    orig = rt.use_kernels
    rt.use_kernels = orig if on else (lambda *tensors: False)
    try:
        yield
    finally:
        rt.use_kernels = orig


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    import torch

    import thrifty.torch
    from thrifty.torch import nn as tnn

    if not thrifty.torch.cuda_available():
        print("no CUDA device / CuPy: nothing to benchmark")
        return 0
    dev = torch.device("cuda")
    shapes = [(4096, 2048, 2048), (8192, 4096, 4096), (4096, 4096, 11008)]
    if args.quick:
        shapes = shapes[:1]
    repeats = 5 if args.quick else 20
    rows = []
    torch.manual_seed(0)
    for m, k, n in shapes:
        x = torch.randn(m, k, device=dev, dtype=torch.bfloat16)
        gy = torch.randn(m, n, device=dev, dtype=torch.bfloat16)
        lin = torch.nn.Linear(k, n, bias=False, device=dev, dtype=torch.bfloat16)
        bit = tnn.BitLinear.from_linear(lin)
        res = {"shape": [m, k, n]}

        def fwd(layer, fused):
            with kernels(fused):
                with torch.no_grad():
                    return layer(x)

        def train(layer, fused):
            with kernels(fused):
                xx = x.detach().requires_grad_(True)
                layer(xx).backward(gy)
                # an optimizer step changes the weight: the fused path repacks each step
                with torch.no_grad():
                    layer.weight.add_(layer.weight.grad, alpha=-1e-6)
                layer.weight.grad = None

        res["linear_bf16_fwd_ms"] = timed_ms(lambda: lin(x), repeats)
        res["bitlinear_torch_fwd_ms"] = timed_ms(lambda: fwd(bit, False), repeats)
        res["bitlinear_fused_fwd_ms"] = timed_ms(lambda: fwd(bit, True), repeats)

        def lin_train():
            xx = x.detach().requires_grad_(True)
            lin(xx).backward(gy)
            lin.weight.grad = None

        res["linear_bf16_train_ms"] = timed_ms(lin_train, repeats)
        res["bitlinear_torch_train_ms"] = timed_ms(lambda: train(bit, False), repeats)
        res["bitlinear_fused_train_ms"] = timed_ms(lambda: train(bit, True), repeats)
        packed = bit._fused_cache.packed
        res["weight_bytes_bf16"] = lin.weight.numel() * 2
        res["weight_bytes_packed"] = packed.nbytes
        # agreement with the float path (bf16 output rounding dominates)
        y_f = fwd(bit, True).float()
        y_t = fwd(bit, False).float()
        res["max_abs_diff_vs_torch_bitlinear"] = float((y_f - y_t).abs().max())
        rows.append(res)
        print(f"{m}x{k}x{n}: fwd ms  linear bf16 {res['linear_bf16_fwd_ms']:.3f} | "
              f"BitLinear torch {res['bitlinear_torch_fwd_ms']:.3f} | fused {res['bitlinear_fused_fwd_ms']:.3f}")
        print(f"{'':>{len(f'{m}x{k}x{n}')}}  train ms linear bf16 {res['linear_bf16_train_ms']:.3f} | "
              f"BitLinear torch {res['bitlinear_torch_train_ms']:.3f} | fused {res['bitlinear_fused_train_ms']:.3f}"
              f" | weights {res['weight_bytes_bf16'] >> 20} MiB bf16 vs {res['weight_bytes_packed'] / 2**20:.2f} MiB packed"
              f" | max |diff| {res['max_abs_diff_vs_torch_bitlinear']:.3g}")
        sys.stdout.flush()
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "rows": rows}
    dump(args.json, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
