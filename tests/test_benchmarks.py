"""Smoke test of benchmarks/long_tail_accuracy.py --quick (one seed, SupCon and DSCL+PBSD)."""

import csv
import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "long_tail_accuracy.py"


@pytest.fixture(scope="module")
def long_tail_accuracy():
    spec = importlib.util.spec_from_file_location("long_tail_accuracy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_writes_paired_summary(long_tail_accuracy, tmp_path, capsys):
    summary = long_tail_accuracy.main(
        ["--quick", "--seeds", "1", "--methods", "supcon", "dscl_pbsd", "--output-dir", str(tmp_path)]
    )

    rows = {row["method"]: row for row in summary}
    assert list(rows) == ["raw_pixels", "supcon", "dscl_pbsd"]
    runs = {r["method"]: r for r in json.loads((tmp_path / "long_tail_accuracy_quick.json").read_text())["runs"]}
    for metric in ("overall", "many", "medium", "few"):  # one seed: paired difference = plain difference
        expected = runs["dscl_pbsd"][metric] - runs["supcon"][metric]
        assert rows["dscl_pbsd"][f"{metric}_diff_mean"] == pytest.approx(expected)
    assert rows["supcon"]["overall_diff_mean"] is None
    assert all(0.0 <= rows[m]["overall_mean"] <= 1.0 for m in rows)
    with open(tmp_path / "long_tail_accuracy_quick_runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert "| SupCon |" in capsys.readouterr().out


def test_needs_five_seeds_without_quick(long_tail_accuracy):
    with pytest.raises(SystemExit):
        long_tail_accuracy.main(["--seeds", "3"])
