"""The two row layouts of the PML loss and miner (see :mod:`dscl_plugin.pml`): where each
anchor's augmentation partner is, with the checks that a call follows a layout; the types
of PML's call."""

import torch
from torch import Tensor

# a miner's index tensors: triplets (anchors, positives, negatives) or pairs (a1, p, a2, n)
IndicesTuple = tuple[Tensor, ...]
# what ``compute_loss`` returns: per-anchor ``losses``, their ``indices`` and "element"
# ``reduction_type``, under the loss's name
LossDict = dict[str, dict[str, Tensor | str]]

LAYOUT_HELP = (
    "Layout 1 (no ref_emb): embeddings = cat([view1, view2]) with 2B rows and "
    "labels = cat([y, y]); row i's augmentation partner is row (i + B) mod 2B. "
    "Layout 2: pass ref_emb/ref_labels with ref_emb[i] the partner of embeddings[i]."
)
ONE_VIEW_FIX = (
    "use trainers.TwoStreamMetricLoss, or pass the other view as ref_emb/ref_labels "
    "(layout 2, also under DistributedLossWrapper)."
)


def partner_index(
    embeddings: Tensor,
    labels: Tensor | None,
    ref_emb: Tensor,
    ref_labels: Tensor | None,
) -> tuple[Tensor, bool]:
    """Column of each anchor's augmentation partner and whether layout 1 is used.

    Layout 1 is PML's "no ref_emb" call, where ``ref_emb is embeddings``.

    Raises:
        ValueError: the rows follow neither layout, e.g. one view per image as under
            ``trainers.MetricLossOnly`` (a one-line message naming the fix).
    """
    n = embeddings.shape[0]
    rows = torch.arange(n, device=embeddings.device)
    if ref_emb is embeddings:
        if n == 0 or n % 2:
            raise ValueError(
                f"DSCL needs two views per image (an even, non-zero row count without "
                f"ref_emb), got {n} rows: {ONE_VIEW_FIX}"
            )
        half = n // 2
        if labels is not None and not torch.equal(labels[:half], labels[half:]):
            raise ValueError(
                f"DSCL needs two views per image, but labels[:B] != labels[B:] for B = {half}: "
                f"{ONE_VIEW_FIX}"
            )
        return (rows + half) % n, True
    if ref_emb.shape[0] < n:
        raise ValueError(
            f"ref_emb has {ref_emb.shape[0]} rows, fewer than embeddings ({n}): "
            f"ref_emb[i] must be the augmentation partner of embeddings[i]. {LAYOUT_HELP}"
        )
    if torch.equal(ref_emb[:n], embeddings):
        raise ValueError(
            "ref_emb[:len(embeddings)] equals embeddings, so every anchor would be its "
            "own augmentation partner. This happens when layout 1 runs under "
            "DistributedLossWrapper(efficient=True); use layout 2 (ref_emb = the other "
            f"view) instead. {LAYOUT_HELP}"
        )
    if labels is not None and ref_labels is not None and not torch.equal(ref_labels[:n], labels):
        raise ValueError(
            "ref_labels[:len(embeddings)] != labels: ref_emb[i] must be the other "
            "view of embeddings[i]. Under DistributedLossWrapper(efficient=False), "
            "ref_emb must have one row per embedding (no memory rows); use "
            f"efficient=True or DSCLCrossBatchMemory. {LAYOUT_HELP}"
        )
    return rows, False
