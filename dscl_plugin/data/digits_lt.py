"""``digits_lt``: a long-tailed split of scikit-learn's bundled 8x8 digits (no download).

1,797 images, 174-183 per class. Per class (seeded), ``test_per_class`` images form a
balanced test set; from the rest, class c keeps ``n_c = floor(n_max * rho ** (-c / 9))``
with ``n_max`` = the smallest remaining class pool (144 for 30 test images per class),
so every class can supply its count. Images are scaled from 0-16 to 0-255 and
upsampled (bilinear) to ``input_size`` px, returned as RGB PIL images.
"""

from functools import lru_cache

import numpy as np
from PIL import Image

from dscl_plugin import checks
from dscl_plugin.data.base import ArrayImageDataset, ImageArray, LabelArray, Transform
from dscl_plugin.data.longtail import long_tail_counts, select_per_class

NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _load_digits() -> tuple[ImageArray, LabelArray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    return images, digits.target.astype(np.int64)


def digits_split(
    imbalance_factor: float, seed: int = 0, test_per_class: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """``(train_indices, test_indices)`` into ``sklearn.datasets.load_digits()``."""
    _, targets = _load_digits()
    rng = np.random.RandomState(seed)
    test, pools = [], []
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(targets == c))
        checks.require(
            test_per_class < len(idx),
            "test_per_class",
            f"must leave a train image of every class: < {len(idx)} (class {c}), "
            f"got {test_per_class}",
        )
        test.append(idx[:test_per_class])
        pools.append(idx[test_per_class:])
    pool = np.sort(np.concatenate(pools))
    n_max = int(np.bincount(targets[pool], minlength=NUM_CLASSES).min())
    counts = long_tail_counts(n_max, NUM_CLASSES, imbalance_factor)
    train = pool[select_per_class(targets[pool], counts, seed)]
    return train, np.sort(np.concatenate(test))


def digits_lt(
    split: str,
    transform: Transform | None = None,
    imbalance_factor: float = 10.0,
    input_size: int = 32,
    seed: int = 0,
    test_per_class: int = 30,
) -> ArrayImageDataset:
    """The ``split`` ("train" long-tailed, "test" balanced) of ``digits_lt``.

    ``.indices`` holds the positions of the images in ``load_digits()``.
    """
    checks.integer("input_size", input_size, 8)
    images, targets = _load_digits()
    train, test = digits_split(imbalance_factor, seed, test_per_class)
    indices = train if split == "train" else test
    resized = np.stack(
        [
            np.asarray(
                Image.fromarray(images[i]).resize(
                    (input_size, input_size), Image.Resampling.BILINEAR
                )
            )
            for i in indices
        ]
    )
    dataset = ArrayImageDataset(resized, targets[indices], NUM_CLASSES, transform, indices)
    dataset.class_names = [str(c) for c in range(NUM_CLASSES)]
    return dataset
