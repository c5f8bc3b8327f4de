"""The run folder: where each stage reads and writes, and the checks of a config against the
settings saved with a run."""

import os
from pathlib import Path

import pytest
import torch
from helpers import tiny

from dscl_plugin.errors import CheckpointError, ConfigError
from dscl_plugin.runs.folder import (
    RunFolder,
    changed_settings,
    check_checkpoint_config,
    resolve_resume,
    resumes_finished,
    saved_config,
)
from dscl_plugin.training.config import to_dict


def test_layout_of_a_run_folder(tmp_path):
    config = tiny(tmp_path, "run")
    folder = RunFolder.of(config)
    assert folder == RunFolder(tmp_path / "run")
    assert folder.config_file == tmp_path / "run" / "config.yaml"
    assert folder.checkpoints == tmp_path / "run" / "checkpoints"
    assert folder.last_checkpoint == tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert folder.logs == tmp_path / "run" / "logs"
    assert folder.backbone == tmp_path / "run" / "backbone.pt"
    assert folder.classifier == tmp_path / "run" / "classifier.pt"


def test_results_go_to_the_run_for_its_backbone_and_beside_any_other_file(tmp_path):
    folder = RunFolder(tmp_path / "run")
    assert folder.results_dir(folder.backbone) == folder.root
    other = tmp_path / "elsewhere" / "weights.pt"
    assert folder.results_dir(other) == tmp_path / "elsewhere" / "weights_eval"
    assert folder.results_dir(folder.last_checkpoint) == folder.checkpoints / "last_eval"


def save_checkpoint(path: Path, config) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {}, "hyper_parameters": {"config": to_dict(config)}}, path)


def test_training_finished_means_a_backbone_newer_than_the_last_checkpoint(tmp_path):
    config = tiny(tmp_path, "run")
    folder = RunFolder.of(config)
    assert not folder.training_finished()
    save_checkpoint(folder.last_checkpoint, config)
    assert not folder.training_finished() and not resumes_finished(config, True)
    torch.save({}, folder.backbone)
    old = folder.last_checkpoint.stat().st_mtime - 10
    os.utime(folder.backbone, (old, old))  # written before the last checkpoint
    assert not folder.training_finished()
    os.utime(folder.backbone)
    assert folder.training_finished() and resumes_finished(config, "last")


def test_changed_settings_list_each_leaf_except_the_free_ones(tmp_path):
    saved = to_dict(tiny(tmp_path, "run"))
    config = tiny(tmp_path, "run", "optim.lr=0.2", "data.root=elsewhere", "model.beta=4")
    changes = changed_settings(saved, config, ("model", "optim", "data"))
    assert changes == [("model.beta", 8.0, 4.0), ("optim.lr", 0.1, 0.2)]
    free = changed_settings(saved, config, ("optim",), free=("optim.lr",))
    assert free == []


def test_resume_checks(tmp_path):
    config = tiny(tmp_path, "run")
    folder = RunFolder.of(config)
    assert resolve_resume(config, None) is None  # a fresh run
    with pytest.raises(CheckpointError, match="Checkpoint to resume from not found"):
        resolve_resume(config, True)
    save_checkpoint(folder.last_checkpoint, config)
    with pytest.raises(CheckpointError, match="pass --resume"):
        resolve_resume(config, None)
    assert resolve_resume(config, "last") == folder.last_checkpoint
    assert saved_config(folder.last_checkpoint) == to_dict(config)
    with pytest.raises(ConfigError, match=r"optim.lr: 0.1 -> 0.2"):
        resolve_resume(tiny(tmp_path, "run", "optim.lr=0.2"), True)
    more_workers = tiny(tmp_path, "run", "trainer.num_workers=3", "trainer.epochs=5")
    assert resolve_resume(more_workers, True) == folder.last_checkpoint  # may change
    # the run's method options count, other methods' options do not
    with pytest.raises(ConfigError, match=r"method_options.dscl.x: None -> 1"):
        resolve_resume(tiny(tmp_path, "run", "method_options.dscl.x=1"), True)
    assert resolve_resume(tiny(tmp_path, "run", "method_options.kcl.k=1"), True)
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(CheckpointError, match="not written by dscl-train"):
        resolve_resume(config, tmp_path / "foreign.ckpt")


def test_a_checkpoint_is_scored_only_as_the_method_and_model_it_was_trained_as(tmp_path):
    saved = to_dict(tiny(tmp_path, "run", "model.init_from=null"))
    check_checkpoint_config(tiny(tmp_path, "other", "probe.epochs=3"), "last.ckpt", saved)
    own = tmp_path / "config.yaml"
    own.write_text("")
    with pytest.raises(ConfigError) as info:
        check_checkpoint_config(tiny(tmp_path, "run", "model.proj_dim=8"), "x.ckpt", saved, own)
    message = str(info.value)
    assert "model.proj_dim is 16 there, the config asks for 8" in message
    with pytest.raises(ConfigError, match="method_options.dscl.x is None there"):
        check_checkpoint_config(tiny(tmp_path, "run", "method_options.dscl.x=1"), "x", saved)
    assert f"--config {own}" in message and len(message.splitlines()) == 1
