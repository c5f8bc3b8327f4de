"""What a user sees at the command line: light ``--help``, the list of presets, one-line
errors (exit 2) for missing data and mismatched checkpoints, and a correct diagnosis of
non-checkpoint files."""

import importlib
import os
import subprocess
import sys

import pytest
import torch
from helpers import CONFIGS, ROOT, run_python

from dscl_plugin.cli import eval_main, train_main

HEAVY = (
    "pytorch_lightning",
    "lightning",
    "lightning_fabric",
    "omegaconf",
    "matplotlib",
)


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return err


@pytest.mark.slow
def test_help_loads_no_lightning_or_omegaconf():
    code = (
        "import contextlib, io, sys\n"
        "from dscl_plugin.cli import train_main, eval_main\n"
        "for main in (train_main, eval_main):\n"
        "    with contextlib.redirect_stdout(io.StringIO()):\n"
        "        try:\n"
        "            main(['--help'])\n"
        "        except SystemExit:\n"
        "            pass\n"
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r}))\n"
    )
    result = run_python(code)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_eval_help_gives_eval_overrides_and_the_example_documents_its_resume(capsys):
    with pytest.raises(SystemExit):
        eval_main(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "probe.epochs=10 eval.knn_k=20" in shown and "trainer.epochs" not in shown
    with pytest.raises(SystemExit):
        train_main(
            ["--help"],
            prog="python examples/train_digits_lt.py",
            default_config=str(CONFIGS / "dscl_digits_lt.yaml"),
            resume_existing=True,
        )
    shown = " ".join(capsys.readouterr().out.split())
    assert "it is dscl-train with --resume when output_dir/checkpoints/last.ckpt exists" in shown
    with pytest.raises(SystemExit):
        train_main(["--help"])
    assert "without --resume" not in capsys.readouterr().out


def test_list_configs_names_every_preset_with_its_description(capsys):
    from dscl_plugin.training.presets import preset_description, preset_names

    for main in (train_main, eval_main):  # needs no --config
        with pytest.raises(SystemExit) as exit_info:
            main(["--list-configs"])
        assert exit_info.value.code == 0
        lines = capsys.readouterr().out.splitlines()
        assert [line.split()[0] for line in lines] == preset_names()
        assert "dscl_digits_lt" in preset_names() and "supcon_imagenet_lt" in preset_names()
        digits = lines[preset_names().index("dscl_digits_lt")]
        assert digits.endswith(preset_description("dscl_digits_lt")) and "digits_lt" in digits


@pytest.mark.parametrize(
    "config, overrides",
    [
        ("dscl_cifar10_lt.yaml", []),
        (
            "dscl_digits_lt.yaml",
            ["data.name=image_folder", "data.imbalance_factor=null", "eval.many_threshold=60"],
        ),
        ("dscl_fashion_mnist_lt.yaml", []),
    ],
)
def test_missing_data_is_one_line_naming_data_root(
    tmp_path, capsys, monkeypatch, config, overrides
):
    fashion = importlib.import_module("dscl_plugin.data.fashion_mnist_lt")
    monkeypatch.setattr(fashion, "DEBIAN_ROOT", tmp_path / "no_debian_copy")
    fashion.load_split.cache_clear()
    missing = tmp_path / "missing"
    args = [
        "--config",
        str(CONFIGS / config),
        *overrides,
        f"data.root={missing}",
        f"output_dir={tmp_path / 'run'}",
        "trainer.num_workers=0",
    ]
    assert train_main(args) == 2
    err = one_line_error(capsys)
    assert err.startswith("dscl-train: config error: data.root (") and str(missing) in err
    assert not (tmp_path / "run" / "checkpoints").exists()  # before training starts
    fashion.load_split.cache_clear()


def test_a_text_file_is_no_checkpoint_and_eval_says_what_it_takes(tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a checkpoint\n")
    args = ["--config", str(CONFIGS / "dscl_digits_lt.yaml"), f"output_dir={tmp_path}"]
    assert eval_main([*args, "--checkpoint", str(text)]) == 1
    err = one_line_error(capsys)
    assert f"'{text}' is not a PyTorch file" in err
    assert "dscl-eval scores a backbone.pt or checkpoints/last.ckpt" in err
    assert "--resume" not in err and "Python objects" not in err


def test_eval_given_a_folder_names_the_files_it_takes(tmp_path, capsys):
    assert eval_main(["--config", "dscl_digits_lt", "--checkpoint", str(tmp_path)]) == 1
    assert one_line_error(capsys) == (
        f"dscl-eval: error: --checkpoint '{tmp_path}' is a folder: give a file, a run's "
        "backbone.pt or a training .ckpt (checkpoints/last.ckpt), with the run's config.yaml "
        "as --config."
    )
    run = tmp_path / "run"  # a run's folder: the command that scores it
    run.mkdir()
    for name in ("config.yaml", "backbone.pt"):
        (run / name).write_text("stand-in")
    assert eval_main(["--config", "dscl_digits_lt", "--checkpoint", str(run)]) == 1
    assert one_line_error(capsys).endswith(
        f"as --config: dscl-eval --config {run / 'config.yaml'} --checkpoint {run / 'backbone.pt'}"
    )


def test_eval_of_a_run_folder_without_config_gives_the_command_with_its_config(tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "backbone.pt", "checkpoints/last.ckpt"):
        (run / name).write_text("stand-in")
    needs = (
        "dscl-eval: error: --config is required: the config the weights were trained with "
        "(a run's config.yaml, or the preset or YAML file given to dscl-train); for this run: "
        f"dscl-eval --config {run / 'config.yaml'} --checkpoint"
    )
    for given, scored in (
        (run, run / "backbone.pt"),
        (run / "checkpoints" / "last.ckpt", run / "checkpoints" / "last.ckpt"),
    ):
        with pytest.raises(SystemExit) as done:
            eval_main(["--checkpoint", str(given)])
        assert done.value.code == 2
        assert one_line_error(capsys) == f"{needs} {scored}"


def test_eval_of_a_missing_checkpoint_gives_the_dscl_train_command_that_writes_it(tmp_path, capsys):
    run = tmp_path / "run"
    args = ["--config", "dscl_digits_lt", "trainer.epochs=2", f"output_dir={tmp_path / 'x'}"]
    assert eval_main([*args, "--checkpoint", str(run / "backbone.pt")]) == 1
    assert one_line_error(capsys) == (
        f"dscl-eval: error: Checkpoint file not found: '{run / 'backbone.pt'}'. dscl-train "
        f"writes a run's weights to {run / 'backbone.pt'} and "
        f"{run / 'checkpoints' / 'last.ckpt'}: dscl-train --config dscl_digits_lt "
        f"trainer.epochs=2 output_dir={run}"
    )
    (run / "checkpoints").mkdir(parents=True)  # a run that started: resume it as it was
    (run / "config.yaml").write_text("stand-in")
    (run / "checkpoints" / "last.ckpt").write_text("stand-in")
    assert eval_main([*args, "--checkpoint", str(run / "backbone.pt")]) == 1
    assert one_line_error(capsys).endswith(f"dscl-train --config {run / 'config.yaml'} --resume")


def fake_training_checkpoint(tmp_path, config_name, *overrides):
    """A ``last.ckpt`` as dscl-train writes it (untrained weights, saved config)."""
    from dscl_plugin.methods import build_method
    from dscl_plugin.training.config import load_config, to_dict, to_yaml

    run = tmp_path / config_name.split("_")[0]
    config = load_config(CONFIGS / config_name, [*overrides, f"output_dir={run}"])
    module = build_method(config)
    path = run / "checkpoints" / "last.ckpt"
    path.parent.mkdir(parents=True)
    torch.save(
        {
            "state_dict": module.state_dict(),
            "hyper_parameters": {"config": to_dict(config)},
        },
        path,
    )
    (run / "config.yaml").write_text(to_yaml(config))
    return path


TINY_MODEL = ["model.queue_size=64", "model.proj_dim=16"]


def test_eval_refuses_a_checkpoint_of_another_method_in_one_line(tmp_path, capsys):
    last = fake_training_checkpoint(tmp_path, "supcon_digits_lt.yaml", *TINY_MODEL)
    args = [
        "--config",
        str(CONFIGS / "dscl_digits_lt.yaml"),
        *TINY_MODEL,
        f"output_dir={tmp_path / 'dscl'}",
        "--checkpoint",
        str(last),
    ]
    assert eval_main(args) == 2
    err = one_line_error(capsys)
    assert "method is 'supcon' there, the config asks for 'dscl'" in err
    assert f"--config {last.parents[1] / 'config.yaml'}" in err
    assert not (last.parent / "last_eval").exists()  # nothing labelled "dscl" was written


def test_eval_names_both_backbones_on_a_mismatch(tmp_path, capsys):
    last = fake_training_checkpoint(tmp_path, "dscl_digits_lt.yaml", *TINY_MODEL)
    args = [
        "--config",
        str(CONFIGS / "dscl_digits_lt.yaml"),
        *TINY_MODEL,
        "model.backbone=resnet18",
        f"output_dir={tmp_path / 'x'}",
        "--checkpoint",
        str(last),
    ]
    assert eval_main(args) == 2
    err = one_line_error(capsys)
    assert "model.backbone is 'small_cnn' there, the config asks for 'resnet18'" in err
    assert "state_dict" not in err and "Missing key" not in err


def test_eval_of_a_runs_backbone_pt_checks_the_config_beside_it(tmp_path, capsys):
    """A ``backbone.pt`` has no config of its own, but a run's ``config.yaml`` sits beside
    it: a SupCon run's backbone scored with a ``dscl`` config is refused, not mislabelled."""
    from dscl_plugin.models import build_backbone
    from dscl_plugin.training.config import load_config, to_yaml

    run = tmp_path / "supcon_run"
    run.mkdir()
    supcon = load_config(CONFIGS / "supcon_digits_lt.yaml", [*TINY_MODEL, f"output_dir={run}"])
    (run / "config.yaml").write_text(to_yaml(supcon))
    torch.save(build_backbone("small_cnn")[0].state_dict(), run / "backbone.pt")
    args = [
        "--config",
        str(CONFIGS / "dscl_digits_lt.yaml"),
        *TINY_MODEL,
        f"output_dir={tmp_path / 'x'}",
        "--checkpoint",
        str(run / "backbone.pt"),
    ]
    assert eval_main(args) == 2
    err = one_line_error(capsys)
    assert "method is 'supcon' there, the config asks for 'dscl'" in err
    assert f"--config {run / 'config.yaml'}" in err


def test_backbone_weights_of_another_backbone_give_one_short_line(tmp_path, capsys):
    from dscl_plugin.models import build_backbone

    weights = tmp_path / "resnet.pt"
    torch.save(build_backbone("resnet18")[0].state_dict(), weights)
    args = [
        "--config",
        str(CONFIGS / "dscl_digits_lt.yaml"),
        f"output_dir={tmp_path}",
        "--checkpoint",
        str(weights),
    ]
    assert eval_main(args) == 1
    err = one_line_error(capsys)
    assert "do not fit backbone 'small_cnn'" in err and "model.backbone" in err
    assert len(err) < 400


@pytest.mark.parametrize(
    "args, message",
    [
        (["--epochs", "1"], "e.g. trainer.epochs=1 (or probe.epochs=1)"),
        (["--epochs=1"], "e.g. trainer.epochs=1 (or probe.epochs=1)"),
        (["--lr", "0.5", "model.beta=4"], "e.g. optim.lr=0.5 (or probe.lr=0.5)"),
        (["--trainer.epochs", "3"], "e.g. trainer.epochs=3"),
        (["--output-dir", "runs/a"], "e.g. output_dir=runs/a"),
        (["--num_workers", "--stage", "1"], "e.g. trainer.num_workers=..."),
    ],
)
def test_a_flag_named_like_a_config_key_hints_the_override(capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--config", "dscl_digits_lt", *args])
    assert exit_info.value.code == 2
    err = one_line_error(capsys)
    flag = args[0].partition("=")[0]
    assert err == (
        f"dscl-train: error: unrecognized option {flag}: config keys are set as "
        f"key.path=value, {message}"
    )


def test_an_unknown_flag_like_no_key_is_refused_as_argparse_does(capsys):
    with pytest.raises(SystemExit) as exit_info:
        eval_main(["--config", "dscl_digits_lt", "--checkpoint", "b.pt", "--zzz", "3"])
    assert exit_info.value.code == 2
    assert one_line_error(capsys) == (
        "dscl-eval: error: unrecognized arguments: --zzz (dscl-eval --help lists the options)"
    )


@pytest.mark.slow
def test_an_error_is_the_only_line_on_stderr(tmp_path):
    """The user's report, as they ran it: an empty IDX file under data.root, a preset by
    name, another folder; no Lightning "Seed set to 0" before the error."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    result = subprocess.run(
        [sys.executable, "-m", "dscl_plugin.cli", "--config", "dscl_fashion_mnist_lt"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert result.stderr.startswith(
        "dscl-train: data error: Fashion-MNIST file 'data/train-images-idx3-ubyte.gz' is empty"
    )
    assert len(result.stderr.splitlines()) == 1, result.stderr


@pytest.mark.slow
def test_stage_1_ends_with_the_backbone_and_the_eval_command(tmp_path, capsys):
    from helpers import TINY

    run = tmp_path / "run"
    assert (
        train_main(["--config", "dscl_digits_lt", *TINY, f"output_dir={run}", "--stage", "1"]) == 0
    )
    out = capsys.readouterr().out.strip().splitlines()
    command = f"dscl-eval --config {run / 'config.yaml'} --checkpoint {run / 'backbone.pt'}"
    assert out[-2:] == [
        f"stage 1 finished: the backbone is {run / 'backbone.pt'}; evaluate it (stage 2) with:",
        f"  {command}",
    ]
    assert eval_main(command.split()[1:]) == 0  # the command works as printed
    assert (run / "metrics.json").is_file()


def test_dscl_compare_reports_a_damaged_data_file_in_one_line(tmp_path, monkeypatch, capsys):
    from dscl_plugin.cli import compare_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    settings = ["trainer.num_workers=0", "trainer.progress_bar=false"]
    assert compare_main([*settings, "--config", "dscl_fashion_mnist_lt", "--seeds", "0"]) == 2
    assert one_line_error(capsys).startswith(
        "dscl-compare: data error: Fashion-MNIST file 'data/train-images-idx3-ubyte.gz' is empty"
    )
