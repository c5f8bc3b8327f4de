"""KCL, the k-positive contrastive loss, as a Lightly-style ``torch.nn.Module``.

Reference:
- [0] Kang et al., Exploring Balanced Feature Spaces for Representation Learning,
  ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit
"""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.functional.contrastive import Candidates
from dscl_plugin.functional.kcl import KCLLosses, Targets, kcl_cross_entropy
from dscl_plugin.losses.classes import class_ids
from dscl_plugin.losses.queued import QueryKeyLoss


class KCLLoss(QueryKeyLoss):
    """K-positive contrastive loss (KCL) [0]: MoCo with a labelled queue and ``k`` positives
    drawn per anchor from the queue.

    For anchor ``q_i`` the columns are its own key ``k_i`` and the queue rows ``M``,
    ``l_ij = q_i . c_j / T`` and ``log p_ij = l_ij - log sum_j' exp(l_ij')`` (positives
    stay in the denominator). ``P_i`` is the own key plus ``k`` queue rows labelled
    ``y_i`` drawn uniformly without replacement, or all of them when fewer exist or
    ``k = 0``:

    ``L_i = -1 / |P_i| sum_{c in P_i} log p_ic``

    and the loss is the mean over the B anchors. As the official code
    (``LTH14/targeted-supcon``, ``moco/builder.py``, class ``KCL``, ``targeted=False``):
    the other keys of the batch are no candidates, queue rows labelled -1 (empty slots)
    or with a class absent from the batch are negatives only, and with fewer than ``k``
    rows of its class an anchor takes all of them. The draw has the official
    distribution (every ``k``-subset equally likely) from its own random stream.

    Attributes:
        num_positives: ``k``, queue positives per anchor (official 6); 0 for all.
        temperature: T, default 0.07.
        memory_bank_size: ``(K, D)`` to let the loss own a ``LabeledMemoryBank`` (its
            keys are enqueued after the loss in training steps); 0 for none.
        gather_distributed: gather keys and labels across processes before enqueueing.
        check_finite: raise on NaN/Inf inputs (costs a host sync on GPU).
        generator: the ``torch.Generator`` of the draws (its device); None: the default.

    Raises:
        ValueError: ``num_positives`` not an int >= 0, ``temperature <= 0``, or an owned
            memory bank smaller than ``num_positives``, naming the argument.

    Examples:
        >>> loss_fn = KCLLoss(num_positives=6)
        >>> loss = loss_fn(query, key, labels, queue, queue_labels)
    """

    pml_loss = "pytorch_metric_learning.losses.KCLLoss (import dscl_plugin registers it)"

    def __init__(
        self,
        num_positives: int = 6,
        temperature: float = 0.07,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
        check_finite: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(temperature, memory_bank_size, gather_distributed, check_finite)
        checks.integer("num_positives", num_positives, 0)
        if self.memory_bank is not None:
            size = self.memory_bank.size[0]
            checks.require(
                size >= num_positives,
                "memory_bank_size",
                f"must hold at least num_positives ({num_positives}) entries, got {size}",
            )
        self.num_positives = num_positives
        self.generator = generator

    def mean_loss(self, candidates: Candidates, queue_normalized: bool) -> Tensor:
        """The mean of the anchors' losses."""
        return self.checked_anchor_losses(candidates, queue_normalized).mean()

    def anchor_losses(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor,
        queue: Tensor | None = None,
        queue_labels: Tensor | None = None,
        queue_normalized: bool = False,
    ) -> Tensor:
        """The (B,) loss of each anchor, as :meth:`forward` averages it, without
        enqueueing (for a reducer, e.g. PML's). Takes and raises as :meth:`forward`."""
        candidates = self._candidates(query, key, labels, queue, queue_labels)
        with torch.autocast(device_type=query.device.type, enabled=False):
            return self.checked_anchor_losses(candidates, queue_normalized)

    def checked_anchor_losses(self, candidates: Candidates, queue_normalized: bool) -> Tensor:
        """The (B,) losses of the checked inputs, once their labels are checked."""
        class_ids("labels", candidates.labels)
        return self._losses(candidates, queue_normalized, None).losses

    def _losses(
        self, candidates: Candidates, queue_normalized: bool, targets: Targets | None
    ) -> KCLLosses:
        """Per-anchor losses of the checked inputs and their target parts (TSC passes its
        targets)."""
        query, key, labels, queue, queue_labels = candidates
        if queue is not None and not (queue_normalized or self.memory_bank is not None):
            queue = F.normalize(queue, dim=1)
        return kcl_cross_entropy(
            F.normalize(query, dim=1),
            F.normalize(key, dim=1),
            labels,
            queue,
            queue_labels,
            self.num_positives,
            self.temperature,
            self.generator,
            targets,
        )
