"""``(index, label)`` items of an in-memory dataset, for views made on the training device."""

import torch
from torch import Tensor
from torch.utils.data import Dataset

from dscl_plugin import checks
from dscl_plugin.data.base import ArrayImageDataset


class IndexedImages(Dataset[tuple[int, int]]):
    """The samples of an :class:`ArrayImageDataset` as ``(index, label)``, its images as one
    uint8 tensor ``(N, C, H, W)`` (C = 1 for grey, 3 for RGB) to gather batches from.

    A loader over it collates ``(indices (B,), labels (B,))`` without decoding an image;
    ``targets``, ``num_classes`` and ``class_counts`` are the dataset's.

    Raises:
        ValueError: ``dataset`` is not an :class:`ArrayImageDataset`.
    """

    def __init__(self, dataset: ArrayImageDataset) -> None:
        checks.require(
            isinstance(dataset, ArrayImageDataset),
            "dataset",
            f"must be an in-memory ArrayImageDataset, got {type(dataset).__name__}",
        )
        images = torch.from_numpy(dataset.images)  # (N, H, W) or (N, H, W, 3)
        images = images.unsqueeze(1) if images.ndim == 3 else images.permute(0, 3, 1, 2)
        self.images: Tensor = images.contiguous()
        self.targets: list[int] = dataset.targets
        self.num_classes = dataset.num_classes
        self.class_counts: list[int] = dataset.class_counts

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[int, int]:
        return index, self.targets[index]
