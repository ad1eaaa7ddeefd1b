"""thrifty.torch is the one torch-facing API: no public thrifty.cuda, one probe, and the
loss pairs follow the x_loss / XLoss naming rule."""

import importlib
import inspect

import pytest

torch = pytest.importorskip("torch")

import thrifty.torch  # noqa: E402
from thrifty.torch import losses  # noqa: E402


def test_no_public_cuda_package_and_one_probe():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("thrifty.cuda")
    assert thrifty.torch.cuda_available() in (True, False)
    assert "cuda_available" in thrifty.torch.__all__
    for name in thrifty.torch.__all__:
        assert getattr(thrifty.torch, name) is not None
    assert not any(n.startswith("_") for n in thrifty.torch.__all__)


ACRONYMS = {"iou": "IoU", "npo": "NPO", "ge2e": "GE2E"}


def test_loss_pairs_follow_x_loss_and_XLoss():
    names = set(losses.__all__)
    functions = {n for n in names if inspect.isfunction(getattr(losses, n))}
    modules = {n for n in names if inspect.isclass(getattr(losses, n))}
    assert functions | modules == names
    for f in functions:
        assert f.endswith("_loss"), f
        camel = "".join(ACRONYMS.get(w, w.capitalize()) for w in f.split("_"))
        assert camel in modules, (f, camel)
    for m in modules:
        assert m.endswith("Loss") and issubclass(getattr(losses, m), torch.nn.Module), m
    assert len(functions) == len(modules)


def test_loss_modules_take_their_options_from_the_signature():
    crit = losses.LinearCrossEntropyLoss(loss="z", a=2.0)
    assert isinstance(crit, torch.nn.Module) and crit.a == 2.0 and crit.loss == "z"
    with pytest.raises(thrifty.InvalidInputError, match="loss must be one of"):
        losses.LinearCrossEntropyLoss(loss="hinge")
    with pytest.raises(thrifty.InvalidInputError, match="chunk_size must be >= 1"):
        losses.LinearCrossEntropyLoss(chunk_size=0)
    h, w = torch.randn(5, 3), torch.randn(7, 3)
    y = torch.tensor([0, 6, 2, -100, 1])
    torch.testing.assert_close(crit(h, w, y), losses.linear_cross_entropy_loss(h, w, y, loss="z", a=2.0))
