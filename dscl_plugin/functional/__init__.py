"""The maths of the losses, once: fused cross-entropy kernels of DSCL/SupCon
(:mod:`.contrastive`) and PBSD (:mod:`.distillation`), and the pull-gradient ratio
(:mod:`.gradient_ratio`), and KCL's sampled positives and cross-entropy (:mod:`.kcl`)."""

from dscl_plugin.functional.contrastive import (
    Candidates,
    compute_dtype,
    decoupled_cross_entropy,
    dscl_cross_entropy,
)
from dscl_plugin.functional.distillation import patch_distillation
from dscl_plugin.functional.gradient_ratio import PullRatio, pull_gradient_ratio
from dscl_plugin.functional.kcl import kcl_cross_entropy, sample_queue_positives

__all__ = [
    "Candidates",
    "PullRatio",
    "compute_dtype",
    "decoupled_cross_entropy",
    "dscl_cross_entropy",
    "kcl_cross_entropy",
    "patch_distillation",
    "pull_gradient_ratio",
    "sample_queue_positives",
]
