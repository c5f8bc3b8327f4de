"""Lightly-style losses: :class:`DSCLLoss` and :class:`SupConLoss` (:mod:`.contrastive`),
:class:`PBSDLoss` (:mod:`.pbsd`), :class:`KCLLoss` (:mod:`.kcl`), :class:`TSCLoss`
(:mod:`.tsc`), :class:`BCLLoss` (:mod:`.bcl`), :class:`LogitAdjustLoss`
(:mod:`.logit_adjust`) and :class:`PaCoLoss` (:mod:`.paco`)."""

from dscl_plugin.losses.bcl import BCLLoss
from dscl_plugin.losses.contrastive import DSCLLoss, SupConLoss
from dscl_plugin.losses.kcl import KCLLoss
from dscl_plugin.losses.logit_adjust import LogitAdjustLoss
from dscl_plugin.losses.paco import PaCoLoss
from dscl_plugin.losses.pbsd import PBSDLoss
from dscl_plugin.losses.tsc import TSCLoss

__all__ = [
    "BCLLoss",
    "DSCLLoss",
    "KCLLoss",
    "LogitAdjustLoss",
    "PaCoLoss",
    "PBSDLoss",
    "SupConLoss",
    "TSCLoss",
]
