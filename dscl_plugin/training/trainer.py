"""The Lightning ``Trainer`` of stage 1: atomic ``last.ckpt`` per epoch (and every
``trainer.checkpoint_every_n_steps`` steps), exact resume, CSV logs, a progress bar on a
terminal and one line per epoch off it."""

from collections.abc import Iterable, Sized
from pathlib import Path
from typing import cast

import pytorch_lightning as pl
from lightning_fabric.connector import _PRECISION_INPUT
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import Logger, TensorBoardLogger

from dscl_plugin.training.checkpoint_io import AtomicCheckpointIO
from dscl_plugin.training.data import TrainingData
from dscl_plugin.training.lightning_adapters import (
    ContinuedCSVLogger,
    progress_callbacks,
    silence_lightning_tips,
)
from dscl_plugin.training.resume import ExactResume
from dscl_plugin.training.schema import Config


def last_checkpoint(
    checkpoint_dir: Path, every_n_epochs: int | None = None, every_n_train_steps: int | None = None
) -> ModelCheckpoint:
    """``ModelCheckpoint`` writing ``checkpoint_dir/last.ckpt`` every ``every_n_epochs``
    epochs or ``every_n_train_steps`` optimizer steps."""
    return ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="last",
        save_top_k=1,
        enable_version_counter=False,
        every_n_epochs=every_n_epochs,
        every_n_train_steps=every_n_train_steps,
    )


def configured_loggers(config: Config, log_dir: Path) -> list[Logger]:
    """The CSV log ``log_dir/metrics.csv`` (continued by a resumed run) and, for
    ``trainer.logger: tensorboard``, TensorBoard event files in ``log_dir/tensorboard``."""
    loggers: list[Logger] = [ContinuedCSVLogger(log_dir.parent, name="", version=log_dir.name)]
    if config.trainer.logger == "tensorboard":
        loggers.append(TensorBoardLogger(log_dir.parent, name=log_dir.name, version="tensorboard"))
    return loggers


def log_interval(config: Config, data: TrainingData) -> int:
    """``trainer.log_every_n_steps``, at most the steps of one epoch of ``data`` (so a
    small data set logs every epoch, without Lightning's warning)."""
    t = config.trainer
    steps = len(cast(Sized, data.dataset)) // (data.batch_size * t.devices * t.num_nodes)
    if t.limit_train_batches is not None:
        steps = min(steps, t.limit_train_batches)
    return max(1, min(t.log_every_n_steps, steps))


def build_trainer(
    config: Config,
    checkpoint_dir: Path,
    log_dir: Path,
    data: TrainingData,
    callbacks: Iterable[pl.Callback] = (),
    loggers: Iterable[Logger] = (),
) -> pl.Trainer:
    """Lightning trainer of ``config.trainer`` for ``data``: ``last.ckpt`` in
    ``checkpoint_dir`` per epoch (and every ``trainer.checkpoint_every_n_steps`` steps;
    atomic, the previous one kept), :class:`ExactResume` of ``data``'s loader, the
    :func:`configured_loggers` and ``loggers`` every :func:`log_interval` steps,
    ``callbacks``, a progress bar on a terminal (one line per epoch when stdout is
    redirected)."""
    silence_lightning_tips()
    t = config.trainer
    distributed = t.devices > 1 or t.num_nodes > 1
    strategy = "ddp" if t.strategy == "auto" and distributed else t.strategy
    checkpoints = [last_checkpoint(checkpoint_dir, every_n_epochs=1)]
    if t.checkpoint_every_n_steps is not None:
        checkpoints.append(
            last_checkpoint(checkpoint_dir, every_n_train_steps=t.checkpoint_every_n_steps)
        )
    progress_bar, progress = progress_callbacks(t.progress_bar)
    return pl.Trainer(
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        sync_batchnorm=t.sync_batchnorm,
        strategy=strategy,
        precision=cast(_PRECISION_INPUT, t.precision),  # one of PRECISIONS (validated)
        limit_train_batches=t.limit_train_batches,
        log_every_n_steps=log_interval(config, data),
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=config.output_dir,
        logger=[*configured_loggers(config, log_dir), *loggers],
        callbacks=[
            ExactResume(data.generator, data.position),
            *callbacks,  # before the epoch line, which shows what they log
            *progress,
            *checkpoints,
        ],
        plugins=[AtomicCheckpointIO(keep_previous=True)],
    )
