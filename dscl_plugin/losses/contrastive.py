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
from dscl_plugin.functional.contrastive import Candidates, dscl_cross_entropy
from dscl_plugin.functional.gradient_ratio import PullRatio, pull_gradient_ratio
from dscl_plugin.losses.queued import QueryKeyLoss

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


class _LabeledContrastiveLoss(QueryKeyLoss):
    """Query-vs-[queries, keys, queue] cross-entropy with a labelled target.

    Subclasses set ``alpha`` (own-view weight, or None for SupCon weights) and
    ``pml_loss``, the PML loss taking ``(embeddings, labels)``.
    """

    alpha: float | None

    def mean_loss(self, candidates: Candidates, queue_normalized: bool) -> Tensor:
        """:func:`~dscl_plugin.functional.dscl_cross_entropy` of the checked inputs; an
        owned memory bank's rows are unit keys."""
        queue_normalized = queue_normalized or self.memory_bank is not None
        return dscl_cross_entropy(candidates, self.alpha, self.temperature, queue_normalized)

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
