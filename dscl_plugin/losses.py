"""DSCL, SupCon and PBSD losses as Lightly-style ``torch.nn.Module`` s.

Reference:
- [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
  AAAI 2024, https://arxiv.org/abs/2403.06151

Notation: ``q`` online (query) features, ``k`` EMA (key) features of the other view,
``M`` a queue of past keys with their labels, all L2-normalised, ``T`` the
temperature and ``s(a, b) = a . b / T``.
"""

from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.checks import DEFAULT_ALPHA, alpha_from
from dscl_plugin.functional import (
    PullRatio,
    compute_dtype,
    decoupled_cross_entropy,
    patch_distillation,
    dscl_cross_entropy,
    pull_gradient_ratio,
)
from dscl_plugin.memory import LabeledMemoryBank

__all__ = [
    "DEFAULT_ALPHA",
    "DSCLLoss",
    "PBSDLoss",
    "SupConLoss",
    "alpha_from",
    "decoupled_cross_entropy",
]


class _LabeledContrastiveLoss(nn.Module):
    """Query-vs-[queries, keys, queue] cross-entropy with a labelled target.

    Subclasses set ``alpha`` (own-view weight, or None for SupCon weights).
    """

    alpha: Optional[float]

    def __init__(
        self,
        temperature: float,
        memory_bank_size: Union[int, Sequence[int]],
        gather_distributed: bool,
        check_finite: bool,
    ) -> None:
        super().__init__()
        checks.temperature(temperature)
        self.temperature = temperature
        self.check_finite = check_finite
        self.memory_bank: Optional[LabeledMemoryBank] = None
        if memory_bank_size not in (0, (0,), [0]):
            self.memory_bank = LabeledMemoryBank(
                size=memory_bank_size, gather_distributed=gather_distributed
            )

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor,
        queue: Optional[Tensor] = None,
        queue_labels: Optional[Tensor] = None,
        queue_normalized: bool = False,
    ) -> Tensor:
        """Mean loss over the B query anchors.

        Args:
            query: (B, D) online features (anchors), with gradient.
            key: (B, D) features of the other view of the same images.
            labels: (B,) integer class ids.
            queue: optional (K, D) memory entries, every row a real entry.
            queue_labels: (K,) class ids of ``queue``; required with ``queue``.
            queue_normalized: the queue rows have unit L2 norm already (as in a
                ``LabeledMemoryBank`` filled by ``DSCLModel``), so the loss uses them as
                they are instead of normalising a K x D copy. Query and key are always
                normalised.

        If the loss owns a memory bank (``memory_bank_size``), its filled rows are the
        queue and the L2-normalised ``key`` is enqueued with ``labels`` after the loss
        whenever ``query`` requires grad (and grad mode is on), i.e. in training steps.
        """
        self._check_inputs(query, key, labels, queue, queue_labels)
        update_bank = False
        if self.memory_bank is not None:
            if queue is not None:
                raise ValueError(
                    "This loss owns a memory bank (memory_bank_size > 0); do not pass "
                    "queue/queue_labels as well."
                )
            queue, queue_labels = self.memory_bank.get()
            queue = queue.to(query.device)
            queue_labels = queue_labels.to(labels.device)
            queue_normalized = True  # the bank holds normalised keys
            update_bank = query.requires_grad and torch.is_grad_enabled()
        with torch.autocast(device_type=query.device.type, enabled=False):
            inputs = self._cast(query, key, labels, queue, queue_labels)
            loss = dscl_cross_entropy(*inputs, self.alpha, self.temperature, queue_normalized)
        if update_bank:
            self.memory_bank.enqueue(key, labels, normalize=True)
        return loss

    def pull_gradient_ratio(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor,
        queue: Optional[Tensor] = None,
        queue_labels: Optional[Tensor] = None,
    ) -> PullRatio:
        """Per-anchor class-term / own-key-term ratio of the pull gradient, with this loss's
        weights (:func:`dscl_plugin.functional.pull_gradient_ratio`); no gradient.

        Takes the arguments of :meth:`forward`; call it with the queue the loss sees (before
        an owned memory bank enqueues this step's keys: its entries are used if
        ``queue`` is None).
        """
        self._check_inputs(query, key, labels, queue, queue_labels)
        if self.memory_bank is not None and queue is None:
            queue, queue_labels = self.memory_bank.get()
        with torch.autocast(device_type=query.device.type, enabled=False):
            inputs = self._cast(query, key, labels, queue, queue_labels)
            return pull_gradient_ratio(*inputs, self.alpha)

    @staticmethod
    def _cast(
        query: Tensor,
        key: Tensor,
        labels: Tensor,
        queue: Optional[Tensor],
        queue_labels: Optional[Tensor],
    ) -> Tuple[Tensor, Tensor, Tensor, Optional[Tensor], Optional[Tensor]]:
        """Features in the compute dtype on the query's device; an empty queue is None."""
        dtype = compute_dtype(query)
        if queue is not None and queue.shape[0] > 0:
            queue = queue.to(device=query.device, dtype=dtype)
            queue_labels = queue_labels.to(query.device)
        else:
            queue = queue_labels = None
        return query.to(dtype), key.to(dtype), labels.to(query.device), queue, queue_labels

    def _check_inputs(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor,
        queue: Optional[Tensor],
        queue_labels: Optional[Tensor],
    ) -> None:
        checks.features("query", query, 2)
        checks.features("key", key, 2)
        if key.shape != query.shape:
            raise ValueError(
                f"key must have the shape of query, got query {tuple(query.shape)} "
                f"and key {tuple(key.shape)}."
            )
        if query.shape[0] == 0:
            raise ValueError("query is empty: the loss needs at least one anchor.")
        checks.labels("labels", labels, query.shape[0])
        if (queue is None) != (queue_labels is None):
            raise ValueError(
                "queue and queue_labels must be given together: got "
                f"queue={'None' if queue is None else tuple(queue.shape)}, "
                f"queue_labels="
                f"{'None' if queue_labels is None else tuple(queue_labels.shape)}."
            )
        if queue is not None:
            checks.features("queue", queue, 2)
            if queue.shape[1] != query.shape[1]:
                raise ValueError(
                    f"queue must have feature dimension {query.shape[1]} like query, "
                    f"got queue {tuple(queue.shape)}."
                )
            checks.labels("queue_labels", queue_labels, queue.shape[0])
        if self.check_finite:
            checks.finite(query=query, key=key, queue=queue)


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

    def __init__(
        self,
        alpha: Optional[float] = None,
        temperature: float = 0.07,
        beta: Optional[float] = None,
        memory_bank_size: Union[int, Sequence[int]] = 0,
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

    def __init__(
        self,
        temperature: float = 0.07,
        memory_bank_size: Union[int, Sequence[int]] = 0,
        gather_distributed: bool = False,
        check_finite: bool = False,
    ) -> None:
        super().__init__(temperature, memory_bank_size, gather_distributed, check_finite)


class PBSDLoss(nn.Module):
    """Patch-based self-distillation loss (PBSD) [0].

    Each patch ``l`` of image ``i`` has a student feature ``s_il`` (the patch
    embedded as an image) and a teacher feature ``t_il`` (the same region pooled from
    the global view's feature map). Over the candidates ``[k_i, M]``:

    ``L = -1/(B L) sum_{i,l} sum_c softmax_c(t_il . c / T) log_softmax_c(s_il . c / T)``

    The teacher distribution is detached. With an empty queue the single candidate
    ``k_i`` makes the loss 0.

    - [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
      AAAI 2024, https://arxiv.org/abs/2403.06151

    Examples:
        >>> loss = PBSDLoss()(patch_features, region_features, key, queue)
    """

    def __init__(self, temperature: float = 0.07, check_finite: bool = False) -> None:
        super().__init__()
        checks.temperature(temperature)
        self.temperature = temperature
        self.check_finite = check_finite

    def forward(
        self,
        patch_features: Tensor,
        region_features: Tensor,
        key: Tensor,
        queue: Optional[Tensor] = None,
        queue_normalized: bool = False,
    ) -> Tensor:
        """Args:
        patch_features: (B, L, D) student features of the patches.
        region_features: (B, L, D) teacher features of the same regions.
        key: (B, D) each image's own key.
        queue: optional (K, D) memory entries.
        queue_normalized: the queue rows have unit norm already (used as they are).
        """
        self._check_inputs(patch_features, region_features, key, queue)
        dtype = compute_dtype(patch_features)
        with torch.autocast(device_type=patch_features.device.type, enabled=False):
            k = F.normalize(key.to(dtype), dim=-1)
            m = None
            if queue is not None and queue.shape[0] > 0:
                m = queue.to(device=k.device, dtype=dtype)
                m = m if queue_normalized else F.normalize(m, dim=-1)
            student = F.normalize(patch_features.to(dtype), dim=-1) / self.temperature
            teacher = F.normalize(region_features.detach().to(dtype), dim=-1) / self.temperature
            loss = patch_distillation(student, teacher, k, m)
        return loss.mean()

    def _check_inputs(
        self,
        patch_features: Tensor,
        region_features: Tensor,
        key: Tensor,
        queue: Optional[Tensor],
    ) -> None:
        checks.features("patch_features", patch_features, 3)
        checks.features("region_features", region_features, 3)
        checks.features("key", key, 2)
        if region_features.shape != patch_features.shape:
            raise ValueError(
                "region_features must have the shape of patch_features (B, L, D), got "
                f"patch_features {tuple(patch_features.shape)} and region_features "
                f"{tuple(region_features.shape)}."
            )
        b, num_patches, d = patch_features.shape
        if b == 0 or num_patches == 0:
            raise ValueError(
                f"patch_features must hold B >= 1 images with L >= 1 patches each, got shape "
                f"{tuple(patch_features.shape)} (B, L, D); without patches skip PBSD "
                "(pbsd_weight=0)."
            )
        if key.shape != (b, d):
            raise ValueError(
                f"key must have shape (B, D) = {(b, d)} to match patch_features "
                f"{tuple(patch_features.shape)}, got {tuple(key.shape)}."
            )
        if queue is not None:
            checks.features("queue", queue, 2)
            if queue.shape[1] != d:
                raise ValueError(
                    f"queue must have feature dimension {d}, got {tuple(queue.shape)}."
                )
        if self.check_finite:
            checks.finite(
                patch_features=patch_features,
                region_features=region_features,
                key=key,
                queue=queue,
            )
