"""The learning-rate schedule of the harness: Lightly's linear warm-up and cosine decay,
started again at the restarts a method asks for (a method trained in phases, e.g. TSC
after its KCL warm-up, as SGDR's warm restarts)."""

from collections.abc import Sequence

import torch
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_warmup_schedule

from dscl_plugin import checks


class RestartingCosineWarmupScheduler(CosineWarmupScheduler):
    """Lightly's ``CosineWarmupScheduler`` started afresh at each of ``restarts``.

    The steps (or epochs, the unit of ``max_epochs``) ``[0, max_epochs)`` split at the
    restarts into cycles; in cycle ``[s, e)`` step ``t`` has the factor
    ``cosine_warmup_schedule(t - s, e - s, 1, end_value, min(warmup_epochs, e - s), 0)``:
    each cycle has its own linear warm-up and cosine decay. Without restarts it is
    Lightly's schedule.

    Raises:
        ValueError: a restart outside ``(0, max_epochs)``, naming ``restarts``.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        warmup_epochs: int,
        max_epochs: int,
        restarts: Sequence[int] = (),
        end_value: float = 0.001,
    ) -> None:
        checks.require(
            all(0 < r < max_epochs for r in restarts),
            "restarts",
            f"must lie in (0, {max_epochs}), the steps or epochs of the schedule, got "
            f"{list(restarts)}",
        )
        self.restarts = sorted(set(restarts))
        super().__init__(optimizer, warmup_epochs, max_epochs, end_value=end_value)

    def scale_lr(self, epoch: int) -> float:
        """The factor of the learning rate at step (or epoch) ``epoch``."""
        start = max((r for r in self.restarts if r <= epoch), default=0)
        end = min((r for r in self.restarts if r > epoch), default=self.max_epochs)
        length = end - start
        factor = cosine_warmup_schedule(
            step=epoch - start,
            max_steps=length,
            start_value=self.start_value,
            end_value=self.end_value,
            warmup_steps=min(self.warmup_epochs, length),
            warmup_start_value=self.warmup_start_value,
            warmup_end_value=self.warmup_end_value,
        )
        return float(factor)
