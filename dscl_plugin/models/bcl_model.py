"""BCL's two-branch model [0]: a backbone shared by a cosine classifier and a projection
head, and a second head that maps the classifier's class weights to class prototypes.

- [0] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition,
  CVPR 2022, https://arxiv.org/abs/2207.09052
"""

from typing import NamedTuple

import torch
import torch.nn.functional as F
from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.models.feature_maps import map_and_pooled


class CosineClassifier(nn.Module):
    """``logits = s * normalize(x) @ normalize(W)^T`` (BCL's ``NormedLinear`` [0]): one
    weight row ``W_c`` per class, drawn uniform in [-1, 1] and scaled to unit norm.

    Attributes:
        weight: (C, D) class weights.
        scale: s, default 30 (official).

    Raises:
        ValueError: ``num_classes < 1``, ``in_features < 1`` or ``scale <= 0``.

    - [0] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition,
      CVPR 2022, https://arxiv.org/abs/2207.09052
    """

    def __init__(self, in_features: int, num_classes: int, scale: float = 30.0) -> None:
        super().__init__()
        checks.integer("in_features", in_features, 1)
        checks.integer("num_classes", num_classes, 1)
        checks.positive("scale", scale)
        weight = torch.empty(num_classes, in_features).uniform_(-1, 1)
        self.weight = nn.Parameter(F.normalize(weight, dim=1))
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        """(B, C) logits of (B, D) features."""
        return self.scale * F.normalize(x, dim=1) @ F.normalize(self.weight, dim=1).T


def bcl_projection_head(input_dim: int, output_dim: int) -> ProjectionHead:
    """BCL's MLP head ``D -> D -> output_dim``: Linear, BatchNorm, ReLU, Linear, both
    Linear layers with a bias (official ``head`` and ``head_fc``)."""
    return ProjectionHead(
        [
            (input_dim, input_dim, nn.BatchNorm1d(input_dim), nn.ReLU(), True),
            (input_dim, output_dim, None, None, True),
        ]
    )


class BCLOutput(NamedTuple):
    """What :class:`BCLModel` returns for N images."""

    features: Tensor  # (N, proj_dim), L2-normalised
    logits: Tensor  # (N, C), the cosine classifier's
    prototypes: Tensor  # (C, proj_dim), L2-normalised, row c of class c


class BCLModel(nn.Module):
    """BCL's model [0] (official ``models/resnext.py`` ``BCLModel`` with ``use_norm``):
    for pooled backbone features ``h``,

    - ``features = normalize(head(h))`` (the contrastive branch),
    - ``logits = classifier(h)`` (a :class:`CosineClassifier`),
    - ``prototypes = normalize(prototype_head(classifier.weight))`` (official
      ``head_fc(fc.weight.T)``: the raw class weights through an MLP whose BatchNorm
      normalises over the C classes; gradients reach the classifier through it).

    Args:
        backbone: images (B, 3, H, W) -> feature map (B, D, h, w) (or a ViT backbone).
        feature_dim: D.
        num_classes: C, at least 2.
        proj_dim: the heads' output size (official ``--feat_dim``, 1024).
        classifier_scale: ``s`` of the cosine classifier (official 30).

    Raises:
        ValueError: ``num_classes < 2`` (the prototype head's BatchNorm needs two rows),
            or a bad ``proj_dim`` or ``classifier_scale``.

    - [0] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition,
      CVPR 2022, https://arxiv.org/abs/2207.09052

    Examples:
        >>> backbone, dim = build_backbone("resnet50")
        >>> model = BCLModel(backbone, dim, num_classes=1000)
        >>> features, logits, prototypes = model(images)
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        num_classes: int,
        proj_dim: int = 1024,
        classifier_scale: float = 30.0,
    ) -> None:
        super().__init__()
        checks.integer("num_classes", num_classes, 2)
        checks.integer("proj_dim", proj_dim, 1)
        self.backbone = backbone
        self.head = bcl_projection_head(feature_dim, proj_dim)
        self.classifier = CosineClassifier(feature_dim, num_classes, classifier_scale)
        self.prototype_head = bcl_projection_head(feature_dim, proj_dim)

    def forward(self, images: Tensor) -> BCLOutput:
        pooled = map_and_pooled(self.backbone, images)[1]
        return BCLOutput(
            features=F.normalize(self.head(pooled), dim=1),
            logits=self.classifier(pooled),
            prototypes=F.normalize(self.prototype_head(self.classifier.weight), dim=1),
        )
