"""Batches of :class:`~dscl_plugin.transforms.views.DSCLTransform` samples."""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from dscl_plugin import checks


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
        checks.require(len(batch) > 0, "batch", "is empty: PatchViewCollate needs a sample")
        views = [sample[0] for sample in batch]
        num_views = {len(v) for v in views}
        checks.require(
            num_views in ({2}, {4}),
            "batch",
            "must hold samples whose views are all [view_q, view_k] or all [view_q, view_k, "
            f"patches, boxes]; got view counts {sorted(num_views)}",
        )
        labels = torch.stack([torch.as_tensor(sample[1]) for sample in batch])
        checks.labels("labels", labels, len(batch))
        stacked = [torch.stack([v[i] for v in views]) for i in range(len(views[0]))]
        if len(stacked) == 2:
            return stacked[0], stacked[1], None, None, labels.long()
        view_q, view_k, patches, boxes = stacked
        return view_q, view_k, patches, boxes, labels.long()
