"""Extra peak memory and time of one loss forward+backward at a large vocabulary.

Run one loss per process (peak RSS is per process)::

    for l in ce squentropy naive_squentropy zloss naive_zloss squentropy_ignore zloss_ignore; do
        python benches/loss_memory.py $l 256 128000; done

"extra peak RSS" is the growth of the process's peak resident memory during the timed
forward+backward passes, on top of the logits (allocated in place, without temporaries)
and a small warm-up call. The ``*_ignore`` variants set every 4th target to
``ignore_index`` (-100), as padded sequence batches do.
"""

from __future__ import annotations

import resource
import sys
import time

import torch

from thrifty.torch import losses as L

F = torch.nn.functional


def naive_squentropy(o, y):
    ce = F.cross_entropy(o, y, reduction="none")
    sq = o.square().sum(1) - o.gather(1, y[:, None]).squeeze(1).square()
    return (ce + sq / (o.shape[1] - 1)).mean()


def naive_zloss(o, y, a=1.0, b=0.0):
    z = (o - o.mean(1, keepdim=True)) / o.std(1, unbiased=False, keepdim=True)
    return (F.softplus(a * (b - z.gather(1, y[:, None]).squeeze(1))) / a).mean()


def _with_ignored(fn):
    def wrapped(o, y):
        return fn(o, y.masked_fill(torch.arange(len(y)) % 4 == 0, -100))
    return wrapped


LOSSES = {"ce": F.cross_entropy, "squentropy": L.squentropy_loss, "naive_squentropy": naive_squentropy,
          "zloss": L.spherical_z_loss, "naive_zloss": naive_zloss,
          "ce_ignore": _with_ignored(F.cross_entropy), "squentropy_ignore": _with_ignored(L.squentropy_loss),
          "zloss_ignore": _with_ignored(L.spherical_z_loss)}


def main() -> None:
    name, n, c = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    fn = LOSSES[name]
    g = torch.Generator().manual_seed(0)
    o = torch.empty(n, c).normal_(generator=g).mul_(3).requires_grad_(True)
    y = torch.randint(0, c, (n,), generator=g)
    fn(o[:2].detach().clone().requires_grad_(True), y[:2]).backward()  # warm-up
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times = []
    for _ in range(3):
        o.grad = None
        t = time.perf_counter()
        fn(o, y).backward()
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(f"{name:17s} {n}x{c}: best of 3 {min(times) * 1e3:7.1f} ms, extra peak RSS "
          f"{(peak - base) / 1024:6.1f} MiB (logits {o.numel() * 4 / 2**20:.0f} MiB), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
