"""BCL's balanced supervised contrastive loss as a Lightly-style ``torch.nn.Module``.

Reference:
- [0] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition,
  CVPR 2022, https://arxiv.org/abs/2207.09052
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.functional.autograd import AutogradContext
from dscl_plugin.functional.contrastive import compute_dtype, softmax_and_logsumexp_
from dscl_plugin.losses.classes import class_ids


class BCLLoss(nn.Module):
    """Balanced supervised contrastive loss (BCL's ``BalSCL``) [0]: class-averaged,
    class-complement SupCon over two views of the batch plus one prototype per class.

    The anchors are the 2B view features ``z`` (L2-normalised); the contrast set is
    ``z`` and the C prototypes ``w_c`` (L2-normalised), labelled ``y`` twice and
    ``0 ... C-1``. With ``n_c = 2 b_c + 1`` the entries of class ``c`` in that set
    (``b_c`` its images in the batch), ``l_ij = z_i . x_j / T`` and ``P_i`` the entries
    labelled ``y_i`` other than ``z_i`` (its other view, the other views of its class,
    its class prototype):

    ``L_i = -1 / |P_i| sum_{j in P_i} [l_ij - log sum_{j' != i} exp(l_ij') / m_ij']``,
    ``m_ij = n_{y_j} - [y_j = y_i]``

    averaged over the 2B anchors: each class enters the denominator as the mean of its
    entries (the anchor excluded from its own class's count), so head classes weigh no
    more than tail classes. As the official ``FlamieZhu/Balanced-Contrastive-Learning``
    ``loss/contrastive.py`` ``BalSCL``; BCL trains it as ``loss = CE_LA + 0.35 L`` with
    :class:`~dscl_plugin.losses.LogitAdjustLoss` on the classifier's logits (``main.py``:
    ``alpha`` 1, ``beta`` 0.35).

    Attributes:
        temperature: T, default 0.07 (the official ``--temp``).

    Raises:
        ValueError: ``temperature <= 0``.

    Examples:
        >>> loss_fn = BCLLoss()
        >>> loss = loss_fn(view1, view2, labels, prototypes)
    """

    def __init__(self, temperature: float = 0.07) -> None:
        super().__init__()
        checks.temperature(temperature)
        self.temperature = temperature

    def forward(self, view1: Tensor, view2: Tensor, labels: Tensor, prototypes: Tensor) -> Tensor:
        """Mean loss over the 2B view anchors.

        Args:
            view1, view2: (B, D) features of two views of the same images.
            labels: (B,) class ids in ``[0, C)``.
            prototypes: (C, D) one feature per class (BCL: the classifier's weights
                through their own head), row ``c`` of class ``c``.

        Raises:
            ValueError: a tensor of the wrong shape or dtype, or a label outside
                ``[0, C)``, naming it.
        """
        checks.features("view1", view1, 2)
        checks.features("view2", view2, 2)
        checks.features("prototypes", prototypes, 2)
        checks.require(
            view2.shape == view1.shape,
            "view2",
            f"must have the shape of view1 {tuple(view1.shape)}, got {tuple(view2.shape)}",
        )
        checks.require(
            prototypes.shape[1] == view1.shape[1],
            "prototypes",
            f"must have the views' feature dimension {view1.shape[1]}, got shape "
            f"{tuple(prototypes.shape)}",
        )
        checks.labels("labels", labels, view1.shape[0])
        num_classes = prototypes.shape[0]
        class_ids("labels", labels, num_classes)
        dtype = compute_dtype(view1)
        with torch.autocast(device_type=view1.device.type, enabled=False):
            views = F.normalize(torch.cat([view1, view2]).to(dtype), dim=1)
            contrast = torch.cat([views, F.normalize(prototypes.to(dtype), dim=1)])
            labels = labels.long().to(view1.device)
            anchor_labels = labels.repeat(2)
            contrast_labels = torch.cat([anchor_labels, torch.arange(num_classes).to(labels)])
            return _balanced_supcon(
                views, anchor_labels, contrast, contrast_labels, num_classes, self.temperature
            )


def _balanced_supcon(
    anchors: Tensor,
    labels: Tensor,
    contrast: Tensor,
    contrast_labels: Tensor,
    num_classes: int,
    temperature: float,
) -> Tensor:
    """The mean of ``L_i`` over the anchors (rows ``0 ... 2B-1`` of ``contrast``).

    ``sum_{j in P_i} l_ij = a_i . (S_{y_i} - a_i) / T`` with ``S_c`` the sum of the
    contrast rows of class ``c``, so only the denominator needs the (2B, 2B + C) matrix.
    """
    num_anchors = anchors.shape[0]
    logits = anchors @ contrast.T / temperature
    with torch.no_grad():  # log 1 / m_ij: n - 1 for the anchor's own class, n for the others
        same = labels[:, None] == contrast_labels[None, :]
        class_count = torch.bincount(contrast_labels, minlength=num_classes)
        count = class_count[contrast_labels].to(logits.dtype)
        log_weight = torch.where(same, -(count - 1).clamp_min(1).log(), -count.log())
        rows = torch.arange(num_anchors, device=labels.device)
        log_weight[rows, rows] = float("-inf")
    lse: Tensor = _WeightedLogSumExp.apply(logits, log_weight)
    class_sums = contrast.new_zeros(num_classes, contrast.shape[1]).index_add(
        0, contrast_labels, contrast
    )
    positive_sum = (anchors * (class_sums[labels] - anchors)).sum(dim=1) / temperature
    num_positives = (class_count[labels] - 1).to(logits.dtype)
    return (lse - positive_sum / num_positives).mean()


class _WeightedLogSumExp(torch.autograd.Function):
    """``log sum_j exp(l_ij + w_ij)`` per row, keeping only its softmax for the backward
    pass (the gradient with respect to ``l``; ``w`` is a constant)."""

    @staticmethod
    def forward(ctx: AutogradContext, logits: Tensor, log_weight: Tensor) -> Tensor:
        prob = logits + log_weight
        lse = softmax_and_logsumexp_(prob)
        ctx.save_for_backward(prob)
        return lse

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: AutogradContext, grad_lse: Tensor) -> tuple[Tensor, None]:
        (prob,) = ctx.saved_tensors
        return prob * grad_lse[:, None], None
