"""Shipped presets found by name from any folder (also as a ``base:``), the nearest name
suggested when a config is not found, the recipe of a config without a preset below
it (no silent ImageNet-LT recipe on small data), and a base made for another dataset
whose dataset keys do not apply."""

import warnings

import pytest
import yaml
from helpers import CONFIGS, ROOT

from dscl_plugin.cli import train_main
from dscl_plugin.errors import ConfigError, ConfigNote
from dscl_plugin.training.config import load_config, to_dict
from dscl_plugin.training.presets import (
    IMAGENET_SCALE,
    PRESETS_DIR,
    find_config,
    preset_description,
    preset_names,
)
from dscl_plugin.training.schema import Config


def load_quietly(path, overrides=()):
    """``load_config`` and the :class:`ConfigNote` messages it warned with."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        config = load_config(path, overrides)
    return config, [str(w.message) for w in caught if issubclass(w.category, ConfigNote)]


def test_presets_are_one_copy_inside_the_package():
    assert PRESETS_DIR == CONFIGS and not (ROOT / "configs").exists()
    assert len(preset_names()) == len(list(CONFIGS.glob("*.yaml"))) >= 13
    for name in preset_names():  # --list-configs shows the first comment line
        description = preset_description(name)
        method = {
            "dscl": "DSCL + PBSD on",
            "supcon": "SupCon baseline on",
            "kcl": "KCL on",
            "bcl": "BCL on",
            "tsc": "TSC on",
            "paco": "PaCo on",
        }
        assert description.startswith(method[name.split("_")[0]]), name
        assert len(description) <= 99, name


def test_a_preset_is_found_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("dscl_digits_lt", "dscl_digits_lt.yaml"):
        assert find_config(name) == CONFIGS / "dscl_digits_lt.yaml"
    own = tmp_path / "dscl_digits_lt.yaml"  # a file of that name in the folder comes first
    own.write_text("base: dscl_digits_lt\nseed: 3\n")
    assert find_config("dscl_digits_lt.yaml") == own.relative_to(tmp_path)
    assert load_quietly("dscl_digits_lt.yaml")[0].seed == 3  # its base: the preset by name
    assert find_config(str(CONFIGS / "dscl_digits_lt.yaml")) == CONFIGS / "dscl_digits_lt.yaml"


def test_a_config_not_found_names_the_nearest_preset_and_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:  # a path from a source checkout
        find_config("configs/dscl_digits_lt.yaml")
    assert str(error.value) == (
        "Config file not found: 'configs/dscl_digits_lt.yaml', and no preset of that name. "
        "Did you mean the preset 'dscl_digits_lt'? (dscl-train --list-configs lists the presets)"
    )
    (tmp_path / "my_digits.yaml").write_text("base: dscl_digits_lt\n")
    with pytest.raises(ConfigError, match=r"Did you mean 'my_digits.yaml'\?"):
        find_config("my_digit.yaml")
    (tmp_path / "dscl_digits_mine.yaml").write_text("base: dscl_digits_lt\n")
    with pytest.raises(ConfigError) as error:
        find_config("dscl_digits_min")
    assert "Did you mean the preset 'dscl_digits_lt' or 'dscl_digits_mine.yaml'?" in str(
        error.value
    )
    with pytest.raises(ConfigError) as error:
        find_config("zzz")
    assert "Did you mean" not in str(error.value)


# ------------------------------------------------------------------- the recipe rule
def write(tmp_path, text, name="mine.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_method_and_dataset_only_start_from_the_datasets_preset(tmp_path):
    where = "seed: 2\nmonitor: {every: 1}\ntrainer: {num_workers: 0}\n"  # not a recipe
    mine = write(tmp_path, f"method: dscl\ndata: {{name: digits_lt, root: here}}\n{where}")
    config, notes = load_quietly(mine)
    settings = ["data.root=here", "seed=2", "monitor.every=1", "trainer.num_workers=0"]
    preset, _ = load_quietly("dscl_digits_lt", settings)
    assert to_dict(config) == to_dict(preset)  # small CNN, 16 px, 15 epochs: not ImageNet
    assert notes == [
        f"'{mine}' sets no recipe, so it starts from the preset 'dscl_digits_lt' "
        "(write 'base: dscl_digits_lt' in it to say so)"
    ]
    # the overrides change the config the file describes; they decide nothing
    config, notes = load_quietly(mine, ["trainer.epochs=1", "data.name=fashion_mnist_lt"])
    assert config.model.backbone == "cnn5" and config.trainer.epochs == 1 and len(notes) == 1
    said, notes = load_quietly(write(tmp_path, "base: dscl_digits_lt\nseed: 2\n", "said.yaml"))
    assert notes == [] and to_dict(said)["model"] == to_dict(preset)["model"]


def test_a_partial_recipe_without_a_preset_names_the_imagenet_defaults(tmp_path):
    mine = write(tmp_path, "method: supcon\ndata: {name: digits_lt}\nmodel: {beta: null}\n")
    config, notes = load_quietly(mine)
    assert config.model.backbone == "resnet50" and config.data.input_size == 224  # as written
    (note,) = notes
    assert note.startswith(f"'{mine}' has no preset as its base, so model.backbone (resnet50), ")
    assert all(key in note for key in IMAGENET_SCALE)
    assert note.endswith(
        "come from the schema defaults, the ImageNet-LT recipe; to start from digits_lt's "
        "recipe write 'base: supcon_digits_lt' in it (dscl-train --list-configs lists them)"
    )
    scaled = (
        "method: dscl\ndata: {name: image_folder, input_size: 16}\n"
        "model: {backbone: small_cnn, queue_size: 64, patch_size: 8}\n"
    )
    partial = write(tmp_path, scaled, "p.yaml")
    (note,) = load_quietly(partial)[1]  # no preset for image_folder: none is named
    assert "trainer.epochs (200 epochs), trainer.batch_size (batch 256) come" in note
    assert "data.input_size" not in note and "image_folder's recipe" not in note
    assert note.endswith(
        "the ImageNet-LT recipe; no preset is made for image_folder: write 'base: <preset>' in "
        "it with the preset whose images are most like yours, or run dscl-train --data "
        "<folder> without --config, which picks one (dscl-train --list-configs lists them)"
    )
    (note,) = load_quietly(write(tmp_path, scaled.replace("image_folder", "places_lt")))[1]
    assert "no preset is made for places_lt: write 'base: <preset>'" in note
    assert "--data" not in note and all(p not in note for p in preset_names())


def test_whole_recipes_and_presets_get_no_note(tmp_path):
    flat = ROOT / "tests" / "fixtures" / "supcon_flat" / "supcon_digits_lt.yaml"
    assert load_quietly(flat)[1] == []  # every scale key set: a whole recipe
    saved = write(tmp_path, yaml.safe_dump(to_dict(load_config(flat))), "config.yaml")
    assert load_quietly(saved)[1] == []  # a run's config.yaml
    for name in preset_names():
        assert load_quietly(name)[1] == [], name
    assert load_quietly(None, ["method=dscl", "data.name=digits_lt"])[1] == []  # no file
    assert isinstance(load_quietly(None, ["method=dscl", "data.name=digits_lt"])[0], Config)


def test_the_note_is_one_stderr_line_before_any_value_problem(tmp_path, capsys):
    mine = write(tmp_path, "method: dscl\ndata: {name: digits_lt}\n")
    assert train_main(["--config", str(mine), "--print-config"]) == 0
    out, err = capsys.readouterr()
    assert yaml.safe_load(out) == yaml.safe_load(_printed(capsys, "dscl_digits_lt"))
    assert err == (
        f"dscl-train: note: '{mine}' sets no recipe, so it starts from the preset "
        "'dscl_digits_lt' (write 'base: dscl_digits_lt' in it to say so)\n"
    )
    assert train_main(["--config", str(mine), "model.temperature=0"]) == 2
    note, error = capsys.readouterr().err.splitlines()
    assert note.startswith("dscl-train: note:") and "dscl_digits_lt" in note
    assert error.startswith("dscl-train: config error: Invalid config:")


def _printed(capsys, name):
    assert train_main(["--config", name, "--print-config"]) == 0
    return capsys.readouterr().out


# ------------------------------------------------- the dataset keys of another dataset
FASHION_RESET = (
    "data.name is image_folder, so the fashion_mnist_lt settings of 'dscl_fashion_mnist_lt' "
    "do not apply: data.imbalance_factor 100 -> null, eval.many_threshold 1000 -> 100, "
    "eval.few_threshold 200 -> 20, output_dir outputs/dscl_fashion_mnist_lt -> "
    "outputs/dscl_image_folder; set a key in your file or as key=value to change it"
)


def test_a_base_for_another_dataset_leaves_its_dataset_keys_to_the_defaults(tmp_path):
    mine = write(tmp_path, "base: dscl_fashion_mnist_lt\ndata: {name: image_folder, root: x}\n")
    config, notes = load_quietly(mine)
    assert notes == [FASHION_RESET]
    assert config.data.imbalance_factor is None and config.output_dir == "outputs/dscl_image_folder"
    assert (config.eval.many_threshold, config.eval.few_threshold) == (100, 20)
    preset, _ = load_quietly("dscl_fashion_mnist_lt")  # the recipe stays the preset's
    assert config.model == preset.model and config.trainer == preset.trainer
    assert config.data.input_size == 28 and config.data.crop_scale == preset.data.crop_scale
    # the same from the command line
    assert load_quietly("dscl_fashion_mnist_lt", ["data.name=image_folder"])[1] == [FASHION_RESET]


def test_keys_the_user_sets_apply_and_are_not_named(tmp_path):
    own = "data: {name: image_folder, imbalance_factor: 10}\neval: {many_threshold: 50}\n"
    mine = write(tmp_path, f"base: dscl_fashion_mnist_lt\n{own}")
    config, (note,) = load_quietly(mine, ["eval.few_threshold=5"])
    assert (config.data.imbalance_factor, config.eval.many_threshold) == (10, 50)
    assert config.eval.few_threshold == 5
    assert note == (
        "data.name is image_folder, so the fashion_mnist_lt settings of 'dscl_fashion_mnist_lt' "
        "do not apply: output_dir outputs/dscl_fashion_mnist_lt -> outputs/dscl_image_folder; "
        "set a key in your file or as key=value to change it"
    )
    # a file between them made for the preset's dataset keeps the preset's keys
    said = write(tmp_path, "base: dscl_fashion_mnist_lt\nseed: 1\n", "said.yaml")
    config, notes = load_quietly(said)
    assert notes == [] and config.eval.many_threshold == 1000
    assert config.data.imbalance_factor == 100


def test_the_same_dataset_or_an_unknown_one_gets_no_reset_note():
    assert load_quietly("dscl_cifar10_lt", ["data.name=cifar10_lt"])[1] == []
    config, notes = load_quietly("dscl_cifar10_lt", ["data.name=cifar100_lt"])
    assert notes == [  # the same thresholds: only what changes is named
        "data.name is cifar100_lt, so the cifar10_lt settings of 'dscl_cifar10_lt' do not "
        "apply: data.imbalance_factor 100 -> null, output_dir outputs/dscl_cifar10_lt -> "
        "outputs/dscl_cifar100_lt; set a key in your file or as key=value to change it"
    ]
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ConfigError):
        warnings.simplefilter("always")
        load_config("dscl_cifar10_lt", ["data.name=mnist"])  # the value rules name it
    assert not [w for w in caught if w.category is ConfigNote]
