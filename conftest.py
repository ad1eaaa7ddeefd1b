# Root conftest: lets `python -m pytest` collect the docstring examples of the package
# (see [tool.pytest.ini_options]) without executing the CLI's __main__ module.
collect_ignore = ["python/thrifty/cli/__main__.py"]

# thrifty.torch.* import torch (the optional `torch` extra); without torch their
# docstring examples cannot be collected.
import importlib.util  # noqa: E402

if importlib.util.find_spec("torch") is None:
    collect_ignore_glob = ["python/thrifty/torch/*"]
