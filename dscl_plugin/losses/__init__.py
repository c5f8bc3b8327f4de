"""Lightly-style losses: :class:`DSCLLoss` and :class:`SupConLoss` (:mod:`.contrastive`),
:class:`PBSDLoss` (:mod:`.pbsd`), :class:`KCLLoss` (:mod:`.kcl`), :class:`TSCLoss`
(:mod:`.tsc`), :class:`BCLLoss` (:mod:`.bcl`) and :class:`LogitAdjustLoss`
(:mod:`.logit_adjust`)."""

from dscl_plugin.losses.bcl import BCLLoss
from dscl_plugin.losses.contrastive import DSCLLoss, SupConLoss
from dscl_plugin.losses.kcl import KCLLoss
from dscl_plugin.losses.logit_adjust import LogitAdjustLoss
from dscl_plugin.losses.pbsd import PBSDLoss
from dscl_plugin.losses.tsc import TSCLoss

__all__ = [
    "BCLLoss",
    "DSCLLoss",
    "KCLLoss",
    "LogitAdjustLoss",
    "PBSDLoss",
    "SupConLoss",
    "TSCLoss",
]
