"""dscl_plugin/torch_pair.py: a torchvision built for another torch is named on one line."""

import builtins
import importlib.metadata

import pytest
import torch

from dscl_plugin.torch_pair import TESTED_PAIR, import_torchvision


def _torchvision_raises(monkeypatch, error):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "torchvision":
            raise error
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)


def test_a_mismatched_pair_names_both_versions_and_the_fix(monkeypatch):
    _torchvision_raises(monkeypatch, RuntimeError("operator torchvision::nms does not exist"))
    with pytest.raises(ImportError) as info:
        import_torchvision()
    version = importlib.metadata.version("torchvision")
    assert str(info.value) == (
        f"torchvision {version} was not built for torch {torch.__version__} (operator "
        "torchvision::nms does not exist); install a pair in one command from one index, "
        f"e.g. pip install {TESTED_PAIR} (docs/install.md)"
    )


def test_another_runtime_error_is_not_renamed(monkeypatch):
    _torchvision_raises(monkeypatch, RuntimeError("out of memory"))
    with pytest.raises(RuntimeError, match="out of memory"):
        import_torchvision()


def test_a_working_pair_imports():
    import_torchvision()  # this environment's torch and torchvision are a pair
