"""TSC, targeted supervised contrastive learning, as a Lightly-style ``torch.nn.Module``.

Reference:
- [0] Li et al., Targeted Supervised Contrastive Learning for Long-Tailed Recognition,
  CVPR 2022, https://arxiv.org/abs/2111.13998
"""

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from lightly.models import utils
from lightly.utils import dist
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.functional.contrastive import Candidates
from dscl_plugin.functional.kcl import KCLLosses, Targets
from dscl_plugin.functional.targets import match_targets, uniform_targets, update_centroids_
from dscl_plugin.losses.classes import class_ids
from dscl_plugin.losses.kcl import KCLLoss
from dscl_plugin.memory import updates_queue


class TSCParts(NamedTuple):
    """The two parts of a :class:`TSCLoss` call, means over its anchors, no gradient:
    ``class_loss`` ``-1 / |P_i| sum_{c in P_i \\ G_i} log p_ic`` (own key and queue
    positives) and ``target_loss`` ``-1 / |P_i| sum_{c in G_i} log p_ic`` (the matched
    target copies, before the weight), so ``loss = class_loss + tw * target_loss``. The
    official ``loss_class`` and ``loss_target / tw`` (its logged ``loss_target`` is
    weighted)."""

    class_loss: Tensor
    target_loss: Tensor


class TSCLoss(KCLLoss):
    """Targeted supervised contrastive loss (TSC) [0]: :class:`KCLLoss` with class targets
    spread uniformly on the hypersphere, matched to the classes every step.

    The columns of anchor ``q_i`` are its own key, the queue rows and the C targets
    ``t``, each repeated ``tr`` times (``l = q_i . c / T``, one softmax over them all).
    Every training step the running centroid of each class in the batch moves to
    ``mu_c <- normalize(0.9 mu_c + 0.1 normalize(mean q of class c))`` and the classes
    are matched one-to-one to the targets by the Hungarian algorithm (largest total
    ``mu_c . t``). ``P_i``: the own key, the drawn queue positives of :class:`KCLLoss`
    and the ``tr`` copies ``G_i`` of the target matched to ``y_i`` (with
    ``separate_targets=False`` these join the pool the ``k`` positives are drawn from):

    ``L_i = -1 / |P_i| [sum_{c in P_i \\ G_i} log p_ic + tw sum_{c in G_i} log p_ic]``

    i.e. the official ``loss_class + tw * loss_target``, both divided by the total
    positive count, averaged over the B anchors (``LTH14/targeted-supcon``,
    ``moco/builder.py``, ``KCL(targeted=True)``); every call keeps the two parts in
    :attr:`parts`, from the same pass as the loss. The targets are generated at
    construction (:func:`~dscl_plugin.functional.uniform_targets`, seeded, not shipped
    files) and kept with the centroids in the state dict.

    Attributes:
        num_classes: C, the classes (labels in ``[0, C)``).
        dim: D, the feature dimension of the targets (official 128).
        num_positives: ``k`` of :class:`KCLLoss` (official 6).
        temperature: T, default 0.07.
        target_weight: ``tw``, default 0.2 (official ImageNet-LT command).
        target_repeat: ``tr``, copies of each target among the columns (official 1).
        separate_targets: the matched target is always a positive (official ``--sep_t``,
            used in the ImageNet-LT command), else it is drawn with the queue rows.
        centroid_momentum: weight of the old centroid, 0.9.
        seed: seeds the targets and the initial (random unit) centroids.
        memory_bank_size, gather_distributed, check_finite, generator: as in
            :class:`KCLLoss`; ``gather_distributed`` also gathers the features and labels
            of the centroid update, so every process keeps the same centroids.
        targeted: False makes the loss :class:`KCLLoss` (no target columns, the centroids
            left as they are), as the official ``targeted`` switch does for TSC's KCL
            warm-up; True (default) is TSC.
        parts: the :class:`TSCParts` of the last call (its loss, or the mean of its
            :meth:`anchor_losses`); ``target_loss`` 0 with ``targeted=False``; None
            before the first call.

    Raises:
        ValueError: an argument out of range (``num_classes``, ``dim``, ``target_repeat``
            < 1, ``target_weight`` < 0, ``centroid_momentum`` outside [0, 1), those of
            :class:`KCLLoss`), naming it.

    Examples:
        >>> loss_fn = TSCLoss(num_classes=1000, dim=128)
        >>> loss = loss_fn(query, key, labels, queue, queue_labels)
        >>> class_loss, target_loss = loss_fn.parts  # loss = class + 0.2 * target
    """

    pml_loss = "pytorch_metric_learning.losses.TSCLoss (import dscl_plugin registers it)"
    targets: Tensor
    centroids: Tensor

    def __init__(
        self,
        num_classes: int,
        dim: int = 128,
        num_positives: int = 6,
        temperature: float = 0.07,
        target_weight: float = 0.2,
        target_repeat: int = 1,
        separate_targets: bool = True,
        centroid_momentum: float = 0.9,
        seed: int = 0,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
        check_finite: bool = False,
        generator: torch.Generator | None = None,
        targeted: bool = True,
    ) -> None:
        super().__init__(
            num_positives,
            temperature,
            memory_bank_size,
            gather_distributed,
            check_finite,
            generator,
        )
        checks.integer("num_classes", num_classes, 1)
        checks.integer("dim", dim, 1)
        checks.integer("target_repeat", target_repeat, 1)
        checks.at_least("target_weight", target_weight, 0)
        checks.half_open("centroid_momentum", centroid_momentum, 0, 1)
        self.num_classes = num_classes
        self.target_weight = target_weight
        self.target_repeat = target_repeat
        self.separate_targets = separate_targets
        self.centroid_momentum = centroid_momentum
        self.gather_distributed = gather_distributed
        self.targeted = targeted
        self.parts: TSCParts | None = None
        start = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(seed))
        self.register_buffer("targets", uniform_targets(num_classes, dim, seed))
        self.register_buffer("centroids", F.normalize(start, dim=1))

    def checked_anchor_losses(self, candidates: Candidates, queue_normalized: bool) -> Tensor:
        """The (B,) losses of :meth:`KCLLoss.anchor_losses`, with ``labels`` in
        ``[0, num_classes)`` and ``query``, ``key`` of dimension ``dim``; in a training
        step (the rule of :func:`~dscl_plugin.memory.updates_queue`) the centroids move
        first; with ``targeted=False`` those of :class:`KCLLoss`. Sets :attr:`parts`.

        Raises:
            ValueError: a label outside ``[0, num_classes)`` or features not of dimension
                ``dim``, naming it.
        """
        query, labels = candidates.query, candidates.labels
        class_ids("labels", labels, self.num_classes)
        dim = self.targets.shape[1]
        checks.require(
            query.shape[1] == dim,
            "query",
            f"must have the targets' dimension dim={dim}, got shape {tuple(query.shape)}",
        )
        if not self.targeted:
            out = self._losses(candidates, queue_normalized, None)
        else:
            if updates_queue(self, query):
                self._update_centroids(F.normalize(query.detach(), dim=1), labels)
            targets = self._targets(labels, query.dtype)
            out = self._losses(candidates, queue_normalized, targets)
        self.parts = self._parts(out)
        return out.losses

    def _parts(self, out: KCLLosses) -> TSCParts:
        """The means of the anchors' parts; the class part is the rest of the loss."""
        loss, target = out.losses.detach().mean(), out.target.mean()
        return TSCParts(loss - self.target_weight * target, target)

    def _update_centroids(self, features: Tensor, labels: Tensor) -> None:
        if self.gather_distributed and dist.world_size() > 1:
            features = utils.concat_all_gather(features.contiguous())
            labels = utils.concat_all_gather(labels.contiguous())
        update_centroids_(self.centroids, features, labels, self.centroid_momentum)

    def _targets(self, labels: Tensor, dtype: torch.dtype) -> Targets:
        """The repeated targets and each anchor's matched copies."""
        repeat = self.target_repeat
        assignment = match_targets(self.centroids, self.targets)
        copies = torch.arange(repeat, device=labels.device)
        assigned = assignment.to(labels.device)[labels.long()][:, None] * repeat + copies
        features = self.targets.to(device=labels.device, dtype=dtype)
        return Targets(
            features.repeat_interleave(repeat, dim=0),
            assigned,
            self.target_weight,
            self.separate_targets,
        )
