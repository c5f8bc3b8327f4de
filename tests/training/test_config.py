"""Config schema, YAML + override merging, error messages and semantic checks."""

import json
from pathlib import Path

import pytest
import torch
from helpers import CONFIGS, ROOT
from torch import nn

from dscl_plugin import DSCLLoss, DSCLModel, DSCLTransform, build_backbone
from dscl_plugin.cli import train_main
from dscl_plugin.errors import ConfigError, InvalidValue
from dscl_plugin.training.config import load_config, to_dict
from dscl_plugin.training.schema import Config

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
    assert path.stem == name or path.stem.startswith(f"{name}_")  # e.g. ..._gpu variants


def test_every_dataset_has_dscl_and_supcon_twins():
    names = {p.stem for p in CONFIGS.glob("*.yaml")}
    for dataset in (
        "digits_lt",
        "fashion_mnist_lt",
        "cifar10_lt",
        "cifar100_lt",
        "imagenet_lt",
    ):
        assert {f"dscl_{dataset}", f"supcon_{dataset}"} <= names


def test_official_imagenet_lt_recipe():
    c = load_config(CONFIGS / "dscl_imagenet_lt.yaml")
    assert (c.method, c.data.name, c.data.input_size) == ("dscl", "imagenet_lt", 224)
    assert (c.trainer.epochs, c.trainer.batch_size) == (200, 256)
    o = c.optim
    assert (o.lr, o.momentum, o.weight_decay, o.warmup_epochs, o.cosine) == (
        0.1,
        0.9,
        5e-4,
        10,
        True,
    )
    m = c.model
    assert (m.backbone, m.proj_dim, m.zero_init_residual) == ("resnet50", 128, True)
    assert (m.queue_size, m.momentum, m.temperature) == (65536, 0.999, 0.07)
    assert (m.beta, m.alpha, m.pbsd_weight) == (8, None, 1.5)
    assert (m.num_patches, m.patch_size, m.patch_scale) == (5, 64, [0.05, 0.6])
    p = c.probe
    assert (p.epochs, p.lr, p.batch_size) == (40, 10.0, 2048)
    assert (p.milestones, p.class_balanced) == ([20, 30], True)
    assert (c.eval.many_threshold, c.eval.few_threshold) == (100, 20)
    assert c.data.color_jitter == [0.4, 0.4, 0.4, 0.1] and c.data.crop_scale == [
        0.08,
        1.0,
    ]
    assert (p.protocol, p.weight_decay, m.shuffle_bn, m.roi_aligned) == (
        "augmented",
        0,
        True,
        False,
    )
    assert c.trainer.sync_batchnorm is False
    twin = load_config(CONFIGS / "supcon_imagenet_lt.yaml")
    assert twin.probe == p and (twin.model.shuffle_bn, twin.model.roi_aligned) == (
        True,
        False,
    )


@pytest.mark.parametrize("dataset", ["cifar10_lt", "cifar100_lt"])
def test_cifar_lt_recipe(dataset):
    c = load_config(CONFIGS / f"dscl_{dataset}.yaml")
    assert (c.data.imbalance_factor, c.data.input_size, c.model.patch_size) == (
        100,
        32,
        16,
    )
    assert (c.model.backbone, c.model.cifar_stem, c.model.queue_size) == (
        "resnet18",
        True,
        4096,
    )
    assert (c.trainer.batch_size, c.optim.lr, c.trainer.epochs) == (256, 0.1, 200)


def test_overrides_take_precedence_over_yaml():
    overrides = [
        "model.beta=4",
        "trainer.epochs=3",
        "model.patch_scale=[0.1,0.5]",
        "output_dir=/x",
    ]
    c = load_config(DIGITS, overrides)
    assert (c.model.beta, c.trainer.epochs, c.output_dir) == (4.0, 3, "/x")
    assert c.model.patch_scale == [0.1, 0.5]
    assert load_config(DIGITS).trainer.epochs != 3


def test_output_dir_defaults_to_method_and_dataset():
    overrides = [
        "method=dscl",
        "data.name=digits_lt",
        "data.input_size=32",
        "model.patch_size=16",
    ]
    c = load_config(None, overrides + ["trainer.accelerator=cpu"])
    assert c.output_dir == "outputs/dscl_digits_lt"
    assert c.model.alpha is None and c.model.beta is None  # DSCLLoss default beta 8


def test_unknown_key_names_path_and_allowed_keys(tmp_path):
    message = _error("model.queue=5")
    assert "Unknown config key 'model.queue'" in message and "Allowed keys in 'model'" in message
    assert "Did you mean 'model.queue_size'?" in message
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: dscl\ndata: {name: digits_lt}\noptim: {lrr: 0.1}\n")
    message = _error(path=bad)
    assert "'optim.lrr'" in message and str(bad) in message and "warmup_epochs" in message
    message = _error("modle.beta=3")
    assert "Allowed keys in '<root>'" in message and "Did you mean 'model'?" in message
    assert "Did you mean" not in _error("model.zzz=3")  # no near name: no guess


def test_wrong_type_is_worded_as_a_type_error():
    message = _error("trainer.epochs=many")
    assert message.startswith("Wrong type for config key 'trainer.epochs'")
    assert "expected int" in message and "'many'" in message and "Allowed keys" not in message
    assert "expected true or false" in _error("trainer.progress_bar=maybe")
    assert "expected a list of float" in _error("model.patch_scale=3")
    assert "expected int or null" in _error("eval.knn_k=five")


def test_missing_key_names_path(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("method: dscl\ndata: {input_size: 16}\n")
    assert "Missing value for config key 'data.name'" in _error(path=cfg)
    cfg.write_text("data: {name: digits_lt}\n")
    assert "'method'" in _error(path=cfg)


def test_bad_override_syntax_and_missing_file(tmp_path):
    assert "key.path=value" in _error("trainer.epochs")
    assert "not found" in _error(path=tmp_path / "nope.yaml")


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["model.alpha=1.5", "model.beta=null"], "model.alpha: must be in [0, 1]"),
        (["model.alpha=0.5", "model.beta=4"], "model.alpha/beta: must not both be set"),
        (["model.beta=-1"], "model.beta: must be >= 0, got -1"),
        (["model.temperature=0"], "model.temperature: must be > 0"),
        (
            ["model.patch_size=32"],
            "model.patch_size: must be in (0, input_size=16], got 32",
        ),
        (
            ["model.patch_scale=[0.6,0.2]"],
            "model.patch_scale: must be (min, max) with 0 < min",
        ),
        (
            ["model.patch_scale=[0,0.5]"],
            "model.patch_scale: must be (min, max) with 0 < min",
        ),
        (["model.momentum=1.5"], "model.momentum: must be in [0.0, 1.0], got 1.5"),
        (["model.pbsd_weight=-1"], "model.pbsd_weight: must be >= 0, got -1"),
        (
            ["data.color_jitter=[0.4,0.4,0.4,0.9]"],
            "data.color_jitter: must be [brightness",
        ),
        (["model.num_patches=0"], "PBSD (pbsd_weight > 0) needs num_patches >= 1"),
        (["model.backbone=vgg16"], "model.backbone: names an unknown backbone 'vgg16'"),
        (["model.init_from=/no/such/weights.pt"], "/no/such/weights.pt"),
        (["data.name=mnist"], "data.name: unknown dataset 'mnist'"),
        (["optim.warmup_epochs=99"], "optim.warmup_epochs"),
        (
            ["trainer.batch_size=63", "trainer.devices=2"],
            "trainer.devices x trainer.num_nodes = 2",
        ),
        (["probe.milestones=[30,20]"], "probe.milestones"),
        (["probe.protocol=centre"], "probe.protocol"),
        (["trainer.num_nodes=0"], "trainer.num_nodes"),
        (
            ["trainer.devices=1", "trainer.num_nodes=3", "trainer.batch_size=64"],
            "trainer.batch_size",
        ),
        (["trainer.checkpoint_every_n_steps=0"], "trainer.checkpoint_every_n_steps"),
        (["trainer.sync_batchnorm=true"], "trainer.sync_batchnorm: needs CUDA GPUs"),
        (["eval.few_threshold=200"], "eval.few_threshold"),
        (["trainer.precision=16"], "trainer.precision: must be one of"),
        (["trainer.num_threads=0"], "trainer.num_threads: must be >= 1, got 0"),
        (["optim.lr=0"], "optim.lr: must be > 0, got 0.0"),
        (["optim.momentum=1"], "optim.momentum: must be in [0, 1), got 1.0"),
        (["probe.lr=-1"], "probe.lr: must be > 0, got -1.0"),
        (["probe.epochs=0"], "probe.epochs: must be >= 1, got 0"),
        (
            ["probe.milestones=[1,40]"],
            "probe.milestones: must be increasing epochs in (0, epochs=30), got [1, 40]",
        ),
        (["data.hflip_prob=2"], "data.hflip_prob: must be in [0, 1], got 2.0"),
    ],
)
def test_semantic_checks(overrides, expected):
    assert expected in _error(*overrides)


def test_all_problems_reported_together():
    message = _error("model.temperature=-1", "optim.lr=0")
    assert "model.temperature" in message and "optim.lr" in message


def _method_error(*overrides, path=DIGITS) -> str:
    from dscl_plugin.methods import check_method

    config = load_config(path, overrides)  # schema checks pass: the method's rules come later
    with pytest.raises(ConfigError) as info:
        check_method(config)
    return str(info.value)


def test_method_checks_run_where_the_run_is_composed():
    supcon = CONFIGS / "supcon_digits_lt.yaml"
    message = _method_error("model.pbsd_weight=1.5", "model.num_patches=2", path=supcon)
    assert "supcon has no PBSD term" in message
    assert "model.alpha/model.beta" in _method_error("model.beta=8", path=supcon)
    message = _method_error("method=simclr")
    registered = "['bcl', 'dscl', 'kcl', 'paco', 'supcon', 'tsc']"
    assert f"method: unknown method 'simclr'; registered: {registered}" in message
    assert "--import MODULE" in message
    assert "unknown method 'kcll'; did you mean 'kcl'? registered:" in _method_error("method=kcll")


@pytest.mark.parametrize(
    "override, build",
    [
        ("model.patch_scale=[0,0.5]", lambda: DSCLTransform(patch_scale=(0, 0.5))),
        ("data.crop_scale=[0,1]", lambda: DSCLTransform(crop_scale=(0, 1))),
        ("model.temperature=0", lambda: DSCLLoss(temperature=0)),
        ("model.alpha=2 model.beta=null", lambda: DSCLLoss(alpha=2)),
        ("model.beta=-1", lambda: DSCLLoss(beta=-1)),
        ("model.momentum=2", lambda: DSCLModel(nn.Conv2d(3, 4, 1), 4, momentum=2)),
        (
            "model.pbsd_weight=-1",
            lambda: DSCLModel(nn.Conv2d(3, 4, 1), 4, pbsd_weight=-1),
        ),
        ("model.backbone=vgg16", lambda: build_backbone("vgg16")),
        ("data.color_jitter=[0,0,0,0.7]", lambda: DSCLTransform(jitter=(0, 0, 0, 0.7))),
        ("model.patch_size=99", lambda: DSCLTransform(input_size=16, patch_size=99)),
    ],
)
def test_config_and_constructor_share_each_rule(override, build):
    """The config runs the constructors' own checks: same verdict, same rule text."""
    with pytest.raises(InvalidValue) as info:
        build()
    rule = info.value.rule.split(", got")[0]  # the config shows its own (float) value
    key = override.split("=")[0]
    assert f"{key}: {rule}" in _error(*override.split(), "data.input_size=16")


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


# ----------------------------------------------------------------------------- base files
FLAT = ROOT / "tests" / "fixtures" / "supcon_flat"  # the supcon files before base: existed


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("supcon_*.yaml")))
def test_each_supcon_config_extends_its_dscl_twin_and_merges_to_the_old_file(name):
    """The flat files as they were before ``base:`` existed (kept in tests/data, with every
    later schema key at its default) load to the same config as base + differences."""
    assert (CONFIGS / name).read_text().count("\n") < 20  # base + the differences only
    assert f"base: {name.replace('supcon_', 'dscl_')}" in (CONFIGS / name).read_text()
    assert to_dict(load_config(CONFIGS / name)) == to_dict(load_config(FLAT / name))


def _write(folder: Path, name: str, text: str) -> Path:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)
    return folder / name


def test_base_chains_merge_in_order_with_paths_relative_to_each_file(tmp_path):
    root = f"base: {DIGITS}\ntrainer: {{epochs: 3, batch_size: 32}}\n"
    _write(tmp_path, "shared/root.yaml", root)
    _write(tmp_path, "shared/middle.yaml", "base: root.yaml\ntrainer: {epochs: 4}\n")
    leaf = _write(tmp_path, "leaf.yaml", "base: shared/middle.yaml\nseed: 7\n")
    config = load_config(leaf, ["trainer.epochs=5"])
    digits = load_config(DIGITS)
    assert (config.trainer.epochs, config.trainer.batch_size, config.seed) == (5, 32, 7)
    assert (config.model, config.data) == (digits.model, digits.data)
    assert load_config(leaf).trainer.epochs == 4


def test_base_cycles_and_missing_bases_are_clear_errors(tmp_path):
    a = _write(tmp_path, "a.yaml", "base: b.yaml\n")
    _write(tmp_path, "b.yaml", "base: a.yaml\nseed: 1\n")
    message = _error(path=a)
    assert "extend each other in a cycle" in message and "a.yaml' -> '" in message
    missing = _write(tmp_path, "c.yaml", "base: nowhere/d.yaml\n")
    message = _error(path=missing)
    assert (
        "base of" in message and "Config file not found" in message and "nowhere/d.yaml" in message
    )
    assert "c.yaml" in message
    assert "base must be a YAML file name" in _error(path=_write(tmp_path, "e.yaml", "base: 3\n"))


def test_an_alpha_or_beta_layer_clears_the_other_from_the_layers_below(tmp_path):
    assert (load_config(DIGITS).model.beta, load_config(DIGITS).model.alpha) == (
        8,
        None,
    )
    config = load_config(DIGITS, ["model.alpha=0.5"])  # the file's beta 8 is cleared
    assert (config.model.alpha, config.model.beta) == (0.5, None)
    alpha_file = _write(tmp_path, "alpha.yaml", f"base: {DIGITS}\nmodel: {{alpha: 0.25}}\n")
    assert (
        load_config(alpha_file).model.alpha,
        load_config(alpha_file).model.beta,
    ) == (0.25, None)
    config = load_config(alpha_file, ["model.beta=4"])  # and back
    assert (config.model.alpha, config.model.beta) == (None, 4)
    message = _error("model.alpha=0.5", "model.beta=4")  # one level: the error names the fix
    assert "model.alpha/beta: must not both be set" in message
    assert "add model.beta=null to use alpha=0.5, or model.alpha=null to use beta=4" in message
    both = _write(tmp_path, "both.yaml", f"base: {DIGITS}\nmodel: {{alpha: 0.5, beta: 2}}\n")
    assert "model.beta=null" in _error(path=both)


def test_warmup_longer_than_training_names_trainer_epochs_and_the_fix():
    message = _error("trainer.epochs=1", path=CONFIGS / "dscl_cifar10_lt.yaml")
    rule = "optim.warmup_epochs: the warm-up must not exceed trainer.epochs (1), got 10.0"
    assert rule in message
    assert "set optim.warmup_epochs=1 or less" in message and "trainer.epochs=10 or more" in message
    assert "must be >= 0, got -1" in _error("optim.warmup_epochs=-1")


def test_print_config_refuses_what_a_run_would_refuse(capsys):
    path = CONFIGS / "tsc_digits_lt.yaml"
    assert train_main(["--config", str(path), "--print-config", "method_options.tsc.tw=1"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "method_options.tsc.tw: unknown option" in err


def test_print_config_prints_the_merged_config(capsys):
    path = CONFIGS / "supcon_digits_lt.yaml"
    assert train_main(["--config", str(path), "--print-config", "trainer.epochs=2"]) == 0
    printed = capsys.readouterr().out
    from omegaconf import OmegaConf

    merged = OmegaConf.to_container(OmegaConf.create(printed))
    expected = to_dict(load_config(path, ["trainer.epochs=2"]))
    assert merged == json.loads(json.dumps(expected)) and "base" not in merged
    assert (
        merged["method"],
        merged["model"]["backbone"],
        merged["trainer"]["epochs"],
    ) == ("supcon", "small_cnn", 2)
