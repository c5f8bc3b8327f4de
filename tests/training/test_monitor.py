"""The online kNN monitor: its accuracy against an independent kNN, the shot-group split,
the monitor split, eval mode without side effects, and a run's CSV rows and curves."""

import contextlib
import csv
import importlib.util
import math
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
from dscl_plugin.training.monitor import ShotGroupKNNMonitor, knn_shot_accuracy, monitor_indices

# 2-D features at fixed angles: the bank holds 3 classes, the queries sit between them
ANGLES = {0: [0, 10, 20, 30], 1: [90, 100, 110], 2: [200, 215]}
QUERIES = [(5, 0), (25, 0), (95, 1), (65, 1), (152, 2), (205, 2), (320, 0)]
CLASS_COUNTS = [150, 50, 10]  # many > 100, few < 20: class 0 many, 1 medium, 2 few


def _unit(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def _features():
    bank = torch.tensor([_unit(a) for c in ANGLES for a in ANGLES[c]]) * 3  # not unit length
    bank_labels = torch.tensor([c for c in ANGLES for _ in ANGLES[c]])
    queries = torch.tensor([_unit(a) for a, _ in QUERIES])
    return bank, bank_labels, queries, torch.tensor([c for _, c in QUERIES])


def reference_knn(bank, bank_labels, queries, k, t, num_classes):
    """Weighted kNN vote written out: cosine similarities, the k largest, exp(s / t) per
    class, the class of the largest sum."""
    predictions = []
    for q in queries:
        sims = [
            (float(q @ b) / (float(q.norm()) * float(b.norm())), int(y))
            for b, y in zip(bank, bank_labels)
        ]
        nearest = sorted(sims, reverse=True)[:k]
        scores = [sum(math.exp(s / t) for s, y in nearest if y == c) for c in range(num_classes)]
        predictions.append(max(range(num_classes), key=scores.__getitem__))
    return predictions


@pytest.mark.parametrize("k, t", [(1, 0.1), (3, 0.1), (5, 1.0), (50, 0.5)])
def test_accuracy_equals_an_independent_weighted_knn(k, t):
    bank, bank_labels, queries, labels = _features()
    predicted = reference_knn(bank, bank_labels, queries, k, t, 3)
    per_class = [
        sum(p == c for p, y in zip(predicted, labels.tolist()) if y == c)
        / labels.eq(c).sum().item()
        for c in range(3)
    ]
    accuracy = knn_shot_accuracy(bank, bank_labels, queries, labels, CLASS_COUNTS, k, t, 100, 20)
    assert accuracy["overall"] == pytest.approx(
        sum(p == y for p, y in zip(predicted, labels.tolist())) / len(labels)
    )
    for group, c in (("many", 0), ("medium", 1), ("few", 2)):
        assert accuracy[group] == pytest.approx(per_class[c])


def test_shot_groups_are_the_mean_of_their_classes_accuracies():
    # k = 1, the nearest bank angle decides: class 0 queries at 5, 25 and 320 degrees are
    # nearest 0/10, 20/30 and 0 (right); class 1 at 95 and 65 nearest 90/100 and 90
    # (right); class 2 at 152 is nearest 110 (class 1, wrong), at 205 nearest 200 (right)
    bank, bank_labels, queries, labels = _features()
    accuracy = knn_shot_accuracy(bank, bank_labels, queries, labels, CLASS_COUNTS, knn_k=1)
    assert accuracy == {
        "overall": pytest.approx(6 / 7),
        "many": 1.0,
        "medium": 1.0,
        "few": 0.5,
    }
    only_many = knn_shot_accuracy(bank, bank_labels, queries[:2], labels[:2], CLASS_COUNTS, 1)
    assert only_many["medium"] is None and only_many["few"] is None  # no query of the group


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
