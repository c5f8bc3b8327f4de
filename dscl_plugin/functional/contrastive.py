"""Cross-entropy kernels of the DSCL and SupCon losses, with fused backward passes.

Every loss here is ``loss_r = logsumexp_c l_rc - sum_c w_rc l_rc`` over a row of
logits ``l_r`` with a target distribution ``w_r``; its gradient is
``softmax(l_r) - w_r``. The fused version writes the (anchors, candidates) logit matrix
once, turns it into its softmax in place and keeps nothing else of that size, so the
backward pass is little more than its matmuls.
"""

from collections.abc import Sequence
from typing import NamedTuple, Protocol

import torch
from torch import Tensor

from dscl_plugin.functional.autograd import AutogradContext

_QUEUE_CHUNK = 8192  # queue rows converted to float64 at a time for the class sums
NORM_EPS = 1e-12  # as torch.nn.functional.normalize


def compute_dtype(x: Tensor) -> torch.dtype:
    """The dtype the losses compute logits in: float32, or float64 for float64 inputs
    (never half precision, also under autocast)."""
    return torch.promote_types(x.dtype, torch.float32)


def decoupled_cross_entropy(
    logits: Tensor, own_index: Tensor, positive_mask: Tensor, alpha: float | None
) -> Tensor:
    """Per-anchor cross-entropy between the DSCL target and ``softmax(logits)``.

    ``loss_i = logsumexp_j l_ij - w_own l_{i,own_i} - w_pos / |P_i| sum_{j in P_i} l_ij``

    with ``w_own = alpha`` and ``w_pos = 1 - alpha`` (``w_own = 1``, ``w_pos = 0`` when
    ``P_i`` is empty), or with the SupCon weights ``1 / (|P_i| + 1)`` on the own
    positive and on every class positive when ``alpha`` is None. The backward pass
    is the fused ``d loss_i / d l_ij = softmax(l_i)_j - target_ij``.

    Args:
        logits: (B, N) similarities / T; candidates excluded for an anchor are -inf
            (every anchor keeps at least its own column).
        own_index: (B,) column of each anchor's own positive (its other view).
        positive_mask: (B, N) bool, the class positives ``P_i`` (never the own column).
        alpha: weight of the own positive, or None for SupCon.

    Returns:
        (B,) loss of each anchor.
    """
    losses: Tensor = _DecoupledCrossEntropy.apply(logits, own_index, positive_mask, alpha)
    return losses


class Candidates(NamedTuple):
    """A batch of anchors and what they are compared with: (B, D) ``query`` features (the
    anchors) and ``key`` features (their other views) with (B,) integer ``labels``, and
    optionally a (K, D) ``queue`` of past keys with (K,) ``queue_labels`` (both or
    neither; K > 0), all on one device."""

    query: Tensor
    key: Tensor
    labels: Tensor
    queue: Tensor | None = None
    queue_labels: Tensor | None = None


def dscl_cross_entropy(
    candidates: Candidates,
    alpha: float | None,
    temperature: float,
    queue_normalized: bool = False,
) -> Tensor:
    """Mean :func:`decoupled_cross_entropy` of the queries against ``[queries, keys, queue]``.

    Features are L2-normalised here (the queue only if ``queue_normalized`` is False: a
    queue of unit-norm keys is used as it is, with no K x D copy);
    ``l_ic = q_i . c / T`` over the candidates ``c``
    in ``query`` (without the anchor itself), ``key`` (``k_i`` is the own positive)
    and ``queue``; the class positives are the other candidates labelled ``labels_i``.

    Args:
        candidates: the anchors' features and labels, and the optional queue.
        alpha: weight of the own positive, or None for SupCon.
        temperature: T > 0.
        queue_normalized: the queue rows have unit norm already.

    Returns:
        The loss averaged over the B anchors (a scalar).
    """
    query, key, labels, queue, queue_labels = candidates
    features = (query, key) if queue is None else (query, key, queue)
    loss: Tensor = _DSCLCrossEntropy.apply(
        alpha, temperature, labels, queue_labels, queue_normalized, *features
    )
    return loss


def decoupled_weights(num_pos: Tensor, alpha: float | None) -> tuple[Tensor, Tensor]:
    """Target weight of the own positive and of each class positive, per anchor."""
    has_pos = (num_pos > 0).to(num_pos.dtype)
    if alpha is None:
        w_own = 1.0 / (num_pos + 1.0)
        return w_own, w_own * has_pos
    return 1.0 - (1.0 - alpha) * has_pos, (1.0 - alpha) * has_pos / num_pos.clamp(min=1.0)


def softmax_and_logsumexp_(logits: Tensor) -> Tensor:
    """Turns ``logits`` (rows, N) into ``softmax(logits)`` in place; returns logsumexp.

    ``logsumexp_r = max_c l_rc - log max_c p_rc``: the largest probability is at
    least 1 / N, so its log is accurate, and no second (rows, N) buffer is needed.
    """
    row_max = logits.amax(dim=1)
    prob = torch.softmax(logits, dim=1, out=logits)
    return row_max - prob.amax(dim=1).log()


class _DecoupledCrossEntropy(torch.autograd.Function):
    """Dense :func:`decoupled_cross_entropy`; saves only ``softmax - target``."""

    @staticmethod
    def forward(
        ctx: AutogradContext,
        logits: Tensor,
        own_index: Tensor,
        positive_mask: Tensor,
        alpha: float | None,
    ) -> Tensor:
        own = logits.gather(1, own_index[:, None]).squeeze(1)
        positives = torch.where(positive_mask, logits, 0.0)
        pos_sum = positives.sum(dim=1)
        num_pos = positive_mask.sum(dim=1, dtype=logits.dtype)
        residual = logits.clone()
        lse = softmax_and_logsumexp_(residual)
        w_own, w_each = decoupled_weights(num_pos, alpha)
        if ctx.needs_input_grad[0]:
            zero = logits.new_zeros(())
            target = torch.where(positive_mask, w_each[:, None], zero, out=positives)
            residual.sub_(target).scatter_add_(1, own_index[:, None], -w_own[:, None])
            ctx.save_for_backward(residual)
        return lse - w_own * own - w_each * pos_sum

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: AutogradContext, grad_losses: Tensor) -> tuple[Tensor, None, None, None]:
        (residual,) = ctx.saved_tensors
        return residual * grad_losses[:, None], None, None, None


class _DSCLContext(AutogradContext, Protocol):
    """What the forward pass keeps on ``ctx`` besides the saved tensors."""

    temperature: float
    block_sizes: list[int]


class _DSCLCrossEntropy(torch.autograd.Function):
    """Fused :func:`dscl_cross_entropy`: normalisation, logits, loss and backward.

    Only the (B, N) logits are materialised (scaled by 1/T inside the matmul) and
    become ``softmax`` in place. The class-positive part of the target never enters
    that matrix: with ``S_y`` the sum of all candidates of class ``y``, the positives
    of anchor ``i`` sum to ``v_i = S_{y_i} - q_i - k_i``, so
    ``sum_{c in P_i} l_ic = q_i . v_i / T`` and, with ``g_i = g / B`` and ``a_i = q_i / T``,

    - ``dL/da_i = g_i (sum_c p_ic c - w_own_i k_i - w_each_i v_i)``,
    - ``dL/dc = sum_i g_i p_ic a_i - A_{y(c)}``, ``A_y = sum_{i: y_i = y} g_i w_each_i a_i``,
      corrected for the anchor's own query (no positive) and own key (``w_own``),

    followed by the backward pass of the normalisation. With a queue, ``S_y`` is
    accumulated in float64 (one pass over the queue), so a class with tens of
    thousands of queue entries sums as accurately as a pairwise float32 sum. Inputs
    without grad (the queue, EMA keys) get no ``N x D`` product.
    """

    @staticmethod
    def forward(
        ctx: _DSCLContext,
        alpha: float | None,
        temperature: float,
        labels: Tensor,
        queue_labels: Tensor | None,
        queue_normalized: bool,
        *features: Tensor,
    ) -> Tensor:
        normalize = (True, True, not queue_normalized)[: len(features)]
        norms = [x.norm(dim=1, keepdim=True) if n else None for x, n in zip(features, normalize)]
        blocks = [x if n is None else x / n.clamp_min(NORM_EPS) for x, n in zip(features, norms)]
        query, key = blocks[0], blocks[1]
        batch_size = query.shape[0]
        logits = query.new_empty(batch_size, sum(block.shape[0] for block in blocks))
        for block, columns in zip(blocks, _column_blocks(logits, blocks)):
            torch.addmm(columns, query, block.T, beta=0, alpha=1 / temperature, out=columns)
        own = logits[:, batch_size:].diagonal().clone()
        logits[:, :batch_size].diagonal().fill_(float("-inf"))  # never its own candidate
        lse = softmax_and_logsumexp_(logits)

        queue = blocks[2] if len(blocks) == 3 else None
        positives, num_pos, own_slot, queue_slot = class_positives(
            query, key, labels, queue, queue_labels
        )
        pos_sum = (query * positives).sum(dim=1) / temperature
        w_own, w_each = decoupled_weights(num_pos, alpha)
        needs = ctx.needs_input_grad[5:]
        if any(needs):
            expected = None  # sum_c p_ic c, the query's gradient needs it
            if needs[0]:
                expected = torch.zeros_like(query)
                for block, prob_block in zip(blocks, _column_blocks(logits, blocks)):
                    expected.addmm_(prob_block, block)
            # no candidate block without grad is saved: the queue may be a view of a
            # memory bank that is updated before the backward pass
            saved = [block if j < 2 or needs[j] else None for j, block in enumerate(blocks)]
            ctx.temperature = temperature
            ctx.block_sizes = [block.shape[0] for block in blocks]
            ctx.save_for_backward(
                logits,
                positives,
                w_own,
                w_each,
                own_slot,
                queue_slot,
                expected,
                *saved,
                *norms,
            )
        return (lse - w_own * own - w_each * pos_sum).mean()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: _DSCLContext, grad_loss: Tensor) -> tuple[Tensor | None, ...]:
        prob, positives, w_own, w_each, own_slot, queue_slot, expected, *saved = ctx.saved_tensors
        num_blocks = len(saved) // 2
        blocks, norms = saved[:num_blocks], saved[num_blocks:]
        query, key = blocks[0], blocks[1]
        needs = ctx.needs_input_grad[5:]
        scale = grad_loss * (1.0 / (query.shape[0] * ctx.temperature))  # g_i / T
        weighted = query * scale  # g_i a_i
        class_target = query.new_zeros(query.shape[0] + 1, query.shape[1])
        class_target.index_add_(0, own_slot, weighted * w_each[:, None])
        slots = (own_slot, own_slot, queue_slot)
        prob_blocks = prob.split(ctx.block_sizes, dim=1)
        grads: list[Tensor | None] = [None] * num_blocks
        for j, prob_block in enumerate(prob_blocks):
            if not needs[j]:
                continue
            grad = prob_block.T @ weighted - class_target[slots[j]]
            if j == 0:
                grad += weighted * w_each[:, None]  # the anchor is no positive of its own
                grad_anchor = expected - w_own[:, None] * key - w_each[:, None] * positives
                grad += grad_anchor * scale
            elif j == 1:
                grad += weighted * (w_each - w_own)[:, None]  # the own key weighs w_own
            norm = norms[j]
            grads[j] = grad if norm is None else _normalize_backward(grad, blocks[j], norm)
        return (None, None, None, None, None, *grads)


def class_positives(
    query: Tensor,
    key: Tensor,
    labels: Tensor,
    queue: Tensor | None,
    queue_labels: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Sum ``v_i`` and number ``|P_i|`` of each anchor's class positives, from class sums.

    With ``S_y`` the sum of all candidates ``[query, key, queue]`` of class ``y``,
    ``v_i = S_{y_i} - q_i - k_i``. Classes are slots in the sorted batch labels (static
    shapes, no host sync). Returns ``(v (B, D), |P_i| (B,), own_slot (B,), queue_slot
    (K,) or None)``, the slots as the fused backward pass uses them.
    """
    batch_size = query.shape[0]
    labels = labels.long()
    sorted_labels = labels.sort().values
    own_slot = torch.searchsorted(sorted_labels, labels)
    # 2 (query and key) per batch image of the class, minus the anchor's own pair
    num_pos = 2 * (torch.searchsorted(sorted_labels, labels, right=True) - own_slot) - 2
    pairs = query + key
    # float64 sums when a queue adds many entries per class (2B alone are few)
    sum_dtype = torch.float64 if queue is not None else pairs.dtype
    class_sums = pairs.new_zeros(batch_size + 1, pairs.shape[1], dtype=sum_dtype)
    class_sums.index_add_(0, own_slot, pairs.to(sum_dtype))
    queue_slot = None
    if queue is not None and queue_labels is not None:
        queue_slot = label_slots(sorted_labels, queue_labels)
        index_add_float64_(class_sums, queue_slot, queue)
        queue_counts = own_slot.new_zeros(batch_size + 1)
        queue_counts.index_add_(0, queue_slot, torch.ones_like(queue_slot))
        num_pos = num_pos + queue_counts[own_slot]
    positives = class_sums[own_slot].to(query.dtype) - pairs
    return positives, num_pos.to(query.dtype), own_slot, queue_slot


def label_slots(sorted_labels: Tensor, row_labels: Tensor) -> Tensor:
    """Class slot of each labelled row (a queue entry): the first position of its class
    among the sorted batch labels (as for the batch), or B for classes absent from the
    batch. Static shapes, no host sync."""
    batch_size = sorted_labels.shape[0]
    row_labels = row_labels.long()
    slot = torch.searchsorted(sorted_labels, row_labels).clamp_(max=batch_size - 1)
    return torch.where(sorted_labels[slot] == row_labels, slot, batch_size)


def _normalize_backward(grad: Tensor, normalized: Tensor, norm: Tensor) -> Tensor:
    """Backward of ``x / max(|x|, eps)`` given its output and ``|x|`` (as F.normalize)."""
    radial = (grad * normalized).sum(dim=1, keepdim=True) * (norm >= NORM_EPS)
    return (grad - radial * normalized) / norm.clamp_min(NORM_EPS)


def index_add_float64_(sums: Tensor, slot: Tensor, rows: Tensor) -> None:
    """``sums[slot[j]] += rows[j]`` in float64, converting ``rows`` a chunk at a time."""
    if rows.dtype == torch.float64:
        sums.index_add_(0, slot, rows)
        return
    buffer = rows.new_empty(min(_QUEUE_CHUNK, rows.shape[0]), rows.shape[1], dtype=torch.float64)
    for start in range(0, rows.shape[0], _QUEUE_CHUNK):
        chunk = rows[start : start + _QUEUE_CHUNK]
        converted = buffer[: chunk.shape[0]].copy_(chunk)
        sums.index_add_(0, slot[start : start + _QUEUE_CHUNK], converted)


def _column_blocks(matrix: Tensor, blocks: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """Column views of ``matrix`` (B, N), one per candidate block."""
    return torch.split(matrix, [block.shape[0] for block in blocks], dim=1)
