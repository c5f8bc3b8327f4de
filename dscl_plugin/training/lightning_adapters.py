"""Small adapters around PyTorch Lightning: a CSV logger that continues its file on
resume, one printed line per epoch for redirected output, and narrow filters for the
messages Lightning prints on every run. Public Lightning API only."""

import csv
import logging
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter

from dscl_plugin.safe_io import writing


class ContinuedCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``save_dir/name/version/metrics.csv`` that continues an
    existing ``metrics.csv`` (its rows and columns kept) instead of deleting it, so a
    resumed run keeps one log.

    Lightning's writer deletes an existing file when it is created; this logger reads the
    file's rows first and hands them back to the new writer (``metrics``, ``save()``).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._continued = False

    @property
    def experiment(self) -> Any:  # as Lightning's: the writer on rank zero, a dummy elsewhere
        if self._continued:
            return super().experiment
        path = os.path.join(self.log_dir, ExperimentWriter.NAME_METRICS_FILE)
        rows: list[dict[str, Any]] = []  # the file's values, written back as read
        if os.path.isfile(path):
            with open(path, newline="") as file:
                rows = list(csv.DictReader(file))
        with warnings.catch_warnings():  # the file is read back, not lost
            warnings.filterwarnings("ignore", "Experiment logs directory .* exists and is not")
            writer = super().experiment
        self._continued = True
        if rows and isinstance(writer, ExperimentWriter):  # rank zero only
            writer.metrics = rows + writer.metrics
            self.save()
        return writer

    def save(self) -> None:
        """Lightning's save; an ``OSError`` (e.g. a full disk) names ``metrics.csv``."""
        with writing(os.path.join(self.log_dir, ExperimentWriter.NAME_METRICS_FILE)):
            super().save()


class EpochLines(pl.Callback):
    """Prints one line per training epoch to stdout, ``epoch 3/200: loss_epoch 4.21 ...
    (12.3 s)``: the progress of a run whose output goes to a file, where a progress bar
    would write hundreds of kilobytes of carriage returns."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics = trainer.callback_metrics
        values = {  # epoch values; "loss" is also logged as "loss_epoch": shown once
            name: float(value)
            for name, value in metrics.items()
            if not name.endswith("_step") and f"{name}_epoch" not in metrics and value.numel() == 1
        }
        shown = "  ".join(f"{name} {value:.4g}" for name, value in sorted(values.items()))
        seconds = time.perf_counter() - self._start
        print(
            f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {shown} ({seconds:.1f} s)",
            flush=True,
        )


def progress_callbacks(progress_bar: bool) -> tuple[bool, list[pl.Callback]]:
    """``(enable_progress_bar, callbacks)`` for ``trainer.progress_bar``: Lightning's bar
    on a terminal, :class:`EpochLines` when stdout is redirected, nothing when off."""
    if not progress_bar:
        return False, []
    if sys.stdout.isatty():
        return True, []
    return False, [EpochLines()]


class NoTips(logging.Filter):
    """Drops Lightning's advertising tips (``💡 Tip: ... litlogger / litmodels``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def silence_lightning_tips() -> None:
    """Adds :class:`NoTips` to Lightning's rank-zero loggers (once)."""
    for name in (
        "pytorch_lightning.utilities.rank_zero",
        "lightning.pytorch.utilities.rank_zero",
    ):
        logger = logging.getLogger(name)
        if not any(isinstance(f, NoTips) for f in logger.filters):
            logger.addFilter(NoTips())


@contextmanager
def expected_fit_warnings(resuming: bool) -> Iterator[None]:
    """Ignores, inside the block, the warnings a fit of this package always triggers:
    torch's ``LeafSpec`` deprecation (raised by Lightning's own pytree code), the
    resume-inside-an-epoch warning (``ExactResume`` resumes the loader
    itself) and, when ``resuming``, "Checkpoint directory ... exists"."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning
        )
        warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before")
        if resuming:
            warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
        yield
