"""What the class-aware losses check of their classes: class ids in range, and the class
counts their priors come from."""

from collections.abc import Sequence

import torch
from torch import Tensor

from dscl_plugin import checks


def class_ids(name: str, labels: Tensor, num_classes: int | None = None) -> None:
    """``labels`` are class ids ``>= 0`` (and ``< num_classes`` if given); a host sync on GPU.

    Raises:
        ValueError: an id out of range, naming ``name`` and the range.
    """
    if labels.numel() == 0:
        return
    low, high = int(labels.min()), int(labels.max())
    bound = "" if num_classes is None else f" and < num_classes ({num_classes})"
    ok = low >= 0 and (num_classes is None or high < num_classes)
    checks.require(ok, name, f"must be class ids >= 0{bound}, got ids in [{low}, {high}]")


def class_counts(counts: Sequence[int] | Tensor, name: str = "class_counts") -> Tensor:
    """The training images per class as a float64 tensor (C,), checked: one entry per
    class, every class present.

    Raises:
        ValueError: no entries, not 1-D, or a count that is not > 0 (a class without
            images has no prior), naming ``name``.
    """
    values = torch.as_tensor(counts, dtype=torch.float64)
    checks.require(
        values.ndim == 1 and values.numel() > 0,
        name,
        f"must list the training images of every class (one number per class), got shape "
        f"{tuple(values.shape)}",
    )
    bad = torch.nonzero(~(values > 0) | ~torch.isfinite(values)).flatten().tolist()
    checks.require(
        not bad,
        name,
        f"must be > 0 for every class (the log prior of a class without images is -inf), "
        f"got {values[bad[:5]].tolist()} for classes {bad[:5]}",
    )
    return values


def log_prior(counts: Sequence[int] | Tensor, name: str = "class_counts") -> Tensor:
    """``log(n_c / sum_c' n_c')`` of the checked :func:`class_counts` (float64, (C,))."""
    values = class_counts(counts, name)
    return (values / values.sum()).log()
