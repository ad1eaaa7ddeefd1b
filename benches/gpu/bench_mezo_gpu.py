"""GPU benchmark: one MeZO step with the fused Philox kernels (rng="philox") against the
naive MeZO (rng="torch": torch.randn noise tensors, one per parameter and phase).

    python benches/gpu/bench_mezo_gpu.py [--json out.json] [--layers 24] [--width 4096]

The closure is a cheap loss so the optimizer's own cost is measured. Reports median step
time and the peak memory allocated by a step on top of the parameters.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _gpu_timing import device_line, dump, peak_extra, timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--width", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch

    from thrifty.torch import cuda_available as available
    from thrifty.torch.optim import MeZO

    assert available(), "needs CUDA + CuPy"
    dev = torch.device("cuda")
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        params = [torch.nn.Parameter(torch.randn(args.width, args.width, device=dev, dtype=dtype) * 0.02)
                  for _ in range(args.layers)]
        n = sum(p.numel() for p in params)

        def closure():
            return sum(p[0, :8].float().sum() for p in params)

        for rng in ("torch", "philox"):
            opt = MeZO(params, lr=1e-7, eps=1e-3, rng=rng)
            fn = lambda: opt.step(closure)  # noqa: E731
            t = timed(fn, args.repeats)
            mem = peak_extra(fn)
            rows.append(dict(dtype=str(dtype), rng=rng, params=n, ms=t * 1e3, peak_extra_mib=mem / 2**20))
            print(f"{str(dtype):15s} rng={rng:7s} {n / 1e6:7.0f}M params  {t * 1e3:8.2f} ms/step  "
                  f"peak extra {mem / 2**20:8.1f} MiB", flush=True)
        del params
        torch.cuda.empty_cache()
    head = f"{args.layers} x {args.width}^2 | {device_line()}"
    print(head)
    dump(args.json, dict(config=head, rows=rows))


if __name__ == "__main__":
    main()
