"""The CUDA backend of :mod:`thrifty.torch` (private).

The public functions of :mod:`thrifty.torch` choose it themselves for CUDA tensors when
:func:`thrifty.torch.cuda_available` is true. Kernel sources (``cuda/*.cu``, shipped as
``thrifty/kernels/``) are compiled at run time by CuPy's NVRTC and launched by
:func:`._runtime.launch`; each module here holds the launch glue and the CPU fallback
with the same semantics:

* :mod:`._runtime` — sources, compilation, signatures, the launcher, NVRTC checks;
* :mod:`.bitlinear` — BitNet b1.58 int8 x packed ternary layer (``bitlinear.cu``);
* :mod:`.mezo` — MeZO noise, perturbation and update (``mezo.cu``);
* :mod:`.optim` — multi-tensor norms and the SAM / DoG / MoMo updates (``optim.cu``);
* :mod:`.loss` — tile statistics of the fused linear losses (``loss.cu``).

Importing this package imports neither CuPy nor torch.
"""
