# Root conftest: lets `python -m pytest` collect the docstring examples of the package
# (see [tool.pytest.ini_options]) without executing the CLI's __main__ module.
collect_ignore = ["python/thrifty/cli/__main__.py"]
