"""DSCL and SupCon losses as Lightly-style ``torch.nn.Module`` s.

Reference:
- [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
  AAAI 2024, https://arxiv.org/abs/2403.06151

Notation: ``q`` online (query) features, ``k`` EMA (key) features of the other view,
``M`` a queue of past keys with their labels, all L2-normalised, ``T`` the
temperature and ``s(a, b) = a . b / T``.
"""

from collections.abc import Sequence

import torch
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.functional.contrastive import dscl_cross_entropy
from dscl_plugin.functional.gradient_ratio import PullRatio, pull_gradient_ratio
from dscl_plugin.losses.queued import LabeledQueueLoss

DEFAULT_ALPHA = 1.0 / 9.0  # official beta = 8, alpha = 1 / (1 + beta)


def alpha_from(alpha: float | None, beta: float | None) -> float:
    """The own-view weight from ``alpha`` or ``beta`` (``alpha = 1 / (1 + beta)``;
    neither: the official beta 8).

    Raises:
        InvalidValue: both given, ``beta < 0`` or ``alpha`` outside [0, 1].
    """
    checks.require(
        alpha is None or beta is None,
        "alpha/beta",
        f"must not both be set: give alpha or beta, not both (got alpha={alpha}, beta={beta})",
    )
    if beta is not None:
        checks.at_least("beta", beta, 0)
        alpha = 1.0 / (1.0 + beta)
    if alpha is None:
        alpha = DEFAULT_ALPHA
    checks.within("alpha", alpha, 0, 1)
    return float(alpha)


class _LabeledContrastiveLoss(LabeledQueueLoss):
    """Query-vs-[queries, keys, queue] cross-entropy with a labelled target.

    Subclasses set ``alpha`` (own-view weight, or None for SupCon weights) and
    ``pml_loss``, the PML loss taking ``(embeddings, labels)``.
    """

    alpha: float | None

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor | None = None,
        queue: Tensor | None = None,
        queue_labels: Tensor | None = None,
        queue_normalized: bool = False,
    ) -> Tensor:
        """Mean loss over the B query anchors.

        Args:
            query: (B, D) online features (anchors), with gradient.
            key: (B, D) features of the other view of the same images.
            labels: (B,) integer class ids; required (None only to name the PML loss
                for a call ``loss(embeddings, labels)``).
            queue: optional (K, D) memory entries, every row a real entry.
            queue_labels: (K,) class ids of ``queue``; required with ``queue``.
            queue_normalized: the queue rows have unit L2 norm already (as in a
                ``LabeledMemoryBank`` filled by ``DSCLModel``), so the loss uses them as
                they are instead of normalising a K x D copy. Query and key are always
                normalised.

        If the loss owns a memory bank (``memory_bank_size``), its filled rows are the
        queue and the L2-normalised ``key`` is enqueued with ``labels`` after the loss in
        training steps (:func:`~dscl_plugin.memory.updates_queue`).

        Raises:
            TypeError: called as a PML loss, ``loss(embeddings, labels)``; the message
                names the PML loss that takes that call.
            ValueError: a tensor of the wrong shape or dtype, naming it.
        """
        labels = self._labels(key, labels)
        candidates = self._candidates(query, key, labels, queue, queue_labels)
        queue_normalized = queue_normalized or self.memory_bank is not None  # unit keys
        with torch.autocast(device_type=query.device.type, enabled=False):
            loss = dscl_cross_entropy(candidates, self.alpha, self.temperature, queue_normalized)
        self.enqueue_keys(query, key, labels)
        return loss

    def pull_gradient_ratio(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor,
        queue: Tensor | None = None,
        queue_labels: Tensor | None = None,
    ) -> PullRatio:
        """Per-anchor class-term / own-key-term ratio of the pull gradient, with this loss's
        weights (:func:`dscl_plugin.functional.pull_gradient_ratio`); no gradient.

        Takes the arguments of :meth:`forward`, with the queue the loss sees (an owned
        memory bank's rows before this step's keys are enqueued).
        """
        candidates = self._candidates(query, key, labels, queue, queue_labels)
        with torch.autocast(device_type=query.device.type, enabled=False):
            return pull_gradient_ratio(*candidates, self.alpha)


class DSCLLoss(_LabeledContrastiveLoss):
    """Decoupled supervised contrastive loss (DSCL) [0].

    For anchor ``q_i`` the candidates are ``C_i = {q_j, j != i} + {k_1..k_B} + M``
    and ``p(c) = softmax_{c in C_i} s(q_i, c)``. ``P_i`` are the candidates with
    label ``y_i`` other than ``k_i``:

    ``L_i = -[alpha log p(k_i) + (1 - alpha) / |P_i| sum_{c in P_i} log p(c)]``

    (``alpha = 1`` when ``P_i`` is empty); the loss is the mean over anchors. With
    ``alpha = 1 / (|P_i| + 1)`` it is SupCon. Logits are computed in float32 even
    under autocast.

    Attributes:
        alpha: weight of the own other view; default 1/9 (official beta = 8).
        beta: alternative to ``alpha``, ``alpha = 1 / (1 + beta)``; give at most one.
        temperature: T, default 0.07.
        memory_bank_size: ``(K, D)`` to let the loss own a ``LabeledMemoryBank``
            (as Lightly's ``NTXentLoss`` does); 0 for none.
        gather_distributed: gather keys and labels across processes before
            enqueueing them into the owned bank.
        check_finite: raise on NaN/Inf inputs (costs a host sync on GPU).

    - [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
      AAAI 2024, https://arxiv.org/abs/2403.06151

    Examples:
        >>> loss_fn = DSCLLoss(beta=8)
        >>> loss = loss_fn(query, key, labels, queue, queue_labels)
    """

    pml_loss = "pytorch_metric_learning.losses.DSCLLoss (import dscl_plugin registers it)"

    def __init__(
        self,
        alpha: float | None = None,
        temperature: float = 0.07,
        beta: float | None = None,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
        check_finite: bool = False,
    ) -> None:
        super().__init__(temperature, memory_bank_size, gather_distributed, check_finite)
        self.alpha = alpha_from(alpha, beta)


class SupConLoss(_LabeledContrastiveLoss):
    """Supervised contrastive loss (SupCon) [0] with the DSCL call.

    ``L_i = -1 / (|P_i| + 1) [log p(k_i) + sum_{c in P_i} log p(c)]`` with the
    candidates and ``P_i`` of :class:`DSCLLoss`: the own view and every class
    positive get the same weight.

    - [0] Khosla et al., Supervised Contrastive Learning, NeurIPS 2020,
      https://arxiv.org/abs/2004.11362

    Examples:
        >>> loss = SupConLoss()(query, key, labels, queue, queue_labels)
    """

    alpha = None
    pml_loss = "pytorch_metric_learning.losses.SupConLoss"

    def __init__(
        self,
        temperature: float = 0.07,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
        check_finite: bool = False,
    ) -> None:
        super().__init__(temperature, memory_bank_size, gather_distributed, check_finite)
