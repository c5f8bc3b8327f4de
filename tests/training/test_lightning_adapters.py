"""The Lightning adapters: progress on a terminal and off it, narrow warning filters, and
a CSV log continued across a resume."""

import csv
import sys
import warnings
from types import SimpleNamespace

import torch

from dscl_plugin.training.lightning_adapters import (
    ContinuedCSVLogger,
    EpochLines,
    expected_fit_warnings,
    progress_callbacks,
)


def test_progress_is_a_bar_on_a_terminal_and_one_line_per_epoch_otherwise(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdout", SimpleNamespace(isatty=lambda: True))
    assert progress_callbacks(True) == (True, [])
    monkeypatch.undo()
    assert progress_callbacks(False) == (False, [])
    bar, (lines,) = progress_callbacks(True)  # pytest's captured stdout is no terminal
    assert bar is False and isinstance(lines, EpochLines)
    trainer = SimpleNamespace(
        is_global_zero=True,
        current_epoch=2,
        max_epochs=200,
        callback_metrics={
            "loss": torch.tensor(4.2123),
            "loss_epoch": torch.tensor(4.2123),
            "loss_step": torch.tensor(9.0),
            "lr": torch.tensor(0.05),
        },
    )
    lines.on_train_epoch_start(trainer, None)
    lines.on_train_epoch_end(trainer, None)
    out = capsys.readouterr().out
    assert out.startswith("epoch 3/200: loss_epoch 4.212  lr 0.05 (") and out.endswith(" s)\n")


def test_expected_fit_warnings_are_narrow():
    leaf = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)`"
    exists = "Checkpoint directory /x/checkpoints exists and is not empty."
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with expected_fit_warnings(resuming=False):
            warnings.warn(leaf, FutureWarning, stacklevel=1)
            warnings.warn(exists, UserWarning, stacklevel=1)  # only expected on resume
            warnings.warn("another deprecation", FutureWarning, stacklevel=1)
        with expected_fit_warnings(resuming=True):
            warnings.warn(exists, UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == [exists, "another deprecation"]


def test_continued_csv_logger_keeps_the_earlier_rows(tmp_path):
    first = ContinuedCSVLogger(tmp_path, name="", version="logs")
    first.log_hyperparams({"a": 1})
    first.log_metrics({"loss": 1.5}, step=0)
    first.save()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "log files ... will be deleted"
        second = ContinuedCSVLogger(tmp_path, name="", version="logs")
        second.log_metrics({"loss": 1.25, "lr": 0.1}, step=1)
        second.save()
    with open(tmp_path / "logs" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert rows == [
        {"loss": "1.5", "lr": "", "step": "0"},
        {"loss": "1.25", "lr": "0.1", "step": "1"},
    ]
