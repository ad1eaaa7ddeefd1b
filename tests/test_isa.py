"""THRIFTY_ISA caps the kernel family in one place (rust/core/src/cpu.rs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

import thrifty

PROBE = r"""
import hashlib, json, sys
import numpy as np
import thrifty
from thrifty import quant
from thrifty.neighbors import topk
rng = np.random.default_rng(0)
x = rng.standard_normal((300, 40)).astype(np.float32)
s, i = topk(x[:20], x, 5, metric="euclidean")
q = quant.quantize(rng.standard_normal((64, 256)).astype(np.float32), "nf4")
t = quant.quantize(rng.standard_normal((64, 256)).astype(np.float32), "int8",
                   rounding="stochastic", seed=3)
# 4M values: the one-read ternary route with AVX-512, two passes without it
w = rng.standard_normal((2048, 2048)).astype(np.float32)
tern = quant.quantize(w, "ternary")
tern = hashlib.sha256(tern.data.tobytes() + tern.scales.tobytes()).hexdigest()
c = thrifty.config()
json.dump({"isa": c["isa"], "detected": c["isa_detected"], "setting": c["isa_setting"],
           "ignored": c["isa_setting_ignored"], "idx": i.tolist(), "scores": s.tolist(),
           "nf4": q.data.tobytes().hex(), "int8": t.data.tobytes().hex(), "ternary": tern},
          sys.stdout)
"""


def _probe(isa: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "THRIFTY_ISA"}
    if isa is not None:
        env["THRIFTY_ISA"] = isa
    r = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_scalar_cap_is_used_and_reported_and_keeps_exact_formats():
    native, scalar = _probe(None), _probe("scalar")
    assert native["setting"] is None and native["isa"] == native["detected"]
    assert scalar["isa"] == "scalar" and scalar["setting"] == "scalar"
    assert scalar["detected"] == native["detected"]
    # byte-exact formats give the same bytes at every kernel level
    assert scalar["nf4"] == native["nf4"] and scalar["int8"] == native["int8"]
    assert scalar["ternary"] == native["ternary"]
    # top-k finds the same neighbours; scores agree to float32 rounding
    assert scalar["idx"] == native["idx"]
    np.testing.assert_allclose(scalar["scores"], native["scores"], rtol=1e-5, atol=1e-4)


def test_unknown_value_is_ignored_and_reported():
    bad = _probe("sse9")
    assert bad["ignored"] is True and bad["setting"] == "sse9"
    assert bad["isa"] == bad["detected"]
    env = dict(os.environ, THRIFTY_ISA="sse9")
    out = subprocess.run([sys.executable, "-m", "thrifty", "info"], env=env,
                         capture_output=True, text=True, timeout=120).stdout
    assert "THRIFTY_ISA='sse9' was ignored" in out


def test_level_names_are_known():
    assert thrifty.config()["isa"] in ("scalar", "avx2", "avx512")
