import numpy as np
import pytest

import thrifty


@pytest.fixture(autouse=True)
def _restore_threads():
    before = thrifty.get_num_threads()
    yield
    thrifty.set_num_threads(before)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
