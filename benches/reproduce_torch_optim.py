"""Fashion-MNIST training table for thrifty.torch.optim (README section).

An MLP 784-256-10 trained for a fixed budget (2 epochs over the first 20,000 training
images, batch 128, 314 updates; seed 0) with each optimizer at its paper defaults;
accuracy on the 10,000 test images. Needs the Debian package dataset-fashion-mnist.

    python benches/reproduce_torch_optim.py
"""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import torch

from thrifty.torch import optim as O

ROOT = Path("/usr/share/datasets/fashion-mnist")
N_TRAIN, EPOCHS, BATCH = 20_000, 2, 128


def load(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    with gzip.open(ROOT / f"{kind}-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(ROOT / f"{kind}-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)
    return torch.from_numpy(x.astype(np.float32) / 255.0), torch.from_numpy(y.astype(np.int64))


def galore_groups(model, **keys):
    big = [model[0].weight]
    rest = [p for p in model.parameters() if p is not model[0].weight]
    return [{"params": rest}, {"params": big, "rank": 64, "update_proj_gap": 200, "scale": 0.25, **keys}]


OPTIMIZERS = {
    "SGD lr=0.03 mom=0.9": lambda m: torch.optim.SGD(m.parameters(), lr=0.03, momentum=0.9),
    "SGD lr=0.1 mom=0.9": lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9),
    "SGD lr=0.3 mom=0.9": lambda m: torch.optim.SGD(m.parameters(), lr=0.3, momentum=0.9),
    "AdamW lr=1e-3": lambda m: torch.optim.AdamW(m.parameters(), lr=1e-3),
    "SAM(SGD lr=0.1 mom=0.9) rho=0.05": lambda m: O.SAM(m.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9),
    "ASAM(SGD lr=0.1 mom=0.9) rho=2": lambda m: O.SAM(
        m.parameters(), torch.optim.SGD, rho=2.0, adaptive=True, lr=0.1, momentum=0.9
    ),
    "DoG (no lr), averaged": lambda m: O.DoG(m.parameters()),
    "LDoG (no lr), averaged": lambda m: O.LDoG(m.parameters()),
    "GaLoreAdamW lr=0.01 r=64 a=0.25": lambda m: O.GaLoreAdamW(galore_groups(m), lr=0.01),
    "FiraAdamW lr=0.01 r=64 a=0.25": lambda m: O.FiraAdamW(galore_groups(m), lr=0.01),
    "FRUGAL lr=1e-3 density=0.25 svd": lambda m: O.FRUGAL(m.parameters(), lr=1e-3, projection="svd"),
    "MoMo lr=1": lambda m: O.MoMo(m.parameters()),
    "MoMoAdam lr=1e-2": lambda m: O.MoMoAdam(m.parameters()),
    "GSM lr=0.01 mom=0.99 density=0.5": lambda m: O.GlobalSparseMomentumSGD(m.parameters(), density=0.5),
    "MeZO lr=1e-3 eps=1e-3": lambda m: O.MeZO(m.parameters(), lr=1e-3),
}


def train(name, xtr, ytr, xte, yte):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(784, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
    opt = OPTIMIZERS[name](model)
    avg = O.PolynomialDecayAverager(model) if "DoG" in name else None
    ce = torch.nn.functional.cross_entropy
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        order = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(xtr), BATCH):
            idx = order[i : i + BATCH]
            x, y = xtr[idx], ytr[idx]
            if isinstance(opt, O.MeZO):
                with torch.no_grad():
                    opt.step(lambda: ce(model(x), y))
                continue
            opt.zero_grad()
            loss = ce(model(x), y)
            loss.backward()
            if isinstance(opt, O.SAM):
                opt.step(lambda: ce(model(x), y).backward())
            elif isinstance(opt, (O.MoMo, O.MoMoAdam)):
                opt.step(loss=loss)
            else:
                opt.step()
            if avg is not None:
                avg.step()
    seconds = time.perf_counter() - start
    net = avg.averaged_model if avg is not None else model
    with torch.no_grad():
        acc = (net(xte).argmax(1) == yte).float().mean().item()
    return acc, seconds


def main():
    torch.set_num_threads(1)
    xtr, ytr = load("train")
    xte, yte = load("t10k")
    xtr, ytr = xtr[:N_TRAIN], ytr[:N_TRAIN]
    print(f"| optimizer (fixed budget: {EPOCHS} epochs x {N_TRAIN} images) | test accuracy | seconds |")
    print("|---|---|---|")
    for name in OPTIMIZERS:
        acc, sec = train(name, xtr, ytr, xte, yte)
        print(f"| {name} | {acc:.4f} | {sec:.1f} |", flush=True)


if __name__ == "__main__":
    main()
