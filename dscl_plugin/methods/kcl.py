"""KCL (Kang et al., ICLR 2021): MoCo with a labelled queue and ``k`` positives per anchor
drawn from the queue (:class:`~dscl_plugin.losses.KCLLoss`), on the EMA encoder and queue
of :class:`~dscl_plugin.models.DSCLModel`; the term ``loss_kcl``.

- [0] Kang et al., Exploring Balanced Feature Spaces for Representation Learning,
  ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit
"""

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.losses.kcl import KCLLoss
from dscl_plugin.methods.momentum import MomentumMethod
from dscl_plugin.methods.views import Batch, Views
from dscl_plugin.models.dscl_model import DSCLModel
from dscl_plugin.training.registry import register_method
from dscl_plugin.training.schema import Config


@dataclass(frozen=True)
class KCLOptions:
    """``method_options.kcl``: ``num_positive``, the ``k`` queue positives of each anchor
    (official: ``--K`` 6; 0 takes every queue row of the anchor's class)."""

    official_names: ClassVar[dict[str, str]] = {"K": "num_positive"}
    num_positive: int = 6

    def __post_init__(self) -> None:
        checks.integer("num_positive", self.num_positive, 0)


@register_method("kcl")
class KCLMethod(MomentumMethod):
    """KCL [0]: two views of the key augmentation (official: crop, flip and colour jitter
    without hue, the same for both views), the query view's projection against its key
    and the labelled queue.

    - [0] Kang et al., Exploring Balanced Feature Spaces for Representation Learning,
      ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit
    """

    Options = KCLOptions
    label = "KCL"
    term = "loss_kcl"
    options: KCLOptions
    model: DSCLModel

    @classmethod
    def check_config(cls, config: Config) -> list[str]:
        if cls.option_problems(config, config.method):
            return []  # reported as option problems
        options = cls.read_options(config, config.method)
        assert isinstance(options, KCLOptions)
        k = options.num_positive
        if config.model.queue_size >= k:
            return []
        return [
            f"model.queue_size: {config.method} draws {cls.options_key(config.method)}"
            f".num_positive={k} positives per anchor from the queue; set model.queue_size={k} "
            f"or more (got {config.model.queue_size})"
        ]

    def views(self) -> Views:
        return Views(("key", "key"))

    def build_criterion(self) -> KCLLoss:
        """The loss of the model: :class:`~dscl_plugin.losses.KCLLoss`."""
        return KCLLoss(self.options.num_positive, self.config.model.temperature)

    def build_model(self, backbone: nn.Module, feature_dim: int) -> DSCLModel:
        return DSCLModel(
            backbone,
            feature_dim,
            pbsd_weight=0.0,
            criterion=self.build_criterion(),
            **self.queue_model_args(),
        )

    def step(self, batch: Batch) -> dict[str, Tensor]:
        view_q, view_k = batch.views
        out = self.model(view_q, view_k, None, None, batch.labels)
        return {"loss": out["loss"], self.term: out["loss_dscl"]}
