"""The views of an image a method trains on: by default DSCL's query view with patches cut
from it and a key view; any sequence of query, key and weak views.

Follows Lightly's ``MultiViewTransform`` conventions: PIL image (or tensor) in,
list of views out, torchvision v2 transforms through Lightly's compatibility layer.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from lightly.transforms.gaussian_blur import GaussianBlur
from lightly.transforms.torchvision_v2_compatibility import torchvision_transforms as T
from lightly.transforms.utils import IMAGENET_NORMALIZE
from PIL.Image import Image
from torch import Tensor
from torchvision.transforms import RandomResizedCrop as _RandomResizedCropV1

from dscl_plugin import checks

NormalizeSpec = Mapping[str, Sequence[float]] | None
# the augmentation of a view after its crop and flip: "query" the colour augmentation
# (ColourAugmentation), "key" the key jitter only, "weak" none
VIEW_KINDS = ("query", "key", "weak")


def to_tensor_steps(normalize: NormalizeSpec) -> list[Any]:
    """To float tensor in [0, 1], then ``(x - mean) / std`` if ``normalize`` is given."""
    steps: list[Any] = [T.ToTensor()]
    if normalize is not None:
        steps.append(T.Normalize(mean=normalize["mean"], std=normalize["std"]))
    return steps


@dataclass(frozen=True)
class ColourAugmentation:
    """The q-view colour augmentation of the official recipe (MoCo v2's): colour jitter
    ``(brightness, contrast, saturation, hue)`` with probability ``jitter_prob``,
    grayscale with ``grayscale_prob``, Gaussian blur (sigma drawn from ``blur_sigmas``)
    with ``blur_prob``. The defaults here are the only copy: ``DSCLTransform``,
    ``probe_transform`` and the run config's ``data`` section take theirs from
    :data:`COLOUR_AUGMENTATION`.

    Raises:
        ValueError: a jitter strength < 0 or hue > 0.5, a probability outside [0, 1], or
            ``blur_sigmas`` not ``(min, max)`` with ``0 < min <= max``.
    """

    jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1)
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5
    blur_sigmas: Sequence[float] = (0.1, 2.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "jitter", tuple(self.jitter))
        object.__setattr__(self, "blur_sigmas", tuple(self.blur_sigmas))
        checks.jitter("jitter", self.jitter)
        for name in ("jitter_prob", "grayscale_prob", "blur_prob"):
            checks.within(name, getattr(self, name), 0.0, 1.0)
        checks.positive_range("blur_sigmas", self.blur_sigmas)

    def transform(self, normalize: NormalizeSpec = IMAGENET_NORMALIZE) -> T.Compose:
        """Jitter, grayscale, blur, then to tensor and ``normalize``."""
        low, high = self.blur_sigmas
        return T.Compose(
            [
                T.RandomApply([T.ColorJitter(*self.jitter)], p=self.jitter_prob),
                T.RandomGrayscale(p=self.grayscale_prob),
                GaussianBlur(prob=self.blur_prob, sigmas=(low, high)),
                *to_tensor_steps(normalize),
            ]
        )


COLOUR_AUGMENTATION = ColourAugmentation()  # the official defaults


@dataclass(frozen=True)
class ViewSettings:
    """The distributions the DSCL views are drawn from, checked once: the settings of
    :class:`DSCLTransform` (one image at a time, PIL) and of
    :class:`~dscl_plugin.transforms.kornia_views.DeviceViews` (a batch on its device).
    The keywords and defaults are :class:`DSCLTransform`'s, which documents them.

    Raises:
        ValueError: a setting outside its range (the message names it).
    """

    input_size: int = 224
    patch_size: int = 64
    num_patches: int = 5
    patch_scale: Sequence[float] = (0.05, 0.6)
    patch_ratio: Sequence[float] = (3 / 4, 4 / 3)
    crop_scale: Sequence[float] = (0.08, 1.0)
    hflip_prob: float = 0.5
    normalize: NormalizeSpec = field(default_factory=lambda: IMAGENET_NORMALIZE)
    jitter: Sequence[float] = COLOUR_AUGMENTATION.jitter
    jitter_prob: float = COLOUR_AUGMENTATION.jitter_prob
    grayscale_prob: float = COLOUR_AUGMENTATION.grayscale_prob
    blur_prob: float = COLOUR_AUGMENTATION.blur_prob
    blur_sigmas: Sequence[float] = COLOUR_AUGMENTATION.blur_sigmas
    key_jitter: Sequence[float] = (*COLOUR_AUGMENTATION.jitter[:3], 0.0)
    key_jitter_prob: float = 1.0
    view_kinds: Sequence[str] = ("query", "key")
    colour: ColourAugmentation = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sequences = ("patch_scale", "patch_ratio", "crop_scale", "jitter", "blur_sigmas")
        for name in (*sequences, "key_jitter", "view_kinds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        checks.require(
            len(self.view_kinds) >= 1 and set(self.view_kinds) <= set(VIEW_KINDS),
            "view_kinds",
            f"must be one or more of {list(VIEW_KINDS)}, got {list(self.view_kinds)}",
        )
        checks.patch_size(self.patch_size, self.input_size)
        checks.at_least("num_patches", self.num_patches, 0)
        checks.scale_range("patch_scale", self.patch_scale)
        checks.scale_range("crop_scale", self.crop_scale)
        checks.positive_range("patch_ratio", self.patch_ratio)
        checks.within("hflip_prob", self.hflip_prob, 0.0, 1.0)
        checks.within("key_jitter_prob", self.key_jitter_prob, 0.0, 1.0)
        checks.jitter("key_jitter", self.key_jitter)
        colour = ColourAugmentation(  # checks the colour settings
            self.jitter, self.jitter_prob, self.grayscale_prob, self.blur_prob, self.blur_sigmas
        )
        object.__setattr__(self, "colour", colour)


DEFAULT_VIEWS = ViewSettings()  # the official recipe's views


class DSCLTransform:
    """Official DSCL/PBSD views of one image: ``[view_q, view_k, patches, boxes]``, or the
    views of ``view_kinds`` (default ``("query", "key")``), each with its own crop and flip:

    - q view (``"query"``): ``RandomResizedCrop(input_size, crop_scale)`` + flip (the
      geometric crop), then the :class:`ColourAugmentation` (default: jitter
      ``(0.4, 0.4, 0.4, 0.1)`` p 0.8, grayscale p 0.2, blur sigma 0.1-2 p 0.5);
    - k view (``"key"``): its own crop + flip, then ``key_jitter`` (default: the q jitter
      without hue) with ``key_jitter_prob`` (default always);
    - weak view (``"weak"``): its own crop + flip, no colour augmentation;
    - ``num_patches`` boxes of area ``patch_scale`` and aspect ``patch_ratio`` of the
      first view, cut from its geometric crop (before colour augmentation and
      normalisation), each resized to ``patch_size`` and given its own flip and the q
      colour augmentation;
    - boxes are ``(x1, y1, x2, y2)`` in q-view pixels, float, ``x2 = x1 + width``.

    With ``num_patches=0`` only the views are returned. Set ``hflip_prob=0``
    for data that must not be mirrored (digits), and ``jitter_prob``,
    ``grayscale_prob``, ``blur_prob`` (and ``key_jitter_prob``) to 0 and
    ``normalize=None`` to turn augmentation off. The checked settings are
    :attr:`settings` (a :class:`ViewSettings`).

    Raises:
        ValueError: a setting outside its range (the message names it).

    Examples:
        >>> transform = DSCLTransform(input_size=32, patch_size=16)
        >>> view_q, view_k, patches, boxes = transform(pil_image)  # patches (5, 3, 16, 16)
    """

    def __init__(
        self,
        input_size: int = DEFAULT_VIEWS.input_size,
        patch_size: int = DEFAULT_VIEWS.patch_size,
        num_patches: int = DEFAULT_VIEWS.num_patches,
        patch_scale: Sequence[float] = DEFAULT_VIEWS.patch_scale,
        patch_ratio: Sequence[float] = DEFAULT_VIEWS.patch_ratio,
        crop_scale: Sequence[float] = DEFAULT_VIEWS.crop_scale,
        hflip_prob: float = DEFAULT_VIEWS.hflip_prob,
        normalize: NormalizeSpec = IMAGENET_NORMALIZE,
        jitter: Sequence[float] = DEFAULT_VIEWS.jitter,
        jitter_prob: float = DEFAULT_VIEWS.jitter_prob,
        grayscale_prob: float = DEFAULT_VIEWS.grayscale_prob,
        blur_prob: float = DEFAULT_VIEWS.blur_prob,
        blur_sigmas: Sequence[float] = DEFAULT_VIEWS.blur_sigmas,
        key_jitter: Sequence[float] = DEFAULT_VIEWS.key_jitter,
        key_jitter_prob: float = DEFAULT_VIEWS.key_jitter_prob,
        view_kinds: Sequence[str] = DEFAULT_VIEWS.view_kinds,
    ) -> None:
        self.settings = s = ViewSettings(
            input_size,
            patch_size,
            num_patches,
            patch_scale,
            patch_ratio,
            crop_scale,
            hflip_prob,
            normalize,
            jitter,
            jitter_prob,
            grayscale_prob,
            blur_prob,
            blur_sigmas,
            key_jitter,
            key_jitter_prob,
            view_kinds,
        )
        self.geometric = T.Compose(
            [
                T.RandomResizedCrop(size=s.input_size, scale=s.crop_scale),
                T.RandomHorizontalFlip(p=s.hflip_prob),
            ]
        )
        self.query_colour = s.colour.transform(s.normalize)
        self.key_colour = T.Compose(
            [
                T.RandomApply([T.ColorJitter(*s.key_jitter)], p=s.key_jitter_prob),
                *to_tensor_steps(s.normalize),
            ]
        )
        self.colours = {
            "query": self.query_colour,
            "key": self.key_colour,
            "weak": T.Compose(to_tensor_steps(s.normalize)),
        }
        self.patch_flip = T.RandomHorizontalFlip(p=s.hflip_prob)

    def __getattr__(self, name: str) -> Any:
        """The settings read as attributes: ``transform.input_size``, ..."""
        settings = self.__dict__.get("settings")
        if settings is not None and name in ViewSettings.__dataclass_fields__:
            return getattr(settings, name)
        raise AttributeError(f"'DSCLTransform' object has no attribute {name!r}")

    def __call__(self, image: Image | Tensor) -> list[Tensor]:
        """``[view_q (3, S, S), view_k (3, S, S), patches (L, 3, s, s), boxes (L, 4)]``
        (one ``(3, S, S)`` view per kind of ``view_kinds``, then the patches of the first)."""
        crops, views = [], []
        for kind in self.settings.view_kinds:  # a crop, then its colour, view after view
            crops.append(self.geometric(image))
            views.append(self.colours[kind](crops[-1]))
        crop_q = crops[0]
        if self.settings.num_patches == 0:
            return views
        patches, boxes = [], []
        for _ in range(self.settings.num_patches):
            top, left, height, width = _RandomResizedCropV1.get_params(
                crop_q, scale=list(self.settings.patch_scale), ratio=list(self.settings.patch_ratio)
            )
            patch = T.functional.resized_crop(
                crop_q,
                top,
                left,
                height,
                width,
                [self.settings.patch_size, self.settings.patch_size],
            )
            patches.append(self.query_colour(self.patch_flip(patch)))
            boxes.append([left, top, left + width, top + height])
        return views + [torch.stack(patches), torch.tensor(boxes, dtype=torch.float32)]


def probe_transform(
    input_size: int,
    crop_scale: Sequence[float] = (0.08, 1.0),
    hflip_prob: float = 0.5,
    jitter: Sequence[float] = COLOUR_AUGMENTATION.jitter,
    jitter_prob: float = COLOUR_AUGMENTATION.jitter_prob,
    grayscale_prob: float = COLOUR_AUGMENTATION.grayscale_prob,
    blur_prob: float = COLOUR_AUGMENTATION.blur_prob,
    blur_sigmas: Sequence[float] = COLOUR_AUGMENTATION.blur_sigmas,
    normalize: NormalizeSpec = IMAGENET_NORMALIZE,
) -> T.Compose:
    """Training images of the official stage 2 (``probe.protocol: augmented``):
    ``RandomResizedCrop(input_size, crop_scale)``, flip, then the q-view
    :class:`ColourAugmentation`, to tensor, normalise."""
    checks.scale_range("crop_scale", crop_scale)
    colour = ColourAugmentation(jitter, jitter_prob, grayscale_prob, blur_prob, blur_sigmas)
    return T.Compose(
        [
            T.RandomResizedCrop(size=input_size, scale=crop_scale),
            T.RandomHorizontalFlip(p=hflip_prob),
            colour.transform(normalize),
        ]
    )


def eval_transform(
    input_size: int,
    normalize: NormalizeSpec = IMAGENET_NORMALIZE,
    crop_fraction: float | None = None,
) -> T.Compose:
    """Resize the short side to ``input_size / crop_fraction``, centre-crop, to tensor, normalise.

    ``crop_fraction=None`` means 0.875 (ImageNet's 256 -> 224) for ``input_size >= 224``
    and 1.0 (resize only) for small images such as CIFAR.
    """
    if crop_fraction is None:
        crop_fraction = 0.875 if input_size >= 224 else 1.0
    checks.fraction("crop_fraction", crop_fraction)
    return T.Compose(
        [
            T.Resize(round(input_size / crop_fraction)),
            T.CenterCrop(input_size),
            *to_tensor_steps(normalize),
        ]
    )
