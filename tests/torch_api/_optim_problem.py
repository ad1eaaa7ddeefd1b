"""Shared small problems for the torch optimizer tests (imported by test_optim*.py)."""

import pytest

torch = pytest.importorskip("torch")


class Problem:
    """A tiny non-convex regression ``mean((tanh(X W^T + b) - Y)^2)`` with an unused param."""

    def __init__(self, dtype=torch.float64, seed=0, m=5, n=3):
        g = torch.Generator().manual_seed(seed)
        self.X = torch.randn(16, n, generator=g, dtype=torch.float64)
        self.Y = torch.randn(16, m, generator=g, dtype=torch.float64)
        self.init = [
            torch.randn(m, n, generator=g, dtype=torch.float64),
            torch.randn(m, generator=g, dtype=torch.float64),
            torch.randn(2, generator=g, dtype=torch.float64),  # never gets a gradient
        ]
        self.dtype = dtype

    def params(self):
        return [torch.nn.Parameter(t.clone().to(self.dtype)) for t in self.init]

    def loss(self, params, batch=None):
        W, b = params[0], params[1]
        X, Y = self.X.to(W.dtype), self.Y.to(W.dtype)
        if batch is not None:
            X, Y = X[batch], Y[batch]
        return ((torch.tanh(X @ W.T + b) - Y) ** 2).mean()

    def grads(self, tensors, batch=None):
        """Gradient of the loss at plain tensors (the reference side)."""
        ts = [t.detach().clone().requires_grad_(True) for t in tensors[:2]]
        loss = self.loss(ts, batch)
        gs = torch.autograd.grad(loss, ts)
        return [g.detach() for g in gs], loss.detach()

    def backward(self, params, batch=None):
        for p in params:
            p.grad = None
        loss = self.loss(params, batch)
        loss.backward()
        return loss


def roundtrip(opt, tmp_path):
    """Save ``opt.state_dict()`` and load it back with ``weights_only=True``."""
    path = tmp_path / "opt.pt"
    torch.save(opt.state_dict(), path)
    return torch.load(path, weights_only=True)
