"""CIFAR-10-LT / CIFAR-100-LT: torchvision CIFAR with an exponential train profile.

Train: ``n_c = floor(n_max * rho ** (-c / (C - 1)))`` images of class c, ``n_max`` = 5000
(CIFAR-10) or 500 (CIFAR-100); rho = 100 gives 12,406 / 10,847 images. Test: the full,
balanced CIFAR test set.
"""

from pathlib import Path

import numpy as np
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from dscl_plugin.data.base import ArrayImageDataset, Transform
from dscl_plugin.data.longtail import long_tail_counts, select_per_class
from dscl_plugin.errors import DataError

# name -> (torchvision class name, number of classes, images per class in the full train set)
CIFAR_SOURCES = {
    "cifar10_lt": ("CIFAR10", 10, 5000),
    "cifar100_lt": ("CIFAR100", 100, 500),
}


def damaged_file(source: type[datasets.CIFAR10], root: Path) -> Path | None:
    """The first file of torchvision's ``source`` archive under ``root`` that is there but
    not intact (its MD5 differs from the published file's), if any."""
    folder = root / source.base_folder
    meta = (source.meta["filename"], source.meta["md5"])
    for name, md5 in [*source.train_list, *source.test_list, meta]:
        path = Path(folder, name)
        if path.is_file() and not check_integrity(str(path), md5):
            return path
    return None


def cifar_lt(
    name: str,
    split: str,
    transform: Transform | None = None,
    root: str = "data",
    imbalance_factor: float = 100.0,
    download: bool = False,
    seed: int = 0,
) -> ArrayImageDataset:
    """Build ``cifar10_lt`` / ``cifar100_lt`` ``split`` ("train" or "test") from ``root``.

    The train subset is chosen by :func:`select_per_class` with ``seed``; ``.indices``
    holds the positions of the kept images in the torchvision dataset.

    Raises:
        FileNotFoundError: the archive is not under ``root`` (and ``download`` is off).
        DataError: a file of the archive is empty, truncated or corrupt, naming it.
    """
    source, num_classes, n_max = CIFAR_SOURCES[name]
    try:
        full = getattr(datasets, source)(root, train=split == "train", download=download)
    except RuntimeError as err:
        if download:
            raise
        damaged = damaged_file(getattr(datasets, source), Path(root))
        if damaged is not None:
            what = "empty" if damaged.stat().st_size == 0 else "truncated or corrupt"
            raise DataError(
                f"{source} file '{damaged}' is {what} (its MD5 is not the published "
                "file's): delete it and set data.download=true, or copy the original there"
            ) from None
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
