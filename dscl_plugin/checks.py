"""Argument rules shared by the constructors, the losses and the run config, each written
once.

Every check raises :class:`~dscl_plugin.errors.InvalidValue`, a ``ValueError`` whose message is
``"<name> <rule>."`` (e.g. ``temperature must be > 0, got 0.``). The constructors
call these checks with their argument names; ``dscl_plugin.training.validation`` calls the
same checks and reports ``"<section>.<name>: <rule>"``, so a config key and the argument
it feeds can never disagree.
"""

from collections.abc import Sequence
from numbers import Integral
from typing import Any

import torch
from torch import Tensor

from dscl_plugin.errors import InvalidValue


def require(ok: bool, name: str, rule: str) -> None:
    """Raises :class:`InvalidValue` ``(name, rule)`` unless ``ok``."""
    if not ok:
        raise InvalidValue(name, rule)


def positive(name: str, value: float) -> None:
    require(value > 0, name, f"must be > 0, got {value}")


def at_least(name: str, value: float | None, low: float, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    require(value is not None and value >= low, name, f"must be >= {low}, got {value}")


def integer(name: str, value: Any, low: int, allow_none: bool = False) -> None:
    """A whole number (``int``, not ``bool`` or ``float``) ``>= low``; None too with
    ``allow_none``."""
    if value is None and allow_none:
        return
    ok = not isinstance(value, bool) and isinstance(value, Integral) and int(value) >= low
    none = "None or " if allow_none else ""
    require(ok, name, f"must be {none}an int >= {low}, got {value!r}")


def temperature(value: float) -> None:
    """The softmax temperature ``T`` of every loss: ``T > 0``."""
    positive("temperature", value)


def within(name: str, value: float, low: float, high: float) -> None:
    require(low <= value <= high, name, f"must be in [{low}, {high}], got {value}")


def half_open(name: str, value: float, low: float, high: float) -> None:
    """``low <= value < high`` (e.g. an SGD momentum in [0, 1))."""
    require(low <= value < high, name, f"must be in [{low}, {high}), got {value}")


def fraction(name: str, value: float) -> None:
    """A share of a whole: ``0 < value <= 1``."""
    require(0 < value <= 1, name, f"must be in (0, 1], got {value}")


def one_of(name: str, value: Any, allowed: Sequence[Any]) -> None:
    require(value in allowed, name, f"must be one of {list(allowed)}, got {value!r}")


def multiple_of(name: str, value: int, base_name: str, base: int) -> None:
    require(value % base == 0, name, f"must be a multiple of {base_name} ({base}), got {value}")


def scale_range(name: str, value: Sequence[float]) -> None:
    """An area fraction range ``(min, max)`` with ``0 < min <= max <= 1``."""
    ok = len(value) == 2 and 0 < value[0] <= value[1] <= 1
    require(ok, name, f"must be (min, max) with 0 < min <= max <= 1, got {list(value)}")


def positive_range(name: str, value: Sequence[float]) -> None:
    """A range ``(min, max)`` with ``0 < min <= max`` (an aspect ratio, a blur sigma)."""
    ok = len(value) == 2 and 0 < value[0] <= value[1]
    require(ok, name, f"must be (min, max) with 0 < min <= max, got {list(value)}")


def jitter(name: str, value: Sequence[float]) -> None:
    """Colour jitter strengths ``(brightness, contrast, saturation, hue)`` as torchvision's
    ``ColorJitter`` takes them: all ``>= 0``, hue ``<= 0.5``."""
    ok = len(value) == 4 and min(value) >= 0 and value[3] <= 0.5
    require(
        ok,
        name,
        f"must be [brightness, contrast, saturation, hue] >= 0 with hue <= 0.5, got {list(value)}",
    )


def patch_size(value: int, input_size: int) -> None:
    """The side of a PBSD patch: ``0 < patch_size <= input_size`` (the view's side)."""
    require(
        0 < value <= input_size,
        "patch_size",
        f"must be in (0, input_size={input_size}], got {value}",
    )


def bank_size(name: str, value: int | Sequence[int]) -> tuple[int, ...]:
    """A memory bank's size as Lightly's ``MemoryBankModule`` takes it: ``(K, D)``, or ``0``
    / ``(0, D)`` for no bank (no entries); returns it as a tuple."""
    size = (value,) if isinstance(value, int) else tuple(value)
    require(
        size == (0,) or (len(size) == 2 and min(size) >= 0),
        name,
        "must be (num_entries, dim) with entries >= 0, or 0 to disable the bank (as "
        f"Lightly's MemoryBankModule), got {value}",
    )
    return size


def features(name: str, x: Tensor, ndim: int) -> None:
    """An ``ndim``-D floating point feature tensor."""
    require(
        x.ndim == ndim and x.is_floating_point(),
        name,
        f"must be a {ndim}-D floating point tensor, got shape {tuple(x.shape)} and dtype {x.dtype}",
    )


def queue(value: Tensor, dim: int) -> None:
    """A (K, D) floating point queue of past keys whose D is the features' ``dim``."""
    features("queue", value, 2)
    require(
        value.shape[1] == dim,
        "queue",
        f"must have feature dimension {dim}, got shape {tuple(value.shape)}",
    )


def labels(name: str, value: Tensor, rows: int) -> None:
    """Class ids: a 1-D integer tensor (not float, complex or bool) with one entry per
    feature row (``rows``). The one label rule of the losses, the memory bank and the
    models: float labels (``labels + 0.5``) would compare unequal to every class, and
    labels are never truncated to integers silently."""
    whole = not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    require(
        value.ndim == 1 and whole,
        name,
        f"must be a 1-D integer tensor, got shape {tuple(value.shape)} and dtype {value.dtype}; "
        f"convert whole-number class ids with {name}.long()",
    )
    require(
        value.shape[0] == rows,
        name,
        f"must have one entry per feature row ({rows}), got shape {tuple(value.shape)}",
    )


def finite(**tensors: Tensor | None) -> None:
    """Every floating point tensor given (None skipped) holds no NaN or Inf (a host sync on
    GPU; the losses run it with ``check_finite=True``)."""
    for name, x in tensors.items():
        ok = x is None or not x.is_floating_point() or bool(torch.isfinite(x).all())
        require(ok, name, "contains NaN or Inf values")
