"""PaCo, parametric contrastive learning, as a Lightly-style ``torch.nn.Module``.

Reference:
- [0] Cui et al., Parametric Contrastive Learning, ICCV 2021,
  https://arxiv.org/abs/2107.12028
"""

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.functional.contrastive import Candidates
from dscl_plugin.functional.positives import Block, class_slots, positive_set_cross_entropy
from dscl_plugin.losses import classes
from dscl_plugin.losses.queued import LabeledQueueLoss

PRIOR_EPS = 1e-9  # the official log(prior + 1e-9)


class PaCoLoss(LabeledQueueLoss):
    """Parametric contrastive loss (PaCo) [0]: learnable class centres (a linear
    classifier's logits, with the log class prior) join MoCo's contrastive logits.

    For anchor ``q_i`` the columns are the C class logits
    ``e_ic = (z_ic + log(pi_c + 1e-9)) / T_sup`` (``z`` the classifier's logits on the
    query's backbone feature, ``pi_c = n_c / sum n``) and the contrast set
    ``[q, k, M]`` without ``q_i``, ``l_ij = q_i . c_j / T``. The denominator weighs the
    class logits 1 and every contrastive entry ``gamma``; the positives are the own
    class logit (weight ``beta``) and every contrastive entry labelled ``y_i``,
    ``k_i`` included (weight ``alpha`` each, ``P_i``):

    ``log p_ij = s_ij - log(sum_c exp e_ic + gamma sum_{j != q_i} exp l_ij)``
    ``L_i = -(T / T_base) [beta log p_{i,y_i} + alpha sum_{j in P_i} log p_ij]
    / (beta + alpha |P_i|)``

    averaged over the B anchors, as the official
    ``dvlab-research/Parametric-Contrastive-Learning`` ``PaCo/LT/losses.py``
    ``PaCoLoss`` with the contrast set of ``PaCo/LT/moco/builder.py``; that code adds
    1e-12 to the denominator after subtracting the row maximum (here the exact
    log-sum-exp) and starts its queue with random labels (here: whatever ``queue_labels``
    say, -1 never matching).

    Attributes:
        class_counts: ``n_c``, training images of every class (C numbers > 0).
        alpha: weight of each contrastive positive, 0.05 (official ImageNet-LT script;
            the argparse default is 1).
        beta: weight of the own class logit, 1.
        gamma: denominator weight of the contrastive entries, 1.
        temperature: T, 0.2 (official ``--moco-t``).
        base_temperature: ``T_base``; None: ``T`` (official), scaling the loss by 1.
        supervised_temperature: ``T_sup``, 1 (official ``supt``).
        memory_bank_size, gather_distributed, check_finite: as in
            :class:`~dscl_plugin.losses.DSCLLoss`.

    Raises:
        ValueError: missing or zero ``class_counts``, ``alpha`` or ``gamma`` < 0,
            ``beta``, ``temperature``, ``base_temperature`` or ``supervised_temperature``
            <= 0, naming the argument.

    Examples:
        >>> loss_fn = PaCoLoss(class_counts=[500, 120, 30, 5])
        >>> loss = loss_fn(query, key, labels, classifier(backbone_features),
        ...                queue, queue_labels)
    """

    log_prior: Tensor

    def __init__(
        self,
        class_counts: Sequence[int] | Tensor,
        alpha: float = 0.05,
        beta: float = 1.0,
        gamma: float = 1.0,
        temperature: float = 0.2,
        base_temperature: float | None = None,
        supervised_temperature: float = 1.0,
        memory_bank_size: int | Sequence[int] = 0,
        gather_distributed: bool = False,
        check_finite: bool = False,
    ) -> None:
        super().__init__(temperature, memory_bank_size, gather_distributed, check_finite)
        counts = classes.class_counts(class_counts)
        base_temperature = temperature if base_temperature is None else base_temperature
        checks.at_least("alpha", alpha, 0)
        checks.positive("beta", beta)
        checks.at_least("gamma", gamma, 0)
        checks.positive("base_temperature", base_temperature)
        checks.positive("supervised_temperature", supervised_temperature)
        self.alpha, self.beta, self.gamma = alpha, beta, gamma
        self.base_temperature = base_temperature
        self.supervised_temperature = supervised_temperature
        self.register_buffer("log_prior", (counts / counts.sum() + PRIOR_EPS).log())  # float64

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        labels: Tensor,
        class_logits: Tensor,
        queue: Tensor | None = None,
        queue_labels: Tensor | None = None,
        queue_normalized: bool = False,
    ) -> Tensor:
        """Mean loss over the B query anchors.

        Args: those of :meth:`~dscl_plugin.losses.queued.QueryKeyLoss.forward`, with
        ``labels`` in ``[0, C)`` and required, and ``class_logits``, (B, C) the linear
        classifier's logits on the query images' backbone features (PaCo's class
        centres), with gradient.

        Raises:
            ValueError: a tensor of the wrong shape or dtype, or a label outside
                ``[0, C)``, naming it.
        """
        candidates = self._candidates(query, key, labels, queue, queue_labels)
        num_classes = self.log_prior.shape[0]
        classes.class_ids("labels", labels, num_classes)
        checks.require(
            class_logits.ndim == 2 and class_logits.shape == (query.shape[0], num_classes),
            "class_logits",
            f"must have shape (B, C) = ({query.shape[0]}, {num_classes}) (C from "
            f"class_counts), got {tuple(class_logits.shape)}",
        )
        queue_normalized = queue_normalized or self.memory_bank is not None
        with torch.autocast(device_type=query.device.type, enabled=False):
            losses = self._losses(candidates, class_logits, queue_normalized)
        self.enqueue_keys(query, key, labels)
        return losses.mean() * (self.temperature / self.base_temperature)

    def _losses(
        self, candidates: Candidates, class_logits: Tensor, queue_normalized: bool
    ) -> Tensor:
        """Per-anchor losses of the checked inputs."""
        query, key, labels, queue, queue_labels = candidates
        dtype = query.dtype
        anchors = F.normalize(query, dim=1)
        log_gamma = math.log(self.gamma) if self.gamma > 0 else float("-inf")
        blocks = [
            Block(anchors, labels, log_weight=log_gamma, excludes_anchor=True),
            Block(F.normalize(key, dim=1), labels, log_weight=log_gamma),
        ]
        if queue is not None:
            unit = queue if queue_normalized else F.normalize(queue, dim=1)
            blocks.append(Block(unit, queue_labels, log_weight=log_gamma))
        slots = class_slots(labels, blocks)
        total = self.beta + self.alpha * slots.counts.to(dtype)
        prior = self.log_prior.to(query.device, dtype)
        return positive_set_cross_entropy(
            anchors,
            blocks,
            self.temperature,
            labels.long()[:, None],
            (self.beta / total)[:, None],
            slots,
            self.alpha / total,
            (class_logits.to(dtype) + prior) / self.supervised_temperature,
        ).losses
