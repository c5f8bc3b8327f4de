"""Smoke test of benchmarks/long_tail_accuracy.py --quick (one seed, SupCon and DSCL+PBSD),
its run log (parts skip recorded runs and merge) and its seed-count warning."""

import csv
import json

import pytest


@pytest.fixture(scope="module")
def long_tail_accuracy(import_benchmark):
    return import_benchmark("long_tail_accuracy")


@pytest.mark.slow
def test_quick_run_writes_paired_summary(long_tail_accuracy, tmp_path, capsys):
    summary = long_tail_accuracy.main(
        [
            "--quick",
            "--seeds",
            "0",
            "--methods",
            "supcon",
            "dscl_pbsd",
            "--output-dir",
            str(tmp_path),
        ]
    )

    rows = {row["method"]: row for row in summary}
    assert list(rows) == ["raw_pixels", "supcon", "dscl_pbsd"]
    runs = {
        r["method"]: r
        for r in json.loads((tmp_path / "long_tail_accuracy_quick.json").read_text())["runs"]
    }
    for metric in (
        "overall",
        "many",
        "medium",
        "few",
        "knn_p1",
    ):  # one seed: paired = plain difference
        expected = runs["dscl_pbsd"][metric] - runs["supcon"][metric]
        assert rows["dscl_pbsd"][f"{metric}_diff_mean"] == pytest.approx(expected)
    assert rows["supcon"]["overall_diff_mean"] is None
    assert rows["raw_pixels"]["overall_mean"] > 0.5  # the quick probe still learns (chance 0.1)
    with open(tmp_path / "long_tail_accuracy_quick_runs.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert runs["dscl_pbsd"]["loss_pbsd"] > 0 and runs["supcon"]["loss_pbsd"] == 0
    assert runs["raw_pixels"]["loss_dscl"] is None and runs["raw_pixels"]["knn_p1"] > 0.5
    assert "| SupCon | 1 |" in capsys.readouterr().out

    # a second part skips what is recorded and merges: only DSCL is trained now
    merged = long_tail_accuracy.main(
        [
            "--quick",
            "--seeds",
            "0",
            "--methods",
            "supcon",
            "dscl",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert [row["method"] for row in merged] == [
        "raw_pixels",
        "supcon",
        "dscl",
        "dscl_pbsd",
    ]
    assert "1 new run(s)" in capsys.readouterr().out
    log = tmp_path / "long_tail_accuracy_quick_runs.jsonl"
    assert len(log.read_text().splitlines()) == 4
    assert (
        long_tail_accuracy.main(["--quick", "--summarise", "--output-dir", str(tmp_path)]) == merged
    )


def test_read_runs_keeps_the_latest_record(long_tail_accuracy, tmp_path):
    log = tmp_path / "runs.jsonl"
    key = {
        "dataset": "digits_lt",
        "imbalance_factor": 10.0,
        "method": "dscl",
        "seed": 0,
    }
    log.write_text("\n".join(json.dumps(key | {"overall": v}) for v in (0.5, 0.7)) + "\n")
    assert long_tail_accuracy.read_runs(log) == [key | {"overall": 0.7}]


def test_warns_about_too_few_paired_seeds(long_tail_accuracy):
    summary = [
        {
            "dataset": "fashion_mnist_lt",
            "imbalance_factor": 10.0,
            "method": "dscl",
            "seeds": 2,
        },
        {
            "dataset": "fashion_mnist_lt",
            "imbalance_factor": 10.0,
            "method": "supcon",
            "seeds": 3,
        },
    ]
    (warning,) = long_tail_accuracy.missing_seeds(summary, 3)
    assert warning.startswith("fashion_mnist_lt rho=10 dscl: 2 seed(s)")


def test_pbsd_distribution_stats_against_hand_values(import_benchmark):
    module = import_benchmark("pbsd_diagnostics")
    import torch

    same = torch.tensor([[True, True, False, False], [True, False, False, False]])
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [50.0, 0.0, 0.0, 0.0]])  # uniform; all on own
    stats = module.distribution_stats(logits, torch.zeros(2, dtype=torch.long), same, "t")
    assert stats["t_entropy"][0].item() == pytest.approx(1.0)
    assert stats["t_entropy"][1].item() == pytest.approx(0.0, abs=1e-6)
    assert stats["t_own"].tolist() == pytest.approx([0.25, 1.0])
    assert stats["t_class"].tolist() == pytest.approx([0.5, 1.0])


def test_reporting_mean_std_and_percent(import_benchmark):
    reporting = import_benchmark("reporting")
    mean, std = reporting.mean_std([0.5, None, 0.7])
    assert mean == pytest.approx(0.6) and std == pytest.approx(0.1414213562)
    assert reporting.mean_std([0.25]) == (0.25, None)
    assert reporting.mean_std([None]) == (None, None)
    assert reporting.pct(0.8353, 0.0021) == "83.5 ± 0.2"
    assert reporting.pct(-0.013, 0.003, signed=True) == "-1.3 ± 0.3"
    assert reporting.pct(0.004, signed=True) == "+0.4"
    assert reporting.pct(None) == "-"
    assert reporting.markdown_table([{"a": 1, "b": "x"}]) == "| a | b |\n|---|---|\n| 1 | x |"


def test_set_overrides_every_method_and_tag_keeps_runs_apart(long_tail_accuracy, tmp_path, capsys):
    args = long_tail_accuracy._parse_args(
        [
            "--epochs",
            "3",
            "--set",
            "trainer.precision=bf16-mixed",
            "optim.lr=0.05",
            "--tag",
            "3ep_bf16",
        ]
    )
    for method in ("supcon", "dscl", "dscl_pbsd"):
        config = long_tail_accuracy._config(args, 10.0, 0, method, str(tmp_path))
        assert (config.trainer.precision, config.optim.lr, config.trainer.epochs) == (
            "bf16-mixed",
            0.05,
            3,
        )
    long_tail_accuracy.main(["--summarise", "--tag", "3ep_bf16", "--output-dir", str(tmp_path)])
    assert "long_tail_accuracy_3ep_bf16_runs.jsonl" in capsys.readouterr().out
