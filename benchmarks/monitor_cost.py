"""Cost of the online kNN monitor (``monitor`` in the config) against a training epoch.

For each preset: stage 1 for ``--epochs`` epochs with ``monitor.every=1``, on the preset's
``trainer.num_threads`` as ``dscl-train`` runs it (the caps
``monitor.bank_size`` and ``monitor.query_size`` of the preset, or ``--set``), timing each
epoch's training (from its start to its end, before the monitor runs) and the monitor
itself (``monitor/seconds`` in the run's CSV log). The first monitored epoch also
transforms the monitor images once and keeps them in memory; later ones only embed
them and vote. Prints a table and writes ``benchmarks/results/monitor_cost.{csv,json}``
with the machine (``lscpu`` model name), its bf16 flags, each preset's resolved
``trainer.precision``, the commit and the command.

    python -m benchmarks.monitor_cost --data-root /usr/share/datasets/fashion-mnist
    python -m benchmarks.monitor_cost --configs dscl_digits_lt --epochs 3   # seconds
"""

import argparse
import contextlib
import csv
import io
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch

from benchmarks.reporting import REPO, print_and_save, provenance
from dscl_plugin.runs.compute import torch_threads
from dscl_plugin.runs.datasets import build_dataset_split
from dscl_plugin.runs.stage1 import train
from dscl_plugin.training.config import load_config
from dscl_plugin.training.monitor import monitor_indices
from dscl_plugin.training.precision import cpu_bf16_flags

DEFAULT_CONFIGS = ("dscl_fashion_mnist_lt", "dscl_digits_lt")


class EpochTimer(pl.Callback):
    """Seconds of each training epoch, up to its end (before the monitor's hook)."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds.append(time.perf_counter() - self.start)


def measure(config_name: str, args: argparse.Namespace) -> dict[str, object]:
    """Trains ``config_name`` for ``args.epochs`` epochs with the monitor on each epoch."""
    with tempfile.TemporaryDirectory(prefix="dscl_monitor_") as out:
        overrides = [
            f"data.root={args.data_root}",
            f"trainer.epochs={args.epochs}",
            "optim.warmup_epochs=0",
            "trainer.progress_bar=false",
            "monitor.every=1",
            *args.set,
            f"output_dir={out}",
        ]
        config = load_config(config_name, overrides)
        timer = EpochTimer()
        with contextlib.redirect_stdout(io.StringIO()), torch_threads(config.trainer.num_threads):
            train(config, callbacks=[timer])
        with open(Path(out) / "logs" / "metrics.csv", newline="") as file:
            rows = [r for r in csv.DictReader(file) if r.get("monitor/seconds")]
    train_set, test_set = (build_dataset_split(config, split, None) for split in ("train", "test"))
    bank, queries = monitor_indices(
        train_set.targets, test_set.targets, config.monitor.bank_size, config.monitor.query_size, 0
    )
    monitor = [float(r["monitor/seconds"]) for r in rows]
    epoch = sum(timer.seconds) / len(timer.seconds)
    later = monitor[1:] or monitor
    steady = sum(later) / len(later)
    return {
        "config": config_name,
        "precision": config.trainer.precision,
        "steps_per_epoch": int(float(rows[0]["step"])) + 1,
        "threads": config.trainer.num_threads,
        "bank": f"{len(bank)} of {len(train_set)}",
        "queries": f"{len(queries)} of {len(test_set)}",
        "knn_k": config.monitor.knn_k,
        "epoch_s": round(epoch, 2),
        "monitor_first_s": round(monitor[0], 2),
        "monitor_s": round(steady, 2),
        "monitor_pct_of_epoch": round(100 * steady / epoch, 1),
        "first_pct_of_epoch": round(100 * monitor[0] / epoch, 1),
        "knn_overall_last": round(float(rows[-1]["monitor/knn_overall"]), 4),
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    parser.add_argument("--epochs", type=int, default=2, help="trainer.epochs (default 2)")
    parser.add_argument("--data-root", default="data", help="data.root (Fashion-MNIST IDX files)")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="more overrides")
    parser.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error(f"--epochs must be >= 2 (the first monitored epoch caches), got {args.epochs}")
    settings = provenance("python -m benchmarks.monitor_cost", argv)
    settings["cpu_bf16_flags"] = list(cpu_bf16_flags())
    rows = [measure(name, args) for name in args.configs]
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    print_and_save(
        rows,
        f"Online kNN monitor against a training epoch ({settings['machine']}; torch "
        f"{torch.__version__}; commit {settings['commit']})",
        json_path=str(out / "monitor_cost.json"),
        csv_path=str(out / "monitor_cost.csv"),
        settings=settings,
    )
    return rows


if __name__ == "__main__":
    main()
