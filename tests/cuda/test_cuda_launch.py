"""The one kernel launcher (thrifty.torch._cuda._runtime.launch) without a GPU.

Every kernel call of the backend passes exactly the parameter widths its ``extern "C"``
signature declares (pointers as 64-bit addresses), dtype-generic kernels resolve to the
entry point of the tensors' dtype, and the submission runs on the tensors' device and
torch's stream (CuPy and torch.cuda replaced by stand-ins).
"""

import sys
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from thrifty.torch import losses  # noqa: E402
from thrifty.torch._cuda import _runtime as rt  # noqa: E402
from thrifty.torch._cuda import loss as fl  # noqa: E402
from thrifty.torch._cuda import mezo  # noqa: E402
from thrifty.torch._cuda import optim as fo  # noqa: E402

from cuda_fakes import recorders  # noqa: E402

WIDTH = {"ptr": np.uint64, "u64": np.uint64, "i64": np.int64, "u32": np.uint32, "i32": np.int32,
         "f32": np.float32, "f64": np.float64}


@pytest.fixture
def calls(monkeypatch):
    seen = []

    def submit(file, name, device, grid, block, args):
        sig = rt.kernel_signatures(file)[name]
        assert len(sig) == len(args), (name, sig, args)
        for (kind, pname), a in zip(sig, args):
            assert type(a) is WIDTH[kind], (name, pname, kind, type(a))
        assert grid >= 1 and block == 256 and device.type == "cpu"
        seen.append(name)

    monkeypatch.setattr(rt, "_submit", submit)
    monkeypatch.setattr(rt, "use_kernels", lambda *ts: bool(ts))
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_every_launch_matches_its_kernel_signature(calls, dtype):
    sfx = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float16: "f16"}[dtype]
    xs = [torch.randn(33).to(dtype), torch.randn(4, 5).to(dtype)]
    mezo.perturb_(xs, seed=1, step=2, eps=1e-3, scale=1.0)
    mezo.update_(xs, seed=1, step=2, eps=1e-3, projected_grad=torch.tensor(0.5), lr=0.1, weight_decay=0.01)
    h = torch.randn(6, 4).to(dtype).requires_grad_(True)
    w = torch.randn(300, 4).to(dtype).requires_grad_(True)
    losses.linear_cross_entropy_loss(h, w, torch.arange(6), loss="z", chunk_size=128).backward()
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
    assert want <= set(mezo._KERNELS + fl._KERNELS + fo._KERNELS)


def test_dtype_generic_entry_points_follow_one_naming_rule():
    assert rt.kernel_name("dog_update") == "dog_update"
    assert rt.kernel_name("dog_update", torch.float16) == "dog_update_f16"
    assert rt.float_types() == {"f32": "float", "f16": "th_f16", "bf16": "th_bf16"}
    sigs = rt.kernel_signatures("optim.cu")
    for sfx, ctype in rt.float_types().items():
        assert sigs[f"dog_update_{sfx}"] == (("ptr", "tab"), ("i32", "n"), ("ptr", "eta"), ("i32", "eta_stride"),
                                              ("f32", "wd"))
        assert "__syncthreads" in rt.kernel_entries("optim.cu")[f"mt_partials_{sfx}"][1]
    with pytest.raises(TypeError, match="no CUDA kernel"):
        rt.kernel_name("dog_update", torch.float64)


def test_launch_checks_its_arguments(calls):
    x = torch.zeros(4)
    with pytest.raises(TypeError, match="has no kernel dog_update$"):
        rt.launch("optim.cu", "dog_update", x, 1, x, 0, 0.0, threads=4)
    with pytest.raises(TypeError, match="takes 5 arguments, got 2"):
        rt.launch("optim.cu", "dog_update", x, 1, threads=4, dtype=torch.float32)
    with pytest.raises(TypeError, match="exactly one of threads and blocks"):
        rt.launch("optim.cu", "dog_update", x, 1, x, 0, 0.0, dtype=torch.float32)
    with pytest.raises(TypeError, match="argument eta must be a contiguous tensor"):
        rt.launch("optim.cu", "dog_update", x, 1, 0.5, 0, 0.0, threads=4, dtype=torch.float32)
    with pytest.raises(TypeError, match="argument tab must be a contiguous tensor"):
        rt.launch("optim.cu", "dog_update", torch.zeros(4, 2).t(), 1, x, 0, 0.0, threads=4, dtype=torch.float32)
    rt.launch("optim.cu", "dog_update", x, 1, x, 0, 0.0, threads=0, dtype=torch.float32)  # nothing to do
    assert calls == []
    rt.launch("optim.cu", "dog_update", x, 1, x, 0, 0.0, threads=4, dtype=torch.float32)
    assert calls == ["dog_update_f32"]


def test_pointers_are_data_ptr_and_scalars_take_the_parameter_width(monkeypatch):
    got = []
    monkeypatch.setattr(rt, "_submit", lambda *a: got.append(a))
    x = torch.arange(10, dtype=torch.float32)
    rt.launch("optim.cu", "momo_moments", x[2:], 3, 0.25, x, 2**40, threads=1000, max_blocks=3,
              dtype=torch.float32)
    file, name, device, grid, block, args = got[0]
    assert (file, name, device.type, grid, block) == ("optim.cu", "momo_moments_f32", "cpu", 3, 256)
    assert int(args[0]) == x.data_ptr() + 8 and int(args[3]) == x.data_ptr()  # a view passes its offset
    assert type(args[1]) is np.int32 and int(args[1]) == 3
    assert type(args[2]) is np.float32 and float(args[2]) == 0.25
    assert type(args[4]) is np.int64 and int(args[4]) == 2**40
    rt.launch("quant.cu", "th_tensor_amax", x, 2**64 - 1, x, threads=300)
    assert got[1][3] == 2 and type(got[1][5][1]) is np.uint64 and int(got[1][5][1]) == 2**64 - 1


@pytest.mark.parametrize("cupy14", [True, False])
def test_submit_compiles_once_and_launches_on_the_device_and_torch_stream(monkeypatch, cupy14):
    """The GPU submission with stand-ins for CuPy and torch.cuda: one module per (device,
    file), compiled with the exactness options; one function handle per kernel and one
    stream wrapper per torch stream, reused by later launches; the device made current
    only when it is not."""
    events = []
    Ctx, _, Module = recorders(events)
    current = {"dev": 0}

    def compile_using_nvrtc(src, options, arch, filename):
        events.append(("compile", options, arch, filename))
        return (b"CUBIN", {})

    cuda = types.SimpleNamespace(
        Device=lambda d: Ctx(("device", d)),
        ExternalStream=lambda ptr, dev: Ctx(("stream", ptr)),
        runtime=types.SimpleNamespace(runtimeGetVersion=lambda: 13020, getDevice=lambda: current["dev"]),
    )
    if cupy14:  # CuPy >= 14: Stream.from_external via the CUDA stream protocol
        cuda.Stream = types.SimpleNamespace(from_external=lambda obj: Ctx(("stream", obj.__cuda_stream__()[1])))
    cuda.compiler = types.SimpleNamespace(compile_using_nvrtc=compile_using_nvrtc)
    cuda.function = types.SimpleNamespace(Module=Module)
    monkeypatch.setitem(sys.modules, "cupy", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setitem(sys.modules, "cupy.cuda", cuda)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    handle = {"h": 1234}
    monkeypatch.setattr(rt, "_raw_stream", lambda dev: handle["h"])
    monkeypatch.setattr(rt, "_MODULES", {})
    monkeypatch.setattr(rt, "_FUNCTIONS", {})
    monkeypatch.setattr(rt, "_STREAMS", {})
    dev = torch.device("cuda", 1)
    args = (np.uint64(7), np.uint64(2**64 - 1), np.uint64(9))
    rt._submit("quant.cu", "th_tensor_amax", dev, 2, 256, args)
    rt._submit("quant.cu", "th_tensor_amax", dev, 1, 256, args)
    launches = [e for e in events if e[0] == "launch"]
    assert launches[0][1:4] == ((2,), (256,), args) and launches[1][1:3] == ((1,), (256,))
    assert sum(e[0] == "compile" for e in events) == 1  # cached per (device, file, options)
    assert sum(e[0] == "get" for e in events) == 1  # the function handle is cached too
    comp = next(e for e in events if e[0] == "compile")
    opts = comp[1]
    assert "--fmad=false" in opts and "-std=c++17" in opts and "-ftz=false" in opts
    assert "-ftz=true" not in opts and comp[2:] == ("90", "quant.cu")
    assert ("load", b"CUBIN") in events and ("get", "th_tensor_amax") in events
    first = events.index(launches[0])
    assert ("enter", ("device", 1)) in events[:first]  # device 0 is current: device 1 entered
    assert launches[0][4] == ("stream", 1234) and launches[1][4] == ("stream", 1234)
    assert rt.stream(1) is rt.stream(1)  # one wrapper per torch stream handle
    # on the current device: no context is entered at all
    current["dev"] = 1
    del events[:]
    rt._submit("quant.cu", "th_tensor_amax", dev, 3, 256, args)
    assert [e[0] for e in events] == ["launch"] and events[0][4] == ("stream", 1234)
    # another torch stream: another wrapper
    handle["h"] = 99
    rt._submit("quant.cu", "th_tensor_amax", dev, 3, 256, args)
    assert events[-1][0] == "launch" and events[-1][4] == ("stream", 99)
    with pytest.raises(TypeError, match="take CUDA tensors"):
        rt._submit("quant.cu", "th_tensor_amax", torch.device("cpu"), 1, 256, args)
