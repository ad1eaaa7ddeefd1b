"""A small real training table on Fashion-MNIST for thrifty.torch.losses and BitLinear.

Data: Debian's ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).
An MLP 784-256-256-10 (LayerNorm before each hidden Linear) is trained with Adam
(lr 1e-3, batch 128) on a fixed random subset of the 60,000 training images (20,000 by
default, the same subset for every run, so the table fits a few minutes on two shared
cores; ``--train-size 60000`` uses all) and evaluated on all 10,000 test images: test
accuracy and the expected calibration error (ECE, 15 equal-width bins of the softmax
confidence). Each row is trained with several seeds (initialisation and batch order);
the table shows mean ± sample standard deviation.

Rows: cross-entropy vs squentropy vs the spherical Z-loss (defaults a=1, b=0, and
a=0.1, b=10) on the float MLP; then the float MLP vs the same MLP with BitLinear hidden
layers (ternary weights, 8-bit activations, output layer kept float) trained from
scratch vs the 16 -> 1.58-bit transition (strength ramped 0 -> 1 over the first half of
training).

    python benches/reproduce_torch_losses.py            # README table (5 epochs x 3 seeds)
    python benches/reproduce_torch_losses.py --quick    # 1 epoch, 1 seed
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from thrifty.torch import losses as L
from thrifty.torch import nn as tnn

ROOT = Path("/usr/share/datasets/fashion-mnist")


def _idx(name: str) -> np.ndarray:
    raw = gzip.open(ROOT / name).read()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load() -> tuple[torch.Tensor, ...]:
    xtr = torch.from_numpy(_idx("train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    xte = torch.from_numpy(_idx("t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    mu, sd = xtr.mean(), xtr.std()
    ytr = torch.from_numpy(_idx("train-labels-idx1-ubyte.gz").astype(np.int64))
    yte = torch.from_numpy(_idx("t10k-labels-idx1-ubyte.gz").astype(np.int64))
    return (xtr - mu) / sd, ytr, (xte - mu) / sd, yte


def mlp(bit: bool) -> nn.Module:
    lin = tnn.BitLinear if bit else nn.Linear
    return nn.Sequential(nn.LayerNorm(784), lin(784, 256), nn.ReLU(),
                         nn.LayerNorm(256), lin(256, 256), nn.ReLU(), nn.Linear(256, 10))


def ece(probs: torch.Tensor, y: torch.Tensor, bins: int = 15) -> float:
    conf, pred = probs.max(1)
    correct = (pred == y).float()
    edges = torch.linspace(0, 1, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = (conf > lo) & (conf <= hi)
        if m.any():
            total += m.float().mean().item() * abs(conf[m].mean().item() - correct[m].mean().item())
    return total


CRITERIA = {
    "cross-entropy": nn.CrossEntropyLoss,
    "squentropy": L.SquentropyLoss,
    "Z-loss (a=1, b=0)": L.SphericalZLoss,
    "Z-loss (a=0.1, b=10)": lambda: L.SphericalZLoss(0.1, 10.0),
}


def run(loss_name: str, model_kind: str, data, epochs: int, seed: int) -> tuple[float, float]:
    xtr, ytr, xte, yte = data
    torch.manual_seed(seed)
    model = mlp(model_kind != "float")
    crit = CRITERIA[loss_name]()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    steps_per_epoch = (len(xtr) + 127) // 128
    sched = None
    if model_kind == "transition":
        sched = tnn.StrengthSchedule(model, ramp_steps=epochs * steps_per_epoch // 2)
    for _ in range(epochs):
        perm = torch.randperm(len(xtr))
        model.train()
        for i in range(0, len(xtr), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            crit(model(xtr[idx]), ytr[idx]).backward()
            opt.step()
            if sched is not None:
                sched.step()
    model.eval()
    with torch.no_grad():
        logits = model(xte)
    acc = (logits.argmax(1) == yte).float().mean().item()
    return acc, ece(torch.softmax(logits, 1), yte)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--train-size", type=int, default=20_000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    epochs, seeds = (1, 1) if args.quick else (args.epochs, args.seeds)
    torch.set_num_threads(args.threads)
    xtr, ytr, xte, yte = load()
    keep = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(1234))[:args.train_size]
    data = (xtr[keep], ytr[keep], xte, yte)
    rows = [("cross-entropy", "float"), ("squentropy", "float"), ("Z-loss (a=1, b=0)", "float"),
            ("Z-loss (a=0.1, b=10)", "float"), ("cross-entropy", "bitlinear"), ("cross-entropy", "transition")]
    print(f"Fashion-MNIST, MLP 784-256-256-10, Adam 1e-3, batch 128, {len(keep)} training images, "
          f"{epochs} epochs, {seeds} seeds, torch {torch.__version__}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| loss | model | test accuracy | ECE (15 bins) | time / run |")
    print("|---|---|---|---|---|")
    start = time.perf_counter()
    for loss_name, kind in rows:
        accs, eces = [], []
        t = time.perf_counter()
        for s in range(seeds):
            a, e = run(loss_name, kind, data, epochs, s)
            accs.append(a)
            eces.append(e)
        dt = (time.perf_counter() - t) / seeds
        sd = (lambda v: statistics.stdev(v) if len(v) > 1 else 0.0)
        print(f"| {loss_name} | {kind} | {100 * statistics.mean(accs):.2f} ± {100 * sd(accs):.2f} % "
              f"| {statistics.mean(eces):.4f} ± {sd(eces):.4f} | {dt:.0f} s |", flush=True)
    print(f"total {time.perf_counter() - start:.0f} s, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
