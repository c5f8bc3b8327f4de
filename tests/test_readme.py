"""Every Python block of README.md runs as printed, with small stand-in data.

Each block runs in a fresh namespace holding the tensors, model and loader the prose
assumes (``query``, ``key``, ``loader``, ``model``, ...) and the modules imported by the
blocks before it (the MoCo block continues the PML one).
The Lightly block gets the stand-ins its note in the README states: a 64-image
``CIFAR10``, batch size 8, no workers and ``small_cnn``.
"""

import copy
import importlib
import re
import types
from pathlib import Path

import torch
import torchvision
from torch import nn

from dscl_plugin import registry

README = Path(__file__).resolve().parents[1] / "README.md"
LIGHTLY_STAND_INS = {
    "batch_size=256, shuffle=True": "batch_size=8, shuffle=True",
    "num_workers=8": "num_workers=0",
    'build_backbone("resnet18", cifar_stem=True)': 'build_backbone("small_cnn")',
}


class StandInCIFAR10(torchvision.datasets.FakeData):
    """64 random 32 px RGB images in 10 classes, with CIFAR10's signature; no download."""

    def __init__(self, root, train=True, transform=None, download=False):
        super().__init__(size=64, image_size=(3, 32, 32), num_classes=10,
                         transform=transform, random_offset=0 if train else 64)


def _blocks():
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def _namespace():
    torch.manual_seed(0)
    b, d, k = 8, 128, 32
    model = nn.Linear(16, d)
    labels = torch.arange(b) % 3
    x = torch.randn(b, 16)
    return {
        "query": torch.randn(b, d, requires_grad=True),
        "key": torch.randn(b, d),
        "labels": labels,
        "queue": torch.randn(k, d),
        "queue_labels": torch.arange(k) % 3,
        "patch_features": torch.randn(b, 2, d, requires_grad=True),
        "region_features": torch.randn(b, 2, d),
        "B": b,
        "x": x,
        "y": labels,
        "loader": [(x, labels)],
        "model": model,
        "key_model": copy.deepcopy(model),
        "augment": lambda images: images + 0.1 * torch.randn_like(images),
        "optimizer": torch.optim.SGD(model.parameters(), lr=0.1),
    }


def test_readme_has_the_blocks_this_test_knows():
    blocks = _blocks()
    assert len(blocks) == 7
    lightly_block = next(b for b in blocks if "LightlyDataset" in b)
    for printed in LIGHTLY_STAND_INS:  # the stand-ins replace text that is really there
        assert printed in lightly_block, printed


def test_readme_python_blocks_run(monkeypatch):
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", StandInCIFAR10)
    importlib.import_module("dscl_plugin.methods")  # built-ins registered before the copy
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))  # "my_dscl" stays local
    modules, results = {}, []
    for block in _blocks():
        if "LightlyDataset" in block:
            for printed, stand_in in LIGHTLY_STAND_INS.items():
                block = block.replace(printed, stand_in)
        namespace = {**_namespace(), **modules}
        exec(compile(block, str(README), "exec"), namespace)
        modules.update({k: v for k, v in namespace.items() if isinstance(v, types.ModuleType)})
        results.append(namespace)
    core, lightly_loop, bank, pml_step, moco, own_method, vit = results
    assert torch.isfinite(core["loss_pbsd"]) and torch.isfinite(core["loss"])
    assert lightly_loop["features"].shape == (64, 128)  # every stand-in test image embedded
    assert int(lightly_loop["model"].memory_bank.num_filled) == 64  # 8 steps of 8 keys
    assert torch.isfinite(bank["loss"]) and torch.isfinite(pml_step["loss"])
    assert torch.isfinite(moco["loss"]) and "my_dscl" in registry.available_methods()
    assert torch.isfinite(vit["out"]["loss"]) and vit["backbone"].feature_dim == 96
