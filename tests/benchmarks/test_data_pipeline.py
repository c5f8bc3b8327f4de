"""Smoke test of benchmarks/data_pipeline.py --quick: both paths produce views, rows reach
the CSV and the JSON records the command and the commit."""

import csv
import json

import pytest

from benchmarks import data_pipeline

pytest.importorskip("kornia")


@pytest.mark.slow
def test_quick_rates(tmp_path, capsys):
    rows = data_pipeline.main(
        [
            "--quick",
            "--settings",
            "rgb_32px",
            "--workers",
            "0",
            "--no-epoch",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert [(r["path"], r["device"]) for r in rows][:2] == [
        ("loader (PIL)", "cpu"),
        ("device (Kornia)", "cpu"),
    ]
    assert all(r["images_per_s"] > 0 and r["views"] == "32 px / 5 x 16 px" for r in rows)
    with open(tmp_path / "data_pipeline_quick.csv") as f:
        assert len(list(csv.DictReader(f))) == len(rows)
    meta = json.loads((tmp_path / "data_pipeline_quick.json").read_text())
    assert "--quick" in meta["command"] and meta["commit"] and meta["rows"] == rows
    assert "| rgb_32px |" in capsys.readouterr().out


@pytest.mark.slow
def test_quick_epoch_timings(tmp_path):
    rows = data_pipeline.main(["--quick", "--no-rates", "--output-dir", str(tmp_path)])
    assert [r["pipeline"] for r in rows] == ["loader", "device"]
    assert all(r["steps"] == 2 and r["stage1_wall_s"] > 0 for r in rows)
    assert (tmp_path / "data_pipeline_epoch_quick.csv").is_file()
