"""The KCL method: its presets, options, views and step on the harness."""

import pytest
import torch
from helpers import CONFIGS, TINY

from dscl_plugin.data import build_dataset
from dscl_plugin.errors import ConfigError
from dscl_plugin.losses import KCLLoss
from dscl_plugin.methods import Batch, KCLMethod, KCLOptions, build_method
from dscl_plugin.training.config import load_config


def _config(*extra, preset="kcl_digits_lt"):
    return load_config(CONFIGS / f"{preset}.yaml", [*TINY, *extra])


@pytest.mark.parametrize(
    "preset", ["kcl_digits_lt", "kcl_fashion_mnist_lt", "kcl_cifar10_lt", "kcl_imagenet_lt"]
)
def test_presets_are_kcl_with_six_queue_positives(preset):
    config = load_config(CONFIGS / f"{preset}.yaml")
    assert config.method == "kcl" and config.method_options == {"kcl": {"num_positive": 6}}
    assert config.model.pbsd_weight == 0 and config.model.beta is None
    official = load_config(CONFIGS / "kcl_imagenet_lt.yaml")
    assert (official.model.queue_size, official.model.temperature) == (65536, 0.07)
    assert (official.optim.weight_decay, official.optim.warmup_epochs) == (1e-4, 0)


def test_the_step_is_kcl_on_two_key_views_and_fills_the_queue():
    module = build_method(_config("method_options.kcl.num_positive=2"))
    assert isinstance(module, KCLMethod) and module.options == KCLOptions(2)
    assert isinstance(module.model.criterion, KCLLoss)
    assert module.model.criterion.num_positives == 2
    assert module.views().kinds == ("key", "key") and module.views().patches is None
    dataset = build_dataset("digits_lt", "train", module.train_transform(), input_size=16)
    batch = Batch.of(module.collate_fn()([dataset[i] for i in range(0, 400, 50)]), 2)
    module.model.update_momentum()
    first = module.step(batch)
    assert set(first) == {"loss", "loss_kcl"} and first["loss"].item() == 0.0  # empty queue
    assert int(module.model.memory_bank.num_filled) == 8
    second = module.step(batch)["loss"]
    assert second.item() > 0 and torch.isfinite(second)
    second.backward()
    assert module.backbone.parameters().__next__().grad is not None


@pytest.mark.parametrize(
    "override,problem",
    [
        (
            "model.queue_size=4",
            "model.queue_size: kcl draws method_options.kcl.num_positive=6 positives per "
            "anchor from the queue; set model.queue_size=6 or more (got 4)",
        ),
        ("method_options.kcl.num_positive=-1", "method_options.kcl.num_positive: must be an int"),
        (
            "method_options.kcl.k=3",
            "method_options.kcl.k: unknown option (no such option); the options here: num_positive",
        ),
        (
            "method_options.kcl.K=3",
            "method_options.kcl.K: unknown option (the official code's K is "
            "method_options.kcl.num_positive)",
        ),
    ],
)
def test_bad_options_are_one_line_naming_the_key(override, problem):
    with pytest.raises(ConfigError) as error:
        build_method(_config(override))
    assert str(error.value).startswith(f"Invalid config: {problem}")
