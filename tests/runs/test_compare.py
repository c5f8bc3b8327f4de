"""dscl-compare: the plan and its one-line refusals, resume (a rerun starts only what is
missing, an interrupted run continues from its checkpoint), report.md against hand
numbers, and a real tiny 2 x 2 digits comparison."""

import json
from pathlib import Path

import pytest
import pytorch_lightning as pl
from helpers import CONFIG, TINY

import dscl_plugin.cli as cli
import dscl_plugin.runs.pipeline as pipeline
import dscl_plugin.runs.stage1 as stage1
from dscl_plugin.errors import ConfigError
from dscl_plugin.runs.compare import compare, plan_runs, read_records

# made-up stage-2 results: overall per (method, seed); the groups follow from it
OVERALL = {("supcon", 0): 0.60, ("supcon", 1): 0.62, ("dscl", 0): 0.65, ("dscl", 1): 0.70}


class FakeRun:
    """Stands in for one run of dscl_plugin.runs.pipeline: records its calls, writes a
    checkpoint, may be interrupted once at ``interrupt`` (after its first checkpoint, as
    Ctrl-C is)."""

    def __init__(self, interrupt=None):
        self.calls, self.interrupt = [], interrupt

    def __call__(self, config, resume):
        key = (config.method, config.seed)
        self.calls.append((*key, resume))
        last = Path(config.output_dir) / "checkpoints" / "last.ckpt"
        last.parent.mkdir(parents=True, exist_ok=True)
        last.write_text("stand-in")
        if key == self.interrupt:
            self.interrupt = None
            raise KeyboardInterrupt
        overall = OVERALL[key]
        return {
            "linear_probe": {
                "overall": overall,
                "many": overall + 0.1,
                "medium": overall,
                "few": None,
            },
            "knn": {"precision_at_1": overall - 0.1},
            "train_class_counts": [144, 14],
        }


def _compare(out, run, *extra, seeds=(0, 1)):
    overrides = TINY + list(extra)
    return compare(CONFIG, ["supcon", "dscl"], list(seeds), out, overrides, "dscl-compare ...",
                   run=run, log=lambda _: None)  # fmt: skip


def test_a_rerun_starts_only_what_is_missing_and_an_interrupted_run_resumes(tmp_path):
    out = tmp_path / "cmp"
    run = FakeRun(interrupt=("supcon", 1))
    with pytest.raises(KeyboardInterrupt):
        _compare(out, run)
    assert run.calls == [("supcon", 0, None), ("dscl", 0, None), ("supcon", 1, None)]
    assert [(r["method"], r["seed"]) for r in read_records(out / "runs.jsonl")] == [
        ("supcon", 0),
        ("dscl", 0),
    ]
    run.calls.clear()
    records = _compare(out, run)  # the interrupted run resumes from its checkpoint
    assert run.calls == [("supcon", 1, "last"), ("dscl", 1, None)]
    assert [r["resumed"] for r in records] == [False, False, True, False]
    run.calls.clear()
    _compare(out, run)
    assert run.calls == []  # everything recorded: nothing starts
    assert len((out / "runs.jsonl").read_text().splitlines()) == 4
    record = records[0]
    assert (record["method"], record["seed"], record["epochs"], record["dataset"]) == (
        "supcon",
        0,
        2,
        "digits_lt",
    )
    assert record["overrides"] == TINY and "model.num_patches=0" in record["method_overrides"]
    assert {"seconds", "git_commit", "machine", "load_average", "command", "knn_p1"} <= set(record)
    assert record["output_dir"] == str(out / "supcon" / "seed0")


def test_report_table_and_paired_differences_against_hand_numbers(tmp_path):
    out = tmp_path / "cmp"
    _compare(out, FakeRun())
    report = (out / "report.md").read_text()
    # SupCon 60, 62 -> 61.0 ± 1.4; DSCL 65, 70 -> 67.5 ± 3.5; per seed +5, +8 -> +6.5 ± 2.1
    assert "| SupCon | 2 | 61.0 ± 1.4 | 71.0 ± 1.4 | 61.0 ± 1.4 | - | 51.0 ± 1.4 |" in report
    assert "| DSCL | 2 | 67.5 ± 3.5 | 77.5 ± 3.5 | 67.5 ± 3.5 | - | 57.5 ± 3.5 |" in report
    assert (
        "| DSCL − SupCon (paired) | 2 | +6.5 ± 2.1 | +6.5 ± 2.1 | +6.5 ± 2.1 | - | +6.5 ± 2.1 |"
        in report
    )
    assert "| DSCL seed 1 | 70.0 | 80.0 | 70.0 | - | 60.0 |" in report
    assert "`dscl/seed1`" in report and "Command: `dscl-compare ...`" in report
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_rerun_with_other_settings_on_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "cmp"
    _compare(out, FakeRun(), seeds=(0,))
    with pytest.raises(ConfigError, match=r"holds supcon seed 0 run with trainer.epochs 2, now 3"):
        _compare(out, FakeRun(), "trainer.epochs=3", seeds=(0,))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "supcon", "simclr"], "--methods: unknown method 'simclr'; use one of"),
        (["--methods", "dscl", "dscl"], "--methods: dscl given twice"),
        (["--seeds", "0", "1", "0"], "--seeds: [0] given twice"),
        (["model.queue=5"], "Unknown config key 'model.queue'"),
        (["--seeds", "0", "1", "model.queue=5"], "Unknown config key 'model.queue'"),
        (["seed=3"], "dscl-compare sets seed itself; use --seeds"),
        (["--config", "supcon_digits_lt", "--methods", "dscl_pbsd"], "model.pbsd_weight 0"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(
    tmp_path, monkeypatch, capsys, argv, message
):
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: pytest.fail("nothing may run"))
    config = [] if "--config" in argv else ["--config", "dscl_digits_lt"]
    assert cli.compare_main([*config, "--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dscl-compare: config error: ")
    assert message in err


def test_help_lists_the_methods_and_the_flags(capsys):
    with pytest.raises(SystemExit):
        cli.compare_main(["--help"])
    text = capsys.readouterr().out
    for word in ("--config", "--methods", "--seeds", "--out", "supcon:", "dscl:", "dscl_pbsd:"):
        assert word in text


def test_each_method_is_its_variant_of_one_config(tmp_path):
    methods = ["supcon", "kcl", "dscl", "dscl_pbsd"]
    plan = plan_runs("dscl_fashion_mnist_lt", methods, [3], tmp_path)
    configs = {p.variant.name: p.config for p in plan}
    assert configs["kcl"].method == "kcl" and configs["kcl"].model.pbsd_weight == 1.5  # unused
    assert configs["supcon"].method == "supcon" and configs["supcon"].model.beta is None
    assert (configs["supcon"].model.pbsd_weight, configs["supcon"].model.num_patches) == (0, 0)
    assert configs["dscl"].method == "dscl" and configs["dscl"].model.pbsd_weight == 0
    assert configs["dscl"].model.beta == 8 and configs["dscl_pbsd"].model.pbsd_weight == 1.5
    assert {c.seed for c in configs.values()} == {3}
    assert configs["dscl"].output_dir == str(tmp_path / "dscl" / "seed3")


class InterruptOnce(pl.Callback):
    """Ctrl-C in the second epoch of the first run that trains it."""

    fired = False

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and not InterruptOnce.fired:
            InterruptOnce.fired = True
            raise KeyboardInterrupt


@pytest.mark.slow
def test_a_real_two_by_two_digits_comparison_resumes_an_interrupted_run(
    tmp_path, monkeypatch, capsys
):
    out = tmp_path / "cmp"
    argv = [
        "--config",
        CONFIG,
        "--methods",
        "supcon",
        "dscl",
        "--seeds",
        "0",
        "1",
        "--out",
        str(out),
        *TINY,
    ]
    monitors = stage1.monitor_callbacks
    monkeypatch.setattr(
        stage1,
        "monitor_callbacks",
        lambda config: [
            *monitors(config),
            *([InterruptOnce()] if "dscl/seed0" in config.output_dir else []),
        ],
    )
    assert cli.compare_main(argv) == 130
    assert "Run the same command again" in capsys.readouterr().err
    assert (out / "dscl" / "seed0" / "checkpoints" / "last.ckpt").is_file()
    assert cli.compare_main(argv) == 0
    records = read_records(out / "runs.jsonl")
    assert [(r["method"], r["seed"], r["resumed"]) for r in records] == [
        ("supcon", 0, False),
        ("dscl", 0, True),
        ("supcon", 1, False),
        ("dscl", 1, False),
    ]
    for record in records:
        assert 0 <= record["overall"] <= 1 and 0.3 < record["knn_p1"] <= 1  # kNN chance 0.1
        folder = Path(record["output_dir"])
        assert (folder / "metrics.json").is_file() and (folder / "curves.png").is_file()
    report = (out / "report.md").read_text()
    assert "| DSCL − SupCon (paired) | 2 |" in report and (out / "compare.png").is_file()
    saved = json.loads((out / "dscl" / "seed0" / "metrics.json").read_text())
    assert saved["config"]["seed"] == 0 and saved["method"] == "dscl"
    calls = []
    monkeypatch.setattr(pipeline, "run", lambda *a, **k: calls.append(a))
    assert cli.compare_main(argv) == 0 and calls == []  # a third call starts nothing
