"""The launch glue of thrifty.cuda.{mezo,losses,optim} without a GPU: every kernel call
passes exactly the parameter widths its ``extern "C"`` signature declares (pointers as
64-bit addresses), and ``_launch.run`` launches on the tensors' device and torch's
stream (CuPy and torch.cuda replaced by stand-ins)."""

import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thrifty.cuda import _launch, _runtime  # noqa: E402
from thrifty.cuda import losses as fl  # noqa: E402
from thrifty.cuda import mezo  # noqa: E402
from thrifty.cuda import optim as fo  # noqa: E402
from _cuda_fakes import recorders  # noqa: E402

WIDTH = {"ptr": np.uint64, "u64": np.uint64, "i64": np.int64, "u32": np.uint32, "i32": np.int32,
         "f32": np.float32, "f64": np.float64}


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def run(module, name, device, grid, args, *, threads=256):
        sig = _runtime.kernel_signatures(module)[name]
        assert len(sig) == len(args), (name, sig, args)
        for (kind, pname), a in zip(sig, args):
            assert type(a) is WIDTH[kind], (name, pname, kind, type(a))
        assert grid >= 1 and threads == 256
        seen.append(name)

    monkeypatch.setattr(_launch, "run", run)
    monkeypatch.setattr(_launch, "on_gpu", lambda *ts: bool(ts))
    monkeypatch.setattr(fo, "_kernel_ok", lambda *groups: True)
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_launch_matches_its_kernel_signature(calls, dtype):
    sfx = _launch.suffix(dtype)
    xs = [torch.randn(33).to(dtype), torch.randn(4, 5).to(dtype)]
    mezo.perturb_(xs, seed=1, step=2, eps=1e-3, scale=1.0)
    mezo.update_(xs, seed=1, step=2, eps=1e-3, projected_grad=torch.tensor(0.5), lr=0.1, weight_decay=0.01)
    h = torch.randn(6, 4).to(dtype).requires_grad_(True)
    w = torch.randn(300, 4).to(dtype).requires_grad_(True)
    fl.linear_cross_entropy(h, w, torch.arange(6), loss="z", chunk_size=128).backward()
    fo.multi_tensor_sum(xs, xs, op="dot", segments=[1, 1])
    fo.sam_perturb_(xs, xs, [x.clone() for x in xs], rho=0.1, adaptive=True, grad_norm=torch.tensor(1.0))
    fo.dog_update_(xs, xs, eta=torch.tensor(0.1), weight_decay=0.0)
    ds = [torch.zeros(x.shape) for x in xs]
    fo.momo_moments_(xs, xs, ds, beta=0.9)
    fo.momo_update_(xs, ds, tau=torch.tensor(0.1), c=1.0)
    want = {f"mezo_perturb_{sfx}", f"mezo_update_{sfx}", f"lce_stats_{sfx}", f"lce_grad_{sfx}",
            f"mt_partials_{sfx}", "mt_segment_sum", f"sam_perturb_{sfx}", f"dog_update_{sfx}",
            f"momo_moments_{sfx}", f"momo_update_{sfx}"}
    assert set(calls) == want
    assert want <= set(mezo.KERNELS + fl.KERNELS + fo.KERNELS)


def test_run_launches_on_the_device_and_torch_stream(monkeypatch):
    events = []
    Ctx, _, Module = recorders(events)

    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=lambda d: Ctx(("device", d))))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    monkeypatch.setattr(_runtime, "stream", lambda device=None: Ctx(("stream", device)))
    monkeypatch.setattr(_runtime, "get_module", lambda name, options=(), device=None: (
        events.append(("module", name, device)), Module())[1])
    _launch.launch("optim.cu", "dog_update_f32", 1000, (np.uint64(1), np.int64(2)), device=3)
    _launch.run("loss.cu", "lce_stats_f32", 3, 7, (np.int32(1),))
    launches = [e for e in events if e[0] == "launch"]
    assert launches[0][1:3] == ((4,), (256,)) and launches[0][4] == ("stream", 3)
    assert launches[1][1:3] == ((7,), (256,)) and launches[1][4] == ("stream", 3)
    assert ("module", "optim.cu", 3) in events and ("get", "dog_update_f32") in events
    i = events.index(next(e for e in events if e[0] == "launch"))
    assert ("enter", ("device", 3)) in events[:i] and ("enter", ("stream", 3)) in events[:i]
