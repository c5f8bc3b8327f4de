"""Config schema, YAML + override merging, error messages and semantic checks."""

from pathlib import Path

import pytest
import torch

from dscl_plugin.config import Config, ConfigError, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
DIGITS = CONFIGS / "dscl_digits_lt.yaml"


def _error(*overrides, path=DIGITS) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return str(info.value)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path):
    config = load_config(path)
    assert isinstance(config, Config)
    name = f"{config.method}_{config.data.name}"
    assert path.stem in (name, f"{name}_vit")


def test_every_dataset_has_dscl_and_supcon_twins():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    for dataset in ("digits_lt", "cifar10_lt", "cifar100_lt", "imagenet_lt"):
        assert {f"dscl_{dataset}", f"supcon_{dataset}"} <= names


def test_official_imagenet_lt_recipe():
    c = load_config(CONFIGS / "dscl_imagenet_lt.yaml")
    assert (c.method, c.data.name, c.data.input_size) == ("dscl", "imagenet_lt", 224)
    assert (c.trainer.epochs, c.trainer.batch_size) == (200, 256)
    o = c.optim
    assert (o.lr, o.momentum, o.weight_decay, o.warmup_epochs, o.cosine) == (0.1, 0.9, 5e-4, 10, True)
    m = c.model
    assert (m.backbone, m.proj_dim, m.zero_init_residual) == ("resnet50", 128, True)
    assert (m.queue_size, m.momentum, m.temperature) == (65536, 0.999, 0.07)
    assert (m.beta, m.alpha, m.pbsd_weight) == (8, None, 1.5)
    assert (m.num_patches, m.patch_size, m.patch_scale) == (5, 64, [0.05, 0.6])
    p = c.probe
    assert (p.epochs, p.lr, p.batch_size) == (40, 10.0, 2048)
    assert (p.milestones, p.class_balanced) == ([20, 30], True)
    assert (c.eval.many_threshold, c.eval.few_threshold) == (100, 20)
    assert c.data.color_jitter == [0.4, 0.4, 0.4, 0.1] and c.data.crop_scale == [0.08, 1.0]


@pytest.mark.parametrize("dataset", ["cifar10_lt", "cifar100_lt"])
def test_cifar_lt_recipe(dataset):
    c = load_config(CONFIGS / f"dscl_{dataset}.yaml")
    assert (c.data.imbalance_factor, c.data.input_size, c.model.patch_size) == (100, 32, 16)
    assert (c.model.backbone, c.model.cifar_stem, c.model.queue_size) == ("resnet18", True, 4096)
    assert (c.trainer.batch_size, c.optim.lr, c.trainer.epochs) == (256, 0.1, 200)


def test_overrides_take_precedence_over_yaml():
    overrides = ["model.beta=4", "trainer.epochs=3", "model.patch_scale=[0.1,0.5]", "output_dir=/x"]
    c = load_config(DIGITS, overrides)
    assert (c.model.beta, c.trainer.epochs, c.output_dir) == (4.0, 3, "/x")
    assert c.model.patch_scale == [0.1, 0.5]
    assert load_config(DIGITS).trainer.epochs != 3


def test_output_dir_defaults_to_method_and_dataset():
    overrides = ["method=dscl", "data.name=digits_lt", "data.input_size=32", "model.patch_size=16"]
    c = load_config(None, overrides + ["trainer.accelerator=cpu"])
    assert c.output_dir == "outputs/dscl_digits_lt"
    assert c.model.alpha is None and c.model.beta is None  # DSCLLoss default beta 8


def test_unknown_key_names_path_and_allowed_keys(tmp_path):
    message = _error("model.queue=5")
    assert "'model.queue'" in message and "Allowed keys in 'model'" in message
    assert "queue_size" in message
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: dscl\ndata: {name: digits_lt}\noptim: {lrr: 0.1}\n")
    message = _error(path=bad)
    assert "'optim.lrr'" in message and str(bad) in message and "warmup_epochs" in message
    assert "Allowed keys in '<root>'" in _error("modle.beta=3")


def test_wrong_type_names_path():
    message = _error("trainer.epochs=many")
    assert "'trainer.epochs'" in message and "many" in message and "batch_size" in message


def test_missing_key_names_path(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: dscl\ndata: {input_size: 16}\n")
    assert "'data.name'" in _error(path=cfg)
    cfg.write_text("data: {name: digits_lt}\n")
    assert "'method'" in _error(path=cfg)


def test_bad_override_syntax_and_missing_file(tmp_path):
    assert "key.path=value" in _error("trainer.epochs")
    assert "not found" in _error(path=tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.alpha=1.5", "model.beta=null"], "model.alpha: must be in [0, 1]"),
        (["model.alpha=0.5"], "give alpha or beta, not both"),
        (["model.temperature=0"], "model.temperature: must be > 0"),
        (["model.patch_size=32"], "model.patch_size: must be in (0, data.input_size=16]"),
        (["model.patch_scale=[0.6,0.2]"], "model.patch_scale"),
        (["model.num_patches=0"], "PBSD (pbsd_weight > 0) needs num_patches >= 1"),
        (["model.backbone=vgg16"], "model.backbone: unknown backbone 'vgg16'"),
        (["model.init_from=/no/such/weights.pt"], "/no/such/weights.pt"),
        (["method=simclr"], "unknown method 'simclr'; registered: ['dscl', 'supcon']"),
        (["data.name=mnist"], "data.name: unknown dataset 'mnist'"),
        (["optim.warmup_epochs=99"], "optim.warmup_epochs"),
        (["trainer.batch_size=63", "trainer.devices=2"], "multiple of trainer.devices=2"),
        (["probe.milestones=[30,20]"], "probe.milestones"),
        (["eval.few_threshold=200"], "eval.few_threshold"),
        (["trainer.precision=16"], "trainer.precision: must be one of"),
        (["trainer.num_threads=0"], "trainer.num_threads: must be >= 1, got 0"),
    ],
)
def test_semantic_checks(overrides, expected):
    assert expected in _error(*overrides)


def test_all_problems_reported_together():
    message = _error("model.temperature=-1", "optim.lr=0")
    assert "model.temperature" in message and "optim.lr" in message


def test_supcon_rejects_dscl_only_settings():
    supcon = CONFIGS / "supcon_digits_lt.yaml"
    message = _error("model.pbsd_weight=1.5", "model.num_patches=2", path=supcon)
    assert "supcon has no PBSD term" in message
    assert "model.alpha/model.beta" in _error("model.beta=8", path=supcon)


def test_precision_and_devices_checked_against_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    message = _error("trainer.precision=16-mixed", "trainer.accelerator=auto")
    assert "trainer.precision" in message and "silently use bf16" in message
    assert "needs a CUDA GPU" in _error("trainer.accelerator=gpu")
    load_config(DIGITS, ["trainer.precision=bf16-mixed"])  # fine on CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert "2 GPUs requested, 1 available" in _error("trainer.accelerator=gpu", "trainer.devices=2")
