"""Stage-1 methods on one harness: the base classes (:mod:`.base` :class:`Method`,
:mod:`.momentum` :class:`MomentumMethod` for an EMA encoder and a labelled queue,
:mod:`.pull_ratio` for :class:`~dscl_plugin.models.DSCLModel`'s family), what a method
declares (:mod:`.options`, :mod:`.views`), the learning-rate schedule (:mod:`.schedule`),
one module per method (:mod:`.dscl`, :mod:`.supcon`, :mod:`.kcl`, :mod:`.tsc`,
:mod:`.bcl`, :mod:`.paco`), and the run's method checked and built (:mod:`.build`).
Importing the package registers the built-in methods (docs/methods.md adds one)."""

from dscl_plugin.methods.base import Method
from dscl_plugin.methods.bcl import BCLMethod, BCLOptions
from dscl_plugin.methods.build import build_method, check_method
from dscl_plugin.methods.dscl import DSCLMethod, DSCLOptions
from dscl_plugin.methods.kcl import KCLMethod, KCLOptions
from dscl_plugin.methods.momentum import MomentumMethod
from dscl_plugin.methods.options import NoOptions
from dscl_plugin.methods.paco import PaCoMethod, PaCoModel, PaCoOptions
from dscl_plugin.methods.pull_ratio import PullRatioMethod
from dscl_plugin.methods.supcon import SupConMethod
from dscl_plugin.methods.tsc import TSCMethod, TSCOptions
from dscl_plugin.methods.views import Batch, Patches, Views

__all__ = [
    "BCLMethod",
    "BCLOptions",
    "Batch",
    "DSCLMethod",
    "DSCLOptions",
    "KCLMethod",
    "KCLOptions",
    "Method",
    "MomentumMethod",
    "NoOptions",
    "PaCoMethod",
    "PaCoModel",
    "PaCoOptions",
    "Patches",
    "PullRatioMethod",
    "SupConMethod",
    "TSCMethod",
    "TSCOptions",
    "Views",
    "build_method",
    "check_method",
]
