"""Batches of :class:`~dscl_plugin.transforms.views.DSCLTransform` samples."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class PatchViewCollate:
    """``collate_fn`` for ``DSCLTransform`` samples.

    Accepts ``(views, label)`` (torchvision datasets) and ``(views, label, filename)``
    (``LightlyDataset``) samples and returns
    ``(view_q (B, 3, S, S), view_k (B, 3, S, S), patches (B, L, 3, s, s), boxes (B, L, 4),
    labels (B,) int64)``; ``patches`` and ``boxes`` are None for two-view samples.
    Filenames are dropped.
    """

    def __call__(
        self, batch: Sequence[Sequence[Any]]
    ) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None, Tensor]:
        if len(batch) == 0:
            raise ValueError("PatchViewCollate got an empty batch.")
        views = [sample[0] for sample in batch]
        num_views = {len(v) for v in views}
        if num_views not in ({2}, {4}):
            raise ValueError(
                "Every sample's views must be [view_q, view_k] or "
                f"[view_q, view_k, patches, boxes]; got view counts {sorted(num_views)}."
            )
        labels = torch.tensor([int(sample[1]) for sample in batch], dtype=torch.long)
        stacked = [torch.stack([v[i] for v in views]) for i in range(len(views[0]))]
        if len(stacked) == 2:
            stacked += [None, None]
        view_q, view_k, patches, boxes = stacked
        return view_q, view_k, patches, boxes, labels
