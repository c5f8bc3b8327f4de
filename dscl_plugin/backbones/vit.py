"""Vision Transformer backbones: a torchvision ``VisionTransformer`` in Lightly's
``MaskedVisionTransformerTorchvision``, returning its patch tokens as a feature map.

``ViTBackbone(images)`` is a ``(B, C, h, w)`` map (token ``(r, c)`` of the ``h x w`` patch
grid at ``[:, :, r, c]``), so ``DSCLModel``, ``pool_regions`` (the PBSD teacher, with
``spatial_scale = w / image_width = 1 / patch_size``) and ``embed`` work as for a CNN.
Images of any square size that is a multiple of the ViT patch size run through Lightly's
``interpolate_pos_encoding``: 224 px views and 64 px patches with one ViT.
"""

import math
from dataclasses import dataclass

from lightly.models.modules import MaskedVisionTransformerTorchvision
from torch import Tensor, nn
from torchvision.models.vision_transformer import VisionTransformer

VIT_POOLS = ("mean", "cls")


@dataclass(frozen=True)
class ViTSpec:
    """Transformer sizes; the MLP is ``4 * width`` wide, as in every torchvision ViT."""

    patch_size: int
    depth: int
    width: int
    num_heads: int


# torchvision's vit_* builders (same sizes) and DeiT's ViT-Ti/16 and ViT-S/16.
VIT_PRESETS = {
    "vit_tiny": ViTSpec(16, 12, 192, 3),
    "vit_small": ViTSpec(16, 12, 384, 6),
    "vit_b_16": ViTSpec(16, 12, 768, 12),
    "vit_b_32": ViTSpec(32, 12, 768, 12),
    "vit_l_16": ViTSpec(16, 24, 1024, 16),
    "vit_l_32": ViTSpec(32, 24, 1024, 16),
    "vit_h_14": ViTSpec(14, 32, 1280, 16),
}


def is_vit(name: str) -> bool:
    return name in VIT_PRESETS


def vit_spec(
    name: str,
    patch_size: int | None = None,
    depth: int | None = None,
    width: int | None = None,
    num_heads: int | None = None,
) -> ViTSpec:
    """The preset ``name`` with the given sizes replaced (None keeps the preset's).

    Raises:
        ValueError: unknown name, a size < 1, or ``width`` not a multiple of ``num_heads``.
    """
    if name not in VIT_PRESETS:
        raise ValueError(f"Unknown ViT {name!r}: use one of {list(VIT_PRESETS)}.")
    preset = VIT_PRESETS[name]
    spec = ViTSpec(
        patch_size=preset.patch_size if patch_size is None else patch_size,
        depth=preset.depth if depth is None else depth,
        width=preset.width if width is None else width,
        num_heads=preset.num_heads if num_heads is None else num_heads,
    )
    for key in ("patch_size", "depth", "width", "num_heads"):
        if getattr(spec, key) < 1:
            raise ValueError(f"ViT {key} must be >= 1, got {getattr(spec, key)}.")
    if spec.width % spec.num_heads:
        raise ValueError(
            f"ViT width {spec.width} must be a multiple of num_heads {spec.num_heads}."
        )
    return spec


def token_grid(image_size: int, patch_size: int, native_grid: int) -> int:
    """Side ``g = image_size / patch_size`` of the token grid of a square image.

    The positional encoding (a ``native_grid`` x ``native_grid`` grid) is resized by
    Lightly's ``interpolate_pos_encoding`` with ``scale_factor = sqrt(g^2 / native^2)``.

    Raises:
        ValueError: ``image_size`` is not a positive multiple of ``patch_size``, or is one
            of the few sizes whose scale factor rounds to a grid one token short.
    """
    if image_size < patch_size or image_size % patch_size:
        raise ValueError(
            f"Image size {image_size} px is not a multiple of the ViT patch size "
            f"{patch_size} px: resize the views and patches (data.input_size, "
            "model.patch_size) to multiples of it, or change model.vit_patch_size."
        )
    grid = image_size // patch_size
    if math.floor(native_grid * math.sqrt(grid**2 / native_grid**2)) != grid:
        raise ValueError(
            f"Lightly's interpolate_pos_encoding cannot resize the {native_grid}x{native_grid} "
            f"positional grid to {grid}x{grid} (floating-point rounding of its scale factor): "
            f"use an image size other than {image_size} px."
        )
    return grid


class ViTBackbone(nn.Module):
    """Patch tokens of a ViT as a feature map: images (B, 3, H, H) -> (B, C, H/p, H/p).

    Args:
        vit: a torchvision ``VisionTransformer`` (its ``heads`` are replaced by
            ``nn.Identity``: unused). It is wrapped in Lightly's ``MaskedVisionTransformerTorchvision``, which
            re-initialises it (Xavier linear layers, fixed 2-D sin-cos positional
            encoding; ``initialize=False`` keeps its weights).
        pool: the pooled (B, C) feature of :meth:`forward_features`: ``"mean"`` of the
            patch tokens (default: the whole-view feature is then the PBSD teacher's
            region pooling over the full view, and a patch's student feature is the same
            statistic of its own tokens) or the ``"cls"`` class token.

    No BatchNorm and no buffers: the patch forward has no running statistics to protect.
    The mask token of Lightly's wrapper is unused and frozen.

    Raises:
        ValueError: unknown ``pool``; at forward, images that are not square or not a
            multiple of the patch size (see :func:`token_grid`).
    """

    def __init__(self, vit: VisionTransformer, pool: str = "mean", initialize: bool = True):
        super().__init__()
        if pool not in VIT_POOLS:
            raise ValueError(f"pool must be one of {list(VIT_POOLS)}, got {pool!r}.")
        vit.heads = nn.Identity()
        self.vit = MaskedVisionTransformerTorchvision(
            vit,
            weight_initialization="" if initialize else "skip",
            pos_embed_initialization="sincos" if initialize else "skip",
        )
        self.vit.mask_token.requires_grad_(False)
        self.pool = pool
        self.patch_size = vit.patch_size
        self.feature_dim = vit.hidden_dim
        self.native_grid = vit.image_size // vit.patch_size

    @property
    def torchvision_vit(self) -> VisionTransformer:
        return self.vit.vit

    def forward_features(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """The token map (B, C, h, w) and the pooled feature (B, C) (see ``pool``)."""
        if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
            raise ValueError(
                f"ViTBackbone needs square images (B, 3, H, H), got {tuple(images.shape)}."
            )
        grid = token_grid(images.shape[-1], self.patch_size, self.native_grid)
        tokens = self.vit.encode(images)  # (B, 1 + h * w, C), class token first
        patch_tokens = tokens[:, 1:]
        feature_map = patch_tokens.transpose(1, 2).reshape(len(images), -1, grid, grid)
        pooled = patch_tokens.mean(dim=1) if self.pool == "mean" else tokens[:, 0]
        return feature_map, pooled

    def forward(self, images: Tensor) -> Tensor:
        """The token map (B, C, h, w), row-major like the image patches."""
        return self.forward_features(images)[0]


def build_vit(
    name: str,
    image_size: int = 224,
    pool: str = "mean",
    patch_size: int | None = None,
    depth: int | None = None,
    width: int | None = None,
    num_heads: int | None = None,
) -> ViTBackbone:
    """A randomly initialised :class:`ViTBackbone` (never downloads weights).

    ``image_size`` sets the native positional grid (``image_size / patch_size`` a side);
    other multiples of the patch size run through interpolation. Sizes: :func:`vit_spec`.

    Raises:
        ValueError: see :func:`vit_spec`, :func:`token_grid` and :class:`ViTBackbone`.
    """
    spec = vit_spec(name, patch_size, depth, width, num_heads)
    token_grid(image_size, spec.patch_size, image_size // spec.patch_size)
    vit = VisionTransformer(
        image_size=image_size,
        patch_size=spec.patch_size,
        num_layers=spec.depth,
        num_heads=spec.num_heads,
        hidden_dim=spec.width,
        mlp_dim=4 * spec.width,
    )
    return ViTBackbone(vit, pool=pool)
