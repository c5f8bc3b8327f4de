"""DSCL + PBSD (Xuan & Zhang, AAAI 2024): ``L = L_dscl + pbsd_weight * L_pbsd`` on a
:class:`~dscl_plugin.models.DSCLModel`; ``model.pbsd_weight: 0`` is DSCL alone.

- [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
  AAAI 2024, https://arxiv.org/abs/2403.06151
"""

from dataclasses import dataclass

from torch import Tensor, nn

from dscl_plugin.methods.options import option_names
from dscl_plugin.methods.pull_ratio import PullRatioMethod
from dscl_plugin.methods.views import Batch, Patches, Views
from dscl_plugin.models.dscl_model import DSCLModel
from dscl_plugin.training.registry import register_method
from dscl_plugin.training.schema import Config


@dataclass(frozen=True)
class DSCLOptions:
    """DSCL's and PBSD's keys, set in the config's ``model`` section (``model.beta``) and
    checked with it (:mod:`dscl_plugin.training.validation`); their meaning and defaults
    are :class:`~dscl_plugin.training.schema.ModelConfig`'s."""

    alpha: float | None
    beta: float | None
    pbsd_weight: float
    num_patches: int
    patch_size: int
    patch_scale: list[float]
    roi_aligned: bool
    patch_passes: str


@register_method("dscl")
class DSCLMethod(PullRatioMethod):
    """DSCL + PBSD [0]: terms ``loss_dscl`` and (with ``pbsd_weight > 0``) ``loss_pbsd``;
    views: a query view with its PBSD patches and a key view.

    - [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
      AAAI 2024, https://arxiv.org/abs/2403.06151
    """

    Options = DSCLOptions
    options: DSCLOptions

    @classmethod
    def options_key(cls, name: str) -> str:
        return "model"

    @classmethod
    def option_problems(
        cls, config: Config, name: str, elsewhere: dict[str, str] | None = None
    ) -> list[str]:
        """None of its own (the config's rules check ``model``), but a section
        ``method_options.<name>``, which it would not read, is refused."""
        if name not in config.method_options:
            return []
        keys = ", ".join(f"model.{key}" for key in option_names(DSCLOptions))
        return [f"method_options.{name}: {name} reads its options from {keys}; set them there"]

    @classmethod
    def read_options(cls, config: Config, name: str) -> DSCLOptions:
        m = config.model
        return DSCLOptions(**{key: getattr(m, key) for key in option_names(DSCLOptions)})

    def views(self) -> Views:
        o = self.options
        patches = Patches(o.num_patches, o.patch_size, o.patch_scale)
        return Views(("query", "key"), patches if o.pbsd_weight > 0 else None)

    def build_model(self, backbone: nn.Module, feature_dim: int) -> DSCLModel:
        m, o = self.config.model, self.options
        return DSCLModel(
            backbone,
            feature_dim,
            alpha=o.alpha,
            beta=o.beta,
            temperature=m.temperature,
            pbsd_weight=o.pbsd_weight,
            roi_aligned=o.roi_aligned,
            patch_passes=o.patch_passes,
            **self.queue_model_args(),
        )

    def step(self, batch: Batch) -> dict[str, Tensor]:
        out = self.forward_model(batch)
        terms = {"loss": out["loss"], "loss_dscl": out["loss_dscl"]}
        if self.options.pbsd_weight > 0:
            terms["loss_pbsd"] = out["loss_pbsd"]
        return terms
