"""Run settings and loops several test files share: the tiny ``digits_lt`` run every CLI
test trains, a few-steps training loop, a long-tailed image folder, a process holding a file
lock, and the mark of tests that need a CUDA GPU."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import pytorch_lightning as pl
import torch
from PIL import Image
from torch import nn

from dscl_plugin.training.config import load_config
from dscl_plugin.training.presets import PRESETS_DIR

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

ROOT = Path(__file__).resolve().parents[1]  # the repository
CONFIGS = PRESETS_DIR  # the shipped presets
CONFIG = str(CONFIGS / "dscl_digits_lt.yaml")
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


def training_losses(
    model: nn.Module, optimizer: torch.optim.Optimizer, batch: tuple, steps: int
) -> list:
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


def tiny(tmp_path, name, *extra):
    return load_config(CONFIG, TINY + [f"output_dir={tmp_path / name}", *extra])


def state_copy(module):
    """A copy of ``module``'s state dict."""
    return {k: v.clone() for k, v in module.state_dict().items()}


class Crash(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise RuntimeError("simulated crash")


class RecordSteps(pl.Callback):
    """(global step, batch index, labels, lr) of every training batch."""

    def __init__(self):
        self.steps = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        lr = trainer.optimizers[0].param_groups[0]["lr"]
        self.steps.append((trainer.global_step, batch_idx, batch[4].tolist(), lr))


class CrashAt(pl.Callback):
    def __init__(self, epoch, batch_idx):
        self.epoch, self.batch_idx = epoch, batch_idx

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if (trainer.current_epoch, batch_idx) == (self.epoch, self.batch_idx):
            raise RuntimeError("simulated crash")


DDP_SCRIPT = textwrap.dedent(
    """
    import sys
    import pytorch_lightning as pl
    import torch
    from dscl_plugin.errors import ConfigError
    from dscl_plugin.training.config import load_config
    from dscl_plugin.models import forward_without_stat_update
    from dscl_plugin.runs.stage1 import train

    class RecordKeys(pl.Callback):
        keys, labels = [], []

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            model = module.model  # the EMA encoder is unchanged since this step's forward
            with torch.no_grad():
                feature_map = forward_without_stat_update(model.backbone_momentum, batch[1])
                self.keys.append(model.projection_head_momentum(feature_map.mean(dim=(2, 3))))
            self.labels.append(batch[4])

        def on_train_end(self, trainer, module):
            bank, bank_labels = module.model.memory_bank.get()
            torch.save(
                dict(bank=bank, bank_labels=bank_labels, keys=torch.cat(self.keys),
                     labels=torch.cat(self.labels), world_size=trainer.world_size),
                f"{config.output_dir}/rank{trainer.global_rank}.pt",
            )

    config = load_config(sys.argv[1], sys.argv[2:])
    train(config, callbacks=[RecordKeys()])
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    """
)


def run_two_process_ddp(tmp_path, *extra):
    """:data:`DDP_SCRIPT` on the tiny digits run, one epoch of 2 steps in 2 CPU processes
    (DDP, no shuffle-BN: keys recorded per rank); what rank 0 and rank 1 saved."""
    script = tmp_path / "ddp_run.py"
    script.write_text(DDP_SCRIPT)
    out = tmp_path / "ddp"
    overrides = TINY + [
        f"output_dir={out}",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        "trainer.epochs=1",
        "trainer.limit_train_batches=2",
        "model.shuffle_bn=false",  # keys recorded per rank (shuffle-BN: test_models.py)
        *extra,
    ]
    result = subprocess.run(
        [sys.executable, str(script), CONFIG, *overrides],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return tuple(torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))


def run_python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -c code args...`` in a fresh interpreter with this checkout first on
    ``PYTHONPATH``, output captured as text."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


# 10 classes, 300 ... 6 training images (300 * 50 ** (-c / 9)): many > 100, few < 20
LONG_TAIL = [300, 194, 125, 81, 52, 34, 22, 14, 9, 6]


def image_folder(
    root: Path,
    train: list[int],
    test: int = 5,
    val: int = 0,
    size: int = 8,
    colour: bool = False,
) -> Path:
    """``root/{train,test,val}/class<c>/<n>.png``: ``train[c]`` images of class c, ``test``
    (and ``val``) of each; ``size`` px PNGs, grey (``L``) or RGB, each class its own
    brightness (and hue) plus noise, so that a classifier can tell them apart."""
    rng = np.random.default_rng(0)
    splits = {"train": train, "test": [test] * len(train), "val": [val] * len(train)}
    for split, counts in splits.items():
        for c, n in enumerate(counts if split != "val" or val else []):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True, exist_ok=True)
            base = np.array([25 * c, 250 - 25 * c, 120])[: 3 if colour else 1]
            for i in range(n):
                pixels = base + rng.integers(0, 20, size=(size, size, len(base)))
                image = pixels.clip(0, 255).astype(np.uint8)
                Image.fromarray(image if colour else image[..., 0]).save(folder / f"{i}.png")
    return root


HOLD_LOCK = (
    "import fcntl, sys, time\n"
    "file = open(sys.argv[1], 'a')\n"
    "fcntl.flock(file, fcntl.LOCK_EX)\n"
    "print('held', flush=True)\n"
    "time.sleep(120)\n"
)


def lock_holder(path: Path) -> subprocess.Popen:
    """A process that takes an exclusive ``flock`` on ``path``, prints ``held`` and keeps
    it for two minutes (or until killed)."""
    return subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)], stdout=subprocess.PIPE, text=True
    )
