"""``fashion_mnist_lt``: Fashion-MNIST (Xiao et al. 2017) with a long-tailed train split.

Reads the four original IDX files (``.gz`` as distributed, or unpacked) from ``root`` or,
when they are not there, from Debian's ``dataset-fashion-mnist`` package
(``/usr/share/datasets/fashion-mnist``); nothing is downloaded. Train: class c keeps
``n_c = floor(6000 * rho ** (-c / 9))`` images (rho = 100: 6000 ... 60, 14,886 images;
rho = 10: 6000 ... 600, 24,516), chosen per class by a seeded shuffle. Test: the full,
balanced 10,000 images. The 28x28 grey images are returned as RGB PIL images (the grey
value in all three channels), so every backbone takes them; sizing is left to the
transform.
"""

import gzip
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
from torch import Tensor
from torchvision.datasets.mnist import read_image_file, read_label_file

from dscl_plugin.data.base import ArrayImageDataset, ImageArray, LabelArray, Transform
from dscl_plugin.data.longtail import long_tail_counts, select_per_class
from dscl_plugin.errors import DataError

NUM_CLASSES = 10
CLASS_NAMES = (
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
)
DEBIAN_ROOT = Path("/usr/share/datasets/fashion-mnist")
INSTALL_HINT = "apt-get install dataset-fashion-mnist"
REPLACE_HINT = f"; the original files come with {INSTALL_HINT!r} (in {DEBIAN_ROOT})"
IMAGE_SHAPE = (28, 28)
# split -> (images file, labels file), as the data set is distributed
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


def find_idx_file(name: str, roots: Sequence[Path]) -> Path:
    """The first of ``root/name``, ``root/name.gz`` (and the same under torchvision's
    ``root/FashionMNIST/raw``) that exists, over ``roots`` in order.

    Raises:
        FileNotFoundError: in none of the roots, naming every root and the install command.
    """
    for root in roots:
        for folder in (root, root / "FashionMNIST" / "raw"):
            for candidate in (folder / name, folder / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    searched = " nor ".join(f"'{root}'" for root in roots)
    raise FileNotFoundError(
        f"Fashion-MNIST file {name}[.gz] not found in {searched}: run "
        f"'{INSTALL_HINT}' (files in {DEBIAN_ROOT}) or put the IDX files in data.root."
    )


@contextmanager
def _unpacked(path: Path) -> Iterator[Path]:
    """``path``, or for a ``.gz`` its content in a temporary file."""
    if path.suffix != ".gz":
        yield path
        return
    with gzip.open(path, "rb") as source, tempfile.NamedTemporaryFile() as unpacked:
        shutil.copyfileobj(source, unpacked)
        unpacked.flush()
        yield Path(unpacked.name)


def read_idx(path: Path, reader: Callable[[str], Tensor], shape: tuple[int, ...]) -> np.ndarray:
    """torchvision's IDX ``reader`` on ``path`` (``.gz`` or unpacked); the array's shape
    after its first axis must be ``shape``.

    Raises:
        DataError: the file is empty, truncated or corrupt (not a complete gzip or IDX
            file, or an array of another shape); the message names the file.
    """
    try:
        with _unpacked(path) as idx:
            array = reader(str(idx)).numpy() if idx.stat().st_size else None
    except (gzip.BadGzipFile, EOFError, zlib.error) as error:
        raise DataError(
            f"Fashion-MNIST file '{path}' is not a complete gzip file ({error}){REPLACE_HINT}"
        ) from None
    except (ValueError, AssertionError, RuntimeError) as error:  # torchvision's checks
        reason = str(error).strip().split("\n")[0] or "unexpected header"
        raise DataError(
            f"Fashion-MNIST file '{path}' is not a complete IDX file (truncated or corrupt: "
            f"{reason}){REPLACE_HINT}"
        ) from None
    if array is None:
        raise DataError(f"Fashion-MNIST file '{path}' is empty{REPLACE_HINT}")
    if array.shape[1:] != shape:
        raise DataError(
            f"Fashion-MNIST file '{path}' holds an array of shape {tuple(array.shape)}, "
            f"not (N{''.join(f', {n}' for n in shape)}){REPLACE_HINT}"
        )
    return array


@lru_cache(maxsize=4)
def load_split(root: Path, split: str) -> tuple[ImageArray, LabelArray]:
    """``(images uint8 (N, 28, 28), labels int64 (N,))`` of ``split`` ("train"/"test"),
    searched in ``root`` then in :data:`DEBIAN_ROOT`."""
    roots = list(dict.fromkeys([Path(root), DEBIAN_ROOT]))
    image_name, label_name = IDX_FILES[split]
    image_file = find_idx_file(image_name, roots)
    images = read_idx(image_file, read_image_file, IMAGE_SHAPE)
    label_file = find_idx_file(label_name, roots)
    labels = read_idx(label_file, read_label_file, ())
    if len(images) != len(labels):
        raise DataError(
            f"Fashion-MNIST files '{image_file}' ({len(images)} images) and '{label_file}' "
            f"({len(labels)} labels) do not belong together{REPLACE_HINT}"
        )
    if labels.max(initial=0) >= NUM_CLASSES:
        raise DataError(
            f"Fashion-MNIST file '{label_file}' holds label {labels.max()}, not a class of "
            f"0 ... {NUM_CLASSES - 1}{REPLACE_HINT}"
        )
    return images, labels.astype(np.int64)


def fashion_mnist_lt(
    split: str,
    transform: Transform | None = None,
    root: str | Path = "data",
    imbalance_factor: float = 100.0,
    seed: int = 0,
) -> ArrayImageDataset:
    """The ``split`` ("train" long-tailed, "test" balanced) of ``fashion_mnist_lt``.

    Train class c keeps ``floor(n_max * rho ** (-c / 9))`` images, ``n_max`` = the
    smallest class of the original train split (6000). ``.indices`` holds the positions
    of the kept images in the original split.
    """
    images, labels = load_split(Path(root), split)
    if split == "train":
        n_max = int(np.bincount(labels, minlength=NUM_CLASSES).min())  # 6000 in Fashion-MNIST
        counts = long_tail_counts(n_max, NUM_CLASSES, imbalance_factor)
        indices = select_per_class(labels, counts, seed)
    else:
        indices = np.arange(len(labels))
    dataset = ArrayImageDataset(images[indices], labels[indices], NUM_CLASSES, transform, indices)
    dataset.class_names = list(CLASS_NAMES)
    return dataset
