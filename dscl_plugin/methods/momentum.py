"""The harness of the methods with an EMA (momentum) encoder and a labelled queue of its
keys (MoCo's pattern: SupCon, DSCL, KCL, TSC, PaCo).

Every step starts with the EMA update ``theta_m <- m theta_m + (1 - m) theta`` (constant
``model.momentum``, or Lightly's ``cosine_schedule`` from it to 1 with
``model.momentum_cosine``) and logs how full the queue is. Under DDP the queue gathers
keys with their labels from every process (:attr:`MomentumMethod.gather_distributed`).
"""

from collections.abc import Sequence
from typing import Protocol, TypedDict, cast

from lightly.utils.scheduler import cosine_schedule
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.memory import LabeledMemoryBank
from dscl_plugin.methods.base import Method
from dscl_plugin.training.schema import Config


class MomentumModel(Protocol):
    """What :class:`MomentumMethod` needs of its model besides ``backbone``."""

    memory_bank: LabeledMemoryBank

    def update_momentum(self, m: float | None = None) -> None: ...


class QueueModelArgs(TypedDict):
    """The arguments every EMA-and-queue model takes from ``model`` and the run."""

    proj_dim: int
    queue_size: int
    momentum: float
    gather_distributed: bool
    shuffle_bn: bool


class MomentumMethod(Method):
    """A :class:`~dscl_plugin.methods.Method` whose model has an EMA copy and a queue:
    ``update_momentum(m)`` and a ``memory_bank`` (a
    :class:`~dscl_plugin.memory.LabeledMemoryBank`), as
    :class:`~dscl_plugin.models.DSCLModel` has. Build the model with
    :meth:`queue_model_args`.

    Raises:
        ValueError: the model lacks ``update_momentum`` or a ``LabeledMemoryBank``.
    """

    def __init__(self, config: Config, class_counts: Sequence[int] | None = None) -> None:
        super().__init__(config, class_counts)
        checks.require(
            callable(getattr(self.model, "update_momentum", None))
            and isinstance(getattr(self.model, "memory_bank", None), LabeledMemoryBank),
            "build_model",
            "must return a model with update_momentum(m) and a LabeledMemoryBank memory_bank "
            f"for a MomentumMethod, got {type(self.model).__name__}",
        )

    @property
    def gather_distributed(self) -> bool:
        """Whether the run has several processes (``trainer.devices x trainer.num_nodes >
        1``), whose keys the memory bank must gather."""
        t = self.config.trainer
        return t.devices * t.num_nodes > 1

    def queue_model_args(self) -> QueueModelArgs:
        """``model.proj_dim``, ``queue_size``, ``momentum`` and ``shuffle_bn``, with
        :attr:`gather_distributed`, for the model's constructor."""
        m = self.config.model
        return QueueModelArgs(
            proj_dim=m.proj_dim,
            queue_size=m.queue_size,
            momentum=m.momentum,
            gather_distributed=self.gather_distributed,
            shuffle_bn=m.shuffle_bn,
        )

    @property
    def momentum_model(self) -> MomentumModel:
        return cast(MomentumModel, self.model)  # checked when built

    def ema_momentum(self) -> float:
        """The EMA momentum of the current step."""
        m = self.config.model
        if not m.momentum_cosine:
            return m.momentum
        total = self.trainer.estimated_stepping_batches
        momentum: float = cosine_schedule(self.global_step, total, m.momentum, 1.0)
        return momentum

    def before_step(self) -> None:
        self.momentum_model.update_momentum(self.ema_momentum())

    def step_metrics(self) -> dict[str, Tensor | float]:
        """The learning rate and ``queue_fill``, the filled fraction of the queue."""
        bank = self.momentum_model.memory_bank
        fill = bank.num_filled.float() / max(bank.size[0], 1)
        return {**super().step_metrics(), "queue_fill": fill.squeeze()}
