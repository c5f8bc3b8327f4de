"""The pull-gradient ratio of the paper's Fig. 2, from the DSCL targets."""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from dscl_plugin.functional.contrastive import (
    NORM_EPS,
    class_positives,
    decoupled_weights,
)


class PullRatio(NamedTuple):
    """Per-anchor output of :func:`pull_gradient_ratio`; ``ratio`` and ``aligned`` are 0
    where ``valid`` is False (no class positive: the ratio is undefined)."""

    ratio: Tensor
    aligned: Tensor
    valid: Tensor


@torch.no_grad()
def pull_gradient_ratio(
    query: Tensor,
    key: Tensor,
    labels: Tensor,
    queue: Tensor | None,
    queue_labels: Tensor | None,
    alpha: float | None,
) -> PullRatio:
    """How much more the class positives pull an anchor than its own key (paper, Fig. 2).

    The pull part of ``dL_i / dq_i`` is ``-(1/T) sum_c w_ic c`` over the target weights of
    :func:`dscl_cross_entropy`; it splits into the own-key term ``w_own_i k_i`` and the
    class term ``w_each_i v_i``, ``v_i = sum_{c in P_i} c``:

    ``ratio_i = ||w_each_i v_i|| / ||w_own_i k_i||``

    For aligned features (every class positive equal to ``k_i``) this is
    ``aligned_i = w_each_i |P_i| / w_own_i``: ``|P_i|`` for SupCon, ``(1 - alpha) / alpha``
    for DSCL. Features are L2-normalised here; nothing is differentiated.

    Args:
        query, key, labels, queue, queue_labels: the fields of
            :class:`~dscl_plugin.functional.contrastive.Candidates`.
        alpha: weight of the own positive, or None for SupCon.

    Returns:
        :class:`PullRatio` of (B,) tensors ``ratio``, ``aligned`` and ``valid`` (bool:
        ``|P_i| > 0`` and ``w_own_i > 0``, i.e. not alpha = 0).
    """
    query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
    if queue is not None:
        queue = F.normalize(queue, dim=1)
    positives, num_pos, _, _ = class_positives(query, key, labels, queue, queue_labels)
    w_own, w_each = decoupled_weights(num_pos, alpha)
    valid = (num_pos > 0) & (w_own > 0)
    zero = query.new_zeros(())
    own_norm = (w_own * key.norm(dim=1)).clamp_min(NORM_EPS)
    ratio = torch.where(valid, w_each * positives.norm(dim=1) / own_norm, zero)
    return PullRatio(ratio, torch.where(valid, w_each * num_pos / w_own, zero), valid)
