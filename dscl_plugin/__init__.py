"""DSCL (decoupled supervised contrastive learning) and PBSD for Lightly and PML.

``import dscl_plugin`` loads only the core (backbones, losses, memory bank, models,
transforms) and the PML and Lightly bindings, and exposes our classes in those libraries'
namespaces (:mod:`dscl_plugin.namespaces`): no PyTorch Lightning, OmegaConf or
matplotlib. The training names (``build_method``, ``register_method``,
``available_methods``) are loaded on first use.
"""
# ruff: noqa: E402  (torchvision is checked before Lightly, PML or we import it)

import typing

from dscl_plugin import torch_pair

torch_pair.import_torchvision()  # a torch/torchvision mismatch fails here, on one line

from dscl_plugin import namespaces
from dscl_plugin._version import __version__
from dscl_plugin.backbones import build_backbone
from dscl_plugin.losses import DSCLLoss, KCLLoss, PBSDLoss, SupConLoss
from dscl_plugin.memory import LabeledMemoryBank
from dscl_plugin.models import DSCLModel, SupConModel
from dscl_plugin.transforms import DSCLTransform, PatchViewCollate, eval_transform

if typing.TYPE_CHECKING:
    from dscl_plugin.methods import build_method
    from dscl_plugin.training.registry import available_methods, register_method

namespaces.register_library_names()

_TRAINING_NAMES = ("available_methods", "build_method", "register_method")


def __getattr__(name: str) -> object:
    """The training names, imported lazily (they load PyTorch Lightning)."""
    if name == "build_method":
        from dscl_plugin.methods import build_method

        return build_method
    if name in _TRAINING_NAMES:
        import dscl_plugin.methods  # noqa: F401  (registers the built-in methods)
        from dscl_plugin.training import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'dscl_plugin' has no attribute {name!r}")


def __dir__() -> list[str]:
    """The public names (:data:`__all__`), the lazy ones included."""
    return sorted(__all__)


__all__ = [
    "DSCLLoss",
    "DSCLModel",
    "DSCLTransform",
    "KCLLoss",
    "LabeledMemoryBank",
    "PBSDLoss",
    "PatchViewCollate",
    "SupConLoss",
    "SupConModel",
    "__version__",
    "available_methods",
    "build_backbone",
    "build_method",
    "eval_transform",
    "register_method",
]
