"""Long-tailed accuracy by shot group and kNN retrieval metrics (PML's ``AccuracyCalculator``)."""

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

from dscl_plugin.data.shots import shot_groups

if TYPE_CHECKING:
    from pytorch_metric_learning.distances import BaseDistance


def shot_metrics(
    preds: Tensor,
    targets: Tensor,
    class_counts: Sequence[int],
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> dict[str, object]:
    """Top-1 accuracy overall, per class and per shot group (see :func:`shot_groups`).

    ``preds`` are class indices (N,) or logits (N, C). ``overall`` is the fraction of
    correct test samples; ``per_class[c]`` the accuracy on class c (None if c is not in
    the test set); a group's accuracy is the mean of its classes' accuracies (None if no
    class of the group is in the test set).
    """
    preds = torch.as_tensor(preds)
    targets = torch.as_tensor(targets).long().cpu()
    if preds.ndim == 2:
        preds = preds.argmax(dim=1)
    preds = preds.long().cpu()
    if preds.shape != targets.shape or targets.ndim != 1 or len(targets) == 0:
        raise ValueError(
            "preds (N,) or (N, C) and targets (N,) must match, got "
            f"{tuple(preds.shape)} and {tuple(targets.shape)}"
        )
    num_classes = len(class_counts)
    if int(targets.max()) >= num_classes:
        raise ValueError(
            f"target {int(targets.max())} has no entry in class_counts (length {num_classes})"
        )
    correct = (preds == targets).double()
    hits = torch.bincount(targets, weights=correct, minlength=num_classes)
    totals = torch.bincount(targets, minlength=num_classes)
    per_class: list[float | None] = [
        (h / t) if t > 0 else None for h, t in zip(hits.tolist(), totals.tolist())
    ]
    metrics: dict[str, object] = {"overall": correct.mean().item()}
    for group, classes in shot_groups(class_counts, many_threshold, few_threshold).items():
        accs = [acc for acc in (per_class[c] for c in classes) if acc is not None]
        metrics[group] = float(np.mean(accs)) if accs else None
    metrics["per_class"] = per_class
    return metrics


def knn_metrics(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    k: int | str = "max_bin_count",
    distance: "BaseDistance | None" = None,
    batch_size: int | None = 4096,
) -> dict[str, float]:
    """Retrieval metrics of test queries against the train set, via PML's ``AccuracyCalculator``.

    Neighbours come from ``CustomKNN(distance)`` (default ``CosineSimilarity``), computed in
    torch in query batches of ``batch_size``. With ``k="max_bin_count"`` (default) returns
    ``precision_at_1``, ``r_precision`` and ``mean_average_precision_at_r``; with an int k,
    ``precision_at_1`` and ``mean_average_precision`` (MAP@k).
    """
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    include: tuple[str, ...] = ("precision_at_1", "mean_average_precision")
    if k == "max_bin_count":
        include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
    calculator = AccuracyCalculator(
        include=include,
        k=k,
        device=train_feats.device,
        knn_func=CustomKNN(distance or CosineSimilarity(), batch_size=batch_size),
    )
    results = calculator.get_accuracy(
        test_feats, test_labels, train_feats, train_labels, ref_includes_query=False
    )
    return {name: float(value) for name, value in results.items()}
