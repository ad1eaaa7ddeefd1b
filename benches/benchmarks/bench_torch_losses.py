"""Large-vocabulary losses (forward + backward) against plain cross-entropy.

``torch.nn.functional.cross_entropy`` is what a user would otherwise call; squentropy
and the spherical Z-loss add a square / standardisation term at the same cost class.
The naive versions (``*_naive``) are the obvious autograd compositions, which keep
several logits-sized intermediates alive. Circle loss and the IoU losses are timed
against pytorch-metric-learning and torchvision where installed.
"""

from __future__ import annotations

from .common import require

_VOCAB_SHAPES = [(512, 32_000), (256, 128_000)]


def _naive_squentropy(F, torch, o, y):
    ce = F.cross_entropy(o, y, reduction="none")
    sq = o.square().sum(1) - o.gather(1, y[:, None]).squeeze(1).square()
    return (ce + sq / (o.shape[1] - 1)).mean()


def _naive_zloss(F, torch, o, y, a=1.0, b=0.0):
    z = (o - o.mean(1, keepdim=True)) / o.std(1, unbiased=False, keepdim=True)
    return (F.softplus(a * (b - z.gather(1, y[:, None]).squeeze(1))) / a).mean()


class LargeVocabLoss:
    params = (["cross_entropy", "thrifty_squentropy", "naive_squentropy",
               "thrifty_zloss", "naive_zloss"], _VOCAB_SHAPES)
    param_names = ["loss", "shape"]
    timeout = 300

    def setup(self, loss, shape):
        self.torch = torch = require("torch")
        self.F = torch.nn.functional
        losses = require("thrifty.torch.losses")
        g = torch.Generator().manual_seed(0)
        n, c = shape
        self.o = (torch.randn(n, c, generator=g) * 3).requires_grad_(True)
        self.y = torch.randint(0, c, (n,), generator=g)
        F = self.F
        self.fn = {
            "cross_entropy": lambda o, y: F.cross_entropy(o, y),
            "thrifty_squentropy": lambda o, y: losses.squentropy_loss(o, y),
            "naive_squentropy": lambda o, y: _naive_squentropy(F, torch, o, y),
            "thrifty_zloss": lambda o, y: losses.spherical_z_loss(o, y),
            "naive_zloss": lambda o, y: _naive_zloss(F, torch, o, y),
        }[loss]

    def time_forward_backward(self, loss, shape):
        self.o.grad = None
        self.fn(self.o, self.y).backward()

    def peakmem_forward_backward(self, loss, shape):
        self.o.grad = None
        self.fn(self.o, self.y).backward()


class CircleLossBench:
    params = (["thrifty", "pytorch_metric_learning"], [256, 1024])
    param_names = ["backend", "batch"]

    def setup(self, backend, batch):
        torch = require("torch")
        g = torch.Generator().manual_seed(0)
        self.e = torch.randn(batch, 128, generator=g).requires_grad_(True)
        self.y = torch.randint(0, batch // 8, (batch,), generator=g)
        if backend == "thrifty":
            self.fn = require("thrifty.torch.losses").CircleLoss()
        else:
            self.fn = require("pytorch_metric_learning.losses").CircleLoss()

    def time_forward_backward(self, backend, batch):
        self.e.grad = None
        self.fn(self.e, self.y).backward()


class CompleteIoU:
    params = (["thrifty", "torchvision"], [100_000])
    param_names = ["backend", "n"]

    def setup(self, backend, n):
        torch = require("torch")
        g = torch.Generator().manual_seed(0)
        xy = torch.rand(n, 2, generator=g) * 100
        self.p = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 20 + 1], 1).requires_grad_(True)
        xy = torch.rand(n, 2, generator=g) * 100
        self.t = torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 20 + 1], 1)
        if backend == "thrifty":
            self.fn = require("thrifty.torch.losses").complete_iou_loss
        else:
            ops = require("torchvision.ops")
            self.fn = lambda p, t: ops.complete_box_iou_loss(p, t, reduction="mean")

    def time_forward_backward(self, backend, n):
        self.p.grad = None
        self.fn(self.p, self.t).backward()
