"""DSCL views made for a whole batch on the training device with Kornia (``data.pipeline: device``).

:class:`DeviceViews` draws, per sample, from the augmentation distributions of
:class:`~dscl_plugin.transforms.DSCLTransform` on a uint8 batch ``(B, C, H, W)`` (no PIL,
no DataLoader workers); :class:`BatchViews` gathers a batch's images by index from a
device-resident uint8 tensor and seeds the augmentation by ``(seed, rank, step)``.
Kornia is optional (``pip install "dscl-plugin[fast]"``) and imported only when an
instance is built.

Where the device path differs from the PIL path (the distributions of the random
parameters are the same):

- pixels are floats in [0, 1] throughout; PIL rounds to uint8 after every colour step;
- crops are resized bilinearly without antialiasing (PIL's bilinear resize antialiases
  when it shrinks);
- the order of the four colour jitters is drawn once per batch (Kornia's
  ``ColorJitter``), not once per image as torchvision does; brightness and contrast
  commute up to clipping, so this matters only with saturation or hue jitter;
- Gaussian blur uses a ``2 ceil(3 sigma_max) + 1`` kernel with replicated borders,
  PIL an approximation by box filters.
"""

import importlib.util
import math
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import torch
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.transforms.views import ViewSettings

KORNIA_MISSING = "needs Kornia, which is not installed: pip install 'dscl-plugin[fast]'"

Views = tuple[Tensor | None, ...]


def _kornia_augmentation() -> ModuleType:
    if importlib.util.find_spec("kornia") is None:
        raise ImportError(f"DeviceViews {KORNIA_MISSING}.")
    import kornia.augmentation

    return kornia.augmentation


class DeviceViews:
    """:class:`~dscl_plugin.transforms.DSCLTransform`'s views of a uint8 batch, on its device.

    Takes DSCLTransform's keyword arguments (checked as :class:`ViewSettings`) and draws
    from the same distributions, independently per sample
    (``same_on_batch=False``):

    - q view: Kornia ``RandomResizedCrop(input_size, crop_scale, ratio (3/4, 4/3))``
      (10 tries of area ~ U(crop_scale) and log-uniform ratio, else the centre crop, as
      torchvision) + flip, then ``ColorJitter(*jitter, p=jitter_prob)`` (torchvision's
      factors: brightness in ``[max(0, 1 - b), 1 + b]``, ..., hue in ``[-h, h]``),
      ``RandomGrayscale(grayscale_prob)``, ``RandomGaussianBlur(sigma ~ U(blur_sigmas),
      p=blur_prob)``, normalisation;
    - k view: its own crop + flip, then ``ColorJitter(*key_jitter, p=key_jitter_prob)``;
    - weak view: its own crop + flip, normalisation only;
    - one view per kind of ``view_kinds`` (default ``("query", "key")``), the crops of
      all views drawn before their colours;
    - ``num_patches`` crops of area ``patch_scale`` and aspect ``patch_ratio`` of the
      first view's geometric crop (before colour and normalisation), resized to
      ``patch_size``, each with its own flip and the q colour augmentation; boxes
      ``(x1, y1, x2, y2)`` in q-view pixels, float, ``x2 = x1 + width``.

    The random parameters are drawn on the CPU from torch's default generator (also
    for CUDA batches), so a seed gives the same views on every device. The pixel-level
    differences to the PIL path are listed in the module docstring.

    Raises:
        ValueError: an argument outside DSCLTransform's ranges.
        ImportError: Kornia is not installed (``pip install "dscl-plugin[fast]"``).

    Examples:
        >>> views = DeviceViews(input_size=28, patch_size=14, num_patches=2)
        >>> view_q, view_k, patches, boxes = views(uint8_images)  # patches (B, 2, 3, 14, 14)
    """

    def __init__(self, **options: Any) -> None:
        spec = ViewSettings(**options)
        colour, key_jitter, key_jitter_prob = spec.colour, spec.key_jitter, spec.key_jitter_prob
        input_size, patch_size, blur_sigmas = spec.input_size, spec.patch_size, spec.blur_sigmas
        K = _kornia_augmentation()
        self.input_size, self.patch_size = input_size, patch_size
        self.num_patches, self.view_kinds = spec.num_patches, spec.view_kinds
        # align_corners=False: torchvision's resized_crop of tensors (half-pixel centres)
        self.crop = K.RandomResizedCrop(
            (input_size, input_size),
            scale=spec.crop_scale,
            ratio=(3 / 4, 4 / 3),
            align_corners=False,
        )
        self.patch_crop = K.RandomResizedCrop(
            (patch_size, patch_size),
            scale=spec.patch_scale,
            ratio=spec.patch_ratio,
            align_corners=False,
        )
        self.flip = K.RandomHorizontalFlip(p=spec.hflip_prob)
        blur_kernel = 2 * math.ceil(3 * blur_sigmas[1]) + 1
        query_steps = [
            K.ColorJitter(*colour.jitter, p=colour.jitter_prob)
            if colour.jitter_prob > 0 and any(colour.jitter)
            else None,
            K.RandomGrayscale(p=colour.grayscale_prob) if colour.grayscale_prob > 0 else None,
            K.RandomGaussianBlur(
                blur_kernel, blur_sigmas, border_type="replicate", p=colour.blur_prob
            )
            if colour.blur_prob > 0
            else None,
        ]
        key_steps = [
            K.ColorJitter(*key_jitter, p=key_jitter_prob)
            if key_jitter_prob > 0 and any(key_jitter)
            else None
        ]
        weak_steps: list[nn.Module] = []
        if spec.normalize is not None:
            mean, std = (
                torch.tensor(spec.normalize["mean"]),
                torch.tensor(spec.normalize["std"]),
            )
            norm = K.Normalize(mean=mean, std=std)
            for steps in (query_steps, key_steps, weak_steps):
                steps.append(norm)
        self.query_colour = [step for step in query_steps if step is not None]
        self.key_colour = [step for step in key_steps if step is not None]
        self.colours = {"query": self.query_colour, "key": self.key_colour, "weak": weak_steps}

    @staticmethod
    def _apply(steps: Sequence[nn.Module], images: Tensor) -> Tensor:
        for step in steps:
            images = step(images)
        return images

    def __call__(self, images: Tensor) -> Views:
        """``(view_q (B, 3, S, S), view_k (B, 3, S, S), patches (B, L, 3, s, s), boxes (B, L, 4))``
        of uint8 images ``(B, 1 or 3, H, W)`` (grey is repeated to RGB, as PIL's
        ``convert("RGB")``): one ``(B, 3, S, S)`` view per kind of ``view_kinds``, then
        ``patches`` and ``boxes``, None for ``num_patches=0``.

        Raises:
            ValueError: ``images`` is not a uint8 ``(B, 1 or 3, H, W)`` batch.
        """
        checks.require(
            images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] in (1, 3),
            "images",
            f"must be a uint8 (B, 1 or 3, H, W) batch, got {images.dtype} {tuple(images.shape)}",
        )
        pixels = images.float().div_(255).expand(-1, 3, -1, -1)
        crops = [self.flip(self.crop(pixels)) for _ in self.view_kinds]
        views = tuple(self._apply(self.colours[k], c) for k, c in zip(self.view_kinds, crops))
        if self.num_patches == 0:
            return *views, None, None
        crop_q = crops[0]
        batch, num = len(images), self.num_patches
        repeated = crop_q.repeat_interleave(num, dim=0)
        params = self.patch_crop.forward_parameters(repeated.shape)
        patches = self.flip(self.patch_crop(repeated, params=params))
        patches = self._apply(self.query_colour, patches)
        corners = params["src"].to(device=images.device, dtype=torch.float32)  # inclusive pixels
        top_left, bottom_right = corners[:, 0], corners[:, 2] + 1
        boxes = torch.cat([top_left, bottom_right], dim=1)
        s = self.patch_size
        return *views, patches.view(batch, num, 3, s, s), boxes.view(batch, num, 4)
