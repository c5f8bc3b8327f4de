"""Image datasets returning ``(transform(PIL RGB image), int label)``."""

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from torch.utils.data import Dataset


class ImageDataset(Dataset):
    """Labelled images; subclasses implement ``load_image(i) -> PIL RGB image``.

    Attributes:
        targets: the label of every sample.
        num_classes: C; labels lie in ``[0, C)``.
        transform: applied to the PIL image (None returns the PIL image).
        class_names: the name of each class where the builder knows them, else None.
    """

    def __init__(
        self,
        targets: Sequence[int],
        num_classes: int,
        transform: Callable | None = None,
    ) -> None:
        self.targets: list[int] = [int(t) for t in targets]
        self.num_classes = int(num_classes)
        self.transform = transform
        self.class_names: list[str] | None = None
        bad = [t for t in self.targets if not 0 <= t < self.num_classes]
        if bad:
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {bad[:5]}")

    @property
    def class_counts(self) -> list[int]:
        """Number of samples of each class, length ``num_classes``."""
        return np.bincount(self.targets, minlength=self.num_classes).tolist()

    def load_image(self, index: int) -> Image.Image:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int):
        image = self.load_image(index)
        if self.transform is not None:
            image = self.transform(image)
        return image, self.targets[index]


class ArrayImageDataset(ImageDataset):
    """Images held in memory as uint8 arrays (N, H, W) grey or (N, H, W, 3) RGB."""

    def __init__(
        self,
        images: np.ndarray,
        targets: Sequence[int],
        num_classes: int,
        transform: Callable | None = None,
    ) -> None:
        if images.dtype != np.uint8 or images.ndim not in (3, 4) or len(images) != len(targets):
            raise ValueError(
                "images must be uint8 (N, H, W) or (N, H, W, 3) with N = len(targets), "
                f"got {images.dtype} {tuple(images.shape)} and {len(targets)} targets"
            )
        super().__init__(targets, num_classes, transform)
        self.images = images

    def load_image(self, index: int) -> Image.Image:
        return Image.fromarray(self.images[index]).convert("RGB")


class FileImageDataset(ImageDataset):
    """Images read lazily from files with PIL and converted to RGB."""

    def __init__(
        self,
        paths: Sequence[str],
        targets: Sequence[int],
        num_classes: int,
        transform: Callable | None = None,
    ) -> None:
        if len(paths) != len(targets):
            raise ValueError(f"got {len(paths)} paths but {len(targets)} targets")
        super().__init__(targets, num_classes, transform)
        self.paths = [str(p) for p in paths]

    def load_image(self, index: int) -> Image.Image:
        with Image.open(Path(self.paths[index])) as image:
            return image.convert("RGB")
