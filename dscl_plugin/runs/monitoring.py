"""What a run shows while and after it trains: the online kNN monitor of its config
(``monitor``) and ``curves.png``, drawn from ``logs/metrics.csv`` at the end of stage 1."""

from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import Subset

from dscl_plugin.evaluation.curves import plot_training_curves, read_log
from dscl_plugin.runs.datasets import build_dataset_split
from dscl_plugin.runs.folder import RunFolder
from dscl_plugin.runs.variants import method_title
from dscl_plugin.training.monitor import ShotGroupKNNMonitor, monitor_indices
from dscl_plugin.training.schema import Config
from dscl_plugin.transforms.views import eval_transform


def monitor_callbacks(config: Config) -> list[pl.Callback]:
    """``[ShotGroupKNNMonitor]`` on the monitor split of ``config.data`` (evaluation
    transform; shot groups of the full training set), or ``[]`` for ``monitor.every: 0``.

    Raises:
        ConfigError: the data are not where ``data.root`` points.
    """
    m, e = config.monitor, config.eval
    if m.every == 0:
        return []
    transform = eval_transform(config.data.input_size)
    train, test = (build_dataset_split(config, split, transform) for split in ("train", "test"))
    bank, queries = monitor_indices(
        train.targets, test.targets, m.bank_size, m.query_size, config.seed
    )
    return [
        ShotGroupKNNMonitor(
            Subset(train, bank),
            Subset(test, queries),
            train.class_counts,
            m.every,
            m.knn_k,
            m.knn_t,
            e.many_threshold,
            e.few_threshold,
            batch_size=e.batch_size,
            num_workers=config.trainer.num_workers,
        )
    ]


def write_curves(config: Config) -> Path | None:
    """``output_dir/curves.png`` from ``output_dir/logs/metrics.csv`` (None without a log)."""
    folder = RunFolder.of(config)
    log = folder.logs / "metrics.csv"
    if not log.is_file():
        return None
    title = f"{method_title(config)} on {config.data.name}: training curves"
    return plot_training_curves(read_log(log), folder.curves, title)
