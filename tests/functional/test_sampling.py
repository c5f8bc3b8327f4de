"""KCL's draw of k positives per anchor: uniform over the k-subsets of its class's rows,
without replacement, all rows when there are fewer, reproducible from a generator."""

import itertools
from collections import Counter

import pytest
import torch

from dscl_plugin.functional.sampling import (
    class_rows,
    sample_class_pool,
    sample_without_replacement,
)


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_every_k_subset_is_equally_likely():
    n, k, draws = 5, 2, 20000
    positions, valid = sample_without_replacement(torch.full((draws,), n), k, _gen())
    assert valid.all()
    assert (positions[:, 0] != positions[:, 1]).all()
    subsets = Counter(tuple(sorted(row)) for row in positions.tolist())
    assert set(subsets) == set(itertools.combinations(range(n), k))
    expected = draws / len(subsets)  # 2000 each; a binomial std of ~42
    assert all(abs(c - expected) < 5 * expected**0.5 for c in subsets.values()), subsets


def test_a_pool_smaller_than_k_gives_all_of_it_and_an_empty_pool_nothing():
    sizes = torch.tensor([0, 1, 3, 4, 9])
    positions, valid = sample_without_replacement(sizes, 4, _gen(1))
    assert valid.sum(dim=1).tolist() == [0, 1, 3, 4, 4]
    for row, ok, n in zip(positions.tolist(), valid.tolist(), sizes.tolist()):
        drawn = [p for p, v in zip(row, ok) if v]
        assert len(set(drawn)) == len(drawn) and all(0 <= p < n for p in drawn)
        if n <= 4:
            assert sorted(drawn) == list(range(n))
    assert (positions[~valid] == 0).all()


def test_the_same_generator_state_gives_the_same_draw():
    sizes = torch.tensor([7, 2, 30, 5])
    first = sample_without_replacement(sizes, 3, _gen(5))
    again = sample_without_replacement(sizes, 3, _gen(5))
    other = sample_without_replacement(sizes, 3, _gen(6))
    assert torch.equal(first[0], again[0]) and torch.equal(first[1], again[1])
    assert not torch.equal(first[0], other[0])


def test_class_rows_lists_each_anchors_class_rows():
    row_labels = torch.tensor([2, -1, 0, 2, 5, 2, -1, 0])
    order, start, count = class_rows(torch.tensor([2, 0, 1, -1]), row_labels)
    rows = [sorted(order[s : s + c].tolist()) for s, c in zip(start.tolist(), count.tolist())]
    assert rows == [[0, 3, 5], [2, 7], [], [1, 6]]


@pytest.mark.parametrize("k", [1, 2, 5])
def test_drawn_rows_are_of_the_anchors_class_and_never_empty_slots(k):
    gen = _gen(k)
    labels = torch.tensor([0, 1, 2, 3, 0])
    row_labels = torch.tensor([0, -1, 1, 0, 1, 1, 0, -1, 3, 1, 0])
    for _ in range(50):
        draw = sample_class_pool(labels, row_labels, k, generator=gen)
        assert torch.equal(draw.in_rows, draw.valid)  # no extra entries
        for i, label in enumerate(labels.tolist()):
            rows = draw.rows[i][draw.valid[i]].tolist()
            available = (row_labels == label).sum().item()
            assert len(rows) == min(k, available) == len(set(rows))
            assert all(row_labels[r] == label for r in rows)
        assert draw.valid[2].sum() == 0  # class 2 has no row


def test_extra_entries_join_the_pool_after_the_class_rows():
    labels = torch.tensor([0, 1])
    row_labels = torch.tensor([0, 0, 1, 0])
    seen = Counter()
    gen = _gen(3)
    for _ in range(3000):
        draw = sample_class_pool(labels, row_labels, 2, extra=2, generator=gen)
        assert draw.valid.all()
        for s in range(2):
            if draw.in_rows[0, s]:
                assert row_labels[draw.rows[0, s]] == 0
                seen[("row", draw.rows[0, s].item())] += 1
            else:
                seen[("extra", draw.extra[0, s].item())] += 1
    # anchor 0's pool: rows 0, 1, 3 and extras 0, 1; each entry in 2 of the 5 draws
    assert set(seen) == {("row", 0), ("row", 1), ("row", 3), ("extra", 0), ("extra", 1)}
    assert all(abs(c / 3000 - 2 / 5) < 0.04 for c in seen.values()), seen
