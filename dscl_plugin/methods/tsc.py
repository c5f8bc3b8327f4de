"""TSC (Li et al., CVPR 2022): KCL with class targets spread uniformly on the hypersphere
and matched to the classes every step (:class:`~dscl_plugin.losses.TSCLoss`), after a KCL
warm-up, on the EMA encoder and queue of :class:`~dscl_plugin.models.DSCLModel`; the term
``loss_tsc`` and its two parts, ``loss_tsc = loss_tsc_class + target_weight x
loss_tsc_target`` (the official ``loss_class`` and unweighted ``loss_target``).

- [0] Li et al., Targeted Supervised Contrastive Learning for Long-Tailed Recognition,
  CVPR 2022, https://arxiv.org/abs/2111.13998
"""

import math
from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.losses.tsc import TSCLoss
from dscl_plugin.methods.kcl import KCLMethod, KCLOptions
from dscl_plugin.methods.views import Batch, Views
from dscl_plugin.training.registry import register_method


@dataclass(frozen=True)
class TSCOptions(KCLOptions):
    """``method_options.tsc``, the official defaults (``LTH14/targeted-supcon``, README's
    ImageNet-LT command ``--K 6 --targeted --tr 1 --sep_t --tw 0.2``):

    - ``num_positive``: KCL's ``k`` queue positives of each anchor (0: every queue row
      of its class);
    - ``target_weight``: ``tw``, the weight of the target term;
    - ``target_repeat``: ``tr``, the copies of each target among the columns;
    - ``separate_targets``: ``sep_t``, the matched target is always a positive (else it
      is drawn with the queue positives);
    - ``kcl_fraction``: the first ``floor(kcl_fraction x trainer.epochs)`` epochs train
      KCL, without targets (official: half, ``epochs // 2``);
    - ``restart_schedule``: at the switch to TSC the learning-rate schedule starts again
      and the optimiser's state is cleared (official: a new optimiser and cosine);
    - ``view_kind``: the augmentation of both views, ``"key"`` (official ImageNet-LT:
      crop, flip, colour jitter without hue, always) or ``"query"`` (the colour
      augmentation of ``data``, as the official CIFAR-LT code's SimCLR views).
    """

    official_names: ClassVar[dict[str, str]] = {
        **KCLOptions.official_names, "tw": "target_weight", "target-weight": "target_weight",
        "tr": "target_repeat", "sep_t": "separate_targets",
    }  # fmt: skip
    target_weight: float = 0.2
    target_repeat: int = 1
    separate_targets: bool = True
    kcl_fraction: float = 0.5
    restart_schedule: bool = True
    view_kind: str = "key"

    def __post_init__(self) -> None:
        super().__post_init__()
        checks.at_least("target_weight", self.target_weight, 0)
        checks.integer("target_repeat", self.target_repeat, 1)
        checks.half_open("kcl_fraction", self.kcl_fraction, 0, 1)
        checks.one_of("view_kind", self.view_kind, ("key", "query"))


@register_method("tsc")
class TSCMethod(KCLMethod):
    """TSC [0]: KCL's queue and two views of ``view_kind``; the first ``kcl_fraction``
    of the epochs train KCL (the official warm-up), the rest TSC: the ``C`` targets (one
    per training class, of dimension ``model.proj_dim``) are extra columns of every
    anchor and the target matched to its class (the Hungarian algorithm on the running
    class centroids) a positive weighted ``tw``. The targets and centroids are buffers
    of ``model.criterion``, saved in every checkpoint.

    - [0] Li et al., Targeted Supervised Contrastive Learning for Long-Tailed
      Recognition, CVPR 2022, https://arxiv.org/abs/2111.13998
    """

    Options = TSCOptions
    label = "TSC"
    term = "loss_tsc"
    options: TSCOptions
    needs_class_counts = True

    @property
    def kcl_epochs(self) -> int:
        """The epochs of the KCL warm-up, ``floor(kcl_fraction x trainer.epochs)``."""
        return math.floor(self.options.kcl_fraction * self.config.trainer.epochs)

    @property
    def criterion(self) -> TSCLoss:
        criterion = self.model.criterion
        assert isinstance(criterion, TSCLoss)  # build_model's
        return criterion

    def schedule_restarts(self) -> tuple[int, ...]:
        """The switch from KCL to TSC, with ``restart_schedule`` and a KCL warm-up."""
        restart = self.options.restart_schedule and self.kcl_epochs > 0
        return (self.kcl_epochs,) if restart else ()

    def views(self) -> Views:
        return Views((self.options.view_kind,) * 2)

    def build_criterion(self) -> TSCLoss:
        """The loss of the model: :class:`~dscl_plugin.losses.TSCLoss` with a target per
        training class."""
        m, o = self.config.model, self.options
        assert self.class_counts is not None  # needs_class_counts
        return TSCLoss(
            num_classes=len(self.class_counts),
            dim=m.proj_dim,
            num_positives=o.num_positive,
            temperature=m.temperature,
            target_weight=o.target_weight,
            target_repeat=o.target_repeat,
            separate_targets=o.separate_targets,
            gather_distributed=self.gather_distributed,
        )

    def step(self, batch: Batch) -> dict[str, Tensor]:
        """``loss_tsc``: KCL's loss before epoch :attr:`kcl_epochs`, TSC's from it on; its
        parts (:class:`~dscl_plugin.losses.tsc.TSCParts`, no gradient) ``loss_tsc_class``
        (own key and queue positives) and ``loss_tsc_target`` (the matched targets,
        unweighted; 0 during the warm-up), ``loss_tsc = loss_tsc_class + target_weight x
        loss_tsc_target``."""
        criterion = self.criterion
        criterion.targeted = self.current_epoch >= self.kcl_epochs
        terms = super().step(batch)
        assert criterion.parts is not None  # set by the model's call of the loss
        class_loss, target_loss = criterion.parts
        return {**terms, "loss_tsc_class": class_loss, "loss_tsc_target": target_loss}
