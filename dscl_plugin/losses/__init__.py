"""Lightly-style losses: :class:`DSCLLoss` and :class:`SupConLoss` (:mod:`.contrastive`),
:class:`PBSDLoss` (:mod:`.pbsd`)."""

from dscl_plugin.losses.contrastive import DSCLLoss, SupConLoss
from dscl_plugin.losses.pbsd import PBSDLoss

__all__ = ["DSCLLoss", "PBSDLoss", "SupConLoss"]
