"""The public API reads as one library: walk every public module, class and function and
check the naming rules; check that the API reference pages, ``__all__``, ``_core.pyi``
and the extension agree.

Public modules are the modules of the package whose dotted name has no part starting
with ``_``: ``thrifty``, ``thrifty.text``, ``.neighbors``, ``.cluster``, ``.prune`` (and
``.prune.scores``), ``.quant``, ``.data`` (and its parts), ``.continual``, ``.cli`` (the
command), ``thrifty.torch`` with all its public submodules when torch is installed, and
``thrifty.distributed`` when Ray is installed. Their public callables are the functions
and classes their ``__all__`` names, and the public methods of those classes (inherited
from thrifty's private bases included).

The rules:

1. Modules. Every public module defines ``__all__``: names only (no ``_`` prefix but
   ``__version__``), each one exists, none repeats; it is complete (every public
   function or class defined in the module is in it). Imports are not API: what a
   module exports is its ``__all__``, so nothing of a private module (``thrifty._base``,
   ``thrifty._validation``, ...) leaks unless a public ``__all__`` names it on purpose.
   An object exported by several modules has one name everywhere.
2. No public ``cuda`` module: the CUDA kernels are ``thrifty.torch``'s private backend
   (``thrifty.torch._cuda``), probed with ``thrifty.torch.cuda_available()``.
3. Estimators (classes with ``fit``) inherit scikit-learn's ``BaseEstimator`` and
   ``ClassifierMixin`` or ``ClusterMixin``; their parameter names come from the
   ``__init__`` signature (no ``*args``/``**kwargs``, ``get_params`` not overridden) and
   ``__init__`` stores every argument unchanged under its own name.
4. Parameters. Neighbour counts are ``n_neighbors`` (scikit-learn's name), never ``k``,
   ``n_neighbours``, ``num_neighbors`` (a ``k`` that counts something else is listed in
   ``K_ALLOWED`` with what it counts). Nothing takes ``n_jobs``: threads come from
   ``thrifty.set_num_threads(n)`` / ``with thrifty.threads(n):``. The hard / easy /
   random member order of pruning is ``prefer=`` wherever it appears (a parameter
   defaulting to ``"hard"``/``"easy"`` or documented with those choices).
5. Long work takes ``progress=``: every entry of ``LONG_WORK`` (estimators' ``fit`` and
   ``predict``, the pruning functions, k-means, ``topk``, compression kNN and its
   distance functions, and every distributed entry point), and any public callable that
   calls a ``_core`` function reporting progress.
6. Losses: a public name ending in ``_loss`` is a function, one ending in ``Loss`` an
   ``nn.Module``; both live in ``thrifty.torch.losses`` and come in ``x_loss`` /
   ``XLoss`` pairs (the same letters, ignoring case and underscores).
7. ``thrifty.distributed`` mirrors the single-process API: a name it shares with
   ``thrifty.cluster``, ``thrifty.prune``, ``thrifty.neighbors`` or ``thrifty.text``
   takes the same leading parameters (names, kinds, defaults) and adds keyword-only
   ones; a class subclasses its single-process class.
8. Every public function of the extension ``thrifty._core`` is named
   ``<capability>_<verb>`` (the capabilities are the core's modules), and ``_core.pyi``
   lists exactly the extension's functions and classes (``mypy.stubtest`` checks the
   signatures: ``tests/test_package.py``).
9. The API reference (``docs/api/*.md``, rendered by mkdocstrings) shows exactly the
   public names: what a ``::: module`` directive renders (computed with griffe, the
   reader mkdocstrings uses, under the options of ``mkdocs.yml``) is that module's
   ``__all__``; every public module's names are rendered on its own page or through a
   parent that re-exports them; the README's module table names the top-level public
   modules.
"""

from __future__ import annotations

import ast
import importlib
import importlib.resources
import importlib.util
import inspect
import pkgutil
import re
import types
from pathlib import Path

import pytest

import thrifty
from thrifty import _core

ROOT = Path(__file__).resolve().parents[1]
# Public packages that need an optional dependency: walked only when it is installed.
OPTIONAL = {"thrifty.torch": "torch", "thrifty.distributed": "ray"}


def _skipped_packages():
    return tuple(p for p, dep in OPTIONAL.items() if importlib.util.find_spec(dep) is None)


def _walk(path, prefix, skip):
    for info in pkgutil.iter_modules(path, prefix):
        if info.name.rsplit(".", 1)[1].startswith("_") or info.name.startswith(skip):
            continue
        yield info.name
        if info.ispkg:
            yield from _walk(importlib.import_module(info.name).__path__, info.name + ".", skip)


def _public_modules():
    names = ["thrifty", *_walk(thrifty.__path__, "thrifty.", _skipped_packages())]
    return {n: importlib.import_module(n) for n in names}


MODULES = _public_modules()


def _exports():
    """(public name, object) of every ``__all__`` entry, first (shortest) path wins."""
    seen, out = set(), []
    for mod_name, mod in MODULES.items():
        for name in getattr(mod, "__all__", ()):
            obj = getattr(mod, name, None)
            if obj is None or isinstance(obj, types.ModuleType) or id(obj) in seen:
                continue
            seen.add(id(obj))
            out.append((f"{mod_name}.{name}", obj))
    return out


EXPORTS = _exports()


def _own(obj):
    return getattr(obj, "__module__", "").startswith("thrifty")


def _public_callables():
    """(public name, object, owning class or None) of every exported function and class
    of thrifty, and of the public methods (and ``__init__``) of those classes."""
    seen, out = set(), []
    for qual, obj in EXPORTS:
        if not (inspect.isfunction(obj) or inspect.isclass(obj)) or not _own(obj):
            continue
        out.append((qual, obj, None))
        if inspect.isclass(obj):
            names = set()
            for klass in obj.__mro__:
                if not _own(klass):
                    continue
                for mname, meth in vars(klass).items():
                    if (inspect.isfunction(meth) and mname not in names and id(meth) not in seen
                            and (not mname.startswith("_") or mname == "__init__")):
                        names.add(mname)
                        seen.add(id(meth))
                        out.append((f"{qual}.{mname}", meth, obj))
    return out


CALLABLES = _public_callables()
FUNCS_AND_CLASSES = [(q, o) for q, o, owner in CALLABLES if owner is None]


def _params(obj):
    try:
        return inspect.signature(obj.__init__ if inspect.isclass(obj) else obj).parameters
    except (TypeError, ValueError):
        return {}


def test_walk_finds_every_public_module_and_callable():
    expected = {"thrifty", "thrifty.text", "thrifty.neighbors", "thrifty.cluster",
                "thrifty.prune", "thrifty.prune.scores", "thrifty.quant", "thrifty.data",
                "thrifty.continual", "thrifty.cli"}
    if importlib.util.find_spec("torch"):
        expected |= {"thrifty.torch", "thrifty.torch.nn", "thrifty.torch.optim",
                     "thrifty.torch.losses", "thrifty.torch.quant", "thrifty.torch.init",
                     "thrifty.torch.data", "thrifty.torch.schedules", "thrifty.torch.averaging"}
    if importlib.util.find_spec("ray"):
        expected.add("thrifty.distributed")
    assert expected <= set(MODULES)
    assert not any(p.startswith("_") for m in MODULES for p in m.split(".")[1:])
    names = {q for q, _, _ in CALLABLES}
    for want in ("thrifty.neighbors.KNNClassifier.kneighbors", "thrifty.neighbors.topk",
                 "thrifty.cluster.KMeans", "thrifty.text.CompressionKNNClassifier",
                 "thrifty.threads", "thrifty.continual.AccuracyMatrix",
                 "thrifty.data.ArrayLoader.state_dict"):
        assert want in names
    assert len(names) > 100


# ---------------------------------------------------------------------------------------
# 1-2. modules


def _module_problems(mod):
    names = getattr(mod, "__all__", None)
    if names is None:
        return ["defines no __all__"]
    bad = [f"__all__ is a {type(names).__name__}"] if not isinstance(names, (list, tuple)) else []
    bad += [f"{n!r} listed twice" for n in sorted(set(names)) if list(names).count(n) > 1]
    bad += [f"{n!r} is private" for n in names if n.startswith("_") and n != "__version__"]
    bad += [f"{n!r} does not exist" for n in names if not hasattr(mod, n)]
    for n, obj in vars(mod).items():
        if (not n.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
                and obj.__module__ == mod.__name__ and n not in names):
            bad.append(f"{n!r} is defined here but missing from __all__")
    return bad


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_public_module_has_a_complete_all(name):
    assert not _module_problems(MODULES[name]), (name, _module_problems(MODULES[name]))


def test_module_rule_catches_a_broken_all():
    mod = types.ModuleType("thrifty.fake")
    exec("def helper(): pass\ndef api(): pass\n__all__ = ['api', 'api', 'gone', '_x']",
         mod.__dict__)
    problems = " | ".join(_module_problems(mod))
    for want in ("'api' listed twice", "'gone' does not exist", "'_x' is private",
                 "'helper' is defined here but missing"):
        assert want in problems
    assert _module_problems(types.ModuleType("thrifty.empty")) == ["defines no __all__"]


def test_an_object_has_one_name_everywhere():
    names = {}
    for mod_name, mod in MODULES.items():
        for n in mod.__all__:
            obj = getattr(mod, n)
            if isinstance(obj, (types.FunctionType, type)) and _own(obj):
                names.setdefault(id(obj), set()).add(n)
                assert obj.__name__ == n, f"{mod_name}.{n} is {obj.__name__}"
    assert all(len(v) == 1 for v in names.values())


def test_no_public_cuda_module():
    assert importlib.util.find_spec("thrifty.cuda") is None
    assert not any("cuda" in m.split(".") for m in MODULES)
    if "thrifty.torch" in MODULES:
        assert "cuda_available" in MODULES["thrifty.torch"].__all__


# ---------------------------------------------------------------------------------------
# 3. estimators

ESTIMATORS = [(q, o) for q, o in FUNCS_AND_CLASSES
              if inspect.isclass(o) and inspect.isfunction(getattr(o, "fit", None))]


def test_the_estimators_are_found():
    found = {q for q, _ in ESTIMATORS}
    assert {"thrifty.neighbors.KNNClassifier", "thrifty.neighbors.NearestMeanClassifier",
            "thrifty.cluster.KMeans", "thrifty.text.CompressionKNNClassifier"} <= found


@pytest.mark.parametrize("qual, cls", ESTIMATORS, ids=[q for q, _ in ESTIMATORS])
def test_estimators_are_sklearn_estimators(qual, cls):
    from sklearn.base import BaseEstimator, ClassifierMixin, ClusterMixin

    assert issubclass(cls, BaseEstimator), qual
    assert issubclass(cls, (ClassifierMixin, ClusterMixin)), qual
    for klass in cls.__mro__:
        if _own(klass):
            assert "get_params" not in vars(klass), f"{klass.__name__} overrides get_params"
            assert "_get_param_names" not in vars(klass), klass.__name__
    params = {n: p for n, p in _params(cls).items() if n != "self"}
    kinds = {p.kind for p in params.values()}
    assert not kinds & {inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD}, qual
    assert all(p.default is not inspect.Parameter.empty for p in params.values()), qual
    est = cls()
    got = est.get_params(deep=False)
    assert sorted(got) == sorted(params), qual
    for n, p in params.items():
        assert got[n] is p.default or got[n] == p.default, f"{qual} changes {n} in __init__"


# ---------------------------------------------------------------------------------------
# 4. parameter names

# A parameter named ``k`` that does not count neighbours.
K_ALLOWED = {
    "thrifty.prune.scores.first_consistent_epoch": "k consecutive correct epochs",
}
_NEIGHBOR_COUNT = re.compile(r"(k|n|num)_?(nearest_)?neighbou?rs?|n_?nn|k_?nn|knn_k")
_CHOICES = re.compile(r"^\s*(\w+)\s*:\s*\{([^}]*)\}", re.M)


def _param_problems(qual, obj):
    params = _params(obj)
    bad = []
    if "n_jobs" in params:
        bad.append("takes n_jobs; threads come from thrifty.threads(n)")
    if "k" in params and qual not in K_ALLOWED:
        bad.append("takes k; neighbour counts are n_neighbors")
    bad += [f"takes {p}; neighbour counts are n_neighbors" for p in params
            if p != "n_neighbors" and _NEIGHBOR_COUNT.fullmatch(p)]
    for p, par in params.items():
        if par.default in ("hard", "easy") and p != "prefer":
            bad.append(f"{p}={par.default!r}: the hard/easy/random order is prefer=")
    for p, choices in _CHOICES.findall(inspect.getdoc(obj) or ""):
        if '"hard"' in choices and '"easy"' in choices and p != "prefer":
            bad.append(f"{p} documents hard/easy choices: the order is prefer=")
    return bad


@pytest.mark.parametrize("qual, obj, owner", CALLABLES, ids=[q for q, _, _ in CALLABLES])
def test_parameter_names(qual, obj, owner):
    assert not _param_problems(qual, obj), (qual, _param_problems(qual, obj))


def test_parameter_rule_catches_the_old_names():
    def bad(queries, keys, k, *, n_neighbours=1, n_jobs=None, order="hard"):
        """Parameters
        ----------
        mode : {"hard", "easy", "random"}
        """

    problems = " | ".join(_param_problems("fake.bad", bad))
    for want in ("takes n_jobs", "takes k;", "takes n_neighbours", "order='hard'",
                 "mode documents hard/easy"):
        assert want in problems
    assert set(K_ALLOWED) <= {q for q, _, _ in CALLABLES}, "a stale K_ALLOWED entry"


def test_the_pruning_order_is_prefer():
    names = ["thrifty.prune.semdedup", "thrifty.prune.ssp", "thrifty.prune.dbp"]
    if "thrifty.distributed" in MODULES:
        names += ["thrifty.distributed.semdedup", "thrifty.distributed.ssp",
                  "thrifty.distributed.dbp"]
    objs = dict(FUNCS_AND_CLASSES)
    for name in names:
        assert _params(objs[name])["prefer"].default == "hard", name


# ---------------------------------------------------------------------------------------
# 5. progress

# Public callables that run long work: each takes progress= (a class: in __init__).
LONG_WORK = {
    "thrifty.neighbors.topk", "thrifty.neighbors.NearestMeanClassifier",
    "thrifty.neighbors.KNNClassifier", "thrifty.cluster.KMeans",
    "thrifty.text.CompressionKNNClassifier", "thrifty.text.compressed_len",
    "thrifty.text.ncd_matrix", "thrifty.prune.semdedup", "thrifty.prune.ssp",
    "thrifty.prune.dbp",
}
DISTRIBUTED_LONG_WORK = {
    "thrifty.distributed.KMeans", "thrifty.distributed.semdedup", "thrifty.distributed.ssp",
    "thrifty.distributed.dbp", "thrifty.distributed.topk",
    "thrifty.distributed.CompressionKNNClassifier", "thrifty.distributed.text_kneighbors",
    "thrifty.distributed.text_predict",
}


def _long_work():
    return LONG_WORK | (DISTRIBUTED_LONG_WORK if "thrifty.distributed" in MODULES else set())


@pytest.mark.parametrize("qual", sorted(_long_work()))
def test_long_work_takes_progress(qual):
    objs = dict(FUNCS_AND_CLASSES)
    assert qual in objs, f"{qual} is not public any more; update LONG_WORK"
    assert "progress" in _params(objs[qual]), f"{qual} runs long work but takes no progress="


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


def _core_calls(obj):
    return set(re.findall(r"_core\.(\w+)\(", _source_with_helpers(obj))) & CORE_WITH_PROGRESS


@pytest.mark.parametrize("qual, obj", FUNCS_AND_CLASSES, ids=[q for q, _ in FUNCS_AND_CLASSES])
def test_core_work_takes_progress(qual, obj):
    # a class: any method doing long work -> __init__ or that public method takes
    # progress; a function: it or a private helper it calls
    calls = _core_calls(obj)
    if not calls:
        return
    ok = "progress" in _params(obj)
    if inspect.isclass(obj) and not ok:
        ok = all("progress" in _params(m) for n, m in vars(obj).items()
                 if inspect.isfunction(m) and not n.startswith("_") and _core_calls(m) & calls)
    assert ok, f"{qual} runs {sorted(calls)} (long work) but takes no progress="


def test_progress_rule_sees_the_long_work():
    # the rule above is not vacuous: it finds the core calls of the estimators
    found = {q for q, o in FUNCS_AND_CLASSES if _core_calls(o)}
    assert {"thrifty.neighbors.KNNClassifier", "thrifty.neighbors.NearestMeanClassifier",
            "thrifty.cluster.KMeans", "thrifty.text.CompressionKNNClassifier",
            "thrifty.neighbors.topk"} <= found


# ---------------------------------------------------------------------------------------
# 6. losses


def _loss_problems(exports, losses_module):
    """Loss-named exports outside ``losses_module`` and loss names without their pair."""
    bad, funcs, classes = [], {}, {}
    for qual, obj in exports:
        mod, _, name = qual.rpartition(".")
        if not (name.endswith("_loss") or name.endswith("Loss")):
            continue
        if not mod.startswith(losses_module):
            bad.append(f"{qual}: losses live in {losses_module}")
        if name.endswith("_loss"):
            if not inspect.isfunction(obj):
                bad.append(f"{qual} is not a function")
            funcs[name.replace("_", "")] = qual
        else:
            if not (inspect.isclass(obj) and any(c.__name__ == "Module" for c in obj.__mro__)):
                bad.append(f"{qual} is not an nn.Module")
            classes[name.lower()] = qual
    bad += [f"{q} has no class pair" for k, q in funcs.items() if k not in classes]
    bad += [f"{q} has no function pair" for k, q in classes.items() if k not in funcs]
    return bad


def test_loss_pairs_follow_x_loss_and_XLoss():
    if "thrifty.torch.losses" not in MODULES:
        pytest.skip("thrifty.torch needs torch")
    exports = [(f"{m}.{n}", getattr(mod, n)) for m, mod in MODULES.items() for n in mod.__all__]
    assert not _loss_problems(exports, "thrifty.torch.losses")
    assert len([q for q, _ in exports if q.endswith("Loss")]) >= 10


def test_loss_rule_catches_a_broken_pair():
    def circle_loss():
        pass

    class CircleLos:
        pass

    class NPOLoss:
        pass

    problems = " | ".join(_loss_problems(
        [("x.losses.circle_loss", circle_loss), ("x.losses.NPOLoss", NPOLoss),
         ("x.losses.CircleLos", CircleLos), ("x.other.z_loss", circle_loss)], "x.losses"))
    for want in ("x.losses.circle_loss has no class pair", "x.losses.NPOLoss has no function",
                 "x.losses.NPOLoss is not an nn.Module", "x.other.z_loss: losses live in"):
        assert want in problems


# ---------------------------------------------------------------------------------------
# 7. distributed mirrors the single-process names

SINGLE_PROCESS = ("thrifty.cluster", "thrifty.prune", "thrifty.neighbors", "thrifty.text")


def _mirror_problems(dist, local):
    bad = []
    if inspect.isclass(dist) and not issubclass(dist, local):
        bad.append(f"{dist.__name__} does not subclass {local.__name__}")
    a, b = list(_params(dist).values()), list(_params(local).values())
    if [(p.name, p.kind, p.default) for p in a[:len(b)]] != [(p.name, p.kind, p.default) for p in b]:
        bad.append(f"leading parameters differ: {a[:len(b)]} vs {b}")
    bad += [f"adds {p.name} not keyword-only" for p in a[len(b):]
            if p.kind is not inspect.Parameter.KEYWORD_ONLY]
    return bad


def test_distributed_names_mean_the_single_process_thing():
    if "thrifty.distributed" not in MODULES:
        pytest.skip("thrifty.distributed needs ray")
    dist = MODULES["thrifty.distributed"]
    shared = 0
    for name in dist.__all__:
        for mod in SINGLE_PROCESS:
            local = getattr(MODULES[mod], name, None)
            if local is not None and name in MODULES[mod].__all__:
                shared += 1
                assert not _mirror_problems(getattr(dist, name), local), (
                    name, _mirror_problems(getattr(dist, name), local))
    assert shared >= 6  # KMeans, semdedup, ssp, dbp, topk, CompressionKNNClassifier


def test_mirror_rule_catches_renamed_parameters():
    def topk(queries, keys, n_neighbors, *, metric="cosine"):
        pass

    def old(queries, refs, k, *, metric="cosine", ray="auto"):
        pass

    def positional(queries, keys, n_neighbors, ray="auto", *, metric="cosine"):
        pass

    class Local:
        def __init__(self, n_clusters=8):
            pass

    class Dist:
        def __init__(self, n_clusters=8, *, ray="auto"):
            pass

    assert _mirror_problems(old, topk)[0].startswith("leading parameters differ")
    assert _mirror_problems(positional, topk)[0].startswith("leading parameters differ")

    def local(x, n=1):
        pass

    def dist(x, n=1, ray="auto"):
        pass

    assert _mirror_problems(dist, local) == ["adds ray not keyword-only"]
    assert _mirror_problems(Dist, Local) == ["Dist does not subclass Local"]
    assert not _mirror_problems(type("Dist", (Local,), {"__init__": Dist.__init__}), Local)


# ---------------------------------------------------------------------------------------
# 8. the extension

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


def test_core_parameters_name_neighbour_counts_n_neighbors():
    # The extension's own signatures follow rule 4 too: a neighbour count is
    # ``n_neighbors`` in every layer, never ``k``.
    sigs = {n: inspect.signature(getattr(_core, n)).parameters for n in _core_functions()}
    # the signatures are readable, so the rule below really looks at the parameters
    assert "n_neighbors" in sigs["neighbors_topk"] and "n_neighbors" in sigs["text_kneighbors"]
    bad = {n: _param_problems(f"thrifty._core.{n}", getattr(_core, n)) for n in sigs}
    assert not {n: p for n, p in bad.items() if p}, bad
    assert not [n for n, p in sigs.items() if "k" in p], "a _core function takes k"


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
    assert sorted(_core.__all__) == sorted(exported)


# ---------------------------------------------------------------------------------------
# 9. the API reference pages

# The mkdocstrings options the rendering model below follows (mkdocs.yml).
MODELLED_OPTIONS = {"docstring_style": "numpy", "show_source": False, "show_root_heading": True,
                    "members_order": "source", "filters": ["!^_"]}


def _directives():
    """``(page, module path)`` of every ``::: path`` directive of docs/api/*.md, and
    whether any of them carries options of its own."""
    out = []
    for page in sorted((ROOT / "docs" / "api").glob("*.md")):
        text = page.read_text()
        for m in re.finditer(r"^::: *(\S+)[ \t]*\n((?:[ \t]+\S.*\n)*)", text + "\n", re.M):
            out.append((page.name, m.group(1), m.group(2).strip()))
    return out


def _rendered(obj):
    """Names mkdocstrings-python renders as members of module ``obj`` (a griffe object)
    under ``MODELLED_OPTIONS``: public names (filter ``!^_``) that are not submodules
    (``show_submodules`` is off), have a docstring (``show_if_no_docstring`` is off) and,
    when imported, are public (named in ``__all__``)."""
    names = set()
    for name, member in obj.members.items():
        if name.startswith("_"):
            continue
        if member.is_alias:
            if not member.is_public:
                continue
            member = member.final_target
        if member.is_module or not member.docstring:
            continue
        names.add(name)
    return names


@pytest.fixture(scope="module")
def griffe_package():
    griffe = pytest.importorskip("griffe", reason="the API page check needs griffe (docs extra)")
    return griffe.load("thrifty", search_paths=[str(ROOT / "python")], resolve_aliases=False)


def test_mkdocs_options_are_the_modelled_ones():
    yaml = pytest.importorskip("yaml")
    conf = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    plugins = {k: v for p in conf["plugins"] for k, v in (p.items() if isinstance(p, dict) else [])}
    options = plugins["mkdocstrings"]["handlers"]["python"]["options"]
    assert options == MODELLED_OPTIONS
    nav = str(conf["nav"])
    assert all(f"api/{page}" in nav for page in {p for p, _, _ in _directives()})
    assert not [d for d in _directives() if d[2]], "a ::: directive with options of its own"


def test_api_pages_render_exactly_the_public_names(griffe_package):
    documented = {}  # id(object) -> where it is rendered
    for page, path, _ in _directives():
        assert path in MODULES or path.startswith(_skipped_packages()), (
            f"{page}: ::: {path} is not a public module")
        if path not in MODULES:
            continue
        mod = MODULES[path]
        obj = griffe_package if path == "thrifty" else griffe_package[path.partition(".")[2]]
        public = {n for n in mod.__all__ if not n.startswith("_")
                  and not isinstance(getattr(mod, n), types.ModuleType)}
        shown = _rendered(obj)
        assert shown == public, (
            f"{page} ({path}): rendered but not in __all__: {sorted(shown - public)}; "
            f"in __all__ but not rendered (no docstring?): {sorted(public - shown)}")
        for n in public:
            documented.setdefault(id(getattr(mod, n)), f"{page}: {path}.{n}")
    missing = []
    for name, mod in MODULES.items():
        if name == "thrifty.cli" or name.startswith("thrifty.cli."):
            continue  # the command: docs/cli.md documents it by its --help text
        for n in mod.__all__:
            obj = getattr(mod, n)
            if isinstance(obj, types.ModuleType):
                assert obj.__name__ in {p for _, p, _ in _directives()}, (
                    f"{name}.__all__ exports module {n}, which has no ::: directive")
            elif not n.startswith("_") and id(obj) not in documented:
                missing.append(f"{name}.{n}")
    assert not missing, f"public names on no API page: {missing}"


def test_rendering_model_follows_all_and_docstrings(griffe_package):
    # imported names show only when __all__ names them; private and undocumented never
    nb = _rendered(griffe_package["neighbors"])
    assert "topk" in nb and "Estimator" not in nb and "ClassifierMixin" not in nb
    assert "_Classifier" not in nb and "_Labels" not in nb
    assert "scores" not in _rendered(griffe_package["prune"])  # a submodule: own directive


def test_readme_module_table_names_the_public_modules():
    rows = [ln.split("|")[1] for ln in (ROOT / "README.md").read_text().splitlines()
            if ln.startswith("| `thrifty")]
    listed = set(re.findall(r"`(thrifty\.\w+)`", "\n".join(rows)))
    top = {m for m in MODULES if m.count(".") == 1} | set(_skipped_packages())
    assert listed == top - {"thrifty.cli"}, (sorted(listed), sorted(top))
