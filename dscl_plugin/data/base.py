"""Image datasets returning ``(transform(PIL RGB image), int label)``."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

from dscl_plugin import checks
from dscl_plugin.errors import DataError

Labels = Sequence[int] | np.ndarray
# a dataset's uint8 images and int64 labels as loaded, of any shape
ImageArray = np.ndarray[tuple[int, ...], np.dtype[np.uint8]]
LabelArray = np.ndarray[tuple[int, ...], np.dtype[np.int64]]
# what a dataset applies to each PIL image: a tensor, the views of a training sample, ...
Transform = Callable[[Image.Image], Any]


class ImageDataset(Dataset[tuple[Any, int]]):
    """Labelled images; subclasses implement ``load_image(i) -> PIL RGB image``.

    Attributes:
        targets: the label of every sample.
        num_classes: C; labels lie in ``[0, C)``.
        transform: applied to the PIL image (None returns the PIL image).
        class_names: the name of each class where the builder knows them, else None.
    """

    def __init__(
        self,
        targets: Labels,
        num_classes: int,
        transform: Transform | None = None,
    ) -> None:
        self.targets: list[int] = [int(t) for t in targets]
        self.num_classes = int(num_classes)
        self.transform = transform
        self.class_names: list[str] | None = None
        bad = [t for t in self.targets if not 0 <= t < self.num_classes]
        checks.require(not bad, "targets", f"must lie in [0, {self.num_classes}), got {bad[:5]}")

    @property
    def class_counts(self) -> list[int]:
        """Number of samples of each class, length ``num_classes``."""
        counts: list[int] = np.bincount(self.targets, minlength=self.num_classes).tolist()
        return counts

    def load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


class ArrayImageDataset(ImageDataset):
    """Images held in memory as uint8 arrays (N, H, W) grey or (N, H, W, 3) RGB.

    ``indices``: the position of each image in the data set it was taken from (default
    ``0 .. N-1``).
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: Labels,
        num_classes: int,
        transform: Transform | None = None,
        indices: np.ndarray | None = None,
    ) -> None:
        checks.require(
            images.dtype == np.uint8 and images.ndim in (3, 4) and len(images) == len(targets),
            "images",
            "must be uint8 (N, H, W) or (N, H, W, 3) with N = len(targets), "
            f"got {images.dtype} {tuple(images.shape)} and {len(targets)} targets",
        )
        super().__init__(targets, num_classes, transform)
        self.images = images
        self.indices = np.arange(len(images)) if indices is None else indices

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")


class FileImageDataset(ImageDataset):
    """Images read lazily from files with PIL and converted to RGB; a file that is missing
    or cannot be decoded (empty, truncated, corrupt) raises :class:`DataError` naming it."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        targets: Labels,
        num_classes: int,
        transform: Transform | None = None,
    ) -> None:
        checks.require(
            len(paths) == len(targets),
            "paths",
            f"must hold one path per target, got {len(paths)} paths and {len(targets)} targets",
        )
        super().__init__(targets, num_classes, transform)
        self.paths = [str(p) for p in paths]

    def load_image(self, index: int) -> Image.Image:
        path = Path(self.paths[index])
        try:
            with Image.open(path) as image:
                rgb: Image.Image = image.convert("RGB")
                return rgb
        except FileNotFoundError:
            raise DataError(f"image '{path}' not found") from None
        except (OSError, ValueError, SyntaxError) as error:  # PIL's decoding errors
            what = "is empty" if path.stat().st_size == 0 else "cannot be decoded"
            raise DataError(f"image '{path}' {what} ({error})") from None
