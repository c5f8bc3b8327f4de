"""The online kNN monitor: the monitor split, eval mode without side effects, and a run's
CSV rows and curves (its metric: tests/evaluation/test_knn_shot_accuracy.py)."""

import contextlib
import csv
import importlib.util
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from helpers import tiny
from torch import nn
from torch.utils.data import TensorDataset

from dscl_plugin.errors import ConfigError
from dscl_plugin.evaluation.curves import read_log, training_curves
from dscl_plugin.runs.stage1 import train
from dscl_plugin.training.config import load_config
from dscl_plugin.training.monitor import ShotGroupKNNMonitor, monitor_indices


def test_monitor_split_is_capped_class_balanced_and_seeded():
    train_targets = [0] * 50 + [1] * 20 + [2] * 5
    test_targets = [0] * 30 + [1] * 30 + [2] * 3
    state = torch.random.get_rng_state()
    bank, queries = monitor_indices(train_targets, test_targets, 40, 30, seed=1)
    assert torch.equal(torch.random.get_rng_state(), state)  # the training RNG is untouched
    assert len(bank) == len(set(bank)) == 40 and max(bank) < 75
    per_class = [sum(test_targets[i] == c for i in queries) for c in range(3)]
    assert per_class == [10, 10, 3]  # 30 // 3 each, all of the smaller class
    assert monitor_indices(train_targets, test_targets, 40, 30, seed=1) == (bank, queries)
    assert monitor_indices(train_targets, test_targets, 40, 30, seed=2) != (bank, queries)
    assert len(monitor_indices(train_targets, test_targets, 500, 3, 0)[0]) == 75


class BNEmbed(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Dropout(0.5))
        self.head = nn.Linear(8, 2)

    def embed(self, x):
        return self.backbone(x)


def test_features_in_eval_mode_leave_modes_statistics_and_rng_as_they_were():
    torch.manual_seed(0)
    module = BNEmbed()
    module.head.eval()  # a mixed state must come back as it was
    images = torch.randn(12, 4)
    data = TensorDataset(images, torch.arange(12) % 3)
    monitor = ShotGroupKNNMonitor(data, data, [5, 5, 2], every=1, knn_k=1, few_threshold=3)
    trainer = SimpleNamespace(
        precision_plugin=SimpleNamespace(forward_context=contextlib.nullcontext)
    )
    stats = module.backbone[1].running_mean.clone()
    rng = torch.random.get_rng_state()
    first = monitor.evaluate(trainer, module)
    assert torch.equal(module.backbone[1].running_mean, stats)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert module.backbone.training and module.backbone[2].training and not module.head.training
    assert first["overall"] == 1.0  # each query is in the bank: its own nearest neighbour
    assert monitor.bank.cached is not None  # the images are kept after the first pass
    assert monitor.evaluate(trainer, module) == first


@pytest.mark.slow
def test_a_run_logs_the_monitor_every_epoch_and_draws_its_curves(tmp_path):
    config = tiny(tmp_path, "run", "trainer.epochs=3", "monitor.every=1")
    train(config)
    out = tmp_path / "run"
    rows = read_log(out / "logs" / "metrics.csv")
    monitored = [r for r in rows if r.get("monitor/knn_overall")]
    assert [r["epoch"] for r in monitored] == ["0", "1", "2"]  # one row per epoch
    for row in monitored:  # digits_lt: 10 classes in all three groups
        values = [float(row[f"monitor/knn_{g}"]) for g in ("overall", "many", "medium", "few")]
        assert all(0 <= v <= 1 for v in values) and float(row["monitor/seconds"]) > 0
    assert float(monitored[-1]["monitor/knn_overall"]) > 0.3  # chance is 0.1
    *_, knn = training_curves(rows)
    assert list(knn.series) == ["overall", "many", "medium", "few"]
    assert knn.series["overall"][0] == [1.0, 2.0, 3.0]
    assert (out / "curves.png").stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.skipif(not importlib.util.find_spec("tensorboard"), reason="needs tensorboard")
def test_every_second_epoch_and_the_last_and_tensorboard_beside_the_csv(tmp_path):
    config = tiny(
        tmp_path, "run", "trainer.epochs=3", "monitor.every=2", "trainer.logger=tensorboard"
    )
    train(config)
    logs = tmp_path / "run" / "logs"
    with open(logs / "metrics.csv", newline="") as file:
        epochs = [r["epoch"] for r in csv.DictReader(file) if r.get("monitor/knn_overall")]
    assert epochs == ["1", "2"]  # the 2nd epoch, and the last
    assert list((logs / "tensorboard").glob("events.out.tfevents.*"))


def test_a_missing_tensorboard_is_a_one_line_config_error_naming_the_extra(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name.startswith("tensorboard") else find_spec(name, *a),
    )
    with pytest.raises(ConfigError) as error:
        load_config("dscl_digits_lt", ["trainer.logger=tensorboard"])
    assert len(str(error.value).splitlines()) == 1
    assert 'pip install "dscl-plugin[tensorboard]"' in str(error.value)
    with pytest.raises(ConfigError, match="trainer.logger: must be one of"):
        load_config("dscl_digits_lt", ["trainer.logger=wandb"])
    with pytest.raises(ConfigError, match="monitor.knn_t: must be > 0"):
        load_config("dscl_digits_lt", ["monitor.knn_t=0"])
