"""Drawing a few positives per anchor among its class's rows (KCL's ``k`` positives), with
static shapes and no host sync."""

from typing import NamedTuple

import torch
from torch import Tensor


class ClassRows(NamedTuple):
    """The rows of each anchor's class in a labelled set of rows: they are
    ``order[start_i : start_i + size_i]`` for anchor ``i``."""

    order: Tensor
    start: Tensor
    size: Tensor


def class_rows(labels: Tensor, row_labels: Tensor) -> ClassRows:
    """:class:`ClassRows` of the anchors' ``labels`` (B,) among rows labelled
    ``row_labels`` (K,) (one stable sort of ``row_labels``)."""
    row_labels = row_labels.long()
    sorted_labels, order = row_labels.sort(stable=True)
    labels = labels.long().to(row_labels.device)
    start = torch.searchsorted(sorted_labels, labels)
    end = torch.searchsorted(sorted_labels, labels, right=True)
    return ClassRows(order, start, end - start)


def sample_without_replacement(
    pool_sizes: Tensor, num_samples: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """``num_samples`` distinct positions per anchor, drawn uniformly from
    ``range(pool_sizes[i])``; all of them (in random order) when the pool is smaller.

    Floyd's algorithm, vectorised over the anchors: for ``j = n - m, ..., n - 1`` draw
    ``t`` uniformly from ``[0, j]`` and take ``t``, or ``j`` if ``t`` is taken already;
    every ``m``-subset of ``range(n)`` is equally likely (``m = min(num_samples, n)``).

    Args:
        pool_sizes: (B,) int64 pool size ``n`` of each anchor (>= 0).
        num_samples: ``k >= 1``.
        generator: the source of the uniform draws (its device); None: the default one.

    Returns:
        ``(positions, valid)``, both (B, k): the drawn positions (0 where not valid) and
        whether position ``s`` was drawn (``s < min(k, n)``).
    """
    device = pool_sizes.device
    draw_device = device if generator is None else generator.device
    uniform = torch.rand(
        pool_sizes.shape[0],
        num_samples,
        generator=generator,
        device=draw_device,
        dtype=torch.float64,
    ).to(device)
    taken = pool_sizes.clamp(max=num_samples)
    valid = torch.arange(num_samples, device=device)[None, :] < taken[:, None]
    positions = torch.zeros_like(valid, dtype=torch.long)
    for step in range(num_samples):
        high = pool_sizes - taken + step  # j, valid where step < m
        draw = (uniform[:, step] * (high + 1)).floor().long().minimum(high)
        seen = (positions[:, :step] == draw[:, None]).any(dim=1)
        positions[:, step] = torch.where(seen, high, draw)
    return positions.masked_fill_(~valid, 0), valid


class PoolDraw(NamedTuple):
    """Positives drawn per anchor from its pool (its class's rows, then ``extra`` more
    entries), all (B, k): ``rows`` the row index where ``in_rows``, ``extra`` the index
    among the extra entries elsewhere (0 where unused), ``valid`` which draws exist."""

    rows: Tensor
    extra: Tensor
    in_rows: Tensor
    valid: Tensor


def sample_class_pool(
    labels: Tensor,
    row_labels: Tensor,
    num_samples: int,
    extra: int = 0,
    generator: torch.Generator | None = None,
) -> PoolDraw:
    """KCL's sampled positives: per anchor, ``num_samples`` entries of its pool (the rows
    labelled like it, then ``extra`` entries: TSC's target copies when they are drawn
    with the rows), uniformly without replacement (:func:`sample_without_replacement`),
    or the whole pool when it is smaller.

    Args:
        labels: (B,) the anchors' class ids (>= 0).
        row_labels: (K,) class ids of the rows (a label no anchor has, e.g. -1 for an
            empty slot, is never drawn).
        num_samples: ``k >= 1``.
        extra: entries after the class rows in every anchor's pool.
        generator: the source of the draws; None: the default one.
    """
    order, start, count = class_rows(labels, row_labels)
    count = count.to(labels.device)
    positions, valid = sample_without_replacement(count + extra, num_samples, generator)
    in_rows = valid & (positions < count[:, None])
    rows = torch.zeros_like(positions)
    if order.shape[0] > 0:
        index = (start.to(labels.device)[:, None] + positions).clamp_(max=order.shape[0] - 1)
        rows = order.to(labels.device)[index].masked_fill_(~in_rows, 0)
    extra_index = (positions - count[:, None]).masked_fill_(in_rows | ~valid, 0)
    return PoolDraw(rows, extra_index, in_rows, valid)
