"""Argument rules shared by the constructors, the losses and the run config (each rule
written once).

Every check raises :class:`InvalidValue`, a ``ValueError`` whose message is
``"<name> <rule>."`` (e.g. ``temperature must be > 0, got 0.``). The constructors
call these checks with their argument names; ``dscl_plugin.config`` calls the very
same constructor-level checks and reports ``"<section>.<name>: <rule>"``, so a config
key and the argument it feeds can never disagree.
"""

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


class InvalidValue(ValueError):
    """A bad argument value; ``name`` is the argument, ``rule`` what it must satisfy."""

    def __init__(self, name: str, rule: str) -> None:
        super().__init__(f"{name} {rule}.")
        self.name = name
        self.rule = rule


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


def temperature(value: float) -> None:
    """The softmax temperature ``T`` of every loss: ``T > 0``."""
    positive("temperature", value)


def within(name: str, value: float, low: float, high: float) -> None:
    require(low <= value <= high, name, f"must be in [{low}, {high}], got {value}")


def half_open(name: str, value: float, low: float, high: float) -> None:
    """``low <= value < high`` (e.g. an SGD momentum in [0, 1))."""
    require(low <= value < high, name, f"must be in [{low}, {high}), got {value}")


def one_of(name: str, value: Any, allowed: Sequence[Any]) -> None:
    require(value in allowed, name, f"must be one of {list(allowed)}, got {value!r}")


def scale_range(name: str, value: Sequence[float]) -> None:
    """An area fraction range ``(min, max)`` with ``0 < min <= max <= 1``."""
    ok = len(value) == 2 and 0 < value[0] <= value[1] <= 1
    require(ok, name, f"must be (min, max) with 0 < min <= max <= 1, got {list(value)}")


# how the PBSD student embeds the patches: "batched" (one pass of all B * L patches, BN
# running statistics untouched) or "separate" (the official L train-mode passes of B patches)
PATCH_PASSES = ("batched", "separate")


def features(name: str, x: Tensor, ndim: int) -> None:
    """An ``ndim``-D floating point feature tensor."""
    require(
        x.ndim == ndim and x.is_floating_point(),
        name,
        f"must be a {ndim}-D floating point tensor, got shape {tuple(x.shape)} and dtype {x.dtype}",
    )


def labels(name: str, value: Tensor, length: int) -> None:
    """A 1-D integer tensor of class ids with ``length`` entries (one per feature row):
    float labels (``labels + 0.5``) would silently compare unequal to every class."""
    integer = not (value.is_floating_point() or value.is_complex())
    require(
        value.ndim == 1 and integer,
        name,
        f"must be a 1-D integer tensor, got shape {tuple(value.shape)} and dtype {value.dtype}",
    )
    require(
        value.shape[0] == length,
        name,
        f"must have one entry per feature row ({length}), got shape {tuple(value.shape)}",
    )


def finite(**tensors: Tensor | None) -> None:
    """Every floating point tensor given (None skipped) holds no NaN or Inf (a host sync on
    GPU; the losses run it with ``check_finite=True``)."""
    for name, x in tensors.items():
        ok = x is None or not x.is_floating_point() or bool(torch.isfinite(x).all())
        require(ok, name, "contains NaN or Inf values")


DEFAULT_ALPHA = 1.0 / 9.0  # official beta = 8, alpha = 1 / (1 + beta)


def alpha_from(alpha: float | None, beta: float | None) -> float:
    """The own-view weight from ``alpha`` or ``beta`` (``alpha = 1 / (1 + beta)``;
    neither: the official beta 8).

    Raises:
        InvalidValue: both given, ``beta < 0`` or ``alpha`` outside [0, 1].
    """
    require(
        alpha is None or beta is None,
        "alpha/beta",
        f"must not both be set: give alpha or beta, not both (got alpha={alpha}, beta={beta})",
    )
    if beta is not None:
        at_least("beta", beta, 0)
        alpha = 1.0 / (1.0 + beta)
    if alpha is None:
        alpha = DEFAULT_ALPHA
    within("alpha", alpha, 0, 1)
    return float(alpha)
