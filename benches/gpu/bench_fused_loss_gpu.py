"""GPU benchmark: fused linear + loss (thrifty.torch.losses.linear_cross_entropy_loss) against
F.cross_entropy on materialised logits and torch's chunked F.linear_cross_entropy
(when this torch has it) and Liger-Kernel's fused linear cross-entropy (when
``liger-kernel`` is importable), forward + backward, bfloat16.

    python benches/gpu/bench_fused_loss_gpu.py [--json out.json] [--n 8192] [--v 131072] [--d 4096]

Reports the median time of forward + backward and the peak memory allocated on top of
the inputs, and checks each loss value against the materialised one.
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
    ap.add_argument("--n", type=int, default=8192)
    ap.add_argument("--v", type=int, default=131072)
    ap.add_argument("--d", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()

    import torch
    import torch.nn.functional as F

    from thrifty.torch import cuda_available
    from thrifty.torch import losses as L

    assert cuda_available(), "needs CUDA + CuPy"
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    h = (torch.randn(args.n, args.d, device=dev, generator=g) * 0.5).to(torch.bfloat16).requires_grad_(True)
    w = (torch.randn(args.v, args.d, device=dev, generator=g) / args.d**0.5).to(torch.bfloat16).requires_grad_(True)
    y = torch.randint(0, args.v, (args.n,), device=dev, generator=g)

    def materialised(loss_fn):
        def run():
            h.grad = w.grad = None
            loss = loss_fn(F.linear(h, w), y)
            loss.backward()
            return loss
        return run

    methods = {
        "materialised F.cross_entropy": materialised(F.cross_entropy),
        "materialised thrifty squentropy": materialised(L.squentropy_loss),
        "materialised thrifty spherical_z_loss": materialised(L.spherical_z_loss),
    }
    if hasattr(F, "linear_cross_entropy"):
        try:
            from torch.nn.modules.linear_cross_entropy_options import LinearCrossEntropyOptions

            opts = LinearCrossEntropyOptions()
        except ImportError:
            opts = None

        def torch_chunked():
            h.grad = w.grad = None
            loss = F.linear_cross_entropy(h, w, y, options=opts)
            loss.backward()
            return loss

        methods["torch F.linear_cross_entropy (chunked)"] = torch_chunked
    try:
        from liger_kernel.transformers.fused_linear_cross_entropy import LigerFusedLinearCrossEntropyLoss

        liger_loss = LigerFusedLinearCrossEntropyLoss()

        def liger():
            h.grad = w.grad = None
            loss = liger_loss(w, h, y)
            loss.backward()
            return loss

        methods["Liger fused linear CE"] = liger
    except Exception as exc:  # not installed, or built for another torch/triton
        print(f"Liger-Kernel not available: {type(exc).__name__}: {exc}", flush=True)
    for kind in ("ce", "squentropy", "z"):
        def fused(kind=kind):
            h.grad = w.grad = None
            loss = L.linear_cross_entropy_loss(h, w, y, loss=kind)
            loss.backward()
            return loss
        methods[f"thrifty fused {kind}"] = fused

    refs = {"ce": None, "squentropy": None, "z": None}
    rows = []
    for name, fn in methods.items():
        try:
            val = float(fn())
            mem = peak_extra(fn)
            t = timed(fn, args.repeats)
        except torch.cuda.OutOfMemoryError:
            rows.append(dict(method=name, error="out of memory"))
            torch.cuda.empty_cache()
            continue
        except Exception as exc:  # a third-party kernel failing must not hide the others
            rows.append(dict(method=name, error=f"{type(exc).__name__}: {exc}"))
            print(f"{name:42s} failed: {type(exc).__name__}: {exc}", flush=True)
            torch.cuda.empty_cache()
            continue
        kind = "squentropy" if "squentropy" in name else "z" if ("z_loss" in name or name.endswith(" z")) else "ce"
        if name.startswith("materialised"):
            refs[kind] = val
        rows.append(dict(method=name, loss=val, ref=refs[kind], ms=t * 1e3, peak_extra_mib=mem / 2**20))
        print(f"{name:42s} {t * 1e3:8.2f} ms  peak extra {mem / 2**20:9.1f} MiB  loss {val:.5f} (ref {refs[kind]})",
              flush=True)
        torch.cuda.empty_cache()
    head = f"N={args.n} V={args.v} D={args.d} bf16 | {device_line()}"
    print(head)
    dump(args.json, dict(config=head, rows=rows))


if __name__ == "__main__":
    main()
