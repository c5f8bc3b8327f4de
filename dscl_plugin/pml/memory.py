"""``DSCLCrossBatchMemory``: PML's ``CrossBatchMemory`` with MoCo-style queries and keys for
:class:`~dscl_plugin.pml.loss.DSCLLoss`."""

from collections.abc import Mapping

import torch
from pytorch_metric_learning.losses import CrossBatchMemory
from pytorch_metric_learning.miners import BaseMiner
from pytorch_metric_learning.utils import common_functions as c_f
from pytorch_metric_learning.utils import loss_and_miner_utils as lmu
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.pml.layouts import IndicesTuple
from dscl_plugin.pml.loss import DSCLLoss


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

    Without ``enqueue_mask`` the rows must be ``cat([view1, view2])`` with labels
    ``cat([y, y])``, as ``trainers.TwoStreamMetricLoss`` passes them: view 1 rows are the
    queries and view 2 rows the keys (the model's own, stored detached, as in
    cross-batch memory). An ``indices_tuple`` is then the trainer's: pairs of view 1
    rows (< B) with view 2 rows (>= B), which choose the candidates among this step's
    keys; the older memory entries are chosen by ``miner``, or all of them. With
    ``enqueue_mask``, ``indices_tuple`` is refused (use ``miner``). The state dict holds
    the memory, its labels, ``queue_idx`` and ``has_been_filled``.

    Examples:
        >>> memory = DSCLCrossBatchMemory(DSCLLoss(), embedding_size=128, memory_size=4096)
        >>> mask = torch.cat([torch.zeros(B), torch.ones(B)]).bool()
        >>> loss = memory(torch.cat([q, k.detach()]), torch.cat([y, y]), enqueue_mask=mask)

    Raises:
        ValueError: without ``enqueue_mask``, rows that are not two views per image
            (one line naming the fix), or an ``indices_tuple`` that is not the trainer's.
    """

    embedding_memory: Tensor
    label_memory: Tensor

    def __init__(
        self,
        loss: DSCLLoss,
        embedding_size: int,
        memory_size: int = 1024,
        miner: BaseMiner | None = None,
        **kwargs: object,
    ) -> None:
        if not isinstance(loss, DSCLLoss):
            raise TypeError(
                "DSCLCrossBatchMemory needs a dscl_plugin.pml.DSCLLoss, got "
                f"{type(loss).__module__}.{type(loss).__name__}; use PML's "
                "CrossBatchMemory for other losses."
            )
        checks.integer("memory_size", memory_size, 1)
        super().__init__(loss, embedding_size, memory_size=memory_size, miner=miner, **kwargs)

    @staticmethod
    def supported_losses() -> list[str]:
        return ["DSCLLoss"]

    def forward(
        self,
        embeddings: Tensor,
        labels: Tensor,
        indices_tuple: IndicesTuple | None = None,
        enqueue_mask: Tensor | None = None,
    ) -> Tensor:
        c_f.check_shapes(embeddings, labels)
        labels = c_f.to_device(labels, device=embeddings.device)
        key_pairs = None
        if enqueue_mask is None:
            enqueue_mask = _second_view_rows(labels)
            if indices_tuple is not None:
                key_pairs = _view_pairs(indices_tuple, labels)
        elif indices_tuple is not None:
            raise ValueError(
                "DSCLCrossBatchMemory takes indices_tuple only without enqueue_mask; pass "
                "a miner instead."
            )
        enqueue_mask = torch.as_tensor(enqueue_mask, device=embeddings.device)
        if enqueue_mask.shape != (embeddings.shape[0],) or enqueue_mask.dtype != torch.bool:
            raise ValueError(
                f"enqueue_mask must be a bool tensor of shape ({embeddings.shape[0]},), got "
                f"shape {tuple(enqueue_mask.shape)} and dtype {enqueue_mask.dtype}."
            )
        self.reset_stats()
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
            raise ValueError(f"{keys.shape[0]} keys do not fit in memory_size={self.memory_size}.")
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
        pairs = None
        if self.miner is not None:
            pairs = self.miner(queries, query_labels, ref_emb, ref_labels)
        if key_pairs is not None:
            pairs = _with_older_pairs(key_pairs, pairs, query_labels, ref_labels)
        loss: Tensor = self.loss(queries, query_labels, pairs, ref_emb, ref_labels)
        return loss

    def _save_to_state_dict(
        self, destination: dict[str, Tensor], prefix: str, keep_vars: bool
    ) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + "queue_idx"] = torch.tensor(int(self.queue_idx))
        destination[prefix + "has_been_filled"] = torch.tensor(bool(self.has_been_filled))

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Tensor],
        prefix: str,
        local_metadata: dict[str, object],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        super()._load_from_state_dict(
            state_dict,
            prefix,
            local_metadata,
            strict,
            missing_keys,
            unexpected_keys,
            error_msgs,
        )
        for name, cast in (("queue_idx", int), ("has_been_filled", bool)):
            key = prefix + name
            if key in unexpected_keys:
                unexpected_keys.remove(key)
            if key in state_dict:
                setattr(self, name, cast(state_dict[key].item()))
            elif strict:
                missing_keys.append(key)


def _second_view_rows(labels: Tensor) -> Tensor:
    """The key rows of ``cat([view1, view2])``, the rows of ``trainers.TwoStreamMetricLoss``.

    Raises:
        ValueError: the rows are not two views per image.
    """
    n = labels.shape[0]
    half = n // 2
    if n == 0 or n % 2 or not torch.equal(labels[:half], labels[half:]):
        raise ValueError(
            "DSCLCrossBatchMemory needs two views per image: pass enqueue_mask (True for "
            "key rows), or rows cat([view1, view2]) as trainers.TwoStreamMetricLoss does."
        )
    return torch.arange(n, device=labels.device) >= half


def _view_pairs(
    indices_tuple: IndicesTuple, labels: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``indices_tuple``'s pairs (view 1 row ``i``, view 2 row ``B + j``) of the rows
    ``cat([view1, view2])`` with labels ``labels``, as pairs (query ``i``, key ``j``).

    Raises:
        ValueError: ``indices_tuple`` pairs rows other than view 1 with view 2.
    """
    b = labels.shape[0] // 2
    a1, p, a2, n = (
        c_f.to_device(x, device=labels.device).long()
        for x in lmu.convert_to_pairs(indices_tuple, labels)
    )
    anchors, refs = torch.cat([a1, a2]), torch.cat([p, n])
    if (anchors >= b).any() or (refs < b).any() or (refs >= 2 * b).any():
        raise ValueError(
            f"indices_tuple must pair view 1 rows (< {b}) with view 2 rows ({b} to "
            f"{2 * b - 1}), as trainers.TwoStreamMetricLoss passes it."
        )
    return a1, p - b, a2, n - b


def _with_older_pairs(
    key_pairs: IndicesTuple, mined: IndicesTuple | None, labels: Tensor, ref_labels: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``key_pairs`` at this step's key columns ``< B`` of the rotated memory and the
    pairs of ``mined`` (all pairs if None) at the older columns ``>= B``."""
    b = labels.shape[0]
    m1, mp, m2, mn = (
        lmu.get_all_pairs_indices(labels, ref_labels)
        if mined is None
        else lmu.convert_to_pairs(mined, labels, ref_labels)
    )
    older_p, older_n = mp >= b, mn >= b
    a1, p, a2, n = key_pairs
    return (
        torch.cat([a1, m1[older_p]]),
        torch.cat([p, mp[older_p]]),
        torch.cat([a2, m2[older_n]]),
        torch.cat([n, mn[older_n]]),
    )
