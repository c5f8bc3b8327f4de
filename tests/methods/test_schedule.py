"""The harness's learning-rate schedule: Lightly's warm-up and cosine, and each cycle
between restarts that schedule again."""

import pytest
import torch
from lightly.utils.scheduler import CosineWarmupScheduler

from dscl_plugin.methods.schedule import RestartingCosineWarmupScheduler


def _lrs(scheduler_type, steps, **kwargs):
    """The learning rate of each of ``steps`` steps (base lr 1)."""
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = scheduler_type(optimizer, **kwargs)
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_without_restarts_it_is_lightlys_schedule():
    kwargs = dict(warmup_epochs=3, max_epochs=12, end_value=0.0)
    assert _lrs(RestartingCosineWarmupScheduler, 12, **kwargs) == _lrs(
        CosineWarmupScheduler, 12, **kwargs
    )


def test_each_cycle_is_the_schedule_of_its_length_with_its_own_warm_up():
    got = _lrs(RestartingCosineWarmupScheduler, 12, warmup_epochs=3, max_epochs=12, restarts=[8])
    first = _lrs(CosineWarmupScheduler, 8, warmup_epochs=3, max_epochs=8)
    second = _lrs(CosineWarmupScheduler, 4, warmup_epochs=3, max_epochs=4)
    assert got == pytest.approx(first + second)
    short = _lrs(RestartingCosineWarmupScheduler, 6, warmup_epochs=4, max_epochs=6, restarts=[4])
    assert short[4:] == pytest.approx([0.5, 1.0])  # warm-up capped at the cycle's 2 steps


@pytest.mark.parametrize("restarts", [[0], [12], [3, 20]])
def test_a_restart_outside_the_schedule_is_refused(restarts):
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    with pytest.raises(ValueError, match=r"restarts must lie in \(0, 12\)"):
        RestartingCosineWarmupScheduler(optimizer, 0, 12, restarts)
