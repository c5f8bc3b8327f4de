"""Batches of :class:`~dscl_plugin.transforms.views.DSCLTransform` samples."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from dscl_plugin import checks


class PatchViewCollate:
    """``collate_fn`` for ``DSCLTransform`` samples of ``num_views`` views (default 2, the
    query and key views), with or without their patches and boxes.

    Accepts ``(views, label)`` (torchvision datasets) and ``(views, label, filename)``
    (``LightlyDataset``) samples and returns
    ``(view_q (B, 3, S, S), view_k (B, 3, S, S), patches (B, L, 3, s, s), boxes (B, L, 4),
    labels (B,) int64)`` (one ``(B, 3, S, S)`` tensor per view before the patches);
    ``patches`` and ``boxes`` are None for samples without them. Filenames are dropped.

    Raises:
        ValueError: ``num_views < 1``.
    """

    def __init__(self, num_views: int = 2) -> None:
        checks.integer("num_views", num_views, 1)
        self.num_views = num_views

    def __call__(self, batch: Sequence[Sequence[Any]]) -> tuple[Tensor | None, ...]:
        checks.require(len(batch) > 0, "batch", "is empty: PatchViewCollate needs a sample")
        views = [sample[0] for sample in batch]
        num_views = {len(v) for v in views}
        n = self.num_views
        checks.require(
            num_views in ({n}, {n + 2}),
            "batch",
            f"must hold samples of {n} views each, all with or all without patches and boxes "
            "(two views: all [view_q, view_k] or all [view_q, view_k, patches, boxes]); got "
            f"view counts {sorted(num_views)}",
        )
        labels = torch.stack([torch.as_tensor(sample[1]) for sample in batch])
        checks.labels("labels", labels, len(batch))
        stacked = [torch.stack([v[i] for v in views]) for i in range(len(views[0]))]
        if len(stacked) == n:
            return *stacked, None, None, labels.long()
        return *stacked, labels.long()
