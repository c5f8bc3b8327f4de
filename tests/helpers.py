"""Run settings and loops several test files share: the tiny ``digits_lt`` run every CLI
test trains, a few-steps training loop, and the mark of tests that need a CUDA GPU."""

from pathlib import Path

import pytest
import torch
from torch import nn

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "dscl_digits_lt.yaml")
TINY = [
    "model.queue_size=64",
    "model.proj_dim=16",
    "trainer.epochs=2",
    "trainer.batch_size=16",
    "trainer.limit_train_batches=3",
    "trainer.num_workers=0",
    "trainer.progress_bar=false",
    "trainer.log_every_n_steps=1",
    "optim.warmup_epochs=1",
    "probe.epochs=2",
    "probe.milestones=[1]",
    "probe.batch_size=128",
    "eval.batch_size=300",
]


def training_losses(model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple, steps: int) -> list:
    """The loss of each of ``steps`` training steps (EMA update, forward, backward, step)
    on one batch."""
    losses = []
    for _ in range(steps):
        model.update_momentum()
        out = model(*batch)
        optimizer.zero_grad()
        out["loss"].backward()
        optimizer.step()
        losses.append(out["loss"].item())
    return losses
