"""Feature maps of a backbone and the regions pooled from them (the PBSD teacher)."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import roi_align

from dscl_plugin import checks
from dscl_plugin.backbones import ViTBackbone
from dscl_plugin.functional.contrastive import compute_dtype


def pool_regions(
    feature_map: Tensor, boxes: Tensor, image_size: Sequence[int], aligned: bool = False
) -> Tensor:
    """Mean of the 2x2 ``roi_align`` of every box: (B, C, h, w), (B, L, 4) -> (B, L, C).

    Boxes are ``(x1, y1, x2, y2)`` in pixels of the image the map was computed from and
    ``spatial_scale = w / image_width``. ``aligned=False`` is the official DSCL pooling
    (torchvision's default: box corners scaled as they are, boxes at least one cell
    wide); ``aligned=True`` shifts them by half a cell (continuous coordinates, so a box
    maps onto exactly the feature cells it covers).
    The pooling runs in float32 (float64 for float64 maps) whatever the map's dtype: a
    bf16 map under autocast would round batch indices above 256 (pooling another image's
    region) and box corners to whole pixels above 128.
    """
    b, num_boxes, _ = boxes.shape
    dtype = compute_dtype(feature_map)
    index = torch.arange(b, device=feature_map.device, dtype=dtype).repeat_interleave(num_boxes)
    rois = torch.cat([index[:, None], boxes.reshape(-1, 4).to(index)], dim=1)
    regions: Tensor = roi_align(
        feature_map.to(dtype),
        rois,
        output_size=2,
        spatial_scale=feature_map.shape[-1] / image_size[-1],
        aligned=aligned,
    )
    return regions.mean(dim=(2, 3)).reshape(b, num_boxes, -1)


def forward_without_stat_update(module: nn.Module, images: Tensor) -> Tensor:
    """``module(images)`` that leaves every buffer (BN running statistics) unchanged.

    The call sees clones of the buffers, so BatchNorm still normalises with batch
    statistics in train mode (and running ones in eval mode) while gradients reach
    the module's own parameters.
    """
    buffers = {name: buffer.clone() for name, buffer in module.named_buffers()}
    output: Tensor = torch.func.functional_call(module, buffers, (images,))
    return output


def backbone_feature_map(backbone: nn.Module, images: Tensor, keep_buffers: bool = False) -> Tensor:
    """``backbone(images)``, checked to be a feature map (B, C, h, w); ``keep_buffers``:
    through :func:`forward_without_stat_update`.

    Raises:
        ValueError: the backbone returns anything else (e.g. pooled (B, C) vectors).
    """
    if keep_buffers:
        feature_map = forward_without_stat_update(backbone, images)
    else:
        feature_map = backbone(images)
    checks.require(
        feature_map.ndim == 4,
        "backbone",
        f"must return feature maps (B, C, h, w), got shape {tuple(feature_map.shape)}",
    )
    return feature_map


def global_pool(feature_map: Tensor) -> Tensor:
    """Global average pooling, (B, C, h, w) -> (B, C)."""
    return feature_map.mean(dim=(2, 3))


def map_and_pooled(
    backbone: nn.Module, images: Tensor, keep_buffers: bool = False
) -> tuple[Tensor, Tensor]:
    """The feature map (B, C, h, w) and the pooled feature (B, C): a ``ViTBackbone``'s own
    pooling (mean of patch tokens or class token; it has no buffers to keep), else
    global average pooling of the map."""
    if isinstance(backbone, ViTBackbone):
        return backbone.forward_features(images)
    feature_map = backbone_feature_map(backbone, images, keep_buffers)
    return feature_map, global_pool(feature_map)
