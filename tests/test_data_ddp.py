"""thrifty.data loaders against torch's DistributedSampler and DataLoader semantics.

The reference is torch itself (skipped, loudly, where it is not installed): the same
number of samples and batches on every rank as ``DistributedSampler`` +
``DataLoader(drop_last=...)``, the same rows per rank where the order is not shuffled,
and the same iteration behaviour (every ``iter()`` starts the epoch anew).
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

import thrifty
from thrifty.data import ArrayLoader, TokenLoader

torch = pytest.importorskip("torch", reason="torch is the reference for DDP and iteration semantics")
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset  # noqa: E402


def ids(n):
    return np.arange(n, dtype=np.int64)[:, None]


def torch_rank_rows(n, world, rank, drop_last, shuffle=False):
    s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=shuffle,
                           drop_last=drop_last)
    return list(s)


def torch_batches(n, world, rank, bs, drop_last):
    s = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=True,
                           drop_last=drop_last)
    return len(DataLoader(range(n), batch_size=bs, sampler=s, drop_last=drop_last))


@pytest.mark.parametrize("drop_last", [True, False])
def test_reported_ddp_case_has_equal_batch_counts(tmp_path, drop_last):
    n, world, bs = 51193, 8, 32
    X = ids(n)
    want = [torch_batches(n, world, r, bs, drop_last) for r in range(world)]
    assert want == [199 if drop_last else 200] * world
    got = [len(ArrayLoader(X, batch_size=bs, rank=r, world_size=world, drop_last=drop_last))
           for r in range(world)]
    assert got == want
    # and the batches really come: iterate every rank
    ran = [sum(1 for _ in ArrayLoader(X, batch_size=bs, rank=r, world_size=world,
                                      drop_last=drop_last)) for r in range(world)]
    assert ran == want
    path = tmp_path / "tokens.bin"
    np.arange(n + 1, dtype=np.uint32).tofile(path)  # seq_len=1: n windows
    tok = [TokenLoader(path, dtype="uint32", seq_len=1, batch_size=bs, rank=r,
                       world_size=world, drop_last=drop_last) for r in range(world)]
    assert [len(t) for t in tok] == want
    assert [sum(1 for _ in t) for t in tok] == want


@pytest.mark.parametrize("n,world", [(10, 4), (51, 8), (3, 5), (64, 8), (1, 3)])
@pytest.mark.parametrize("drop_last", [True, False])
def test_unshuffled_rank_rows_equal_distributed_sampler(n, world, drop_last):
    for r in range(world):
        want = torch_rank_rows(n, world, r, drop_last)
        loader = ArrayLoader(ids(n), batch_size=len(want) or 1, rank=r, world_size=world,
                             shuffle=False, drop_last=drop_last)
        got = [int(v) for xb in loader for v in xb[:, 0]]
        assert got == want, (r, got, want)
        assert loader.epoch_indices().tolist() == want


@pytest.mark.parametrize("drop_last", [True, False])
def test_shuffled_ranks_partition_and_cover_as_distributed_sampler(drop_last):
    n, world, bs = 1003, 6, 7
    keep = np.arange(0, n, 2)  # 502 items
    ours, theirs = [], []
    for r in range(world):
        loader = ArrayLoader(ids(n), batch_size=bs, rank=r, world_size=world, keep=keep,
                             seed=4, drop_last=drop_last)
        ours.append([int(v) for xb in loader for v in xb[:, 0]])
        s = DistributedSampler(keep.tolist(), num_replicas=world, rank=r, seed=4,
                               drop_last=drop_last)
        rows = [int(keep[i]) for i in s]
        theirs.append(rows[:len(rows) // bs * bs] if drop_last else rows)
    assert [len(o) for o in ours] == [len(t) for t in theirs]
    c_ours = Counter(v for o in ours for v in o)
    c_theirs = Counter(v for t in theirs for v in t)
    # the same multiplicities: how many items appear once, twice (padding), ...
    assert Counter(c_ours.values()) == Counter(c_theirs.values())
    assert set(c_ours) <= set(keep.tolist())
    if not drop_last:
        assert set(c_ours) == set(keep.tolist())


def test_peek_then_full_epoch_as_dataloader():
    n, bs = 40, 8
    dl = DataLoader(TensorDataset(torch.arange(n)), batch_size=bs)
    next(iter(dl))
    want = len(list(dl))
    loader = ArrayLoader(ids(n), batch_size=bs, seed=1)
    first = next(iter(loader))  # a peek must not eat a batch of the epoch
    epoch = [xb.copy() for xb in loader]
    assert len(epoch) == want == 5
    np.testing.assert_array_equal(first, epoch[0])
    ref = ArrayLoader(ids(n), batch_size=bs, seed=1)
    for a, b in zip(epoch, ref):
        np.testing.assert_array_equal(a, b)
    assert loader.epoch == 1  # the full pass advanced the epoch, the peek did not


def test_every_iter_restarts_and_only_the_latest_counts():
    loader = ArrayLoader(ids(50), batch_size=10, seed=2)
    a = iter(loader)
    next(a), next(a), next(a)
    assert loader.state_dict()["batch"] == 3
    b = iter(loader)
    assert loader.state_dict()["batch"] == 0
    first = next(b)
    next(a)  # the older iterator no longer moves the state
    assert loader.state_dict() == {"epoch": 0, "batch": 1, "seed": 2}
    np.testing.assert_array_equal(first, next(iter(ArrayLoader(ids(50), batch_size=10, seed=2))))
    assert len(list(b)) == 4
    assert loader.state_dict() == {"epoch": 1, "batch": 0, "seed": 2}
    for _ in a:  # finishing the stale iterator does not advance the epoch again
        pass
    assert loader.epoch == 1


def test_resume_point_is_used_by_the_next_iter_only():
    full = [xb.copy() for xb in ArrayLoader(ids(60), batch_size=10, seed=3)]
    loader = ArrayLoader(ids(60), batch_size=10, seed=3)
    loader.load_state_dict({"epoch": 0, "batch": 4, "seed": 3})
    assert loader.state_dict()["batch"] == 4
    rest = [xb.copy() for xb in loader]
    assert len(rest) == 2
    np.testing.assert_array_equal(rest[0], full[4])
    # an abandoned resume: the next iter() after a partial one starts from batch 0
    loader.load_state_dict({"epoch": 0, "batch": 4, "seed": 3})
    it = iter(loader)
    next(it)
    del it
    np.testing.assert_array_equal(next(iter(loader)), full[0])


def test_dataloader_workers_are_refused_with_a_clear_error():
    from thrifty.torch.data import ArrayDataset

    X = ids(16).astype(np.float32)
    ds = ArrayDataset(X, batch_size=4)
    # the reference: in-process, every epoch differs and the state advances
    e0 = [b.clone() for b in DataLoader(ds, batch_size=None, num_workers=0)]
    assert ds.state_dict()["epoch"] == 1
    e1 = [b.clone() for b in DataLoader(ds, batch_size=None, num_workers=0)]
    assert not all(torch.equal(a, b) for a, b in zip(e0, e1))
    dl = DataLoader(ds, batch_size=None, num_workers=1)
    with pytest.raises(thrifty.InvalidInputError, match="num_workers=0"):
        list(dl)
    assert ds.state_dict()["epoch"] == 2
