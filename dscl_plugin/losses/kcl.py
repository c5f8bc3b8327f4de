"""The KCL loss as a Lightly-style ``torch.nn.Module``.

- [0] Kang et al., Exploring Balanced Feature Spaces for Representation Learning,
  ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.functional.contrastive import Candidates
from dscl_plugin.functional.kcl import kcl_cross_entropy, sample_queue_positives
from dscl_plugin.losses.labeled import LabeledQueueLoss


class KCLLoss(LabeledQueueLoss):
    """K-positive contrastive loss (KCL) [0]: MoCo with a labelled queue.

    For anchor ``q_i`` the candidates are its own key ``k_i`` and every queue row ``M_j``,
    ``p(c) = softmax_c (q_i . c / T)``, and the positives ``P_i`` are ``k_i`` and
    ``num_positive`` queue rows of class ``y_i`` drawn uniformly without replacement
    (all of them when the queue holds fewer; all with ``num_positive = 0``):

    ``L_i = -1 / |P_i| sum_{c in P_i} log p(c)``

    averaged over anchors. Unlike SupCon and DSCL, the other queries and keys of the
    batch are no candidates, and the positives share the softmax with the negatives. A
    queue row whose label is no class (e.g. -1) is a negative. Logits are computed in
    float32 (float64 for float64 inputs) even under autocast.

    Attributes:
        num_positive: k, the queue positives per anchor (official KCL run: 6).
        temperature: T, default 0.07.
        memory_bank_size: ``(K, D)`` to let the loss own a ``LabeledMemoryBank`` (its
            keys enqueued after the loss); 0 for none.
        gather_distributed: gather keys and labels across processes before enqueueing.
        check_finite: raise on NaN/Inf inputs (costs a host sync on GPU).
        generator: draws the positives (None: torch's default generator).

    - [0] Kang et al., Exploring Balanced Feature Spaces for Representation Learning,
      ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit

    Examples:
        >>> loss_fn = KCLLoss(num_positive=6)
        >>> loss = loss_fn(query, key, labels, queue, queue_labels)
    """

    def __init__(
        self,
        num_positive: int = 6,
        temperature: float = 0.07,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
        check_finite: bool = False,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__(temperature, memory_bank_size, gather_distributed, check_finite)
        checks.integer("num_positive", num_positive, 0)
        self.num_positive = num_positive
        self.generator = generator

    def cross_entropy(self, candidates: Candidates, queue_normalized: bool) -> Tensor:
        query, key, labels, queue, queue_labels = candidates
        if queue is None or queue_labels is None:
            queue, queue_labels = query.new_zeros(0, query.shape[1]), labels[:0]
        same_class = labels[:, None] == queue_labels[None, :]
        positives = sample_queue_positives(same_class, self.num_positive, self.generator)
        return kcl_cross_entropy(query, key, queue, positives, self.temperature, queue_normalized)
