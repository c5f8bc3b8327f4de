"""Method registry (built-ins and a third-party method) and Lightly namespace registration."""

from pathlib import Path

import lightly.loss
import lightly.transforms
import pytest
import pytorch_lightning as pl
import torch

import dscl_plugin
from dscl_plugin import registry
from dscl_plugin.config import ConfigError, load_config
from dscl_plugin.lightly_registration import register_lightly_names
from dscl_plugin.losses import DSCLLoss, PBSDLoss, SupConLoss
from dscl_plugin.methods import ContrastiveMethod, DSCLMethod, SupConMethod
from dscl_plugin.models import DSCLModel, SupConModel
from dscl_plugin.transforms import DSCLTransform

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TINY = ["model.queue_size=32", "model.proj_dim=16"]


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
    dscl = registry.build_method(load_config(CONFIGS / "dscl_digits_lt.yaml", TINY))
    supcon = registry.build_method(load_config(CONFIGS / "supcon_digits_lt.yaml", TINY))
    assert isinstance(dscl, DSCLMethod) and isinstance(dscl.model, DSCLModel)
    assert isinstance(supcon, SupConMethod) and isinstance(supcon.model, SupConModel)
    assert dscl.model.pbsd_weight == 1.5 and dscl.model.criterion.alpha == pytest.approx(1 / 9)
    view_q, view_k, patches, boxes, labels = _batch(dscl)
    assert view_q.shape == (4, 3, 16, 16)
    assert patches.shape == (4, 2, 3, 8, 8) and boxes.shape == (4, 2, 4)
    assert _batch(supcon)[2] is None  # supcon views carry no patches


def test_dscl_only_has_no_patches():
    config = load_config(CONFIGS / "dscl_digits_lt.yaml", TINY + ["model.pbsd_weight=0"])
    module = registry.build_method(config)
    view_q, view_k, patches, boxes, labels = _batch(module)
    assert patches is None and boxes is None
    out = module.model(view_q, view_k, patches, boxes, labels)
    assert out["loss_pbsd"] == 0 and torch.equal(out["loss"], out["loss_dscl"])


def test_third_party_method(isolated_registry):
    @dscl_plugin.register_method("own_view_only")
    class OwnViewOnly(ContrastiveMethod):
        """MoCo-like: DSCL with alpha = 1 (class positives get no weight), no PBSD."""

        uses_patches = False

        @classmethod
        def check_config(cls, config):
            return [] if config.model.pbsd_weight == 0 else ["model.pbsd_weight: must be 0"]

        def build_model(self):
            backbone, dim = self.build_backbone()
            m = self.config.model
            return DSCLModel(backbone, dim, m.proj_dim, m.queue_size, alpha=1.0, pbsd_weight=0.0)

    assert "own_view_only" in registry.available_methods()
    overrides = TINY + ["method=own_view_only", "model.beta=null", "model.pbsd_weight=0"]
    config = load_config(CONFIGS / "dscl_digits_lt.yaml", overrides)
    module = registry.build_method(config)
    assert type(module) is OwnViewOnly and module.model.criterion.alpha == 1.0
    batch = _batch(module)
    assert batch[2] is None
    module.model.update_momentum()
    module.model(*batch)["loss"].backward()
    assert module.model.memory_bank.num_filled.item() == 4
    with pytest.raises(ConfigError, match="model.pbsd_weight: must be 0"):
        load_config(CONFIGS / "dscl_digits_lt.yaml", overrides[:-1] + ["model.pbsd_weight=1"])


def test_registry_errors(isolated_registry):
    with pytest.raises(ValueError, match="already registered by dscl_plugin.methods.DSCLMethod"):
        registry.register_method("dscl")(type("Other", (ContrastiveMethod,), {}))
    registry.register_method("dscl")(DSCLMethod)  # re-registering the same class is a no-op
    with pytest.raises(TypeError, match="LightningModule subclass"):
        registry.register_method("plain")(object)
    with pytest.raises(ValueError, match=r"Unknown method 'nope'; registered .*\['dscl', 'supcon'\]"):
        registry.get_method("nope")
    assert issubclass(registry.get_method("supcon"), pl.LightningModule)


def test_lightly_namespace_registration():
    assert lightly.loss.DSCLLoss is DSCLLoss
    assert lightly.loss.PBSDLoss is PBSDLoss
    assert lightly.loss.SupConLoss is SupConLoss
    assert lightly.transforms.DSCLTransform is DSCLTransform
    from lightly.loss import DSCLLoss as imported

    assert imported is DSCLLoss
    assert register_lightly_names() == []  # already there: nothing added twice


def test_lightly_names_are_never_overwritten(monkeypatch):
    sentinel = object()
    monkeypatch.setattr(lightly.loss, "DSCLLoss", sentinel)  # as if Lightly shipped its own
    monkeypatch.delattr(lightly.transforms, "DSCLTransform")
    ntxent = lightly.loss.NTXentLoss
    assert register_lightly_names() == ["lightly.transforms.DSCLTransform"]
    assert lightly.loss.DSCLLoss is sentinel and lightly.loss.NTXentLoss is ntxent
    assert lightly.transforms.DSCLTransform is DSCLTransform
