"""TSC's targets (unit, near-uniform, seeded), its Hungarian matching (against brute
force) and its running class centroids (against a per-class loop)."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from dscl_plugin.functional.targets import match_targets, uniform_targets, update_centroids_


def _max_cosine(points):
    cos = points.double() @ points.double().T
    return cos.fill_diagonal_(-2.0).max().item()


@pytest.mark.parametrize("num_classes, dim", [(2, 2), (4, 3), (10, 16)])
def test_targets_are_the_regular_simplex_when_it_fits(num_classes, dim):
    targets = uniform_targets(num_classes, dim)
    assert targets.shape == (num_classes, dim) and targets.dtype == torch.float32
    torch.testing.assert_close(targets.norm(dim=1), torch.ones(num_classes))
    # C <= D + 1: the optimum has every pairwise cosine -1 / (C - 1)
    assert _max_cosine(targets) == pytest.approx(-1.0 / (num_classes - 1), abs=2e-3)


def test_more_targets_than_the_simplex_holds_are_spread_out():
    targets = uniform_targets(12, 3)  # best possible: the icosahedron, 63.4 degrees apart
    torch.testing.assert_close(targets.norm(dim=1), torch.ones(12))
    assert math.degrees(math.acos(_max_cosine(targets))) > 60.0
    random = F.normalize(torch.randn(12, 3, generator=torch.Generator().manual_seed(0)), dim=1)
    assert _max_cosine(random) > _max_cosine(targets)


def test_targets_follow_the_seed():
    first = uniform_targets(6, 4, seed=3)
    assert torch.equal(first, uniform_targets(6, 4, seed=3))
    assert not torch.allclose(first, uniform_targets(6, 4, seed=4))
    first.zero_()  # a copy: the cached targets are untouched
    assert uniform_targets(6, 4, seed=3).norm(dim=1).min() > 0.99
    assert uniform_targets(1, 5).shape == (1, 5)


@pytest.mark.parametrize("seed", range(4))
def test_matching_maximises_the_total_similarity_like_brute_force(seed):
    gen = torch.Generator().manual_seed(seed)
    centroids = F.normalize(torch.randn(5, 4, generator=gen, dtype=torch.float64), dim=1)
    targets = F.normalize(torch.randn(5, 4, generator=gen, dtype=torch.float64), dim=1)
    similarity = centroids @ targets.T

    def total(perm):
        return sum(similarity[c, t].item() for c, t in enumerate(perm))

    best = max(itertools.permutations(range(5)), key=total)
    assert match_targets(centroids, targets).tolist() == list(best)


def test_centroids_move_for_the_classes_in_the_batch_only():
    gen = torch.Generator().manual_seed(0)
    centroids = F.normalize(torch.randn(4, 3, generator=gen, dtype=torch.float64), dim=1)
    features = F.normalize(torch.randn(5, 3, generator=gen, dtype=torch.float64), dim=1)
    labels = torch.tensor([2, 0, 2, 2, 0])  # classes 1 and 3 are absent
    expected = centroids.clone()
    for c in (0, 2):
        mean = F.normalize(features[labels == c].mean(dim=0), dim=0)
        expected[c] = F.normalize(0.9 * centroids[c] + 0.1 * mean, dim=0)
    update_centroids_(centroids, features, labels, momentum=0.9)
    torch.testing.assert_close(centroids, expected, rtol=1e-12, atol=1e-14)
