"""The kNN top-1 accuracy by shot group of the online monitor, against an independent
weighted kNN."""

import math

import pytest
import torch

from dscl_plugin.evaluation.metrics import knn_shot_accuracy

# 2-D features at fixed angles: the bank holds 3 classes, the queries sit between them
ANGLES = {0: [0, 10, 20, 30], 1: [90, 100, 110], 2: [200, 215]}
QUERIES = [(5, 0), (25, 0), (95, 1), (65, 1), (152, 2), (205, 2), (320, 0)]
CLASS_COUNTS = [150, 50, 10]  # many > 100, few < 20: class 0 many, 1 medium, 2 few


def _unit(degrees):
    return [math.cos(math.radians(degrees)), math.sin(math.radians(degrees))]


def _features():
    bank = torch.tensor([_unit(a) for c in ANGLES for a in ANGLES[c]]) * 3  # not unit length
    bank_labels = torch.tensor([c for c in ANGLES for _ in ANGLES[c]])
    queries = torch.tensor([_unit(a) for a, _ in QUERIES])
    return bank, bank_labels, queries, torch.tensor([c for _, c in QUERIES])


def reference_knn(bank, bank_labels, queries, k, t, num_classes):
    """Weighted kNN vote written out: cosine similarities, the k largest, exp(s / t) per
    class, the class of the largest sum."""
    predictions = []
    for q in queries:
        sims = [
            (float(q @ b) / (float(q.norm()) * float(b.norm())), int(y))
            for b, y in zip(bank, bank_labels)
        ]
        nearest = sorted(sims, reverse=True)[:k]
        scores = [sum(math.exp(s / t) for s, y in nearest if y == c) for c in range(num_classes)]
        predictions.append(max(range(num_classes), key=scores.__getitem__))
    return predictions


@pytest.mark.parametrize("k, t", [(1, 0.1), (3, 0.1), (5, 1.0), (50, 0.5)])
def test_accuracy_equals_an_independent_weighted_knn(k, t):
    bank, bank_labels, queries, labels = _features()
    predicted = reference_knn(bank, bank_labels, queries, k, t, 3)
    per_class = [
        sum(p == c for p, y in zip(predicted, labels.tolist()) if y == c)
        / labels.eq(c).sum().item()
        for c in range(3)
    ]
    accuracy = knn_shot_accuracy(bank, bank_labels, queries, labels, CLASS_COUNTS, k, t, 100, 20)
    assert accuracy["overall"] == pytest.approx(
        sum(p == y for p, y in zip(predicted, labels.tolist())) / len(labels)
    )
    for group, c in (("many", 0), ("medium", 1), ("few", 2)):
        assert accuracy[group] == pytest.approx(per_class[c])


def test_shot_groups_are_the_mean_of_their_classes_accuracies():
    # k = 1, the nearest bank angle decides: class 0 queries at 5, 25 and 320 degrees are
    # nearest 0/10, 20/30 and 0 (right); class 1 at 95 and 65 nearest 90/100 and 90
    # (right); class 2 at 152 is nearest 110 (class 1, wrong), at 205 nearest 200 (right)
    bank, bank_labels, queries, labels = _features()
    accuracy = knn_shot_accuracy(bank, bank_labels, queries, labels, CLASS_COUNTS, knn_k=1)
    assert accuracy == {
        "overall": pytest.approx(6 / 7),
        "many": 1.0,
        "medium": 1.0,
        "few": 0.5,
    }
    only_many = knn_shot_accuracy(bank, bank_labels, queries[:2], labels[:2], CLASS_COUNTS, 1)
    assert only_many["medium"] is None and only_many["few"] is None  # no query of the group
