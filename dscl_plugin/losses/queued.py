"""The bases of the losses called ``loss(query, key, labels[, queue, queue_labels])``: the
checks of those inputs, an optional memory bank the loss owns, and the call itself."""

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.functional.contrastive import Candidates, compute_dtype
from dscl_plugin.memory import LabeledMemoryBank, updates_queue


class LabeledQueueLoss(nn.Module):
    """A loss of queries against their keys and a labelled queue of past keys.

    Subclasses set ``pml_loss``, the PML loss taking ``(embeddings, labels)``, named when
    this loss is called that way.
    """

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

    def enqueue_keys(self, query: Tensor, key: Tensor, labels: Tensor) -> None:
        """Enqueues the L2-normalised ``key`` with ``labels`` into the owned memory bank in
        a training step (:func:`~dscl_plugin.memory.updates_queue`), after the loss."""
        if self.memory_bank is not None and updates_queue(self, query):
            self.memory_bank.enqueue(key, labels, normalize=True)

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


class QueryKeyLoss(LabeledQueueLoss):
    """A :class:`LabeledQueueLoss` called ``loss(query, key, labels[, queue, queue_labels,
    queue_normalized])``: :meth:`forward` checks the call, takes the subclass's
    :meth:`mean_loss` of the checked inputs and enqueues the keys."""

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
            labels: (B,) integer class ids >= 0; required (None only to name the PML loss
                for a call ``loss(embeddings, labels)``).
            queue: optional (K, D) memory entries.
            queue_labels: (K,) class ids of ``queue``, required with ``queue``; -1 marks
                an empty slot (a negative, never a positive) where the loss says so.
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
            ValueError: a tensor of the wrong shape or dtype, or a label out of range,
                naming it.
        """
        labels = self._labels(key, labels)
        candidates = self._candidates(query, key, labels, queue, queue_labels)
        with torch.autocast(device_type=query.device.type, enabled=False):
            loss = self.mean_loss(candidates, queue_normalized)
        self.enqueue_keys(query, key, labels)
        return loss

    def mean_loss(self, candidates: Candidates, queue_normalized: bool) -> Tensor:
        """The loss :meth:`forward` returns, of its checked inputs (autocast off)."""
        raise NotImplementedError
