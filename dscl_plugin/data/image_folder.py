"""Any ``root/<split>/<class>/<image>`` tree (``ImageFolder``), optionally long-tailed."""

from collections.abc import Callable
from pathlib import Path

import numpy as np
from torchvision.datasets import ImageFolder

from dscl_plugin.data.base import FileImageDataset
from dscl_plugin.data.longtail import long_tail_counts, select_per_class


def image_folder(
    root: str | Path,
    split: str,
    transform: Callable | None = None,
    imbalance_factor: float | None = None,
    seed: int = 0,
) -> FileImageDataset:
    """Images of ``root/split`` with ImageFolder's (sorted) class indices.

    With ``imbalance_factor`` rho (train split only), class c keeps
    ``min(size_c, floor(n_max * rho ** (-c / (C - 1))))`` images, ``n_max`` = the largest
    class, chosen by :func:`select_per_class` with ``seed``.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image folder not found: '{folder}' (expected root/{split}/<class>/<image>)"
        )
    full = ImageFolder(str(folder))
    paths = [p for p, _ in full.samples]
    targets = np.asarray(full.targets)
    num_classes = len(full.classes)
    if imbalance_factor is not None and split == "train":
        sizes = np.bincount(targets, minlength=num_classes)
        profile = long_tail_counts(int(sizes.max()), num_classes, imbalance_factor)
        keep = select_per_class(targets, np.minimum(sizes, profile), seed)
        paths, targets = [paths[i] for i in keep], targets[keep]
    dataset = FileImageDataset(paths, targets, num_classes, transform)
    dataset.class_names = list(full.classes)
    return dataset
