"""Exponential long-tailed class profile and per-class subsampling."""

import math
from collections.abc import Sequence

import numpy as np

from dscl_plugin import checks


def long_tail_counts(n_max: int, num_classes: int, imbalance_factor: float) -> list[int]:
    """``n_c = floor(n_max * rho ** (-c / (C - 1)))`` for ``c = 0 .. C-1``.

    ``rho = imbalance_factor = n_0 / n_{C-1}``; ``rho = 1`` keeps every class at ``n_max``.
    """
    checks.at_least("imbalance_factor", imbalance_factor, 1)
    checks.at_least("n_max", n_max, 1)
    checks.at_least("num_classes", num_classes, 1)
    if num_classes == 1:
        return [int(n_max)]
    return [
        math.floor(n_max * imbalance_factor ** (-c / (num_classes - 1))) for c in range(num_classes)
    ]


def select_per_class(
    targets: Sequence[int] | np.ndarray, counts: Sequence[int] | np.ndarray, seed: int
) -> np.ndarray:
    """Indices of ``counts[c]`` samples of each class c, in dataset order.

    For each class in turn, its indices are shuffled by ``np.random.RandomState(seed)``
    and the first ``counts[c]`` kept, so the selection depends only on the seed.
    """
    labels = np.asarray(targets)
    rng = np.random.RandomState(seed)
    chosen = []
    for c, n in enumerate(counts):
        idx = np.flatnonzero(labels == c)
        checks.require(
            n <= len(idx),
            f"counts[{c}]",
            f"must be <= the {len(idx)} samples of class {c}, got {n}",
        )
        rng.shuffle(idx)
        chosen.append(idx[:n])
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
