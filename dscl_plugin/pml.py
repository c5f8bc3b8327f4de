"""DSCL for pytorch-metric-learning (PML): a loss, a miner and a MoCo-style memory.

Importing ``dscl_plugin`` registers them in PML's namespaces:
``pytorch_metric_learning.losses.DSCLLoss``,
``pytorch_metric_learning.losses.DSCLCrossBatchMemory`` and
``pytorch_metric_learning.miners.DSCLMiner``. No PML name or class is changed.

Row layouts shared by :class:`DSCLLoss` and :class:`DSCLMiner`:

1. no ``ref_emb``: ``embeddings = cat([view1, view2])`` (2B rows),
   ``labels = cat([y, y])``; the augmentation partner of row i is row
   ``(i + B) mod 2B`` and every row is compared with every other row.
2. ``ref_emb`` given: ``ref_emb[i]`` is the partner of ``embeddings[i]`` for
   ``i < len(embeddings)``; further rows of ``ref_emb`` are memory entries. Anchors are
   compared with the other queries and every ``ref_emb`` row (MoCo style, the official
   DSCL candidates ``cat(q, k, queue)``); ``DSCLLoss(query_candidates=False)`` compares
   them with the ``ref_emb`` rows only (queries vs [keys, memory]).

Distributed training: layout 1 cannot be used under PML's ``DistributedLossWrapper``
(the gathered rows no longer follow the partner rule; this is detected and raises).
Layout 2 with one ``ref_emb`` row per embedding works with ``efficient=False`` and
``efficient=True``; with extra memory rows in ``ref_emb`` only ``efficient=True``
keeps the partners aligned (``efficient=False`` interleaves ranks' memories; detected
when the labels disagree); with ``efficient=True`` the other queries are this
process's queries only. :class:`DSCLCrossBatchMemory` works with
``efficient=False`` (PML's only mode for memories). For DDP training the Lightning path
(``dscl_plugin.models.DSCLModel`` with ``gather_distributed=True``) is the reference.
"""

import warnings
from types import ModuleType
from typing import Optional, Tuple

import torch
from pytorch_metric_learning import losses as pml_losses
from pytorch_metric_learning import miners as pml_miners
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction, CrossBatchMemory
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.reducers import AvgNonZeroReducer
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.checks import alpha_from
from dscl_plugin.functional import compute_dtype, decoupled_cross_entropy
from dscl_plugin.pml_layouts import partner_index
from dscl_plugin.pml_miner import DSCLMiner

__all__ = ["DSCLCrossBatchMemory", "DSCLLoss", "DSCLMiner"]


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
        alpha: Optional[float] = None,
        temperature: float = 0.07,
        beta: Optional[float] = None,
        query_candidates: bool = True,
        check_finite: bool = False,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        checks.temperature(temperature)
        self.check_finite = check_finite
        self.alpha = alpha_from(alpha, beta)
        self.temperature = temperature
        self.query_candidates = query_candidates
        self.add_to_recordable_attributes(list_of_names=["alpha", "temperature"], is_stat=False)
        self.add_to_recordable_attributes(
            list_of_names=["avg_num_class_positives", "avg_num_candidates"], is_stat=True
        )

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Optional[Tensor],
        indices_tuple: Optional[tuple],
        ref_emb: Tensor,
        ref_labels: Optional[Tensor],
    ) -> dict:
        if labels is None:
            raise ValueError("DSCLLoss needs labels (one integer class id per embedding).")
        if ref_labels is None and indices_tuple is None:
            raise ValueError("DSCLLoss needs ref_labels with ref_emb (or an indices_tuple).")
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
            mat = self.distance(
                embeddings.to(dtype), None if layout1 else ref_emb.to(dtype)
            )
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
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Optional[Tensor]
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
        ref_labels: Optional[Tensor],
        num_ref: int,
        indices_tuple: Optional[tuple],
        own_index: Tensor,
        layout1: bool,
    ) -> Tuple[Tensor, Tensor]:
        """(n, R) bool masks of the class positives ``P_i`` and the candidates ``C_i``."""
        n, device = own_index.shape[0], own_index.device
        if indices_tuple is None:
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
                raise ValueError(
                    "indices_tuple lists a pair both as positive and as negative."
                )
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
    ) -> Tuple[Tensor, Tensor]:
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


class DSCLCrossBatchMemory(CrossBatchMemory):
    """PML ``CrossBatchMemory`` for :class:`DSCLLoss`: queries vs a labelled key memory.

    ``forward(embeddings, labels, enqueue_mask=mask)``: rows with ``mask`` True are keys
    (e.g. from an EMA encoder), the others queries, with the same images in the same
    order. The keys are enqueued with their labels first; then each query is an anchor
    whose partner is the memory slot its key was just written to, and every other
    memory entry and (with the loss's default ``query_candidates=True``) every other
    query is a class positive or negative by label (layout 2 of :class:`DSCLLoss`, with
    ``ref_emb`` the memory rotated to start at this step's keys): the official
    candidates ``cat(q, k, queue)``, so with a memory of ``K + B`` entries it matches
    ``dscl_plugin.DSCLLoss`` with a queue of the ``K`` previous keys. An optional
    ``miner`` is applied to (queries, memory) in that layout.

    ``enqueue_mask`` is required (DSCL needs each query's partner) and
    ``indices_tuple`` is not accepted (use ``miner``). The state dict holds the memory,
    its labels, ``queue_idx`` and ``has_been_filled``.

    Examples:
        >>> memory = DSCLCrossBatchMemory(DSCLLoss(), embedding_size=128, memory_size=4096)
        >>> mask = torch.cat([torch.zeros(B), torch.ones(B)]).bool()
        >>> loss = memory(torch.cat([q, k.detach()]), torch.cat([y, y]), enqueue_mask=mask)
    """

    def __init__(
        self,
        loss: DSCLLoss,
        embedding_size: int,
        memory_size: int = 1024,
        miner: Optional[BaseMiner] = None,
        **kwargs,
    ) -> None:
        if not isinstance(loss, DSCLLoss):
            raise TypeError(
                "DSCLCrossBatchMemory needs a dscl_plugin.pml.DSCLLoss, got "
                f"{type(loss).__module__}.{type(loss).__name__}; use PML's "
                "CrossBatchMemory for other losses."
            )
        if memory_size < 1:
            raise ValueError(f"memory_size must be >= 1, got {memory_size}.")
        super().__init__(loss, embedding_size, memory_size=memory_size, miner=miner, **kwargs)

    @staticmethod
    def supported_losses() -> list:
        return ["DSCLLoss"]

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: Optional[tuple] = None,
        enqueue_mask: Optional[Tensor] = None,
    ) -> Tensor:
        if enqueue_mask is None:
            raise ValueError(
                "DSCLCrossBatchMemory needs enqueue_mask (True for key rows, False for "
                "query rows): DSCL needs each query's augmentation partner."
            )
        if indices_tuple is not None:
            raise ValueError(
                "DSCLCrossBatchMemory does not take indices_tuple; pass a miner instead."
            )
        c_f.check_shapes(embeddings, labels)
        enqueue_mask = torch.as_tensor(enqueue_mask, device=embeddings.device)
        if enqueue_mask.shape != (embeddings.shape[0],) or enqueue_mask.dtype != torch.bool:
            raise ValueError(
                f"enqueue_mask must be a bool tensor of shape ({embeddings.shape[0]},), got "
                f"shape {tuple(enqueue_mask.shape)} and dtype {enqueue_mask.dtype}."
            )
        self.reset_stats()
        labels = c_f.to_device(labels, device=embeddings.device)
        keys, key_labels = embeddings[enqueue_mask], labels[enqueue_mask]
        queries, query_labels = embeddings[~enqueue_mask], labels[~enqueue_mask]
        if (
            keys.shape[0] == 0
            or keys.shape[0] != queries.shape[0]
            or not torch.equal(key_labels, query_labels)
        ):
            raise ValueError(
                "enqueue_mask must mark one key row per query row (at least one), in the "
                "same image order "
                f"and with the same labels; got {queries.shape[0]} queries and "
                f"{keys.shape[0]} keys."
            )
        if keys.shape[0] > self.memory_size:
            raise ValueError(
                f"{keys.shape[0]} keys do not fit in memory_size={self.memory_size}."
            )
        self.embedding_memory = c_f.to_device(
            self.embedding_memory, device=embeddings.device, dtype=embeddings.dtype
        )
        self.label_memory = c_f.to_device(
            self.label_memory, device=embeddings.device, dtype=labels.dtype
        )
        self.add_to_memory(keys, key_labels, keys.shape[0])
        filled = self.memory_size if self.has_been_filled else self.queue_idx
        order = (torch.arange(filled, device=embeddings.device) + self.curr_batch_idx[0]) % filled
        ref_emb, ref_labels = self.embedding_memory[order], self.label_memory[order]
        indices_tuple = None
        if self.miner is not None:
            indices_tuple = self.miner(queries, query_labels, ref_emb, ref_labels)
        return self.loss(queries, query_labels, indices_tuple, ref_emb, ref_labels)

    def _save_to_state_dict(self, destination: dict, prefix: str, keep_vars: bool) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "queue_idx"] = torch.tensor(int(self.queue_idx))
        destination[prefix + "has_been_filled"] = torch.tensor(bool(self.has_been_filled))

    def _load_from_state_dict(
        self,
        state_dict: dict,
        prefix: str,
        local_metadata: dict,
        strict: bool,
        missing_keys: list,
        unexpected_keys: list,
        error_msgs: list,
    ) -> None:
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for name, cast in (("queue_idx", int), ("has_been_filled", bool)):
            key = prefix + name
            if key in unexpected_keys:
                unexpected_keys.remove(key)
            if key in state_dict:
                setattr(self, name, cast(state_dict[key].item()))
            elif strict:
                missing_keys.append(key)


def _register(module: ModuleType, obj: type) -> None:
    """Expose ``obj`` as ``module.<name>`` unless a different object owns the name."""
    name = obj.__name__
    existing = getattr(module, name, None)
    if existing is None or getattr(existing, "__module__", None) == obj.__module__:
        setattr(module, name, obj)
    else:
        warnings.warn(
            f"{module.__name__}.{name} already exists ({existing!r}); dscl_plugin leaves "
            f"it in place. Import {name} from {obj.__module__} instead.",
            stacklevel=2,
        )


_register(pml_losses, DSCLLoss)
_register(pml_losses, DSCLCrossBatchMemory)
_register(pml_miners, DSCLMiner)
