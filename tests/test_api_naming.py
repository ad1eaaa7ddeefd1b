"""The public API speaks one vocabulary: walk every public callable and check the rules.

* neighbour counts are ``n_neighbors`` (scikit-learn's name), never ``k``;
* nothing takes ``n_jobs``: threads come from ``thrifty.set_num_threads`` /
  ``with thrifty.threads(n):``;
* a public function or class that runs long work in the Rust core (calls a ``_core``
  function that reports progress) takes ``progress=``;
* every public function of the extension ``thrifty._core`` is named
  ``<capability>_<verb>`` (the capabilities are the core's modules), and ``_core.pyi``
  lists exactly the extension's functions and classes.

``thrifty.torch``, ``thrifty.cuda`` and ``thrifty.distributed`` follow torch's own
vocabulary and are checked by their own tests.
"""

import ast
import importlib
import importlib.resources
import inspect
import pkgutil
import re

import pytest

import thrifty
from thrifty import _core

SKIPPED_PACKAGES = ("thrifty.torch", "thrifty.cuda", "thrifty.distributed")
# A parameter named ``k`` that does not count neighbours.
K_ALLOWED = {
    "thrifty.prune.scores.first_consistent_epoch": "k consecutive correct epochs",
}


def _public_modules():
    names = ["thrifty"]
    for info in pkgutil.walk_packages(thrifty.__path__, "thrifty."):
        parts = info.name.split(".")
        if any(p.startswith("_") for p in parts[1:]) or info.name.startswith(SKIPPED_PACKAGES):
            continue
        names.append(info.name)
    return [importlib.import_module(n) for n in names]


def _public_callables():
    """(qualified name, object, owning class or None) of every public function, class
    and public method, once each (by identity)."""
    seen, out = set(), []
    for mod in _public_modules():
        names = getattr(mod, "__all__", None)
        if names is None:
            names = [n for n in vars(mod) if not n.startswith("_")]
        for name in names:
            obj = getattr(mod, name)
            if not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            if not getattr(obj, "__module__", "").startswith("thrifty") or id(obj) in seen:
                continue
            seen.add(id(obj))
            qual = f"{obj.__module__}.{obj.__qualname__}"
            out.append((qual, obj, None))
            if inspect.isclass(obj):
                for mname, meth in vars(obj).items():
                    if inspect.isfunction(meth) and (not mname.startswith("_") or mname == "__init__"):
                        out.append((f"{qual}.{mname}", meth, obj))
    return out


CALLABLES = _public_callables()


def _params(obj):
    try:
        return inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters
    except (TypeError, ValueError):
        return {}


def _core_with_progress():
    names = set()
    for name in dir(_core):
        fn = getattr(_core, name)
        if callable(fn) and not inspect.isclass(fn):
            try:
                if "progress" in inspect.signature(fn).parameters:
                    names.add(name)
            except (TypeError, ValueError):
                pass
    return names


CORE_WITH_PROGRESS = _core_with_progress()


def test_walk_finds_the_estimators_and_functions():
    names = {q for q, _, _ in CALLABLES}
    for want in ("thrifty.neighbors.KNNClassifier.kneighbors", "thrifty.neighbors.topk",
                 "thrifty.cluster.KMeans", "thrifty.text.CompressionKNNClassifier",
                 "thrifty._config.threads", "thrifty.continual.AccuracyMatrix"):
        assert want in names
    assert len(names) > 50


@pytest.mark.parametrize("qual, obj, owner", CALLABLES, ids=[q for q, _, _ in CALLABLES])
def test_naming_rules(qual, obj, owner):
    params = _params(obj)
    assert "n_jobs" not in params, f"{qual} takes n_jobs; use thrifty.threads(n) instead"
    if "k" in params:
        assert qual in K_ALLOWED, f"{qual} takes k; neighbour counts are n_neighbors"
    for p in params:
        assert not re.fullmatch(r"(k|n)_?neighbou?rs?", p) or p == "n_neighbors", qual


def _source_with_helpers(obj):
    """Source of ``obj`` plus that of the private module-level helpers it names (one
    level), so work done through a helper counts."""
    try:
        src = inspect.getsource(obj)
    except (OSError, TypeError):
        return ""
    mod = inspect.getmodule(obj)
    for name in set(re.findall(r"\b(_[a-z]\w*)\(", src)):
        helper = getattr(mod, name, None)
        if inspect.isfunction(helper):
            try:
                src += inspect.getsource(helper)
            except (OSError, TypeError):
                pass
    return src


@pytest.mark.parametrize("qual, obj, owner", [c for c in CALLABLES if c[2] is None],
                         ids=[q for q, _, o in CALLABLES if o is None])
def test_long_work_takes_progress(qual, obj, owner):
    # a class: any method (private ones included) doing long work -> __init__ or that
    # public method takes progress; a function: it or a private helper it calls
    src = _source_with_helpers(obj)
    calls = set(re.findall(r"_core\.(\w+)\(", src)) & CORE_WITH_PROGRESS
    if not calls:
        return
    if inspect.isclass(obj):
        ok = "progress" in _params(obj)
        if not ok:  # then every public method doing the work must take it
            ok = all("progress" in _params(m) for n, m in vars(obj).items()
                     if inspect.isfunction(m) and not n.startswith("_")
                     and set(re.findall(r"_core\.(\w+)\(", _source_with_helpers(m))) & calls)
    else:
        ok = "progress" in _params(obj)
    assert ok, f"{qual} runs {sorted(calls)} (long work) but takes no progress="


def test_progress_rule_sees_the_long_work():
    # the rule above is not vacuous: it finds the core calls of the estimators
    found = {q for q, o, own in CALLABLES if own is None
             and set(re.findall(r"_core\.(\w+)\(", _source_with_helpers(o))) & CORE_WITH_PROGRESS}
    assert {"thrifty.neighbors.KNNClassifier", "thrifty.neighbors.NearestMeanClassifier",
            "thrifty.cluster.KMeans", "thrifty.text.CompressionKNNClassifier",
            "thrifty.neighbors.topk"} <= found


def test_no_n_jobs_or_k_in_the_estimators_docs():
    from thrifty import cluster, neighbors, text

    for mod in (neighbors, cluster, text):
        assert "n_jobs" not in inspect.getsource(mod), mod.__name__


# The core's capabilities, one word each in Rust modules, bindings and Python modules.
CAPABILITIES = ("linalg", "text", "neighbors", "cluster", "prune", "quant", "data")
# Configuration functions of the whole library, not of one capability.
CORE_CONFIG = {"set_num_threads", "get_num_threads", "build_info"}


def _core_name_ok(name):
    if name.startswith("_") or name in CORE_CONFIG:
        return True
    cap, _, verb = name.partition("_")
    return cap in CAPABILITIES and bool(re.fullmatch(r"[a-z][a-z0-9_]*", verb))


def _core_functions():
    return sorted(n for n in dir(_core) if not n.startswith("__")
                  and callable(getattr(_core, n)) and not inspect.isclass(getattr(_core, n)))


def test_core_function_names_follow_the_rule():
    bad = [n for n in _core_functions() if not _core_name_ok(n)]
    assert not bad, f"_core functions not named <capability>_<verb>: {bad}"
    # every capability is reached through the extension under its own word
    used = {n.partition("_")[0] for n in _core_functions() if not n.startswith("_")}
    assert set(CAPABILITIES) <= used


def test_core_name_rule_rejects_the_old_names():
    for old in ("topk", "kmeans", "prune", "row_norms_sq", "compressed_len",
                "nearest_mean_predict", "pipeline_permutation", "compress_len", "text_"):
        assert not _core_name_ok(old), old
    for new in ("neighbors_topk", "cluster_kmeans", "prune_run", "set_num_threads", "_busy"):
        assert _core_name_ok(new), new


def _stub():
    src = importlib.resources.files("thrifty").joinpath("_core.pyi").read_text()
    tree = ast.parse(src)
    defs = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    exported = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "__all__" for t in n.targets))
    return defs, exported


def test_stub_lists_exactly_the_core_functions():
    defs, exported = _stub()
    module = {n for n in dir(_core) if not n.startswith("__") and callable(getattr(_core, n))}
    assert set(defs) == module, (
        f"only in _core.pyi: {sorted(set(defs) - module)}; "
        f"only in _core: {sorted(module - set(defs))}")
    assert {n for n in defs if isinstance(defs[n], ast.FunctionDef)} == set(_core_functions())
    assert sorted(exported) == sorted(module | {"__version__"})
    assert len(exported) == len(set(exported)), "__all__ of _core.pyi repeats a name"
