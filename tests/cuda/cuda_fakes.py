"""Stand-ins for CuPy's device / stream contexts, kernel functions and modules, recording
what the GPU launch glue does into a list (tests run without a GPU or CuPy)."""


def recorders(events):
    """(Ctx, Fn, Module) classes appending to ``events``: ``("enter"/"exit", what)`` for
    contexts, ``("launch", grid, block, args, stream.what)`` for kernel calls,
    ``("load", binary)`` and ``("get", name)`` for modules."""

    class Ctx:
        compute_capability = "90"

        def __init__(self, what):
            self.what = what

        def __enter__(self):
            events.append(("enter", self.what))
            return self

        def __exit__(self, *a):
            events.append(("exit", self.what))

    class Fn:
        def __call__(self, grid, block, args, stream=None):
            events.append(("launch", grid, block, args, getattr(stream, "what", None)))

    class Module:
        def load(self, binary):
            events.append(("load", binary))

        def get_function(self, name):
            events.append(("get", name))
            return Fn()

    return Ctx, Fn, Module
