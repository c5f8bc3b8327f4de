"""tools/render_docs/performance.py: ratios from the step times as measured."""

import pytest

from tools.render_docs.performance import step_time_ratios


def _row(precision, method, step_ms, speedup):
    return {"setting": "cnn5_28px", "precision": precision, "method": method,
            "step_ms": step_ms, "speedup": speedup}  # fmt: skip


def test_step_time_ratios_come_from_the_step_times_not_the_rounded_speedups():
    rows = [
        _row("fp32", "supcon", 1942.7, 1.0), _row("fp32", "dscl", 1858.5, 1.0),
        _row("bf16", "supcon", 18399.9, 0.11), _row("bf16", "dscl", 24810.0, 0.07),
        _row("bf16_cl", "dscl", 10000.0, 0.19),
    ]  # fmt: skip
    ratios = step_time_ratios(rows)
    assert ratios["bf16"] == pytest.approx([18399.9 / 1942.7, 24810.0 / 1858.5])  # 9.47, 13.35
    assert ratios["bf16_cl"] == pytest.approx([10000.0 / 1858.5])
    assert abs(ratios["bf16"][0] - 1 / 0.11) > 0.3  # not 9.09, the rounded speedup inverted
