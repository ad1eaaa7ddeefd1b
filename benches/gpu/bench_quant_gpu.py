"""GPU benchmark: thrifty.torch.quant quantize/dequantize throughput per format, against
torchao (when importable), plain torch casts, and thrifty.quant on the host CPU.

    python benches/gpu/bench_quant_gpu.py [--json out.json] [--quick] [--mib 256]

GB/s = float32 input bytes / quantize time (and float32 output bytes / dequantize time).
Each result is checked byte for byte against thrifty.quant on the CPU (a 1M-value slice)
before it is timed. Needs a CUDA device and CuPy.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
from _gpu_timing import dump, timed  # noqa: E402


def anchors(x):
    """name -> (format, quantize fn) for torch / torchao equivalents that are available."""
    import torch

    out = {
        "fp8_e4m3": ("torch .to(float8_e4m3fn) (scale 1)", lambda: x.to(torch.float8_e4m3fn)),
        "fp8_e5m2": ("torch .to(float8_e5m2) (scale 1)", lambda: x.to(torch.float8_e5m2)),
        "int8": ("torch per-tensor int8 (4 ops)",
                 lambda: torch.round(x * (127.5 / x.abs().amax())).clamp_(-128, 127).to(torch.int8)),
    }
    try:
        from torchao.prototype.mx_formats.mx_tensor import to_mx

        out["mxfp8_e4m3"] = ("torchao to_mx(e4m3)", lambda: to_mx(x, torch.float8_e4m3fn, 32))
        out["mxfp4"] = ("torchao to_mx(fp4)", lambda: to_mx(x, torch.float4_e2m1fn_x2, 32))
    except Exception:  # noqa: BLE001 - optional anchor
        pass
    try:
        from torchao.prototype.mx_formats.nvfp4_tensor import NVFP4Tensor

        out["nvfp4"] = ("torchao NVFP4Tensor.to_nvfp4", lambda: NVFP4Tensor.to_nvfp4(x.reshape(-1, 4096)))
    except Exception:  # noqa: BLE001
        pass
    try:
        from torchao.quantization.quant_primitives import (
            MappingType, choose_qparams_affine, quantize_affine)

        def int4():
            x2 = x.reshape(-1, 128)
            s, z = choose_qparams_affine(x2, MappingType.ASYMMETRIC, (1, 128), torch.uint8, 0, 15)
            return quantize_affine(x2, (1, 128), s, z, torch.uint8, 0, 15)

        out["int4"] = ("torchao choose_qparams+quantize_affine (uint4, g128)", int4)
    except Exception:  # noqa: BLE001
        pass
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--json")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--mib", type=int, default=256, help="size of the float32 input")
    args = ap.parse_args()
    import numpy as np
    import torch

    import thrifty.torch
    from thrifty import quant
    from thrifty.torch import quant as gq

    if not thrifty.torch.cuda_available():
        print("no CUDA device / CuPy: nothing to benchmark")
        return 0
    n = args.mib * 2**20 // 4
    cols = 4096
    torch.manual_seed(0)
    x = torch.randn(n // cols, cols, device="cuda")
    small = x[:256].contiguous()
    repeats = 3 if args.quick else 10
    anc = anchors(x)
    rows = []
    for fmt in quant.FORMATS:
        kw = {"rounding": "stochastic", "seed": 1} if fmt not in ("tq1_0", "tq2_0", "nf4") else {}
        r = {"format": fmt}
        for mode, opts in (("nearest", {}), ("stochastic", kw)):
            if mode == "stochastic" and not opts:
                continue
            got = gq.to_numpy(gq.quantize(small, fmt, **opts))
            want = quant.quantize(small.cpu().numpy(), fmt, **opts)
            r[f"{mode}_exact"] = bool(np.array_equal(got.data, want.data)
                                      and (want.scales is None or np.array_equal(got.scales, want.scales)))
            t = timed(lambda: gq.quantize(x, fmt, **opts), repeats)
            r[f"quantize_{mode}_gbs"] = x.numel() * 4 / t / 1e9
        q = gq.quantize(x, fmt)
        t = timed(lambda: gq.dequantize(q), repeats)
        r["dequantize_gbs"] = x.numel() * 4 / t / 1e9
        xc = x[: n // 8].cpu().numpy()  # host CPU reference, 1/8 of the data
        t0 = time.perf_counter()
        quant.quantize(xc, fmt)
        r["cpu_quantize_gbs"] = xc.nbytes / (time.perf_counter() - t0) / 1e9
        if fmt in anc:
            name, fn = anc[fmt]
            try:
                t = timed(fn, repeats)
                r["anchor"] = name
                r["anchor_quantize_gbs"] = x.numel() * 4 / t / 1e9
            except Exception as e:  # noqa: BLE001
                r["anchor"] = f"{name}: failed ({type(e).__name__})"
        rows.append(r)
        line = (f"{fmt:<11} quantize {r['quantize_nearest_gbs']:7.1f} GB/s"
                f" (stochastic {r.get('quantize_stochastic_gbs', float('nan')):7.1f})"
                f"  dequantize {r['dequantize_gbs']:7.1f} GB/s  host CPU {r['cpu_quantize_gbs']:5.2f} GB/s"
                f"  exact {r['nearest_exact']}/{r.get('stochastic_exact', '-')}")
        if "anchor_quantize_gbs" in r:
            line += f"  | {r['anchor']}: {r['anchor_quantize_gbs']:.1f} GB/s"
        elif "anchor" in r:
            line += f"  | {r['anchor']}"
        print(line, flush=True)
    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "mib": args.mib,
           "rows": rows}
    dump(args.json, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
