"""``DSCLLoss`` for pytorch-metric-learning: a ``BaseMetricLossFunction`` over the row
layouts of :mod:`dscl_plugin.pml.layouts`."""

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.reducers import AvgNonZeroReducer
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.functional.contrastive import compute_dtype, decoupled_cross_entropy
from dscl_plugin.losses.contrastive import alpha_from
from dscl_plugin.pml.layouts import IndicesTuple, LossDict, partner_index


class DSCLLoss(BaseMetricLossFunction):
    """Decoupled supervised contrastive loss (DSCL) [0] as a PML loss.

    For anchor i with candidates ``C_i``, own partner ``o_i`` and class positives
    ``P_i`` (candidates with label ``y_i`` other than ``o_i``), ``s`` the similarity
    from ``distance`` (negated if it is a distance) and
    ``p(c) = softmax_{c in C_i} s(i, c) / T``:

    ``L_i = -[alpha log p(o_i) + (1 - alpha) / |P_i| sum_{c in P_i} log p(c)]``

    (``alpha = 1`` when ``P_i`` is empty). ``C_i`` is every row but the anchor itself
    in layout 1 (see the module docstring) and, in layout 2, every other query and every
    ``ref_emb`` row (``query_candidates=False``: the ``ref_emb`` rows only). With an
    ``indices_tuple`` (pairs or triplets, e.g. from :class:`DSCLMiner`), only its
    positive pairs are class positives and only its pairs are candidates among the
    ``ref_emb`` rows (the other queries of layout 2 stay candidates, positives by label);
    the partner is always a candidate and the own positive. Logits are computed in
    float32 (or float64) with autocast disabled. On the same queries, keys, labels and
    memory, layout 2 gives the value and gradients of ``dscl_plugin.DSCLLoss``.

    Unlike PML's ``SupConLoss``, which returns 0 for a batch without a negative pair
    (e.g. a single-class batch, frequent for head classes of long-tailed data), anchors
    in such a batch still get the DSCL value. With ``alpha = 1/(|P_i| + 1)`` DSCL is
    SupCon.

    - [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
      AAAI 2024, https://arxiv.org/abs/2403.06151

    Args:
        alpha: weight of the own partner, default 1/9 (official beta = 8).
        temperature: T, default 0.07.
        beta: alternative to ``alpha``, ``alpha = 1 / (1 + beta)``; give at most one.
        query_candidates: in layout 2, the other queries are candidates too (official
            DSCL, default); False compares queries with the ``ref_emb`` rows only.
        check_finite: raise on NaN/Inf embeddings (costs a host sync on GPU), as
            ``dscl_plugin.DSCLLoss(check_finite=True)``.
        **kwargs: PML options: ``distance`` (default ``CosineSimilarity()``),
            ``reducer`` (default ``AvgNonZeroReducer()``; per-anchor losses with
            "element" reduction, so ``ClassWeightedReducer`` weights by anchor label),
            ``embedding_regularizer``, ``collect_stats``.

    Examples:
        Layout 1, two views of B images:

        >>> loss_fn = DSCLLoss()
        >>> loss = loss_fn(torch.cat([emb1, emb2]), torch.cat([y, y]))

        Layout 2, queries vs keys and a memory (MoCo style):

        >>> loss = loss_fn(q, y, ref_emb=torch.cat([k, mem]),
        ...                ref_labels=torch.cat([y, mem_labels]))
    """

    def __init__(
        self,
        alpha: float | None = None,
        temperature: float = 0.07,
        beta: float | None = None,
        query_candidates: bool = True,
        check_finite: bool = False,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        checks.temperature(temperature)
        self.check_finite = check_finite
        self.alpha = alpha_from(alpha, beta)
        self.temperature = temperature
        self.query_candidates = query_candidates
        self.add_to_recordable_attributes(list_of_names=["alpha", "temperature"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["avg_num_class_positives", "avg_num_candidates"],
            is_stat=True,
        )

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor | None = None,
        indices_tuple: IndicesTuple | None = None,
        ref_emb: Tensor | None = None,
        ref_labels: Tensor | None = None,
    ) -> Tensor:
        """PML's ``forward``, after refusing the call of ``dscl_plugin.DSCLLoss``.

        Raises:
            TypeError: ``labels`` is a (B, D) float tensor, as in the call
                ``loss(query, key, labels)`` of ``dscl_plugin.DSCLLoss``.
        """
        if torch.is_tensor(labels) and labels.ndim == 2 and labels.is_floating_point():
            raise TypeError(
                "pytorch_metric_learning.losses.DSCLLoss is called as loss(embeddings, "
                "labels[, indices_tuple, ref_emb, ref_labels]) with one class id per row, "
                f"got (B, D) float features {tuple(labels.shape)} as labels; for "
                "loss(query, key, labels[, queue, queue_labels]) use dscl_plugin.DSCLLoss, "
                "or here loss(query, labels, ref_emb=key, ref_labels=labels)"
            )
        loss: Tensor = super().forward(embeddings, labels, indices_tuple, ref_emb, ref_labels)
        return loss

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        if labels is None:
            raise ValueError("DSCLLoss needs labels (one integer class id per embedding).")
        self._check_inputs(embeddings, labels, ref_emb, ref_labels)
        own_index, layout1 = partner_index(embeddings, labels, ref_emb, ref_labels)
        positive, candidate = self._masks(
            labels, ref_labels, ref_emb.shape[0], indices_tuple, own_index, layout1
        )
        dtype = compute_dtype(embeddings)
        with_queries = self.query_candidates and not layout1
        if with_queries:
            positive, candidate = self._with_query_block(labels, positive, candidate)
            own_index = own_index + embeddings.shape[0]
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            mat = self.distance(embeddings.to(dtype), None if layout1 else ref_emb.to(dtype))
            if with_queries:
                mat = torch.cat([self.distance(embeddings.to(dtype)), mat], dim=1)
            if not self.distance.is_inverted:
                mat = -mat
            logits = (mat / self.temperature).masked_fill(~candidate, float("-inf"))
            losses = decoupled_cross_entropy(logits, own_index, positive, self.alpha)
        if self.collect_stats:
            with torch.no_grad():
                self.avg_num_class_positives = positive.sum(dim=1).float().mean().item()
                self.avg_num_candidates = candidate.sum(dim=1).float().mean().item()
        return {
            "loss": {
                "losses": losses,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }

    def _check_inputs(
        self,
        embeddings: Tensor,
        labels: Tensor,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> None:
        """The checks of ``dscl_plugin.DSCLLoss``: 2-D float features, 1-D integer labels
        (one per row) and, with ``check_finite``, no NaN or Inf."""
        checks.features("embeddings", embeddings, 2)
        checks.labels("labels", labels, embeddings.shape[0])
        if ref_emb is not embeddings:
            checks.features("ref_emb", ref_emb, 2)
            if ref_labels is not None:
                checks.labels("ref_labels", ref_labels, ref_emb.shape[0])
        if self.check_finite:
            checks.finite(embeddings=embeddings, ref_emb=ref_emb)

    @staticmethod
    def _masks(
        labels: Tensor,
        ref_labels: Tensor | None,
        num_ref: int,
        indices_tuple: IndicesTuple | None,
        own_index: Tensor,
        layout1: bool,
    ) -> tuple[Tensor, Tensor]:
        """(n, R) bool masks of the class positives ``P_i`` and the candidates ``C_i``."""
        n, device = own_index.shape[0], own_index.device
        if indices_tuple is None:
            if ref_labels is None:
                raise ValueError("DSCLLoss needs ref_labels with ref_emb (or an indices_tuple).")
            positive = labels[:, None] == ref_labels[None, :]
            candidate = torch.ones_like(positive)
        else:
            a1, p, a2, neg = (
                c_f.to_device(x, device=device)
                for x in lmu.convert_to_pairs(indices_tuple, labels, ref_labels)
            )
            positive = torch.zeros(n, num_ref, dtype=torch.bool, device=device)
            negative = torch.zeros_like(positive)
            positive[a1, p] = True
            negative[a2, neg] = True
            if (positive & negative).any():
                raise ValueError("indices_tuple lists a pair both as positive and as negative.")
            candidate = positive | negative
        rows = torch.arange(n, device=device)
        if layout1:
            positive[rows, rows] = False
            candidate[rows, rows] = False
        positive[rows, own_index] = False
        candidate[rows, own_index] = True
        return positive, candidate

    @staticmethod
    def _with_query_block(
        labels: Tensor, positive: Tensor, candidate: Tensor
    ) -> tuple[Tensor, Tensor]:
        """Prepends the (n, n) query block: every other query is a candidate and a class
        positive if it has the anchor's label."""
        n = labels.shape[0]
        other = ~torch.eye(n, dtype=torch.bool, device=positive.device)
        same = labels[:, None] == labels[None, :]
        return (
            torch.cat([same & other, positive], dim=1),
            torch.cat([other, candidate], dim=1),
        )

    def get_default_reducer(self) -> AvgNonZeroReducer:
        return AvgNonZeroReducer()

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()
