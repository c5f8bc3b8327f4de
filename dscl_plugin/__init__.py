"""DSCL (decoupled supervised contrastive learning) and PBSD for Lightly and PML."""

from dscl_plugin.losses import DSCLLoss, PBSDLoss, SupConLoss
from dscl_plugin.memory import LabeledMemoryBank
from dscl_plugin.models import DSCLModel, SupConModel, build_backbone
from dscl_plugin.transforms import DSCLTransform, PatchViewCollate, eval_transform
from dscl_plugin import pml as _pml  # registers DSCLLoss etc. in PML's namespaces
from dscl_plugin.lightly_registration import register_lightly_names
from dscl_plugin.registry import available_methods, build_method, register_method

register_lightly_names()  # lightly.loss.DSCLLoss etc., where Lightly has no such name

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
__version__ = "0.1.0"
