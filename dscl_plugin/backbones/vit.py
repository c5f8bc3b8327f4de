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

from dscl_plugin import checks

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
    """Whether ``name`` is one of :data:`VIT_PRESETS`."""
    return name in VIT_PRESETS


def vit_spec(
    name: str,
    vit_patch_size: int | None = None,
    vit_depth: int | None = None,
    vit_width: int | None = None,
    vit_heads: int | None = None,
) -> ViTSpec:
    """The preset ``name`` with the given sizes replaced (None keeps the preset's); the
    arguments are named as :func:`~dscl_plugin.backbones.build_backbone`'s.

    Raises:
        ValueError: unknown name, a size < 1, or ``vit_width`` not a multiple of
            ``vit_heads``.
    """
    checks.one_of("name", name, list(VIT_PRESETS))
    preset = VIT_PRESETS[name]
    spec = ViTSpec(
        patch_size=preset.patch_size if vit_patch_size is None else vit_patch_size,
        depth=preset.depth if vit_depth is None else vit_depth,
        width=preset.width if vit_width is None else vit_width,
        num_heads=preset.num_heads if vit_heads is None else vit_heads,
    )
    checks.at_least("vit_patch_size", spec.patch_size, 1)
    checks.at_least("vit_depth", spec.depth, 1)
    checks.at_least("vit_width", spec.width, 1)
    checks.at_least("vit_heads", spec.num_heads, 1)
    checks.multiple_of("vit_width", spec.width, "vit_heads", spec.num_heads)
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
            ``nn.Identity``: unused). It is wrapped in Lightly's
            ``MaskedVisionTransformerTorchvision``, which re-initialises it (Xavier linear
            layers, fixed 2-D sin-cos positional encoding; ``initialize=False`` keeps its
            weights).
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
        checks.one_of("pool", pool, VIT_POOLS)
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
        checks.require(
            images.ndim == 4 and images.shape[-1] == images.shape[-2],
            "images",
            f"must be square (B, 3, H, H) for a ViTBackbone, got {tuple(images.shape)}",
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


def build_vit(spec: ViTSpec, image_size: int = 224, pool: str = "mean") -> ViTBackbone:
    """A randomly initialised :class:`ViTBackbone` of the sizes ``spec`` (from
    :func:`vit_spec`; never downloads weights).

    ``image_size`` sets the native positional grid (``image_size / patch_size`` a side);
    other multiples of the patch size run through interpolation.

    Raises:
        ValueError: see :func:`token_grid` and :class:`ViTBackbone`.
    """
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
