import math

import pytest

torch = pytest.importorskip("torch")

from _optim_problem import roundtrip  # noqa: E402

import thrifty  # noqa: E402
from thrifty.torch.optim import FiraAdamW, GaLoreAdamW  # noqa: E402

D = torch.float64


class RefProjector:
    """galore-torch's projector arithmetic, written out (float32 SVD, cast back)."""

    def __init__(self, rank, gap, scale, proj_type):
        self.rank, self.gap, self.scale, self.proj_type = rank, gap, scale, proj_type
        self.ortho = None

    def _svd(self, g, kind):
        U, s, Vh = torch.linalg.svd(g.float(), full_matrices=False)
        if kind == "right":
            return Vh[: self.rank, :].to(g.dtype)
        if kind == "left":
            return U[:, : self.rank].to(g.dtype)
        return [U[:, : self.rank].to(g.dtype), Vh[: self.rank, :].to(g.dtype)]

    def _kind(self, g):
        tall = g.shape[0] >= g.shape[1]
        return {
            "std": "right" if tall else "left",
            "reverse_std": "left" if tall else "right",
        }.get(self.proj_type, self.proj_type)

    def project(self, g, it):
        kind = self._kind(g)
        if self.ortho is None or it % self.gap == 0:
            self.ortho = self._svd(g, kind)
        self.kind = kind
        if kind == "right":
            return g @ self.ortho.t()
        if kind == "left":
            return self.ortho.t() @ g
        return (self.ortho[0].t() @ g) @ self.ortho[1].t()

    def project_back(self, r):
        if self.kind == "right":
            out = r @ self.ortho
        elif self.kind == "left":
            out = self.ortho @ r
        else:
            out = (self.ortho[0] @ r) @ self.ortho[1]
        return out * self.scale


def ref_adamw_step(p, grad, st, group, fira):
    """One step of galore-torch's (and Fira's) AdamW, in the reference's order of ops."""
    st.setdefault("step", 0)
    full = grad
    if "rank" in group:
        if "proj" not in st:
            st["proj"] = RefProjector(group["rank"], group["update_proj_gap"], group["scale"], group["proj_type"])
        grad = st["proj"].project(grad, st["step"])
    if "m" not in st:
        st["m"], st["v"] = torch.zeros_like(grad), torch.zeros_like(grad)
    b1, b2 = group["betas"]
    st["step"] += 1
    st["m"].mul_(b1).add_(grad, alpha=1 - b1)
    st["v"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
    denom = st["v"].sqrt().add_(group["eps"])
    step_size = group["lr"] * math.sqrt(1 - b2 ** st["step"]) / (1 - b1 ** st["step"])
    n = st["m"] / denom
    if "rank" in group:
        if fira:
            sub = st["proj"].project_back(grad)
            dim = 0 if n.shape[0] < n.shape[1] else 1
            f = torch.norm(n, dim=dim) / (torch.norm(grad, dim=dim) + 1e-8)
            if dim == 1:
                f = f.unsqueeze(1)
            s = (full - sub) * f
            if "sn" in st:
                sn = torch.norm(s)
                lim = max(torch.norm(s) / (st["sn"] + 1e-8), 1.01) / 1.01
                s = s / lim
                st["sn"] = sn / lim
            else:
                st["sn"] = torch.norm(s)
            n = st["proj"].project_back(n) + s
        else:
            n = st["proj"].project_back(n)
    p.add_(n, alpha=-step_size)
    if group["weight_decay"] > 0:
        p.add_(p, alpha=-group["lr"] * group["weight_decay"])


def grads_at(k, shapes, seed=0):
    g = torch.Generator().manual_seed(seed * 1000 + k)
    return [torch.randn(s, generator=g, dtype=D) for s in shapes]


def make_groups(params, proj_type, wd):
    return [
        {"params": [params[0], params[1]], "rank": 2, "update_proj_gap": 3, "scale": 0.25, "proj_type": proj_type},
        {"params": [params[2]], "weight_decay": wd},
    ]


SHAPES = [(6, 4), (3, 7), (5,)]


@pytest.mark.parametrize(
    "cls, proj_type",
    [(GaLoreAdamW, t) for t in ("std", "reverse_std", "left", "right", "full")]
    + [(FiraAdamW, t) for t in ("std", "reverse_std", "left", "right")],
)
def test_galore_matches_reference_arithmetic(cls, proj_type):
    fira = cls is FiraAdamW
    g0 = torch.Generator().manual_seed(7)
    init = [torch.randn(s, generator=g0, dtype=D) for s in SHAPES]
    params = [torch.nn.Parameter(t.clone()) for t in init]
    opt = cls(make_groups(params, proj_type, 0.1), lr=0.01, weight_decay=0.05)
    ref = [t.clone() for t in init]
    ref_groups = [
        dict(rank=2, update_proj_gap=3, scale=0.25, proj_type=proj_type, lr=0.01, betas=(0.9, 0.999), eps=1e-6,
             weight_decay=0.05),
        dict(lr=0.01, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1),
    ]
    ref_state = [{}, {}, {}]
    for k in range(8):
        gs = grads_at(k, SHAPES)
        for p, g in zip(params, gs):
            p.grad = g.clone()
        opt.step()
        for i, g in enumerate(gs):
            ref_adamw_step(ref[i], g, ref_state[i], ref_groups[0 if i < 2 else 1], fira)
    for p, r in zip(params, ref):
        assert torch.equal(p.detach(), r), (p - r).abs().max()
    assert opt.state[params[0]]["step"] == 8


def test_galore_low_rank_state_and_refresh():
    w = torch.nn.Parameter(torch.randn(8, 5, dtype=D))
    opt = GaLoreAdamW([{"params": [w], "rank": 2, "update_proj_gap": 2}])
    seen = []
    for k in range(5):
        w.grad = grads_at(k, [(8, 5)])[0]
        opt.step()
        seen.append(opt.state[w]["ortho"].clone())
    assert opt.state[w]["exp_avg"].shape == (8, 2)  # tall: right projection, R = G P^T
    assert opt.state[w]["ortho"].dtype == D
    # the projection owns its storage: a view would keep all of the SVD's Vh alive
    ortho = opt.state[w]["ortho"]
    assert ortho.untyped_storage().nbytes() == ortho.numel() * ortho.element_size()
    assert torch.equal(seen[0], seen[1]) and not torch.equal(seen[1], seen[2])
    assert opt.param_groups[0]["scale"] == 0.25 and opt.param_groups[0]["proj_type"] == "std"


@pytest.mark.parametrize("cls", [GaLoreAdamW, FiraAdamW])
def test_galore_state_dict_roundtrip_resumes(cls, tmp_path):
    g0 = torch.Generator().manual_seed(3)
    params = [torch.nn.Parameter(torch.randn(s, generator=g0, dtype=D)) for s in SHAPES]
    opt = cls(make_groups(params, "std", 0.0), lr=0.01)
    for k in range(4):
        for p, g in zip(params, grads_at(k, SHAPES)):
            p.grad = g
        opt.step()
    sd = roundtrip(opt, tmp_path)
    params2 = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = cls(make_groups(params2, "std", 0.0), lr=0.01)
    opt2.load_state_dict(sd)
    for k in range(4, 8):  # crosses a projection refresh at step 6
        for ps in (params, params2):
            for p, g in zip(ps, grads_at(k, SHAPES)):
                p.grad = g
        opt.step()
        opt2.step()
    for a, b in zip(params, params2):
        assert torch.equal(a.detach(), b.detach())


def test_galore_bf16_uses_fp32_state():
    w = torch.nn.Parameter(torch.randn(6, 4).to(torch.bfloat16))
    w32 = torch.nn.Parameter(w.detach().float())
    opts = [FiraAdamW([{"params": [q], "rank": 2, "alpha": 0.5}], lr=0.01) for q in (w, w32)]
    for k in range(3):
        g = grads_at(k, [(6, 4)])[0].float()
        w.grad = g.to(torch.bfloat16)
        w32.grad = w.grad.float()
        opts[0].step()
        opts[1].step()
        w32.data.copy_(w32.data.to(torch.bfloat16).float())  # the same rounding of the weights
    assert opts[0].state[w]["exp_avg"].dtype == torch.float32
    assert opts[0].param_groups[0]["scale"] == 0.5
    torch.testing.assert_close(w.detach().float(), w32.detach(), rtol=0, atol=0)


def test_galore_skips_params_without_grad_and_non_contiguous():
    a = torch.nn.Parameter(torch.randn(4, 6, dtype=D).T)  # 6 x 4, non-contiguous
    b = torch.nn.Parameter(a.detach().contiguous().clone())
    idle = torch.nn.Parameter(torch.ones(3, 3, dtype=D))
    o1 = GaLoreAdamW([{"params": [a, idle], "rank": 2}])
    o2 = GaLoreAdamW([{"params": [b], "rank": 2}])
    for k in range(3):
        a.grad = grads_at(k, [(6, 4)])[0]
        b.grad = a.grad.clone()
        o1.step()
        o2.step()
    torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-13, atol=1e-13)
    assert torch.equal(idle.detach(), torch.ones(3, 3, dtype=D)) and not o1.state[idle]


@pytest.mark.parametrize("cls", [GaLoreAdamW, FiraAdamW])
def test_galore_rejects_bad_arguments(cls):
    w = torch.nn.Parameter(torch.randn(4, 3))
    v = torch.nn.Parameter(torch.randn(3))
    cases = [
        ({"params": [w], "rank": 4}, "larger than the matrix"),
        ({"params": [w], "rank": 0}, "rank"),
        ({"params": [w], "rank": 1.5}, "rank"),
        ({"params": [v], "rank": 1}, "2-D"),
        ({"params": [w], "rank": 1, "update_proj_gap": 0}, "update_proj_gap"),
        ({"params": [w], "rank": 1, "scale": -1.0}, "scale"),
        ({"params": [w], "rank": 1, "proj_type": "diagonal"}, "proj_type"),
        ({"params": [w], "lr": -1e-3}, "lr"),
        ({"params": [w], "eps": -1.0}, "eps"),
        ({"params": [w], "betas": (1.0, 0.9)}, "betas"),
        ({"params": [w], "weight_decay": -0.1}, "weight_decay"),
    ]
    for group, msg in cases:
        with pytest.raises(thrifty.InvalidInputError, match=msg):
            cls([group])
    if cls is FiraAdamW:
        with pytest.raises(ValueError, match="proj_type"):
            cls([{"params": [w], "rank": 1, "proj_type": "full"}])
    w.grad = torch.randn(4, 3).to_sparse()
    with pytest.raises(thrifty.InvalidInputError, match="sparse"):
        cls([w]).step()


@pytest.mark.parametrize("side", ["left", "right", "full"])
def test_galore_orthogonal_owns_its_storage(side):
    # 40 x 30 at rank 3: a view of U (40 x 30) or Vh (30 x 30) would hold 10x the bytes
    from thrifty.torch.optim import galore_orthogonal

    g = torch.randn(40, 30, generator=torch.Generator().manual_seed(1), dtype=D)
    mats = galore_orthogonal(g, 3, side)
    assert len(mats) == (2 if side == "full" else 1)
    for m in mats:
        assert m.is_contiguous() and 3 in m.shape
        assert m.untyped_storage().nbytes() == m.numel() * m.element_size()
