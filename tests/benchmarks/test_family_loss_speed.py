"""Smoke test of python -m benchmarks.family_loss_speed --quick: one row per new loss, timed
against SupCon in the same round, with the provenance of the run."""

import json

import pytest

from benchmarks import family_loss_speed


@pytest.mark.slow
def test_quick_run_writes_a_row_per_loss(tmp_path, capsys):
    out = tmp_path / "family.json"
    family_loss_speed.main(["--quick", "--json", str(out)])
    data = json.loads(out.read_text())
    rows = {row["loss"]: row for row in data["rows"]}
    assert list(rows) == ["kcl", "tsc", "paco", "bcl"]
    assert rows["bcl"]["K"] == 0 and rows["kcl"]["K"] == 1024
    for row in rows.values():
        assert row["ratio"] == pytest.approx(
            row["loss_ms"] / row["supcon_ms"], rel=0.05
        )  # ms rounded
    assert data["settings"]["command"].startswith("python -m benchmarks.family_loss_speed")
    assert "| kcl | 16 | 1024 |" in capsys.readouterr().out
