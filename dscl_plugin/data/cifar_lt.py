"""CIFAR-10-LT / CIFAR-100-LT: torchvision CIFAR with an exponential train profile.

Train: ``n_c = floor(n_max * rho ** (-c / (C - 1)))`` images of class c, ``n_max`` = 5000
(CIFAR-10) or 500 (CIFAR-100); rho = 100 gives 12,406 / 10,847 images. Test: the full,
balanced CIFAR test set.
"""

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torchvision import datasets

from dscl_plugin.data.base import ArrayImageDataset
from dscl_plugin.data.longtail import long_tail_counts, select_per_class

# name -> (torchvision class name, number of classes, images per class in the full train set)
CIFAR_SOURCES = {
    "cifar10_lt": ("CIFAR10", 10, 5000),
    "cifar100_lt": ("CIFAR100", 100, 500),
}


def cifar_lt(
    name: str,
    split: str,
    transform: Callable | None = None,
    root: str = "data",
    imbalance_factor: float = 100.0,
    download: bool = False,
    seed: int = 0,
) -> ArrayImageDataset:
    """Build ``cifar10_lt`` / ``cifar100_lt`` ``split`` ("train" or "test") from ``root``.

    The train subset is chosen by :func:`select_per_class` with ``seed``; ``.indices``
    holds the positions of the kept images in the torchvision dataset.
    """
    source, num_classes, n_max = CIFAR_SOURCES[name]
    try:
        full = getattr(datasets, source)(root, train=split == "train", download=download)
    except RuntimeError as err:
        if download:
            raise
        raise FileNotFoundError(
            f"{source} not found (or corrupted) under root '{Path(root).resolve()}': "
            "set data.download=true to download it, or point data.root at it"
        ) from err
    targets = np.asarray(full.targets)
    if split == "train":
        counts = long_tail_counts(n_max, num_classes, imbalance_factor)
        indices = select_per_class(targets, counts, seed)
    else:
        indices = np.arange(len(targets))
    dataset = ArrayImageDataset(
        full.data[indices], targets[indices], num_classes, transform, indices
    )
    dataset.class_names = list(full.classes)
    return dataset
