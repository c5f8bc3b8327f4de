"""Cross-entropy of anchors against blocks of candidates with a weighted positive set: the
kernel of KCL, TSC and PaCo, with a fused backward pass.

For anchor ``i`` the columns ``j`` are optional class logits ``e_ic`` (used as given)
followed by the candidate blocks, ``l_ij = a_i . c_j / T``. A block's columns enter the
denominator with a weight ``m_j`` (``log m`` per block; PaCo's ``gamma``), and the anchor
itself is no candidate of its own. With target weights ``W_ij >= 0`` and ``s_i = sum_j W_ij``:

``loss_i = s_i log sum_j m_j exp(l_ij) - sum_j W_ij l_ij = -sum_j W_ij log p_ij``,
``p_ij = exp(l_ij) / sum_j' m_j' exp(l_ij')``

``W`` is sparse (a few weighted columns per anchor: the own key, sampled positives,
targets, the own class logit) plus a dense class part: ``w_i`` on every column of a
labelled block with the anchor's label (never the anchor itself). The class part never
enters a matrix: with ``S_y`` the sum of the rows of class ``y`` in the labelled blocks and
``v_i = S_{y_i}`` less the anchor, ``sum_j w_i l_ij = w_i a_i . v_i / T``.

The gradient is ``d loss_i / d l_ij = s_i softmax(l_i + log m)_j - W_ij``. The (B, N) logits
are written once and become that residual in place; the anchors' gradient is formed in
the forward pass, so the buffer is kept for the backward pass only when a candidate
block or the class logits need gradient. The ``log p_ij`` of the sparse positives come out
of the same pass (no gradient), so a caller can split the loss into parts (TSC's class and
target terms).
"""

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from dscl_plugin.functional.autograd import AutogradContext
from dscl_plugin.functional.contrastive import (
    index_add_float64_,
    label_slots,
    softmax_and_logsumexp_,
)


class Block(NamedTuple):
    """A block of candidate rows: ``features`` (N, D), unit rows; ``labels`` (N,) make its
    rows class positives of the anchors with that label (None: never a class positive);
    ``diagonal``: one column ``a_i . features_i`` per anchor (N = B, the own key);
    ``log_weight``: ``log m`` of its columns in the denominator; ``excludes_anchor``: the
    rows are the anchors themselves, row ``i`` is no candidate of anchor ``i``."""

    features: Tensor
    labels: Tensor | None = None
    diagonal: bool = False
    log_weight: float = 0.0
    excludes_anchor: bool = False


class ClassSlots(NamedTuple):
    """Where the class positives are: the slot of each anchor's class among the sorted
    anchor labels (``anchor``, (B,)), the slot of each row of each block (None for an
    unlabelled block; B for a class no anchor has) and each anchor's number of class
    positives (``counts``, (B,))."""

    anchor: Tensor
    blocks: tuple[Tensor | None, ...]
    counts: Tensor


def class_slots(labels: Tensor, blocks: Sequence[Block]) -> ClassSlots:
    """:class:`ClassSlots` of the anchors' ``labels`` (B,) in ``blocks``. Static shapes, no
    host sync."""
    labels = labels.long()
    batch_size = labels.shape[0]
    sorted_labels = labels.sort().values
    anchor = torch.searchsorted(sorted_labels, labels)
    per_slot = anchor.new_zeros(batch_size + 1)
    slots: list[Tensor | None] = []
    excluded = 0
    for block in blocks:
        if block.labels is None:
            slots.append(None)
            continue
        slot = label_slots(sorted_labels, block.labels.to(labels.device))
        per_slot.index_add_(0, slot, torch.ones_like(slot))
        excluded += int(block.excludes_anchor)
        slots.append(slot)
    return ClassSlots(anchor, tuple(slots), per_slot[anchor] - excluded)


def column_offsets(blocks: Sequence[Block], num_class_logits: int = 0) -> list[int]:
    """The first column of each block (after ``num_class_logits`` class logits)."""
    offsets, start = [], num_class_logits
    for block in blocks:
        offsets.append(start)
        start += 1 if block.diagonal else block.features.shape[0]
    return offsets


class PositiveSetLosses(NamedTuple):
    """Output of :func:`positive_set_cross_entropy`: ``losses`` (B,) ``loss_i``, with
    gradient; ``positive_log_probs`` (B, P) ``log p_ij`` at the columns of
    ``positive_index``, without gradient (the sparse part of ``loss_i`` is
    ``-sum_P positive_weight * positive_log_probs``)."""

    losses: Tensor
    positive_log_probs: Tensor


def positive_set_cross_entropy(
    anchors: Tensor,
    blocks: Sequence[Block],
    temperature: float,
    positive_index: Tensor,
    positive_weight: Tensor,
    slots: ClassSlots | None = None,
    class_weight: Tensor | None = None,
    class_logits: Tensor | None = None,
) -> PositiveSetLosses:
    """Per-anchor ``loss_i`` of the module docstring, and the sparse positives' ``log p``.

    Args:
        anchors: (B, D) unit rows ``a_i``.
        blocks: the candidate blocks, in column order after the class logits.
        temperature: T > 0, dividing the block logits (not the class logits).
        positive_index: (B, P) int64 columns of the sparse positives (a weight-0 entry
            may point anywhere).
        positive_weight: (B, P) their weights.
        slots: :func:`class_slots` of the anchors' labels in ``blocks``; with
            ``class_weight``.
        class_weight: (B,) weight ``w_i`` of each class positive, or None for none.
        class_logits: (B, C) logits placed before the blocks, with the denominator
            weight 1, or None.

    Returns:
        :class:`PositiveSetLosses`: the (B,) loss of each anchor and the (B, P) ``log p``
        of its sparse positives.
    """
    losses, positive_log_probs = _PositiveSetCrossEntropy.apply(
        temperature,
        tuple(_Layout(b.diagonal, b.log_weight, b.excludes_anchor) for b in blocks),
        slots,
        positive_index,
        positive_weight,
        class_weight,
        anchors,
        class_logits,
        *(block.features for block in blocks),
    )
    return PositiveSetLosses(losses, positive_log_probs)


class _Layout(NamedTuple):
    """What the fused function needs of a :class:`Block` besides its tensors."""

    diagonal: bool
    log_weight: float
    excludes_anchor: bool


class _PositiveSetContext(AutogradContext, Protocol):
    """What the forward pass keeps on ``ctx`` besides the saved tensors."""

    temperature: float
    specs: tuple[_Layout, ...]
    slots: ClassSlots
    widths: list[int]
    num_class: int


class _PositiveSetCrossEntropy(torch.autograd.Function):
    """Fused :func:`positive_set_cross_entropy`."""

    @staticmethod
    def forward(
        ctx: _PositiveSetContext,
        temperature: float,
        specs: tuple[_Layout, ...],
        slots: ClassSlots,
        positive_index: Tensor,
        positive_weight: Tensor,
        class_weight: Tensor | None,
        anchors: Tensor,
        class_logits: Tensor | None,
        *features: Tensor,
    ) -> tuple[Tensor, Tensor]:
        num_class = 0 if class_logits is None else class_logits.shape[1]
        widths = [1 if spec.diagonal else f.shape[0] for spec, f in zip(specs, features)]
        logits = anchors.new_empty(anchors.shape[0], num_class + sum(widths))
        if class_logits is not None:
            logits[:, :num_class].copy_(class_logits)
        columns = logits[:, num_class:].split(widths, dim=1)
        for spec, block, column in zip(specs, features, columns):
            if spec.diagonal:
                column.copy_((anchors * block).sum(dim=1, keepdim=True)).div_(temperature)
            else:
                torch.addmm(column, anchors, block.T, beta=0, alpha=1 / temperature, out=column)

        positive_logits = logits.gather(1, positive_index)
        target_sum = (positive_weight * positive_logits).sum(dim=1)
        total_weight = positive_weight.sum(dim=1)
        class_vectors = None
        if class_weight is not None:
            class_vectors = _class_vectors(anchors, specs, slots, features)
            target_sum += class_weight * (anchors * class_vectors).sum(dim=1) / temperature
            total_weight = total_weight + class_weight * slots.counts

        for spec, column in zip(specs, columns):
            if spec.log_weight != 0.0:
                column.add_(spec.log_weight)
            if spec.excludes_anchor:
                column.diagonal().fill_(float("-inf"))
        lse = softmax_and_logsumexp_(logits)
        losses = total_weight * lse - target_sum
        positive_log_probs = positive_logits.sub_(lse[:, None])
        ctx.mark_non_differentiable(positive_log_probs)

        residual = logits.mul_(total_weight[:, None])
        residual.scatter_add_(1, positive_index, -positive_weight)
        needs_anchors, needs_class_logits = ctx.needs_input_grad[6:8]
        needs_blocks = ctx.needs_input_grad[8:]
        anchor_grad = None
        if needs_anchors:  # sum_j R_ij c_j / T - w_i v_i / T
            anchor_grad = torch.zeros_like(anchors)
            for spec, block, column in zip(specs, features, columns):
                if spec.diagonal:
                    anchor_grad.addcmul_(column, block)
                else:
                    anchor_grad.addmm_(column, block)
            if class_weight is not None and class_vectors is not None:
                anchor_grad.sub_(class_weight[:, None] * class_vectors)
            anchor_grad.div_(temperature)
        keep = needs_class_logits or any(needs_blocks)
        ctx.temperature, ctx.specs, ctx.slots = temperature, specs, slots
        ctx.widths, ctx.num_class = widths, num_class
        ctx.save_for_backward(
            anchor_grad,
            residual if keep else None,
            anchors if any(needs_blocks) else None,
            class_weight,
        )
        return losses, positive_log_probs

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: _PositiveSetContext, grad_losses: Tensor, grad_log_probs: Tensor | None
    ) -> tuple[Tensor | None, ...]:
        anchor_grad, residual, anchors, class_weight = ctx.saved_tensors  # grad_log_probs is 0
        grad = grad_losses[:, None]
        grad_anchors = grad_class = None
        if anchor_grad is not None:
            grad_anchors = anchor_grad * grad
        if ctx.needs_input_grad[7]:
            grad_class = residual[:, : ctx.num_class] * grad
        grads: list[Tensor | None] = [None] * len(ctx.specs)
        if anchors is not None:
            scaled = anchors * (grad / ctx.temperature)  # g_i a_i / T
            class_target = None
            if class_weight is not None:  # A_y = sum_{i: y_i = y} w_i g_i a_i / T
                class_target = scaled.new_zeros(scaled.shape[0] + 1, scaled.shape[1])
                class_target.index_add_(0, ctx.slots.anchor, scaled * class_weight[:, None])
            columns = residual[:, ctx.num_class :].split(ctx.widths, dim=1)
            for j, (spec, column) in enumerate(zip(ctx.specs, columns)):
                if not ctx.needs_input_grad[8 + j]:
                    continue
                if spec.diagonal:
                    grads[j] = column * scaled
                    continue
                grad = column.T @ scaled
                slot = ctx.slots.blocks[j] if class_target is not None else None
                if slot is not None and class_target is not None:
                    grad -= class_target[slot]
                    if spec.excludes_anchor:  # no class positive of itself
                        grad += scaled * class_weight[:, None]
                grads[j] = grad
        return (None, None, None, None, None, None, grad_anchors, grad_class, *grads)


def _class_vectors(
    anchors: Tensor, specs: Sequence[_Layout], slots: ClassSlots, features: Sequence[Tensor]
) -> Tensor:
    """``v_i``: the sum of anchor ``i``'s class positives, from float64 class sums."""
    sums = anchors.new_zeros(anchors.shape[0] + 1, anchors.shape[1], dtype=torch.float64)
    for slot, block in zip(slots.blocks, features):
        if slot is not None:
            index_add_float64_(sums, slot, block)
    vectors = sums[slots.anchor].to(anchors.dtype)
    for spec, slot, block in zip(specs, slots.blocks, features):
        if slot is not None and spec.excludes_anchor:
            vectors -= block
    return vectors
