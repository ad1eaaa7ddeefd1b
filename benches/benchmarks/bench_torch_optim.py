"""One optimizer step on a 4.2M-parameter MLP (4 x Linear(1024, 1024), float32, CPU),
thrifty.torch.optim side by side with torch.optim.AdamW and, where it has the same
method, pytorch-optimizer (``pip install pytorch_optimizer``); plus the optimizer-state
memory (bytes of the tensors in ``optimizer.state``).

Gradients are set once; a step is what a training loop adds on top of forward/backward,
except SAM (both half steps, no extra forward/backward) and MeZO (its two forward passes
are part of the method and included).
"""

from asv_runner.benchmarks.mark import SkipNotImplemented

from .common import require

METHODS = ["adamw", "sam", "dog", "ldog", "galore", "fira", "frugal", "momo", "mezo", "gsm"]
BACKENDS = ["thrifty", "torch", "pytorch_optimizer"]
WIDTH, DEPTH, RANK = 1024, 4, 128

# pytorch-optimizer class names for the methods it also implements.
PYOPT = {"sam": "SAM", "galore": "GaLore", "fira": "Fira", "dog": "DoG", "momo": "Momo"}


def _model(torch):
    torch.manual_seed(0)
    layers = [torch.nn.Linear(WIDTH, WIDTH) for _ in range(DEPTH)]
    return torch.nn.Sequential(*layers)


def _groups(model, galore_keys):
    mats = [p for p in model.parameters() if p.dim() == 2]
    rest = [p for p in model.parameters() if p.dim() != 2]
    return [{"params": rest}, {"params": mats, **galore_keys}]


def _build(method, backend, model):
    torch = require("torch")
    keys = {"rank": RANK, "update_proj_gap": 200, "scale": 0.25, "proj_type": "std"}
    if backend == "torch":
        if method != "adamw":
            raise SkipNotImplemented("torch.optim has only the AdamW baseline")
        return torch.optim.AdamW(model.parameters(), lr=1e-3)
    if backend == "pytorch_optimizer":
        po = require("pytorch_optimizer")
        cls = getattr(po, PYOPT.get(method, ""), None)
        if cls is None or method == "adamw":
            raise SkipNotImplemented(f"pytorch-optimizer has no own {method}")
        if method == "sam":
            return cls(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
        if method in ("galore", "fira"):
            po_keys = {**keys, "projection_type": "std"}  # pytorch-optimizer's name of proj_type
            return cls(_groups(model, po_keys), lr=1e-3)
        return cls(model.parameters())
    opt = require("thrifty.torch.optim")
    if method == "adamw":
        raise SkipNotImplemented("thrifty does not re-implement AdamW")
    if method == "sam":
        return opt.SAM(model.parameters(), torch.optim.SGD, lr=0.1, momentum=0.9)
    if method in ("dog", "ldog"):
        return (opt.DoG if method == "dog" else opt.LDoG)(model.parameters())
    if method == "galore":
        return opt.GaLoreAdamW(_groups(model, keys), lr=1e-3)
    if method == "fira":
        return opt.FiraAdamW(_groups(model, keys), lr=1e-3)
    if method == "frugal":
        return opt.FRUGAL(model.parameters(), lr=1e-3, density=0.125, projection="svd")
    if method == "momo":
        return opt.MoMo(model.parameters())
    if method == "mezo":
        return opt.MeZO(model.parameters(), lr=1e-6)
    return opt.GlobalSparseMomentumSGD(model.parameters(), density=0.1)


class TorchOptimStep:
    params = (METHODS, BACKENDS)
    param_names = ["method", "backend"]
    number = 1
    repeat = (3, 5, 20.0)
    warmup_time = 0.0

    def setup(self, method, backend):
        torch = require("torch")
        self.torch = torch
        self.model = _model(torch)
        self.opt = _build(method, backend, self.model)
        self.x = torch.randn(64, WIDTH)
        self.loss = self.model(self.x).pow(2).mean()
        self.loss.backward()
        self.method = method
        self._step()  # the first step allocates state (and GaLore's first SVD)

    def _step(self):
        if self.method == "sam":
            self.opt.first_step(zero_grad=False)
            self.opt.second_step(zero_grad=False)
        elif self.method == "momo":
            self.opt.step(loss=self.loss.detach())
        elif self.method == "mezo":
            with self.torch.no_grad():
                self.opt.step(lambda: self.model(self.x).pow(2).mean())
        else:
            self.opt.step()

    def time_step(self, method, backend):
        self._step()

    def track_state_mib(self, method, backend):
        total = 0
        for st in self.opt.state.values():
            if isinstance(st, dict):
                for v in st.values():
                    # a tensor, or an object holding tensors (pytorch-optimizer keeps
                    # GaLore's projection matrix in a projector object)
                    held = [v] if isinstance(v, self.torch.Tensor) else list(
                        getattr(v, "__dict__", {}).values())
                    for t in held:
                        if isinstance(t, self.torch.Tensor):
                            total += t.numel() * t.element_size()
        return total / 2**20

    track_state_mib.unit = "MiB"
