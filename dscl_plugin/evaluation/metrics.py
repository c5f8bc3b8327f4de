"""Long-tailed accuracy by shot group (of predictions, and of Lightly's kNN classifier) and
kNN retrieval metrics (PML's ``AccuracyCalculator``)."""

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dscl_plugin.data.shots import ACCURACY_GROUPS, shot_groups

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


def knn_shot_accuracy(
    bank: Tensor,
    bank_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    class_counts: Sequence[int],
    knn_k: int = 20,
    knn_t: float = 0.1,
    many_threshold: int = 100,
    few_threshold: int = 20,
    batch_size: int = 1024,
) -> dict[str, float | None]:
    """kNN top-1 accuracy of ``queries`` (N, D) against ``bank`` (M, D): ``overall`` (the
    fraction of correct queries) and ``many`` / ``medium`` / ``few`` (the mean accuracy of
    the group's classes, as :func:`shot_metrics`; None for a group without queries).

    The kNN is Lightly's benchmarking ``knn_predict``, the weighted vote of Wu et al. 2018
    (https://arxiv.org/abs/1805.01978): a query ``q`` scores class ``c`` by
    ``sum_{i in N_k(q), y_i = c} exp(q . b_i / t)`` over its ``knn_k`` most similar bank
    features ``b_i``, all L2-normalised here; ``knn_k`` is capped at M.

    Raises:
        ValueError: an empty bank or query set.
    """
    from lightly.utils.benchmarking import knn_predict  # loads PyTorch Lightning

    if len(bank) == 0 or len(queries) == 0:
        raise ValueError(f"bank ({len(bank)}) and queries ({len(queries)}) must not be empty")
    bank_t = F.normalize(bank.float(), dim=1).t().contiguous()
    labels = bank_labels.to(bank.device).long()
    k = min(knn_k, len(bank))
    predictions = [
        knn_predict(F.normalize(chunk.float(), dim=1), bank_t, labels, len(class_counts), k, knn_t)[
            :, 0
        ]
        for chunk in queries.split(batch_size)
    ]
    metrics = shot_metrics(
        torch.cat(predictions), query_labels, class_counts, many_threshold, few_threshold
    )
    return {group: cast(float | None, metrics[group]) for group in ACCURACY_GROUPS}


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
