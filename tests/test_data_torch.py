"""thrifty.torch.data: IterableDataset wrappers (skipped without torch)."""

from __future__ import annotations

import numpy as np
import pytest

import thrifty
from thrifty.data import ArrayLoader, TokenLoader


torch = pytest.importorskip("torch")
from thrifty.torch.data import ArrayDataset, TokenDataset  # noqa: E402


def test_array_dataset_matches_numpy_loader_and_shares_memory():
    X = np.random.default_rng(0).standard_normal((100, 4)).astype(np.float32)
    y = np.arange(100)
    ds = ArrayDataset(X, labels=y, batch_size=16, seed=3)
    captured = []
    convert = ds.loader._convert

    def spy(xr, yr):
        out = convert(xr, yr)
        captured.append(out)
        return out

    ds.loader._convert = spy
    ref = list(ArrayLoader(X, labels=y, batch_size=16, seed=3))
    got = list(ds)
    assert len(ds) == len(ref) == len(got) == 7
    for (xt, yt), (xn, yn), (xc, yc) in zip(got, ref, captured):
        assert isinstance(xt, torch.Tensor) and xt.dtype == torch.float32 and yt.dtype == torch.int64
        np.testing.assert_array_equal(xt.numpy(), xn)
        np.testing.assert_array_equal(yt.numpy(), yn)
        assert xt.data_ptr() == xc.ctypes.data  # no copy
        assert yt.data_ptr() == yc.ctypes.data


def test_dataset_in_dataloader_and_state():
    X = np.ones((50, 2), dtype=np.float32)
    ds = ArrayDataset(X, batch_size=10)
    batches = list(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0))
    assert [tuple(b.shape) for b in batches] == [(10, 2)] * 5
    assert ds.state_dict()["epoch"] == 1
    ds.set_epoch(5)
    assert ds.state_dict() == {"epoch": 5, "batch": 0, "seed": 0}


def test_token_dataset(tmp_path):
    path = tmp_path / "t.bin"
    np.arange(1001, dtype=np.uint16).tofile(path)
    ds = TokenDataset(path, seq_len=10, batch_size=4, seed=1)
    ref = list(TokenLoader(path, seq_len=10, batch_size=4, seed=1))
    got = list(ds)
    assert len(got) == len(ref) == 25
    for t, n in zip(got, ref):
        assert tuple(t.shape) == (4, 11)
        np.testing.assert_array_equal(t.numpy(), n)


def test_worker_replication_is_refused():
    ds = ArrayDataset(np.ones((8, 2), dtype=np.float32), batch_size=2)
    dl = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=2)
    with pytest.raises(Exception, match="num_workers=0"):
        list(dl)
    assert isinstance(thrifty.InvalidInputError("x"), ValueError)
