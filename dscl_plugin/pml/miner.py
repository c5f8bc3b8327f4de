"""``DSCLMiner``: same-class and different-class pairs for the PML ``DSCLLoss``, with
k-positive caps (registered as ``pytorch_metric_learning.miners.DSCLMiner``)."""

import torch
from pytorch_metric_learning.miners import BaseMiner
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.pml.layouts import partner_index

__all__ = ["DSCLMiner"]


class DSCLMiner(BaseMiner):
    """Same-class and different-class pairs for :class:`DSCLLoss`, with k-positive caps.

    Returns ``(a1, p, a2, n)`` in the layouts of :class:`DSCLLoss`: all same-class
    pairs and all different-class pairs, never an anchor with itself. The augmentation
    partner pair (row ``(i + B) mod 2B`` in layout 1, ``ref_emb[i]`` in layout 2) is
    always returned as a positive and does not count as a class positive. With
    ``max_class_positives=k`` at most k class positives per anchor are kept, drawn
    uniformly at random (the k-positive balance of KCL for long-tailed data);
    ``max_negatives`` caps the negatives per anchor the same way. Sampling uses torch's
    global generator, so it is deterministic under ``torch.manual_seed``.

    Examples:
        >>> miner = DSCLMiner(max_class_positives=4)
        >>> emb, y2 = torch.cat([emb1, emb2]), torch.cat([y, y])
        >>> loss = loss_fn(emb, y2, miner(emb, y2))
    """

    def __init__(
        self,
        max_class_positives: int | None = None,
        max_negatives: int | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(**kwargs)
        checks.integer("max_class_positives", max_class_positives, 0, allow_none=True)
        checks.integer("max_negatives", max_negatives, 0, allow_none=True)
        self.max_class_positives = max_class_positives
        self.max_negatives = max_negatives
        self.add_to_recordable_attributes(
            list_of_names=["max_class_positives", "max_negatives"], is_stat=False
        )

    def mine(
        self, embeddings: Tensor, labels: Tensor, ref_emb: Tensor, ref_labels: Tensor
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        if labels is None or ref_labels is None:
            raise ValueError("DSCLMiner needs labels (and ref_labels with ref_emb).")
        checks.labels("labels", labels, embeddings.shape[0])
        checks.labels("ref_labels", ref_labels, ref_emb.shape[0])
        own_index, layout1 = partner_index(embeddings, labels, ref_emb, ref_labels)
        rows = torch.arange(embeddings.shape[0], device=labels.device)
        same = labels[:, None] == ref_labels[None, :]
        partner = torch.zeros_like(same)
        partner[rows, own_index] = True
        class_positive = same & ~partner
        negative = ~same & ~partner
        if layout1:
            class_positive[rows, rows] = False
        class_positive = _subsample(class_positive, self.max_class_positives)
        negative = _subsample(negative, self.max_negatives)
        a1, p = torch.where(class_positive | partner)
        a2, n = torch.where(negative)
        return a1, p, a2, n


def _subsample(mask: Tensor, k: int | None) -> Tensor:
    """Keep at most ``k`` uniformly drawn True entries per row of ``mask``."""
    if k is None or k >= mask.shape[1]:
        return mask
    scores = torch.rand(mask.shape, device=mask.device).masked_fill(~mask, 2.0)
    keep = torch.zeros_like(mask)
    keep.scatter_(1, scores.topk(k, dim=1, largest=False).indices, True)
    return mask & keep
