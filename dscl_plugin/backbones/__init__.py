"""Backbones mapping images (B, 3, H, W) to a feature map (B, C, h, w), by name.

``build_backbone(name)`` knows the torchvision ResNets (:mod:`.resnet`), the small plain
CNNs for CPU-sized runs (:mod:`.cnn`) and ViTs in Lightly's wrapper (:mod:`.vit`). This
package holds the backbone facts the config checks, the checkpoints and the models share;
it imports no model code.
"""

from torch import nn

from dscl_plugin import checks
from dscl_plugin.backbones.cnn import PLAIN_CNNS, build_plain_cnn
from dscl_plugin.backbones.resnet import RESNET_PREFIXES, build_resnet, is_resnet
from dscl_plugin.backbones.vit import (
    VIT_POOLS,
    VIT_PRESETS,
    ViTBackbone,
    build_vit,
    is_vit,
    vit_spec,
)

__all__ = [
    "PLAIN_CNNS",
    "RESNET_PREFIXES",
    "VIT_POOLS",
    "VIT_PRESETS",
    "ViTBackbone",
    "build_backbone",
    "check_backbone_name",
]


def build_backbone(
    name: str,
    cifar_stem: bool = False,
    zero_init_residual: bool = True,
    *,
    image_size: int = 224,
    vit_pool: str = "mean",
    vit_patch_size: int | None = None,
    vit_depth: int | None = None,
    vit_width: int | None = None,
    vit_heads: int | None = None,
) -> tuple[nn.Module, int]:
    """A randomly initialised backbone mapping images (B, 3, H, W) to a feature map (B, C, h, w).

    Args:
        name: a torchvision ResNet (``"resnet18"``, ``"resnet50"``, ``"resnext50_32x4d"``,
            ``"wide_resnet50_2"``, ...; never downloads weights), a small plain CNN for
            CPU-sized runs (:data:`PLAIN_CNNS`: ``"small_cnn"``, 3 blocks, for digits_lt;
            ``"cnn5"``, 5 blocks, for Fashion-MNIST-LT) or a ViT (``"vit_tiny"``,
            ``"vit_small"``, ``"vit_b_16"``, ...: a torchvision ``VisionTransformer`` in
            Lightly's wrapper, see :mod:`dscl_plugin.backbones.vit`).
        cifar_stem: replace the ResNet stem (7x7 stride-2 conv + max-pool) with a 3x3
            stride-1 conv and no max-pool, for 32 px inputs (stride 8 instead of 32).
        zero_init_residual: zero the last BN of every residual branch (official: True).
        image_size: ViT only: the native size of its positional grid (other multiples of
            the patch size are interpolated).
        vit_pool: ViT only: pooled feature, ``"mean"`` of the patch tokens or ``"cls"``.
        vit_patch_size, vit_depth, vit_width, vit_heads: ViT only: replace the preset's
            sizes (None keeps them).

    Returns:
        ``(backbone, C)``.

    Raises:
        ValueError: an unknown name or invalid ViT sizes.
    """
    check_backbone_name("backbone", name)
    if is_vit(name):
        spec = vit_spec(name, vit_patch_size, vit_depth, vit_width, vit_heads)
        vit = build_vit(spec, image_size, vit_pool)
        return vit, vit.feature_dim
    if name in PLAIN_CNNS:
        return build_plain_cnn(name)
    return build_resnet(name, cifar_stem, zero_init_residual)


def check_backbone_name(argument: str, name: str) -> None:
    """Raises :class:`~dscl_plugin.errors.InvalidValue` naming ``argument`` unless
    :func:`build_backbone` knows ``name``."""
    checks.require(
        name in PLAIN_CNNS or is_vit(name) or is_resnet(name),
        argument,
        f"names an unknown backbone {name!r}: use one of {list(PLAIN_CNNS)}, a torchvision "
        f"ResNet such as 'resnet18' or 'resnet50', or a ViT: {list(VIT_PRESETS)}",
    )
