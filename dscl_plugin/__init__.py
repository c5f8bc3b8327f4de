"""DSCL (decoupled supervised contrastive learning) and PBSD for Lightly and PML.

``import dscl_plugin`` loads only the core (backbones, losses, memory bank, models, transforms and
the PML/Lightly registrations): no PyTorch Lightning, OmegaConf or matplotlib. The
training names (``build_method``, ``register_method``, ``available_methods``) are
loaded on first use.
"""

from typing import Any

from dscl_plugin._version import __version__  # noqa: F401
from dscl_plugin.backbones import build_backbone
from dscl_plugin.losses import DSCLLoss, PBSDLoss, SupConLoss
from dscl_plugin.memory import LabeledMemoryBank
from dscl_plugin.models import DSCLModel, SupConModel
from dscl_plugin.transforms import DSCLTransform, PatchViewCollate, eval_transform
from dscl_plugin import pml as _pml  # registers DSCLLoss etc. in PML's namespaces
from dscl_plugin.lightly_registration import register_lightly_names

register_lightly_names()  # lightly.loss.DSCLLoss etc., where Lightly has no such name

_TRAINING_NAMES = ("available_methods", "build_method", "register_method")


def __getattr__(name: str) -> Any:
    """The training names, imported lazily (they load PyTorch Lightning)."""
    if name == "build_method":
        from dscl_plugin.training import build_method

        return build_method
    if name in _TRAINING_NAMES:
        import dscl_plugin.methods  # noqa: F401  (registers the built-in methods)
        from dscl_plugin import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'dscl_plugin' has no attribute {name!r}")


def __dir__() -> list:
    return sorted([*globals(), *_TRAINING_NAMES])


__all__ = [
    "DSCLLoss",
    "DSCLModel",
    "DSCLTransform",
    "LabeledMemoryBank",
    "PatchViewCollate",
    "PBSDLoss",
    "SupConLoss",
    "SupConModel",
    "available_methods",
    "build_backbone",
    "build_method",
    "eval_transform",
    "register_method",
]
