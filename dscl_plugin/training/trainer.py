"""The Lightning ``Trainer`` of stage 1: atomic ``last.ckpt`` per epoch (and every
``trainer.checkpoint_every_n_steps`` steps), RNG state, CSV logs, a progress bar on a
terminal and one line per epoch off it."""

from collections.abc import Iterable
from pathlib import Path

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from dscl_plugin.training.checkpoint_io import AtomicCheckpointIO
from dscl_plugin.training.lightning_adapters import (
    ContinuedCSVLogger,
    progress_callbacks,
    silence_lightning_tips,
)
from dscl_plugin.training.resume import (
    MidEpochResumeCallback,
    ResumableDataLoader,
    RNGStateCallback,
)
from dscl_plugin.training.schema import Config


def _last_checkpoint(checkpoint_dir: Path, **every: int) -> ModelCheckpoint:
    """``ModelCheckpoint`` writing ``checkpoints/last.ckpt`` (``every_n_epochs`` or
    ``every_n_train_steps``)."""
    return ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="last",
        save_top_k=1,
        enable_version_counter=False,
        **every,
    )


def _loggers(config: Config) -> list[Logger]:
    """``logs/metrics.csv`` (continued by a resumed run), and for ``trainer.logger:
    tensorboard`` also TensorBoard event files in ``logs/tensorboard``."""
    loggers: list[Logger] = [ContinuedCSVLogger(config.output_dir, name="", version="logs")]
    if config.trainer.logger == "tensorboard":
        loggers.append(TensorBoardLogger(config.output_dir, name="logs", version="tensorboard"))
    return loggers


def build_trainer(
    config: Config,
    checkpoint_dir: Path,
    generators: dict[str, torch.Generator],
    callbacks: Iterable[pl.Callback] = (),
    loader: ResumableDataLoader | None = None,
) -> pl.Trainer:
    """Lightning trainer: atomic ``last.ckpt`` per epoch (and every
    ``trainer.checkpoint_every_n_steps`` steps, resumable inside the epoch when the
    train ``loader`` is given), RNG state, CSV logs, progress bar on a terminal (one line
    per epoch when stdout is redirected)."""
    silence_lightning_tips()
    t = config.trainer
    distributed = t.devices > 1 or t.num_nodes > 1
    strategy = "ddp" if t.strategy == "auto" and distributed else t.strategy
    checkpoints = [_last_checkpoint(checkpoint_dir, every_n_epochs=1)]
    if t.checkpoint_every_n_steps is not None:
        checkpoints.append(
            _last_checkpoint(checkpoint_dir, every_n_train_steps=t.checkpoint_every_n_steps)
        )
    resume = [MidEpochResumeCallback(loader)] if loader is not None else []
    progress_bar, progress = progress_callbacks(t.progress_bar)
    return pl.Trainer(
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        sync_batchnorm=t.sync_batchnorm,
        strategy=strategy,
        precision=t.precision,
        limit_train_batches=t.limit_train_batches,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=config.output_dir,
        logger=_loggers(config),
        callbacks=[
            RNGStateCallback(generators),
            *resume,
            *callbacks,  # before the epoch line, which shows what they log
            *progress,
            *checkpoints,
        ],
        plugins=[AtomicCheckpointIO(keep_previous=True)],
    )
