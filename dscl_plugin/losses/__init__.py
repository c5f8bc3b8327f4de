"""Lightly-style losses: :class:`DSCLLoss` and :class:`SupConLoss` (:mod:`.contrastive`),
:class:`PBSDLoss` (:mod:`.pbsd`), :class:`KCLLoss` (:mod:`.kcl`), :class:`TSCLoss`
(:mod:`.tsc`)."""

from dscl_plugin.losses.contrastive import DSCLLoss, SupConLoss
from dscl_plugin.losses.kcl import KCLLoss
from dscl_plugin.losses.pbsd import PBSDLoss
from dscl_plugin.losses.tsc import TSCLoss

__all__ = ["DSCLLoss", "KCLLoss", "PBSDLoss", "SupConLoss", "TSCLoss"]
