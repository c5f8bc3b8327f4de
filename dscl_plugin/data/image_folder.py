"""Any ``root/<split>/<class>/<image>`` tree (``ImageFolder``), optionally long-tailed, and
what such a tree holds (:func:`survey_image_folder`)."""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torchvision.datasets import ImageFolder

from dscl_plugin.data.base import FileImageDataset, Transform
from dscl_plugin.data.longtail import long_tail_counts, select_per_class
from dscl_plugin.errors import DataError

SPLITS = ("train", "val", "test")


def image_folder(
    root: str | Path,
    split: str,
    transform: Transform | None = None,
    imbalance_factor: float | None = None,
    seed: int = 0,
) -> FileImageDataset:
    """Images of ``root/split`` with ImageFolder's (sorted) class indices.

    With ``imbalance_factor`` rho (train split only), class c keeps
    ``min(size_c, floor(n_max * rho ** (-c / (C - 1))))`` images, ``n_max`` = the largest
    class, chosen by :func:`select_per_class` with ``seed``.

    Raises:
        FileNotFoundError: ``root/split`` is not a folder.
        DataError: the classes of ``root/split`` are not those of ``root/train`` (a label
            would mean another class in each split).
    """
    full = _split(root, split)
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


def _split(root: str | Path, split: str) -> ImageFolder:
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(
            f"image folder not found: '{folder}' (expected root/{split}/<class>/<image>)"
        )
    found = ImageFolder(str(folder))
    train = Path(root) / "train"
    if split != "train" and train.is_dir():
        classes = sorted(p.name for p in train.iterdir() if p.is_dir())
        if found.classes != classes:
            only = sorted(set(found.classes) - set(classes))
            missing = sorted(set(classes) - set(found.classes))
            raise DataError(
                f"image folder '{folder}' must hold the classes of '{train}'; it has "
                f"{only or 'none'} that train/ lacks and lacks {missing or 'none'}"
            )
    return found


@dataclass(frozen=True)
class FolderSurvey:
    """What an image folder holds: ``class_names`` (sorted, as the labels), the images
    per class of each split found (``counts["train"]``, ``counts["test"]``, and
    ``counts["val"]`` when there is one), the median longer side in pixels of the
    ``sampled`` training images and whether all of them are ``grey`` (one channel, or
    three equal ones)."""

    root: Path
    class_names: list[str]
    counts: dict[str, list[int]]
    side: int
    grey: bool
    sampled: int

    @property
    def num_train(self) -> int:
        return sum(self.counts["train"])


def survey_image_folder(root: str | Path, per_class: int = 4) -> FolderSurvey:
    """The :class:`FolderSurvey` of ``root/{train,test}/<class>/<image>`` (``val/`` too if
    present), from the file lists and the first ``per_class`` images of each training
    class.

    Raises:
        FileNotFoundError: ``root/train`` or ``root/test`` is not a folder.
        DataError: a split holds other classes than ``train/``, or a sampled image
            cannot be read.
    """
    splits = {s: _split(root, s) for s in SPLITS if s != "val" or (Path(root) / s).is_dir()}
    train = splits["train"]
    counts = {
        s: np.bincount(f.targets, minlength=len(train.classes)).tolist() for s, f in splits.items()
    }
    targets = np.asarray(train.targets)
    sample = [
        i for c in range(len(train.classes)) for i in np.flatnonzero(targets == c)[:per_class]
    ]
    sides, grey = [], True
    for i in sample:
        dataset = FileImageDataset([train.samples[i][0]], [0], 1)
        image = dataset.load_image(0)  # RGB; names a file it cannot read
        sides.append(max(image.size))
        pixels = np.asarray(image)
        grey = grey and bool((pixels == pixels[..., :1]).all())
    return FolderSurvey(
        Path(root), list(train.classes), counts, int(np.median(sides)), grey, len(sample)
    )
