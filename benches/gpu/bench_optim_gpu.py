"""GPU benchmark: optimizer step time of SAM, DoG, LDoG and MoMo with the fused device
path (the CUDA backend's optim.cu kernels) against the same optimizers' plain torch path, and a DoG step captured in a CUDA graph and replayed
(possible because the fused step never synchronises with the host).

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
    rows.append(graph_dog(args, dev, g, torch, DoG, timed))
    head = f"{args.tensors} tensors x {args.size} float32 | {device_line()}"
    print(head)
    dump(args.json, dict(config=head, rows=rows))


def graph_dog(args, dev, g, torch, DoG, timed) -> dict:
    """Fused DoG step captured once in a CUDA graph, then replayed; checked against eager steps."""
    params = [torch.nn.Parameter(torch.randn(args.size, device=dev, generator=g)) for _ in range(args.tensors)]
    for p in params:
        p.grad = torch.randn(args.size, device=dev, generator=g) * 1e-3
    twin = [torch.nn.Parameter(p.detach().clone()) for p in params]
    for p, q in zip(params, twin):
        q.grad = p.grad.clone()
    opt, ref = DoG(params), DoG(twin)
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # state is created lazily: warm up outside the capture
                opt.step()
                ref.step()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            opt.step()
        graph.replay()
        ref.step()
        torch.cuda.synchronize()
        diff = max(float((p - q).abs().max()) for p, q in zip(params, twin))
        t = timed(graph.replay, args.repeats)
        eager = timed(ref.step, args.repeats)
        row = dict(optimizer="DoG fused, CUDA graph replay", eager_fused_ms=eager * 1e3, graph_ms=t * 1e3,
                   speedup=eager / t, max_abs_diff_vs_eager=diff)
        print(f"{'DoG CUDA graph replay':28s} eager {eager * 1e3:8.2f} ms  graph {t * 1e3:8.2f} ms  "
              f"x{eager / t:.2f}  max|diff| {diff:.3g}", flush=True)
    except Exception as exc:
        row = dict(optimizer="DoG fused, CUDA graph replay", error=f"{type(exc).__name__}: {exc}")
        print(f"DoG CUDA graph capture failed: {type(exc).__name__}: {exc}", flush=True)
    del params, twin, opt, ref
    torch.cuda.empty_cache()
    return row


if __name__ == "__main__":
    main()
