"""Classification, metric-learning, box-regression and unlearning losses for PyTorch.

Every loss exists as a function ``x_loss`` and as an ``nn.Module`` ``XLoss``; all take
``reduction="mean" | "sum" | "none"`` ("mean" averages over samples). float16 and
bfloat16 inputs are computed in float32 and the loss is returned in float32; float64
stays float64. Invalid input (labels out of range, shape mismatch, invalid parameters,
degenerate boxes) raises :class:`thrifty.InvalidInputError`, a ``ValueError``. The
losses on integer class targets take ``ignore_index=-100`` with ``F.cross_entropy``'s
meaning.

======================================= =====================================================
loss (module)                           formula (per sample)
======================================= =====================================================
*classification*
:func:`squentropy_loss`                 ``CE + sum_{j != y} o_j**2 / (C - 1)``
:func:`spherical_z_loss`                ``softplus(a (b - z_y)) / a``, ``z = (o - mean o) / std o``
:func:`comp_sum_loss`                   ``(1 - p_y**(tau - 1)) / (tau - 1)`` (``-log p_y`` at 1)
:func:`generalized_cross_entropy_loss`  ``(1 - p_y**q) / q``
:func:`linear_cross_entropy_loss`       CE / squentropy / Z-loss of ``h @ W.T + b``, fused
*metric*
:func:`center_loss`                     ``||x - c_y||**2 / 2``
:func:`circle_loss`                     ``softplus(lse_n(g a_n (s_n - m)) + lse_p(-g a_p (s_p - 1 + m)))``
:func:`sigmoid_pairwise_loss`           ``-sum_j log sigmoid(z_ij (t x_i . y_j + b))`` (SigLIP)
:func:`ge2e_loss`                       GE2E softmax / contrast on ``(speakers, utterances, dim)``
*boxes*
:func:`distance_iou_loss`               ``1 - IoU + rho**2 / c**2``
:func:`complete_iou_loss`               DIoU ``+ alpha v``
*unlearning*
:func:`npo_loss`                        ``2 / beta * softplus(beta (log p - log p_ref))``
======================================= =====================================================

:func:`squentropy_loss` and :func:`spherical_z_loss` work on row chunks with their own
backward pass: besides the logits they allocate one logits-sized buffer (the
gradient) plus chunk-sized temporaries, so they fit N x 128k vocabularies.
:func:`linear_cross_entropy_loss`       never materialises the logits at all (one tile at a
time); on CUDA tensors its tile work runs in thrifty's CUDA kernels when
:func:`thrifty.torch.cuda_available` is true.
"""


from __future__ import annotations

from .boxes import CompleteIoULoss, DistanceIoULoss, complete_iou_loss, distance_iou_loss
from .classification import (
    CompSumLoss,
    GeneralizedCrossEntropyLoss,
    SphericalZLoss,
    SquentropyLoss,
    comp_sum_loss,
    generalized_cross_entropy_loss,
    spherical_z_loss,
    squentropy_loss,
)
from .linear import LinearCrossEntropyLoss, linear_cross_entropy_loss
from .metric import (
    CenterLoss,
    CircleLoss,
    GE2ELoss,
    SigmoidPairwiseLoss,
    center_loss,
    circle_loss,
    ge2e_loss,
    sigmoid_pairwise_loss,
)
from .unlearning import NPOLoss, npo_loss

__all__ = [
    "squentropy_loss", "SquentropyLoss",
    "spherical_z_loss", "SphericalZLoss",
    "comp_sum_loss", "CompSumLoss",
    "generalized_cross_entropy_loss", "GeneralizedCrossEntropyLoss",
    "linear_cross_entropy_loss", "LinearCrossEntropyLoss",
    "center_loss", "CenterLoss",
    "circle_loss", "CircleLoss",
    "sigmoid_pairwise_loss", "SigmoidPairwiseLoss",
    "ge2e_loss", "GE2ELoss",
    "distance_iou_loss", "DistanceIoULoss",
    "complete_iou_loss", "CompleteIoULoss",
    "npo_loss", "NPOLoss",
]
