"""Error advice for the pruning API: a 1-D array is never told to become one sample."""

import numpy as np
import pytest

import thrifty
from thrifty import prune
from thrifty.neighbors import KNNClassifier


@pytest.mark.parametrize("call", [
    lambda x: prune.dbp(x, keep_fraction=0.5),
    lambda x: prune.ssp(x, keep_fraction=0.5),
    lambda x: prune.semdedup(x, eps=0.1),
])
def test_1d_input_to_prune_gets_no_single_sample_hint(call):
    with pytest.raises(thrifty.InvalidInputError) as e:
        call(np.ones(10, np.float32))
    msg = str(e.value)
    assert "1-D shape (10,)" in msg and "one embedding per row" in msg
    assert "reshape(1, -1)" not in msg


def test_predict_keeps_the_single_sample_hint():
    knn = KNNClassifier(1).fit(np.eye(3, dtype=np.float32), [0, 1, 2])
    with pytest.raises(thrifty.InvalidInputError, match=r"reshape\(1, -1\)"):
        knn.predict(np.ones(3, np.float32))
