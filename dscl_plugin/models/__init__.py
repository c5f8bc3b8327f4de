"""Training models built from Lightly parts: :class:`DSCLModel` and :class:`SupConModel`
(:mod:`.dscl_model`), BCL's :class:`BCLModel` and its :class:`CosineClassifier`
(:mod:`.bcl_model`), and the feature-map helpers they share (:mod:`.feature_maps`)."""

from dscl_plugin.backbones import build_backbone
from dscl_plugin.models.bcl_model import BCLModel, CosineClassifier
from dscl_plugin.models.dscl_model import DSCLModel, SupConModel
from dscl_plugin.models.feature_maps import (
    backbone_feature_map,
    forward_without_stat_update,
    pool_regions,
)

__all__ = [
    "BCLModel",
    "CosineClassifier",
    "DSCLModel",
    "SupConModel",
    "backbone_feature_map",
    "build_backbone",
    "forward_without_stat_update",
    "pool_regions",
]
