"""The KCL cross-entropy, and TSC's with its targets: the positive sets of Kang et al.
(ICLR 2021) and Li et al. (CVPR 2022) as in the official ``LTH14/targeted-supcon``
``moco/builder.py`` (class ``KCL``), on :func:`~.positives.positive_set_cross_entropy`.
"""

from typing import NamedTuple

import torch
from torch import Tensor

from dscl_plugin.functional.positives import (
    Block,
    class_slots,
    column_offsets,
    positive_set_cross_entropy,
)
from dscl_plugin.functional.sampling import sample_class_pool


class Targets(NamedTuple):
    """TSC's targets as extra candidates: ``features`` (C * tr, D) unit rows, the ``tr``
    copies of target ``t`` at rows ``t * tr ... t * tr + tr - 1``; ``assigned`` (B, tr) the
    rows of each anchor's matched target; ``weight`` ``tw``; ``separate`` (official
    ``sep_t``): the assigned rows are always positives, else they join the pool the
    ``k`` positives are drawn from."""

    features: Tensor
    assigned: Tensor
    weight: float
    separate: bool


class KCLLosses(NamedTuple):
    """Output of :func:`kcl_cross_entropy`, both (B,): ``losses`` ``L_i`` with gradient;
    ``target`` TSC's target part ``-1 / |P_i| sum_{G_i} log p`` without gradient (0 for
    KCL), so that ``L_i = class_i + tw * target_i`` (official ``loss_class``, ``loss_target``
    before its weight ``tw``)."""

    losses: Tensor
    target: Tensor


def kcl_cross_entropy(
    query: Tensor,
    key: Tensor,
    labels: Tensor,
    queue: Tensor | None,
    queue_labels: Tensor | None,
    num_positives: int,
    temperature: float,
    generator: torch.Generator | None = None,
    targets: Targets | None = None,
) -> KCLLosses:
    """Per-anchor KCL (or TSC, with ``targets``) loss over the columns ``[k_i, M, targets]``.

    ``log p_ij = l_ij - log sum_j' exp(l_ij')``, ``l_ij = q_i . c_j / T`` over the own key,
    every queue row and every target copy. ``P_i``: the own key, ``num_positives`` queue
    rows labelled ``y_i`` drawn uniformly without replacement (every such row when there
    are fewer, or when ``num_positives = 0``) and the assigned target copies ``G_i``;
    ``loss_i = -(sum_{P_i \\ G_i} log p + tw sum_{G_i} log p) / |P_i|``, i.e. the class
    part ``-sum_{P_i \\ G_i} log p / |P_i|`` plus ``tw`` times the target part
    ``-sum_{G_i} log p / |P_i|``; the target part comes out of the same pass, from the
    ``log p`` of :func:`~.positives.positive_set_cross_entropy`.

    Args:
        query, key: (B, D) unit rows.
        labels: (B,) class ids (>= 0).
        queue: (K, D) unit rows or None; ``queue_labels`` (K,) its class ids.
        num_positives: ``k >= 0``.
        temperature: T > 0.
        generator: the source of the draws; None: the default one.
        targets: TSC's :class:`Targets`, or None for KCL.

    Returns:
        :class:`KCLLosses`: the (B,) loss of each anchor and its target part.
    """
    batch_size, device = query.shape[0], query.device
    blocks = [Block(key, diagonal=True)]
    if queue is not None and queue_labels is not None:
        blocks.append(Block(queue, labels=queue_labels if num_positives == 0 else None))
    if targets is not None:
        blocks.append(Block(targets.features))
    offsets = column_offsets(blocks)
    index = [torch.zeros(batch_size, 1, dtype=torch.long, device=device)]  # own key
    weight = [query.new_ones(batch_size, 1)]
    is_target = [torch.zeros(batch_size, 1, dtype=torch.bool, device=device)]
    count = torch.ones(batch_size, dtype=torch.long, device=device)
    shared_targets = targets is not None and not targets.separate and num_positives > 0
    if targets is not None and not shared_targets:
        index.append(offsets[-1] + targets.assigned)
        weight.append(query.new_full(targets.assigned.shape, targets.weight))
        is_target.append(torch.ones_like(targets.assigned, dtype=torch.bool))
        count += targets.assigned.shape[1]
    if num_positives > 0:
        rows = queue_labels if queue_labels is not None else labels.new_empty(0)
        extra = targets.assigned.shape[1] if shared_targets and targets is not None else 0
        draw = sample_class_pool(labels, rows, num_positives, extra, generator)
        columns = offsets[1] + draw.rows if queue is not None else draw.rows
        drawn_weight = query.new_ones(draw.valid.shape)
        drawn_target = torch.zeros_like(draw.valid)
        if shared_targets and targets is not None:
            target_columns = offsets[-1] + targets.assigned.gather(1, draw.extra)
            columns = torch.where(draw.in_rows, columns, target_columns)
            drawn_weight = torch.where(draw.in_rows, drawn_weight, targets.weight)
            drawn_target = draw.valid & ~draw.in_rows
        index.append(columns)
        weight.append(drawn_weight * draw.valid)
        is_target.append(drawn_target)
        count += draw.valid.sum(dim=1)
    slots = None
    if num_positives == 0 and queue is not None:
        slots = class_slots(labels, blocks)
        count += slots.counts
    scale = 1.0 / count.to(query.dtype)
    positive_weight = torch.cat(weight, dim=1) * scale[:, None]
    losses, log_probs = positive_set_cross_entropy(
        query,
        blocks,
        temperature,
        torch.cat(index, dim=1),
        positive_weight,
        slots,
        None if slots is None else scale,
    )
    target_log_probs = log_probs.masked_fill(~torch.cat(is_target, dim=1), 0.0)
    return KCLLosses(losses, -target_log_probs.sum(dim=1) * scale)
