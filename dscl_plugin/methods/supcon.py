"""SupCon (Khosla et al., NeurIPS 2020) in the harness of DSCL: EMA keys, a labelled
queue, no patches; the term ``loss_supcon``.

- [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020,
  https://arxiv.org/abs/2004.11362
"""

from torch import Tensor, nn

from dscl_plugin.methods.pull_ratio import PullRatioMethod
from dscl_plugin.methods.views import Batch
from dscl_plugin.models.dscl_model import SupConModel
from dscl_plugin.training.registry import register_method
from dscl_plugin.training.schema import Config


@register_method("supcon")
class SupConMethod(PullRatioMethod):
    """SupCon baseline [0] on :class:`~dscl_plugin.models.SupConModel`: the own key and
    every class positive weighted equally; DSCL's ``model.alpha``/``model.beta`` and
    PBSD must be off.

    - [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020,
      https://arxiv.org/abs/2004.11362
    """

    model: SupConModel

    @classmethod
    def check_config(cls, config: Config) -> list[str]:
        m, problems = config.model, []
        if m.alpha is not None or m.beta is not None:
            problems.append(
                "model.alpha/model.beta: supcon weights its positives equally; set both to null"
            )
        if m.pbsd_weight != 0:
            problems.append(
                f"model.pbsd_weight: supcon has no PBSD term; set 0 (got {m.pbsd_weight})"
            )
        return problems

    def build_model(self, backbone: nn.Module, feature_dim: int) -> SupConModel:
        temperature = self.config.model.temperature
        return SupConModel(
            backbone, feature_dim, temperature=temperature, **self.queue_model_args()
        )

    def step(self, batch: Batch) -> dict[str, Tensor]:
        out = self.forward_model(batch)
        return {"loss": out["loss"], "loss_supcon": out["loss_dscl"]}
