"""benchmarks/sweep.py: the --sweep grid parser, per-run overrides, summary, table and plot."""

import re

import pytest
from helpers import CONFIGS

from benchmarks import long_tail_accuracy, sweep
from dscl_plugin.training.config import load_config


def test_parse_sweep():
    grid = sweep.parse_sweep(["model.alpha=0.05,0.11,0.2,0.5", "model.num_patches=1, 3,5"])
    assert grid == {
        "model.alpha": ["0.05", "0.11", "0.2", "0.5"],
        "model.num_patches": ["1", "3", "5"],
    }


@pytest.mark.parametrize(
    "spec, message",
    [
        ("model.alpha", "must have the form section.key=v1,v2"),
        ("alpha=0.1,0.2", "must have the form section.key=v1,v2"),
        ("model.alpha=", "must have the form section.key=v1,v2"),
        ("=0.1", "must have the form section.key=v1,v2"),
        ("model.alpha=0.1,,0.2", "value '' is not a finite number"),
        ("model.alpha=[0.1,0.2]", r"value '\[0.1' is not a finite number"),
        ("model.alpha=0.1,nan", "value 'nan' is not a finite number"),
        ("model.alpha=0.1,0.10", "a value is repeated"),
    ],
)
def test_parse_sweep_rejects_bad_grids(spec, message):
    with pytest.raises(ValueError, match=message):
        sweep.parse_sweep([spec])


def test_parse_sweep_rejects_a_key_swept_twice():
    with pytest.raises(ValueError, match="model.alpha is swept twice"):
        sweep.parse_sweep(["model.alpha=0.1", "model.alpha=0.2"])


def test_sweep_overrides_load_with_the_digits_config():
    path = CONFIGS / "dscl_digits_lt.yaml"  # beta: 8
    assert sweep.sweep_overrides("model.alpha", "0.2") == [
        "model.alpha=0.2",
        "model.beta=null",
    ]
    config = load_config(path, sweep.sweep_overrides("model.alpha", "0.2"))
    assert (config.model.alpha, config.model.beta) == (0.2, None)
    config = load_config(path, sweep.sweep_overrides("model.pbsd_weight", "0.5"))
    assert config.model.pbsd_weight == 0.5


def run(method, seed, value, overall, key="model.alpha"):
    metrics = {
        "overall": overall,
        "many": overall + 0.1,
        "medium": overall,
        "few": None,
    }
    key = None if method == "supcon" else key
    return {
        "method": method,
        "seed": seed,
        "sweep_key": key,
        "sweep_value": value,
        **metrics,
    }


def test_summary_table_and_plot(tmp_path):
    runs = [
        run("supcon", 0, None, 0.5),
        run("supcon", 1, None, 0.6),
        run("dscl", 0, "0.5", 0.6),
        run("dscl", 1, "0.5", 0.6),
        run("dscl", 0, "0.1", 0.7),
        run("dscl", 1, "0.1", 0.9),
        run("dscl", 0, "3", 0.1, key="model.num_patches"),
    ]
    rows = sweep.summarise_sweep(runs, "model.alpha")
    expected = [
        ("supcon", None),
        ("dscl", 0.1),
        ("dscl", 0.5),
    ]  # not the num_patches run
    assert [(r["method"], r["value"]) for r in rows] == expected
    supcon, low, high = rows
    assert low["overall_mean"] == pytest.approx(0.8)
    assert low["overall_std"] == pytest.approx(0.02**0.5)  # sample std of 0.7, 0.9
    assert low["overall_diff_mean"] == pytest.approx(0.25)  # paired: (0.2 + 0.3) / 2
    assert high["overall_diff_mean"] == pytest.approx(0.05)  # (0.1 + 0.0) / 2
    assert high["overall_diff_std"] == pytest.approx(0.005**0.5)
    assert supcon["overall_diff_mean"] is None and low["few_mean"] is None

    labels = {"supcon": "SupCon", "dscl": "DSCL"}
    paths = sweep.write_sweep(rows, labels, tmp_path / "sweep_model.alpha", "digits_lt")
    table = paths["md"].read_text()
    assert "| DSCL | 0.1 | 80.0 ± 14.1 | 90.0 ± 14.1 | 80.0 ± 14.1 | - | +25.0 ± 7.1 |" in table
    assert "| SupCon | – | 55.0 ± 7.1 |" in table
    assert paths["png"].read_bytes()[:4] == b"\x89PNG"
    header = paths["csv"].read_text().splitlines()[0]
    assert header.startswith("key,value,method,seeds,overall_mean")


@pytest.mark.parametrize(
    "grid, message",
    [
        ("model.alpha=0.1,x", "value 'x' is not a finite number"),
        (
            "model.alfa=0.1",
            "Unknown config key 'model.alfa'.*Did you mean 'model.alpha'",
        ),
        ("model.alpha=1.5", r"model.alpha: must be in \[0, 1\], got 1.5"),
    ],
)
def test_benchmark_rejects_bad_sweeps_before_training(tmp_path, capsys, grid, message):
    with pytest.raises(SystemExit) as exit_info:
        long_tail_accuracy.main(
            ["--methods", "supcon", "dscl", "--sweep", grid, "--out", str(tmp_path)]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert list(tmp_path.iterdir()) == []
