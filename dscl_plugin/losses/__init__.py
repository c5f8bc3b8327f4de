"""Lightly-style losses: :class:`DSCLLoss` and :class:`SupConLoss` (:mod:`.contrastive`),
:class:`KCLLoss` (:mod:`.kcl`), :class:`PBSDLoss` (:mod:`.pbsd`), and their base for a
labelled queue (:mod:`.labeled`)."""

from dscl_plugin.losses.contrastive import DSCLLoss, SupConLoss
from dscl_plugin.losses.kcl import KCLLoss
from dscl_plugin.losses.pbsd import PBSDLoss

__all__ = ["DSCLLoss", "KCLLoss", "PBSDLoss", "SupConLoss"]
