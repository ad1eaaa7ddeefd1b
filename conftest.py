# Root conftest: lets `python -m pytest` collect the docstring examples of the package
# (see [tool.pytest.ini_options]) without executing the CLI's __main__ module.
collect_ignore = ["python/thrifty/cli/__main__.py"]

# thrifty.torch needs torch (the `torch` extra); without it, skip its docstring examples
# instead of failing collection (its tests skip themselves with importorskip).
import importlib.util  # noqa: E402



def _has_torch() -> bool:
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


if not _has_torch():
    collect_ignore_glob = ["python/thrifty/torch/*.py"]
