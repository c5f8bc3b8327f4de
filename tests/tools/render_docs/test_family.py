"""tools/render_docs/family.py: the runs here beside the numbers the authors report, and
the official-loss ratios against their target."""

import json
import shutil

from helpers import ROOT

from tools.render_docs import family
from tools.render_docs.results import RESULTS

RUNS = "compare_family_digits_lt/runs.jsonl"


def _root_with(tmp_path, published_rows):
    results = tmp_path / RESULTS
    (results / "compare_family_digits_lt").mkdir(parents=True)
    shutil.copy(ROOT / RESULTS / RUNS, results / RUNS)
    note = "Reported by the authors, not run here."
    (results / family.PUBLISHED).write_text(json.dumps({"note": note, "rows": published_rows}))
    return tmp_path


def _cells(text, label):
    line = next(line for line in text.splitlines() if line.startswith(f"| {label} |"))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_each_method_sits_beside_its_cited_number_and_the_paired_difference(tmp_path):
    root = _root_with(tmp_path, [
        {"method": "tsc", "overall": 52.4, "trials": [52.3, 53.0, 52.6, 52.1, 52.2],
         "setting": "ResNet-50", "source": "TSC README", "url": "https://example.org/tsc"},
        {"method": "paco", "overall": 57.0, "setting": "ResNet-50, 400 epochs",
         "source": "PaCo README", "url": "https://example.org/paco"},
    ])  # fmt: skip
    text = family.beside_published(RUNS)(root)
    runs = [json.loads(line) for line in (root / RESULTS / RUNS).read_text().splitlines()]
    by = {(r["method"], r["seed"]): r["overall"] for r in runs}
    diffs = [by[("paco", s)] - by[("supcon", s)] for s in (0, 1, 2)]
    mean = sum(diffs) / 3
    assert _cells(text, "PaCo")[2].startswith(f"{100 * mean:+.1f} ± ")
    assert _cells(text, "PaCo")[3:] == [
        "57.0", "ResNet-50, 400 epochs", "[PaCo README](https://example.org/paco)"
    ]  # fmt: skip
    assert _cells(text, "TSC")[3] == "52.4 (mean of 5 trials)"
    assert _cells(text, "KCL")[3:] == ["–", "–", "–"]  # nothing cited: nothing printed
    assert _cells(text, "SupCon")[2] == "-"  # the baseline has no paired difference
    assert "3 paired seeds" in text and "Reported by the authors, not run here." in text


def test_a_ratio_over_the_target_is_counted_not_called_met(tmp_path):
    rows = [
        {"loss": "bcl", "B": 16, "C": 10, "K": 0, "D": 32, "ours_ms": 2.0, "official_ms": 1.0,
         "ratio": 2.0, "value_gap": 0.0},
        {"loss": "bcl", "B": 64, "C": 10, "K": 0, "D": 32, "ours_ms": 1.0, "official_ms": 2.0,
         "ratio": 0.5, "value_gap": 0.0},
        {"loss": "paco", "B": 16, "C": 10, "K": 64, "D": 32, "ours_ms": 1.0, "official_ms": 2.0,
         "ratio": 0.5, "value_gap": 0.0},
    ]  # fmt: skip
    settings = {
        "target_ratio": 1.0, "threads": 1, "command": "python -m x", "commit": "abc",
        "modified": [], "machine": "CPU", "official_commits": {"A": "1234567890"},
    }  # fmt: skip
    (tmp_path / RESULTS).mkdir(parents=True)
    data = {"settings": settings, "rows": rows}
    (tmp_path / RESULTS / "official_loss_speed.json").write_text(json.dumps(data))
    text = family.official_loss_speed(tmp_path)
    assert "BCL 0.5–2.0 (met in 1 of 2 rows); PaCo 0.5–0.5 (met)" in text
    assert "official code: A `1234567`" in text
