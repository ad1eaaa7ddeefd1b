"""GPU benchmark: optimizer step time of SAM, DoG, LDoG and MoMo with the fused device
path (the CUDA backend's optim.cu kernels) against the same optimizers' plain torch path.

    python benches/gpu/bench_optim_gpu.py [--json out.json] [--tensors 100] [--size 1000000]
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))
from _gpu_timing import device_line, dump, timed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--tensors", type=int, default=100)
    ap.add_argument("--size", type=int, default=1_000_000)
    ap.add_argument("--repeats", type=int, default=10)
    args = ap.parse_args()

    import torch

    from thrifty.torch import cuda_available as available
    from thrifty.torch.optim import SAM, DoG, LDoG, MoMo, _fused

    assert available(), "needs CUDA + CuPy"
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    rows = []
    makers = {
        "SAM(SGD) first+second step": lambda ps: SAM(ps, torch.optim.SGD, lr=0.1),
        "DoG": lambda ps: DoG(ps),
        "LDoG": lambda ps: LDoG(ps),
        "MoMo": lambda ps: MoMo(ps),
    }
    for name, make in makers.items():
        res = {}
        for mode in ("plain", "fused"):
            params = [torch.nn.Parameter(torch.randn(args.size, device=dev, generator=g)) for _ in range(args.tensors)]
            for p in params:
                p.grad = torch.randn(args.size, device=dev, generator=g) * 1e-3
            opt = make(params)
            loss = torch.tensor(1.0, device=dev)
            if name.startswith("SAM"):
                def fn():
                    opt.first_step(zero_grad=False)
                    opt.second_step(zero_grad=False)
            elif name == "MoMo":
                fn = lambda: opt.step(loss=loss)  # noqa: E731
            else:
                fn = opt.step
            original = _fused.use_fused
            if mode == "plain":
                _fused.use_fused = lambda ps: False
            try:
                res[mode] = timed(fn, args.repeats)
            finally:
                _fused.use_fused = original
            del params, opt
            torch.cuda.empty_cache()
        rows.append(dict(optimizer=name, plain_ms=res["plain"] * 1e3, fused_ms=res["fused"] * 1e3,
                         speedup=res["plain"] / res["fused"]))
        print(f"{name:28s} plain {res['plain'] * 1e3:8.2f} ms  fused {res['fused'] * 1e3:8.2f} ms  "
              f"x{res['plain'] / res['fused']:.2f}", flush=True)
    head = f"{args.tensors} tensors x {args.size} float32 | {device_line()}"
    print(head)
    dump(args.json, dict(config=head, rows=rows))


if __name__ == "__main__":
    main()
