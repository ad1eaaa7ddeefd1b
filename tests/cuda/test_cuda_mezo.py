"""The CUDA backend's MeZO generator and phases (thrifty.torch._cuda.mezo): Philox known answers, the normal stream spec, the in-place phases
(CPU fallback here; the kernels under ``-m gpu``) and MeZO(rng="philox")."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import thrifty  # noqa: E402
from thrifty.torch._cuda import mezo  # noqa: E402
from thrifty.torch.optim import MeZO  # noqa: E402

import cuda_host  # noqa: E402

KATS = [  # Random123 kat_vectors, philox4x32 10 rounds
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


def philox_scalar(ctr, key):
    """Philox4x32-10 on Python ints, written from the paper's round function."""
    c, (k0, k1) = list(ctr), key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k0, p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k1, p0 & 0xFFFFFFFF]
        k0, k1 = (k0 + 0x9E3779B9) & 0xFFFFFFFF, (k1 + 0xBB67AE85) & 0xFFFFFFFF
    return c


def z_scalar(i, seed, step, tid):
    """Element i of the stream, from the documented recipe with math.* in float64."""
    x = philox_scalar([i // 4, tid, step & 0xFFFFFFFF, step >> 32], (seed & 0xFFFFFFFF, seed >> 32))
    lane = i % 4
    u1 = (x[lane & 2] + 1) * 2.0**-32
    u2 = x[(lane & 2) + 1] * 2.0**-32
    r, t = math.sqrt(-2 * math.log(u1)), 2 * math.pi * u2
    return np.float32(r * (math.cos(t) if lane % 2 == 0 else math.sin(t)))


@pytest.mark.parametrize("ctr,key,expected", KATS)
def test_philox_known_answers(ctr, key, expected):
    assert tuple(int(w) for w in mezo.philox4x32_10(ctr, key)) == expected
    assert tuple(philox_scalar(ctr, key)) == expected


def test_philox_vectorised_matches_scalar():
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, size=(4, 50), dtype=np.uint64)
    key = (0x12345678, 0xFEDCBA98)
    out = mezo.philox4x32_10(tuple(ctr), key)
    for j in range(50):
        assert [int(w[j]) for w in out] == philox_scalar([int(c[j]) for c in ctr], key)


@pytest.mark.parametrize("seed,step,tid", [(0, 0, 0), (2**40 + 7, 2**33 + 5, 3), (2**64 - 1, 1, 2**32 - 1)])
def test_normal_follows_the_documented_recipe(seed, step, tid):
    z = mezo.normal(23, seed=seed, step=step, tensor_id=tid)
    assert z.dtype == np.float32
    expected = np.array([z_scalar(i, seed, step, tid) for i in range(23)])
    np.testing.assert_array_equal(z, expected)


def test_normal_streams_are_distinct_prefix_stable_and_normal():
    z = mezo.normal(1 << 18, seed=7, step=2, tensor_id=1)
    np.testing.assert_array_equal(mezo.normal(1001, seed=7, step=2, tensor_id=1), z[:1001])
    for kw in (dict(seed=8, step=2, tensor_id=1), dict(seed=7, step=3, tensor_id=1), dict(seed=7, step=2, tensor_id=0)):
        assert not np.array_equal(mezo.normal(64, **kw), z[:64])
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1) < 0.01
    assert abs(np.mean(z**4) - 3) < 0.05  # kurtosis of a normal
    assert abs(np.corrcoef(z[0::2], z[1::2])[0, 1]) < 0.01  # sin/cos pairs uncorrelated


def spec_phases(x32, z, eps, scales):
    x = x32.copy()
    for s in scales:
        x += np.float32(s) * (np.float32(eps) * z)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_perturb_matches_spec_bit_for_bit(dtype):
    n = (1 << 20) + 6  # crosses the fallback's chunk boundary
    x = torch.randn(n, generator=torch.Generator().manual_seed(0)).to(dtype)
    x0 = x.clone()
    mezo.perturb_([x], seed=5, step=9, eps=1e-2, scale=1.0, tensor_ids=[4])
    z = mezo.normal(n, seed=5, step=9, tensor_id=4)
    want = torch.from_numpy(spec_phases(x0.float().numpy(), z, 1e-2, [1.0])).to(dtype)
    assert torch.equal(x, want)


def test_perturb_non_contiguous_and_several_tensors():
    base = torch.randn(6, 8, generator=torch.Generator().manual_seed(1))
    a, b = base.clone().t(), torch.randn(5)  # a is a transposed (non-contiguous) view
    a0, b0 = a.clone(), b.clone()
    mezo.perturb_([a, b], seed=1, step=0, eps=[0.1, 0.2], scale=-2.0)
    za = mezo.normal(48, seed=1, step=0, tensor_id=0)
    zb = mezo.normal(5, seed=1, step=0, tensor_id=1)
    assert torch.equal(a.reshape(-1), torch.from_numpy(spec_phases(a0.reshape(-1).numpy(), za, 0.1, [-2.0])))
    assert torch.equal(b, torch.from_numpy(spec_phases(b0.numpy(), zb, 0.2, [-2.0])))


ADVERSARIAL = np.array(
    [0.0, -0.0, 1e-45, -1e-45, 1.1754944e-38, 1e-30, 1.0, np.nextafter(np.float32(1), np.float32(0)),
     np.nextafter(np.float32(2), np.float32(0)), -2.0, 3.4e38, -3.4e38, 1e-3, -1e-3, 65504.0, 1e7, 0.1],
    dtype=np.float32,
)


def test_round_trip_and_update_follow_spec_on_adversarial_values():
    x = torch.from_numpy(ADVERSARIAL.copy())
    z = mezo.normal(x.numel(), seed=2, step=0)
    for scale in (1.0, -2.0):
        mezo.perturb_([x], seed=2, step=0, eps=1e-3, scale=scale)
    mezo.update_([x], seed=2, step=0, eps=1e-3, projected_grad=torch.tensor(0.0), lr=0.0)
    want = spec_phases(ADVERSARIAL, z, 1e-3, [1.0, -2.0, 1.0])
    np.testing.assert_array_equal(x.numpy(), want)
    # the round trip is exact up to the roundings of the three sums: at most 1.5 ulp of
    # the largest intermediate value per sum
    d = np.abs(np.float32(1e-3) * z)
    bound = 3 * np.spacing(np.abs(ADVERSARIAL) + 2 * d)
    fin = np.isfinite(want)
    assert np.all(np.abs(want[fin].astype(np.float64) - ADVERSARIAL[fin]) <= bound[fin])
    # values far above the perturbation and on its grid come back exactly
    assert want[ADVERSARIAL == 0].tolist() == [0.0, 0.0] or np.all(np.abs(want[ADVERSARIAL == 0]) <= bound[ADVERSARIAL == 0])
    assert np.array_equal(want[[10, 11]], ADVERSARIAL[[10, 11]])


def test_no_copy_free_scheme_restores_tiny_values():
    """The documented impossibility: fl(x + d) merges distinct x, so the restore cannot
    tell them apart (the reason the restore is fused into the update, not promised exact)."""
    d = np.float32(1e-3)
    xs = np.array([0.0, 1e-20, 1e-12], dtype=np.float32)
    assert len(set((xs + d).tolist())) == 1


def test_update_matches_spec_with_weight_decay_and_device_scalar():
    x = torch.randn(1001, generator=torch.Generator().manual_seed(3)).to(torch.bfloat16)
    x0 = x.float().numpy()
    mezo.update_([x], seed=4, step=2, eps=1e-3, projected_grad=torch.tensor(2.5), lr=0.01, weight_decay=0.1,
                 tensor_ids=[7])
    z = mezo.normal(1001, seed=4, step=2, tensor_id=7)
    w = x0 + np.float32(1e-3) * z
    g = np.float32(2.5) * z + np.float32(0.1) * w
    w = w - np.float32(0.01) * g
    assert torch.equal(x, torch.from_numpy(w).to(torch.bfloat16))


def test_bad_input_is_rejected():
    with pytest.raises(thrifty.InvalidInputError, match="float32"):
        mezo.perturb_([torch.zeros(3, dtype=torch.float64)], seed=0, step=0, eps=1e-3, scale=1.0)
    with pytest.raises(thrifty.InvalidInputError, match="seed"):
        mezo.normal(3, seed=-1, step=0)
    with pytest.raises(thrifty.InvalidInputError, match="step"):
        mezo.normal(3, seed=0, step=2**64)
    with pytest.raises(thrifty.InvalidInputError, match="tensor_ids"):
        mezo.perturb_([torch.zeros(3)], seed=0, step=0, eps=1e-3, scale=1.0, tensor_ids=[0, 1])
    with pytest.raises(thrifty.InvalidInputError, match="eps"):
        mezo.perturb_([torch.zeros(3)], seed=0, step=0, eps=[1e-3, 1e-3], scale=1.0)
    with pytest.raises(thrifty.InvalidInputError, match="rng"):
        MeZO([torch.nn.Parameter(torch.zeros(2))], lr=0.1, rng="cuda")


def quad_loss(params, target):
    return sum(((p.double() - t.double()) ** 2).sum() for p, t in zip(params, target))


def mezo_reference(x, target, steps, *, lr, eps, wd, seed):
    """Written-out MeZO(rng="philox") in numpy float32."""
    x = [a.copy() for a in x]
    for k in range(steps):
        zs = [mezo.normal(a.size, seed=seed, step=k, tensor_id=i).reshape(a.shape) for i, a in enumerate(x)]
        f = lambda v: sum(((a.astype(np.float64) - t) ** 2).sum() for a, t in zip(v, target))  # noqa: E731
        xp = [a + np.float32(eps) * z for a, z in zip(x, zs)]
        lp = f(xp)
        xm = [a - np.float32(2) * (np.float32(eps) * z) for a, z in zip(xp, zs)]
        lm = f(xm)
        pg = np.float32((lp - lm) / (2 * eps))
        out = []
        for a, z, w in zip(xm, zs, wd):
            a = a + np.float32(eps) * z
            g = pg * z + np.float32(w) * a if w else pg * z
            out.append(a - np.float32(lr) * g)
        x = out
    return x


def test_mezo_philox_optimizer_matches_reference_and_resumes(tmp_path):
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    target = [torch.randn(4, 3, generator=gen), torch.randn(5, generator=gen)]
    params = [torch.nn.Parameter(t.clone()) for t in init]
    opt = MeZO([{"params": params[:1], "weight_decay": 0.1}, {"params": params[1:]}], lr=1e-2, eps=1e-3,
               seed=11, rng="philox")
    for _ in range(3):
        opt.step(lambda: quad_loss(params, target))
    ref = mezo_reference([t.numpy() for t in init], [t.numpy() for t in target], 3, lr=1e-2, eps=1e-3,
                         wd=[0.1, 0.0], seed=11)
    for p, r in zip(params, ref):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-6, atol=1e-7)
    # resume from a state_dict: same bits as an uninterrupted run
    torch.save(opt.state_dict(), tmp_path / "s.pt")
    clone = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt2 = MeZO([{"params": clone[:1], "weight_decay": 0.1}, {"params": clone[1:]}], lr=1e-2, eps=1e-3, seed=11,
                rng="philox")
    opt2.load_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
    for _ in range(2):
        opt.step(lambda: quad_loss(params, target))
        opt2.step(lambda: quad_loss(clone, target))
    for p, q in zip(params, clone):
        assert torch.equal(p, q)


def test_mezo_auto_uses_torch_generator_on_cpu():
    w = torch.nn.Parameter(torch.ones(3))
    v = torch.nn.Parameter(torch.ones(3))
    MeZO([w], lr=0.1, seed=0).step(lambda: (w**2).sum())
    MeZO([v], lr=0.1, seed=0, rng="torch").step(lambda: (v**2).sum())
    assert torch.equal(w, v)


# ----------------------------------------------------------------------------- GPU
def _cuda():
    from thrifty.torch._cuda import _runtime

    if not torch.cuda.is_available() or not _runtime.available():
        pytest.skip("needs a CUDA device and CuPy")
    return torch.device("cuda", torch.cuda.current_device())


def _ulp_mismatches(a, b):
    a, b = a.float().cpu(), b.float().cpu()
    diff = a != b
    if diff.any():  # a one-ulp difference of z (libm straddling a rounding boundary) only
        ulp = torch.from_numpy(np.spacing(np.abs(b[diff].numpy()).astype(np.float32)))
        assert torch.all((a[diff] - b[diff]).abs() <= 4 * ulp + 1e-6)
    return int(diff.sum())


@pytest.mark.gpu
def test_gpu_philox_known_answers_and_normals():
    dev = _cuda()
    from thrifty.torch._cuda import _runtime as rt

    words = torch.tensor([list(c) + list(k) for c, k, _ in KATS], dtype=torch.int64).to(torch.int32).to(dev)
    out = torch.empty(len(KATS) * 4, dtype=torch.int32, device=dev)
    rt.launch("mezo.cu", "mezo_philox", words, out, len(KATS), threads=len(KATS))
    got = out.cpu().numpy().view(np.uint32).reshape(-1, 4)
    assert [tuple(int(w) for w in r) for r in got] == [e for _, _, e in KATS]
    n = 1 << 22
    z = torch.empty(n, device=dev)
    rt.launch("mezo.cu", "mezo_normal", z, n, 3, 2**40 + 1, 5, threads=(n + 3) // 4, max_blocks=65535)
    want = torch.from_numpy(mezo.normal(n, seed=2**40 + 1, step=5, tensor_id=3))
    assert _ulp_mismatches(z, want) <= 4


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_gpu_phases_match_cpu_fallback(dtype):
    dev = _cuda()
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(1 << 20, generator=gen).to(dtype), torch.randn(37, 11, generator=gen).to(dtype)]
    gs = [x.to(dev) for x in xs]
    for scale in (1.0, -2.0):
        mezo.perturb_(xs, seed=9, step=3, eps=1e-3, scale=scale)
        mezo.perturb_(gs, seed=9, step=3, eps=1e-3, scale=scale)
    pg = torch.tensor(0.7, device=dev)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    mezo.update_(gs, seed=9, step=3, eps=1e-3, projected_grad=pg, lr=0.01, weight_decay=[0.1, 0.0])
    torch.cuda.synchronize()
    assert torch.cuda.max_memory_allocated() - before <= 1024  # no noise tensor
    mezo.update_(xs, seed=9, step=3, eps=1e-3, projected_grad=torch.tensor(0.7), lr=0.01, weight_decay=[0.1, 0.0])
    for x, g in zip(xs, gs):
        assert _ulp_mismatches(g, x) <= 4


@pytest.mark.gpu
def test_gpu_mezo_optimizer_matches_cpu_philox():
    dev = _cuda()
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(64, 32, generator=gen), torch.randn(32, generator=gen)]
    target = [torch.randn(64, 32, generator=gen), torch.randn(32, generator=gen)]
    runs = []
    for device in ("cpu", dev):
        ps = [torch.nn.Parameter(t.clone().to(device)) for t in init]
        tg = [t.to(device) for t in target]
        opt = MeZO(ps, lr=1e-3, eps=1e-3, seed=1, rng="auto" if device != "cpu" else "philox")
        for _ in range(5):
            opt.step(lambda: quad_loss(ps, tg))
        runs.append([p.detach().cpu() for p in ps])
    for a, b in zip(*runs):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------- mezo.cu on the CPU (host C++ build)
def test_host_kernels_known_answers_and_normals(monkeypatch):
    cuda_host.patch(monkeypatch)
    from thrifty.torch._cuda import _runtime as rt

    words = torch.tensor([list(c) + list(k) for c, k, _ in KATS], dtype=torch.int64).to(torch.int32)
    out = torch.zeros(len(KATS) * 4, dtype=torch.int32)
    rt.launch("mezo.cu", "mezo_philox", words, out, len(KATS), threads=len(KATS))
    got = out.numpy().view(np.uint32).reshape(-1, 4)
    assert [tuple(int(w) for w in r) for r in got] == [e for _, _, e in KATS]
    n = 4099
    z = torch.zeros(n)
    rt.launch("mezo.cu", "mezo_normal", z, n, 3, 2**40 + 1, 2**33 + 5, threads=(n + 3) // 4, max_blocks=65535)
    assert _ulp_mismatches(z, torch.from_numpy(mezo.normal(n, seed=2**40 + 1, step=2**33 + 5, tensor_id=3))) <= 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_host_kernels_phases_match_fallback(monkeypatch, dtype):
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(2051, generator=gen).to(dtype), torch.randn(7, 3, generator=gen).to(dtype)]
    ks = [x.clone() for x in xs]
    for scale in (1.0, -2.0):
        mezo.perturb_(xs, seed=9, step=3, eps=1e-2, scale=scale)
    mezo.update_(xs, seed=9, step=3, eps=1e-2, projected_grad=torch.tensor(0.7), lr=0.01, weight_decay=[0.1, 0.0])
    with monkeypatch.context() as m:
        cuda_host.patch(m)
        for scale in (1.0, -2.0):
            mezo.perturb_(ks, seed=9, step=3, eps=1e-2, scale=scale)
        mezo.update_(ks, seed=9, step=3, eps=1e-2, projected_grad=torch.tensor(0.7), lr=0.01,
                     weight_decay=[0.1, 0.0])
    for x, k in zip(xs, ks):
        assert _ulp_mismatches(k, x) <= 1


def test_host_kernels_mezo_optimizer(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    init = [torch.randn(16, 8, generator=gen), torch.randn(8, generator=gen)]
    target = [torch.randn(16, 8, generator=gen), torch.randn(8, generator=gen)]
    runs = []
    for kernels in (False, True):
        with monkeypatch.context() as m:
            if kernels:
                cuda_host.patch(m)
            ps = [torch.nn.Parameter(t.clone()) for t in init]
            opt = MeZO(ps, lr=1e-3, eps=1e-3, seed=1, rng="philox")
            for _ in range(3):
                opt.step(lambda: quad_loss(ps, target))
            runs.append([p.detach().clone() for p in ps])
    for a, b in zip(*runs):
        torch.testing.assert_close(b, a, rtol=1e-6, atol=1e-7)
