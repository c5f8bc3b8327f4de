"""Long-tailed datasets, class-balanced sampling and shot groups.

:func:`build_dataset` returns a dataset whose items are ``(transform(PIL RGB image), label)``,
with ``.targets`` (list of int), ``.num_classes`` and ``.class_counts``.
"""

from pathlib import Path

from dscl_plugin import checks
from dscl_plugin.data.base import ArrayImageDataset, FileImageDataset, ImageDataset, Transform
from dscl_plugin.data.cifar_lt import CIFAR_SOURCES, cifar_lt
from dscl_plugin.data.digits_lt import digits_lt
from dscl_plugin.data.fashion_mnist_lt import fashion_mnist_lt
from dscl_plugin.data.image_folder import image_folder
from dscl_plugin.data.indexed import IndexedImages
from dscl_plugin.data.list_file import (
    LIST_FILE_SOURCES,
    list_file_dataset,
    named_list_file_dataset,
    read_list_file,
)
from dscl_plugin.data.longtail import long_tail_counts, select_per_class
from dscl_plugin.data.samplers import ClassBalancedSampler
from dscl_plugin.data.shots import empty_groups, shot_groups

# held in memory as uint8 arrays (ArrayImageDataset), with fixed train and test splits:
# the datasets of data.pipeline: device
IN_MEMORY_DATASETS = ("digits_lt", "fashion_mnist_lt", *CIFAR_SOURCES)
# read from image files: the list-file datasets and any ImageFolder tree
FILE_DATASETS = (*LIST_FILE_SOURCES, "image_folder")
DATASET_NAMES = (*IN_MEMORY_DATASETS, *FILE_DATASETS)


def build_dataset(
    name: str,
    split: str,
    transform: Transform | None = None,
    root: str | Path = "data",
    imbalance_factor: float | None = None,
    input_size: int | None = None,
    download: bool = False,
    seed: int = 0,
    list_file: str | Path | None = None,
) -> ImageDataset:
    """Build the ``split`` of dataset ``name``.

    Args:
        name: one of :data:`DATASET_NAMES`.
        split: "train" or "test" ("val" too for the :data:`FILE_DATASETS`).
        transform: applied to each PIL RGB image.
        root: data directory (unused by ``digits_lt``; ``fashion_mnist_lt`` falls back to
            Debian's ``/usr/share/datasets/fashion-mnist``).
        imbalance_factor: rho = n_max / n_min of the train split; None = the dataset's
            standard (``digits_lt`` 10, ``fashion_mnist_lt`` and CIFAR-LT 100,
            ``image_folder`` no subsampling).
            Must be None for the list-file datasets, which are long-tailed already.
        input_size: image side of ``digits_lt`` (default 32); other datasets leave sizing
            to ``transform``.
        download: let torchvision download CIFAR into ``root``.
        seed: seed of the subsampling (and of the ``digits_lt`` test split).
        list_file: explicit list file for ``imagenet_lt`` / ``places_lt`` / ``inat2018``.
    """
    checks.one_of("name", name, DATASET_NAMES)
    splits = ("train", "test") if name in IN_MEMORY_DATASETS else ("train", "val", "test")
    checks.require(
        split in splits, "split", f"must be one of {list(splits)} for {name}, got {split!r}"
    )
    if name == "digits_lt":
        return digits_lt(
            split,
            transform,
            imbalance_factor=10.0 if imbalance_factor is None else imbalance_factor,
            input_size=32 if input_size is None else input_size,
            seed=seed,
        )
    rho = 100.0 if imbalance_factor is None else imbalance_factor
    if name == "fashion_mnist_lt":
        return fashion_mnist_lt(split, transform, root, rho, seed)
    if name in CIFAR_SOURCES:
        return cifar_lt(name, split, transform, str(root), rho, download, seed)
    if name == "image_folder":
        return image_folder(root, split, transform, imbalance_factor, seed)
    checks.require(
        imbalance_factor is None,
        "imbalance_factor",
        f"must be None (null in a config) for {name}: its list files are long-tailed "
        f"already, got {imbalance_factor}",
    )
    return named_list_file_dataset(name, split, transform, root, list_file)


__all__ = [
    "ArrayImageDataset",
    "ClassBalancedSampler",
    "DATASET_NAMES",
    "FILE_DATASETS",
    "FileImageDataset",
    "ImageDataset",
    "IN_MEMORY_DATASETS",
    "IndexedImages",
    "build_dataset",
    "empty_groups",
    "list_file_dataset",
    "long_tail_counts",
    "read_list_file",
    "select_per_class",
    "shot_groups",
]
