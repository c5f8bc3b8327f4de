"""``--data DIR``: the recipe that fits an image folder, the keys set from its data in one
line, ``--print-config``, ``--config`` as the recipe, the ``val/`` split named, and a
folder that is not one named in one line."""

import warnings

import pytest
import yaml
from helpers import LONG_TAIL, image_folder
from PIL import Image

from dscl_plugin.cli import compare_main, eval_main, train_main
from dscl_plugin.data.image_folder import survey_image_folder
from dscl_plugin.errors import ConfigNote
from dscl_plugin.training.data_folder import data_folder_config, fitting_preset


@pytest.mark.parametrize(
    "size, colour, preset",
    [
        (8, False, "dscl_fashion_mnist_lt"),
        (32, False, "dscl_fashion_mnist_lt"),
        (8, True, "dscl_cifar10_lt"),
        (33, True, "dscl_imagenet_lt"),
        (40, False, "dscl_imagenet_lt"),
    ],
)
def test_the_recipe_fits_the_size_and_colour_of_the_images(tmp_path, size, colour, preset):
    folder = image_folder(tmp_path, [3, 2], test=1, size=size, colour=colour)
    survey = survey_image_folder(folder)
    assert (survey.side, survey.grey, survey.sampled) == (size, not colour, 5)
    assert survey.counts == {"train": [3, 2], "test": [1, 1]}
    assert survey.class_names == ["class0", "class1"] and fitting_preset(survey) == preset


def test_grey_images_saved_as_rgb_are_grey(tmp_path):
    folder = image_folder(tmp_path, [2, 2], test=1)
    for path in folder.rglob("*.png"):  # the grey value in all three channels
        Image.open(path).convert("RGB").save(path)
    assert survey_image_folder(folder).grey


def _train(capsys, *args):
    code = train_main(list(args))
    out, err = capsys.readouterr()
    return code, out, err.splitlines()


def test_data_with_print_config_shows_the_preset_and_the_keys_it_set(tmp_path, capsys):
    folder = image_folder(tmp_path / "my images", LONG_TAIL, test=2)
    code, out, err = _train(capsys, "--data", str(folder), "--print-config")
    assert code == 0
    assert err == [
        f"dscl-train: note: --data {folder}: 837 grey 8 px training images in 10 classes "
        "(300 ... 6), 20 test images; preset dscl_fashion_mnist_lt (grey, <= 32 px), with "
        "data.name=image_folder data.imbalance_factor=null eval.many_threshold=100 "
        "eval.few_threshold=20 output_dir=outputs/dscl_my_images model.queue_size=512"
    ]
    config = yaml.safe_load(out)  # stdout is the YAML alone
    assert config["data"] | {"name": "image_folder", "root": str(folder)} == config["data"]
    assert config["data"]["imbalance_factor"] is None and config["data"]["input_size"] == 28
    assert config["model"]["backbone"] == "cnn5" and config["model"]["queue_size"] == 512
    assert config["trainer"]["batch_size"] == 128  # 837 // 4 = 209 >= the preset's 128
    assert config["eval"] | {"many_threshold": 100, "few_threshold": 20} == config["eval"]
    assert config["output_dir"] == "outputs/dscl_my_images"


def test_config_gives_the_recipe_and_overrides_win(tmp_path, capsys):
    folder = image_folder(tmp_path / "small", [30, 10, 6], test=1, colour=True)
    args = ["--data", str(folder), "--config", "dscl_cifar10_lt", "model.queue_size=32"]
    supcon = ["method=supcon", "model.beta=null", "model.pbsd_weight=0"]
    code, out, err = _train(capsys, *args, *supcon, "--print-config")
    assert code == 0
    line, reset = err
    assert line == (
        f"dscl-train: note: --data {folder}: 46 colour 8 px training images in 3 classes "
        "(30 ... 6), 3 test images; --config dscl_cifar10_lt, with data.name=image_folder "
        "output_dir=outputs/supcon_small trainer.batch_size=8"  # not the queue: given
    )
    assert reset.startswith("dscl-train: note: data.name is image_folder, so the cifar10_lt ")
    config = yaml.safe_load(out)
    assert config["model"]["backbone"] == "resnet18" and config["method"] == "supcon"
    assert config["model"]["queue_size"] == 32 and config["trainer"]["batch_size"] == 8
    assert config["trainer"]["epochs"] == 200  # the recipe's
    code, _, err = _train(capsys, "--data", str(folder), "eval.few_threshold=5", "--print-config")
    assert code == 0 and "eval.many_threshold=100 output_dir" in err[0]
    assert "few_threshold" not in err[0]  # what the user sets is not the data's


def test_a_val_split_is_named_as_not_used(tmp_path, capsys):
    folder = image_folder(tmp_path / "f", [8, 8], test=1, val=2)
    code, _, err = _train(capsys, "--data", str(folder), "--print-config")
    assert code == 0 and err[0].startswith("dscl-train: note: --data ")
    assert err[1:] == [
        f"dscl-train: note: '{folder}/val' (4 files) is not used: stage 1 trains on train/, "
        "stage 2 fits its probe on train/ and scores test/ (no model selection)"
    ]


def test_a_folder_without_test_split_or_with_other_classes_is_one_line(tmp_path, capsys):
    folder = image_folder(tmp_path / "f", [4, 4], test=1)
    (folder / "test" / "class1").rename(folder / "test" / "other")
    code, _, err = _train(capsys, "--data", str(folder))
    assert code == 2 and err == [
        f"dscl-train: data error: image folder '{folder}/test' must hold the classes of "
        f"'{folder}/train'; it has ['other'] that train/ lacks and lacks ['class1']"
    ]
    for split in ("class0", "other"):
        for path in (folder / "test" / split).iterdir():
            path.unlink()
        (folder / "test" / split).rmdir()
    (folder / "test").rmdir()
    code, _, err = _train(capsys, "--data", str(folder))
    assert code == 2 and err == [
        f"dscl-train: config error: --data {folder}: image folder not found: "
        f"'{folder}/test' (expected root/test/<class>/<image>); the folder must hold "
        "train/<class>/<image> and test/<class>/<image> (val/ optional)"
    ]
    rule = "the folder must hold train/<class>/<image> and test/<class>/<image> (val/ optional)"
    code, _, err = _train(capsys, "--data", str(folder / "train"))  # a split, not the folder
    assert code == 2 and err == [
        f"dscl-train: config error: --data {folder / 'train'}: '{folder / 'train'}' is a split "
        f"of the folder; point --data at '{folder}'; {rule}"
    ]
    code, _, err = _train(capsys, "--data", str(tmp_path / "typo"))
    assert code == 2 and err == [
        f"dscl-train: config error: --data {tmp_path / 'typo'}: no folder "
        f"'{tmp_path / 'typo'}'; {rule}"
    ]


def test_help_shows_config_as_optional_and_a_command_without_both_is_refused(capsys):
    for main, usage in ((train_main, "dscl-train"), (eval_main, "dscl-eval")):
        with pytest.raises(SystemExit):
            main(["--help"])
        assert f"usage: {usage} [-h] [--config CONFIG]" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        compare_main(["--help"])
    assert "[--config CONFIG] [--data DIR]" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(SystemExit) as done:
        train_main([])
    assert done.value.code == 2
    error = capsys.readouterr().err.splitlines()[-1]
    assert error.endswith("error: the following arguments are required: --config or --data")
    with pytest.raises(SystemExit) as done:
        eval_main(["--checkpoint", "x.pt"])
    assert done.value.code == 2
    assert capsys.readouterr().err == (
        "dscl-eval: error: --config is required: the config the weights were trained with "
        "(a run's config.yaml, or the preset or YAML file given to dscl-train).\n"
    )


def test_compare_plans_its_runs_on_the_folder(tmp_path, capsys, monkeypatch):
    from dscl_plugin.runs.compare import plan_runs

    folder = image_folder(tmp_path / "f", [40, 20, 6], test=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        made = data_folder_config(folder, overrides=["trainer.epochs=2"], output_dir=False)
    assert [str(w.message) for w in caught if w.category is ConfigNote] == []
    assert "output_dir" not in made.notes[0] and made.overrides[-1] == "trainer.epochs=2"
    plan = plan_runs(made.config, ["supcon", "dscl"], [0], tmp_path / "out", made.overrides)
    for run in plan:
        assert run.config.data.root == str(folder) and run.config.trainer.epochs == 2
        assert run.config.model.queue_size == 64 and run.config.trainer.batch_size == 16
    assert [run.config.method for run in plan] == ["supcon", "dscl"]
