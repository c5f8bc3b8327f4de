"""BCL (Zhu et al., CVPR 2022): a cosine classifier trained with logit-adjusted
cross-entropy on one view (:class:`~dscl_plugin.losses.LogitAdjustLoss`, term
``loss_ce``) and balanced contrastive learning on two others with class prototypes from
the classifier's weights (:class:`~dscl_plugin.losses.BCLLoss`, term ``loss_bcl``), on a
:class:`~dscl_plugin.models.BCLModel`; a batch method (no EMA, no queue) that trains its
own classifier.

- [0] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition,
  CVPR 2022, https://arxiv.org/abs/2207.09052
"""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.losses.bcl import BCLLoss
from dscl_plugin.losses.logit_adjust import LogitAdjustLoss
from dscl_plugin.methods.base import Method
from dscl_plugin.methods.views import Batch, Views
from dscl_plugin.models.bcl_model import BCLModel
from dscl_plugin.training.registry import register_method
from dscl_plugin.training.schema import Config


@dataclass(frozen=True)
class BCLOptions:
    """``method_options.bcl``: the total loss ``alpha * L_ce + beta * L_bcl`` (official
    ``main.py``: ``--alpha`` 1, ``--beta`` 0.35) and ``tau``, the weight of the log
    prior in the logit-adjusted cross-entropy ``L_ce`` (official ``LogitAdjust``: 1)."""

    alpha: float = 1.0
    beta: float = 0.35
    tau: float = 1.0

    def __post_init__(self) -> None:
        checks.at_least("alpha", self.alpha, 0)
        checks.at_least("beta", self.beta, 0)
        checks.at_least("tau", self.tau, 0)
        checks.require(
            self.alpha > 0 or self.beta > 0, "beta", "must be > 0 when alpha is 0 (no loss is left)"
        )


@register_method("bcl")
class BCLMethod(Method):
    """BCL [0]: three views of each image, one forward of the backbone on all of them
    (official ``main.py``): the classifier's logits of the first view (the key
    augmentation: crop, flip, colour jitter without hue, always; official: the same
    followed by RandAugment) and the projections of the other two (the query
    augmentation; official: crop, flip, jitter p 0.8, grayscale 0.2) with the C
    prototypes. ``loss = alpha * LogitAdjustLoss(logits) + beta * BCLLoss(z1, z2,
    prototypes)``, with ``model.temperature`` (official 0.07) and ``model.proj_dim``
    (official 1024); nothing is detached.

    - [0] Zhu et al., Balanced Contrastive Learning for Long-Tailed Visual Recognition,
      CVPR 2022, https://arxiv.org/abs/2207.09052
    """

    Options = BCLOptions
    label = "BCL"
    options: BCLOptions
    model: BCLModel
    needs_class_counts = True

    def __init__(self, config: Config, class_counts: Sequence[int] | None = None) -> None:
        super().__init__(config, class_counts)
        assert self.class_counts is not None  # needs_class_counts
        self.classifier_loss = LogitAdjustLoss(self.class_counts, self.options.tau)
        self.contrastive_loss = BCLLoss(config.model.temperature)

    def build_model(self, backbone: nn.Module, feature_dim: int) -> BCLModel:
        assert self.class_counts is not None  # needs_class_counts
        classes, m = len(self.class_counts), self.config.model
        return BCLModel(backbone, feature_dim, classes, m.proj_dim)

    def views(self) -> Views:
        return Views(("key", "query", "query"))

    def step(self, batch: Batch) -> dict[str, Tensor]:
        labels, o = batch.labels, self.options
        out = self.model(torch.cat(batch.views))
        _, first, second = out.features.split(len(labels))
        loss_ce = self.classifier_loss(out.logits[: len(labels)], labels)
        loss_bcl = self.contrastive_loss(first, second, labels, out.prototypes)
        loss = o.alpha * loss_ce + o.beta * loss_bcl
        return {"loss": loss, "loss_ce": loss_ce, "loss_bcl": loss_bcl}

    @property
    def own_classifier(self) -> nn.Module:
        """The cosine classifier on the pooled backbone features."""
        return self.model.classifier
