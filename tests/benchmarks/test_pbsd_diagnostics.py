"""benchmarks/pbsd_diagnostics.py: the distribution statistics against hand values."""

import pytest
import torch

from benchmarks import pbsd_diagnostics


def test_pbsd_distribution_stats_against_hand_values():
    same = torch.tensor([[True, True, False, False], [True, False, False, False]])
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0]])  # uniform; all on own
    labels = torch.zeros(2, dtype=torch.long)
    stats = pbsd_diagnostics.distribution_stats(logits, labels, same, "t")
    assert stats["t_entropy"][0].item() == pytest.approx(1.0)
    assert stats["t_entropy"][1].item() == pytest.approx(0.0, abs=1e-6)
    assert stats["t_own"].tolist() == pytest.approx([0.25, 1.0])
    assert stats["t_class"].tolist() == pytest.approx([0.5, 1.0])
