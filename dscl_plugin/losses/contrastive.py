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
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.checks import alpha_from
from dscl_plugin.functional.contrastive import Candidates, compute_dtype, dscl_cross_entropy
from dscl_plugin.functional.gradient_ratio import PullRatio, pull_gradient_ratio
from dscl_plugin.memory import LabeledMemoryBank, updates_queue


class _LabeledContrastiveLoss(nn.Module):
    """Query-vs-[queries, keys, queue] cross-entropy with a labelled target.

    Subclasses set ``alpha`` (own-view weight, or None for SupCon weights) and
    ``pml_loss``, the PML loss taking ``(embeddings, labels)``.
    """

    alpha: float | None
    pml_loss: str

    def __init__(
        self,
        temperature: float,
        memory_bank_size: int | Sequence[int],
        gather_distributed: bool,
        check_finite: bool,
    ) -> None:
        super().__init__()
        checks.temperature(temperature)
        self.temperature = temperature
        self.check_finite = check_finite
        size = checks.bank_size("memory_bank_size", memory_bank_size)
        self.memory_bank: LabeledMemoryBank | None = None
        if size[0] > 0:  # as Lightly's losses: 0 or (0, D) entries own no bank
            self.memory_bank = LabeledMemoryBank(size, gather_distributed)

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
        if self.memory_bank is not None and updates_queue(self, query):
            self.memory_bank.enqueue(key, labels, normalize=True)
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

    def _labels(self, key: Tensor, labels: Tensor | None) -> Tensor:
        """``labels``, once the call is this loss's ``(query, key, labels, ...)``."""
        name = type(self).__name__
        if key.ndim == 1 or labels is None:
            got = f"a 1-D key {tuple(key.shape)}" if key.ndim == 1 else "no labels"
            raise TypeError(
                f"dscl_plugin.{name} takes loss(query, key, labels[, queue, queue_labels]) "
                f"with query and key the (B, D) features of two views; got {got}, as in the "
                f"PML call loss(embeddings, labels): for that call use {self.pml_loss}"
            )
        return labels

    def _candidates(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor,
        queue: Tensor | None,
        queue_labels: Tensor | None,
    ) -> Candidates:
        """The checked inputs in the compute dtype on the query's device, with an owned
        memory bank's filled rows as the queue; an empty queue is None."""
        checks.features("query", query, 2)
        checks.features("key", key, 2)
        checks.require(
            key.shape == query.shape,
            "key",
            f"must have the shape of query, got query {tuple(query.shape)} "
            f"and key {tuple(key.shape)}",
        )
        checks.require(query.shape[0] > 0, "query", "is empty: the loss needs an anchor")
        checks.labels("labels", labels, query.shape[0])
        checks.require(
            (queue is None) == (queue_labels is None),
            "queue and queue_labels",
            "must be given together: got "
            f"queue={'None' if queue is None else tuple(queue.shape)}, queue_labels="
            f"{'None' if queue_labels is None else tuple(queue_labels.shape)}",
        )
        if queue is not None and queue_labels is not None:
            checks.queue(queue, query.shape[1])
            checks.labels("queue_labels", queue_labels, queue.shape[0])
        if self.check_finite:
            checks.finite(query=query, key=key, queue=queue)
        if self.memory_bank is not None:
            checks.require(
                queue is None and queue_labels is None,
                "queue",
                "must not be given: this loss owns a memory bank (memory_bank_size (K, D), K > 0) "
                "and uses its rows; pass queue=None or build the loss with memory_bank_size=0",
            )
            queue, queue_labels = self.memory_bank.get()
        dtype = compute_dtype(query)
        if queue is None or queue_labels is None or queue.shape[0] == 0:
            queue = queue_labels = None
        else:
            queue = queue.to(device=query.device, dtype=dtype)
            queue_labels = queue_labels.to(query.device)
        return Candidates(
            query.to(dtype), key.to(dtype), labels.to(query.device), queue, queue_labels
        )


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
            (as Lightly's ``NTXentLoss`` does); ``0`` or ``(0, D)`` for none.
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
