"""What a method trains on: the views it declares (:class:`Views`, with PBSD's
:class:`Patches`) and the batch it receives (:class:`Batch`)."""

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.transforms.views import VIEW_KINDS


@dataclass(frozen=True)
class Patches:
    """PBSD patches cut from a sample's first view: ``number`` per image, resized to
    ``size`` px, of area ``scale`` (min, max) of the view."""

    number: int
    size: int
    scale: Sequence[float]


@dataclass(frozen=True)
class Views:
    """The views of each training image: one per entry of ``kinds``, each with its own
    crop and flip (``data.crop_scale``, ``data.hflip_prob``) and then its augmentation,
    ``"query"`` (the colour augmentation of ``data``), ``"key"`` (the key jitter: the
    ``data.color_jitter`` strengths without hue, always) or ``"weak"`` (none); and the
    ``patches`` of the first view, if any.

    Raises:
        ValueError: an unknown kind, or none.
    """

    kinds: tuple[str, ...] = ("query", "key")
    patches: Patches | None = None

    def __post_init__(self) -> None:
        checks.require(
            len(self.kinds) >= 1 and set(self.kinds) <= set(VIEW_KINDS),
            "kinds",
            f"must be one or more of {list(VIEW_KINDS)}, got {list(self.kinds)}",
        )


@dataclass(frozen=True)
class Batch:
    """A training batch as a method's :meth:`~dscl_plugin.methods.Method.step` receives it:
    ``views`` (one ``(B, 3, S, S)`` tensor per kind of its :class:`Views`, in that order),
    ``labels`` ``(B,)`` int64 and, with patches, ``patches`` ``(B, L, 3, s, s)`` and their
    ``boxes`` ``(B, L, 4)`` in first-view pixels."""

    views: tuple[Tensor, ...]
    labels: Tensor
    patches: Tensor | None = None
    boxes: Tensor | None = None

    @classmethod
    def of(cls, batch: Sequence[Tensor | None], num_views: int) -> "Batch":
        """The batch the data pipeline yields, ``(*views, patches, boxes, labels)``.

        Raises:
            ValueError: it does not hold ``num_views`` views, patches, boxes and labels.
        """
        views = tuple(v for v in batch[:num_views] if v is not None)
        labels = batch[-1]
        checks.require(
            len(batch) == num_views + 3 and len(views) == num_views and labels is not None,
            "batch",
            f"must be (*views, patches, boxes, labels) with {num_views} views, got "
            f"{len(batch)} entries",
        )
        assert labels is not None  # checked above
        return cls(views, labels, batch[num_views], batch[num_views + 1])
