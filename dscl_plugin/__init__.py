"""DSCL (decoupled supervised contrastive learning) and PBSD for Lightly and PML."""

from dscl_plugin.losses import DSCLLoss, PBSDLoss, SupConLoss
from dscl_plugin.memory import LabeledMemoryBank
from dscl_plugin import pml as _pml  # registers DSCLLoss etc. in PML's namespaces

__all__ = ["DSCLLoss", "LabeledMemoryBank", "PBSDLoss", "SupConLoss"]
__version__ = "0.1.0"
