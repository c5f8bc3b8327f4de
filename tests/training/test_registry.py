"""Method registry: the built-in methods and a third-party method."""

import json
import os
import subprocess
import sys

import pytest
import pytorch_lightning as pl
import torch
from helpers import CONFIGS, ROOT

import dscl_plugin
from dscl_plugin.errors import ConfigError
from dscl_plugin.methods import (
    Batch,
    DSCLMethod,
    Method,
    MomentumMethod,
    SupConMethod,
    build_method,
)
from dscl_plugin.models import DSCLModel, SupConModel
from dscl_plugin.training import registry
from dscl_plugin.training.config import load_config

TINY = ["model.queue_size=32", "model.proj_dim=16"]
RUN_TINY = TINY + [
    "trainer.epochs=1",
    "trainer.batch_size=16",
    "trainer.limit_train_batches=2",
    "trainer.log_every_n_steps=1",
    "trainer.num_workers=0",
    "trainer.progress_bar=false",
    "optim.warmup_epochs=0",
    "probe.epochs=2",
    "probe.milestones=[1]",
    "probe.batch_size=128",
    "eval.batch_size=300",
]


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made by a test do not leak into the others."""
    registry.available_methods()
    monkeypatch.setattr(registry, "_METHODS", dict(registry._METHODS))


def _batch(module, n=4):
    from dscl_plugin.data import build_dataset

    c = module.config
    transform = module.train_transform()
    dataset = build_dataset("digits_lt", "train", transform, input_size=c.data.input_size)
    return module.collate_fn()([dataset[i] for i in range(0, len(dataset), len(dataset) // n)][:n])


def test_builtin_methods():
    assert {"dscl", "supcon"} <= set(dscl_plugin.available_methods())
    dscl = build_method(load_config(CONFIGS / "dscl_digits_lt.yaml", TINY))
    supcon = build_method(load_config(CONFIGS / "supcon_digits_lt.yaml", TINY))
    assert isinstance(dscl, DSCLMethod) and isinstance(dscl.model, DSCLModel)
    assert isinstance(supcon, SupConMethod) and isinstance(supcon.model, SupConModel)
    assert dscl.model.pbsd_weight == 1.5 and dscl.model.criterion.alpha == pytest.approx(1 / 9)
    view_q, view_k, patches, boxes, labels = _batch(dscl)
    assert view_q.shape == (4, 3, 16, 16)
    assert patches.shape == (4, 2, 3, 8, 8) and boxes.shape == (4, 2, 4)
    assert _batch(supcon)[2] is None  # supcon views carry no patches


def test_dscl_only_has_no_patches():
    config = load_config(CONFIGS / "dscl_digits_lt.yaml", TINY + ["model.pbsd_weight=0"])
    module = build_method(config)
    view_q, view_k, patches, boxes, labels = _batch(module)
    assert patches is None and boxes is None
    out = module.model(view_q, view_k, patches, boxes, labels)
    assert out["loss_pbsd"] == 0 and torch.equal(out["loss"], out["loss_dscl"])


def test_third_party_method(isolated_registry):
    @dscl_plugin.register_method("own_view_only")
    class OwnViewOnly(MomentumMethod):
        """MoCo-like: DSCL with alpha = 1 (class positives get no weight), no PBSD."""

        @classmethod
        def check_config(cls, config):
            return [] if config.model.pbsd_weight == 0 else ["model.pbsd_weight: must be 0"]

        def build_model(self, backbone, feature_dim):
            m = self.config.model
            return DSCLModel(
                backbone, feature_dim, m.proj_dim, m.queue_size, alpha=1.0, pbsd_weight=0
            )

        def step(self, batch):
            out = self.model(*batch.views, None, None, batch.labels)
            return {"loss": out["loss"], "loss_moco": out["loss_dscl"]}

    assert "own_view_only" in registry.available_methods()
    overrides = TINY + [
        "method=own_view_only",
        "model.beta=null",
        "model.pbsd_weight=0",
    ]
    config = load_config(CONFIGS / "dscl_digits_lt.yaml", overrides)
    module = build_method(config)
    assert type(module) is OwnViewOnly and module.model.criterion.alpha == 1.0
    batch = _batch(module)
    assert batch[2] is None
    module.model.update_momentum()
    terms = module.step(Batch.of(batch, 2))
    assert set(terms) == {"loss", "loss_moco"}
    terms["loss"].backward()
    assert module.model.memory_bank.num_filled.item() == 4
    config = load_config(CONFIGS / "dscl_digits_lt.yaml", overrides[:-1] + ["model.pbsd_weight=1"])
    with pytest.raises(ConfigError, match="model.pbsd_weight: must be 0"):
        build_method(config)


def test_registry_errors(isolated_registry):
    with pytest.raises(
        ValueError, match="already registered by dscl_plugin.methods.dscl.DSCLMethod"
    ):
        registry.register_method("dscl")(type("Other", (Method,), {}))
    registry.register_method("dscl")(DSCLMethod)  # re-registering the same class is a no-op
    with pytest.raises(TypeError, match="LightningModule subclass"):
        registry.register_method("plain")(object)
    with pytest.raises(
        ValueError,
        match=r"Unknown method 'nope'; registered "
        r".*\['bcl', 'dscl', 'kcl', 'paco', 'supcon', 'tsc'\]",
    ):
        registry.get_method("nope")
    assert issubclass(registry.get_method("supcon"), pl.LightningModule)


def _docs_block(after_heading):
    text = (ROOT / "docs" / "methods.md").read_text()
    section = text[text.index(after_heading) :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.slow
def test_readme_own_method_runs_through_dscl_train(tmp_path, monkeypatch, isolated_registry):
    """docs/methods.md's worked example, as printed, trained and evaluated by
    ``dscl-train --import my_method`` (from the current directory): its loss terms logged,
    its own classifier saved and scored."""
    from dscl_plugin.cli import train_main

    (tmp_path / "my_method.py").write_text(_docs_block("## Adding a method"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.delitem(sys.modules, "my_method", raising=False)
    config = str(CONFIGS / "dscl_digits_lt.yaml")
    args = [
        "--config",
        config,
        "method=batch_supcon",
        *RUN_TINY,
        f"output_dir={tmp_path / 'out'}",
    ]
    assert train_main(args) == 2  # not imported: a config error naming --import
    assert train_main(["--import", "my_method", *args]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["method"] == "batch_supcon"
    assert issubclass(registry.get_method("batch_supcon"), Method)
    assert metrics["own_classifier"]["label"] == "batch_supcon's own classifier"
    assert (tmp_path / "out" / "classifier.pt").is_file()
    header = (tmp_path / "out" / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert {"loss_supcon", "loss_ce"} <= set(header.split(","))
    assert train_main(["--import", "no_such_module", *args]) == 2


@pytest.mark.slow
def test_entry_point_group_registers_methods(tmp_path):
    """An installed package's entry point in ``dscl_plugin.methods`` reaches the CLI."""
    (tmp_path / "plugin_methods.py").write_text(
        "from dscl_plugin import register_method\n"
        "from dscl_plugin.methods import DSCLMethod\n\n"
        "@register_method('ep_dscl')\nclass EntryPointDSCL(DSCLMethod):\n    pass\n"
    )
    info = tmp_path / "plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[dscl_plugin.methods]\nep_dscl = plugin_methods\n")
    code = (
        "import sys\n"
        "from dscl_plugin.training.config import load_config\n"
        "from dscl_plugin.methods import check_method\n"
        "config = load_config(sys.argv[1], ['method=ep_dscl', 'model.queue_size=8'])\n"
        "print(check_method(config).__name__)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(CONFIGS / "dscl_digits_lt.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{tmp_path}"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "EntryPointDSCL"
