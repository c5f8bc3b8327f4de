"""dscl-compare: the plan and its one-line refusals, resume (a rerun starts only what is
missing, an interrupted run continues from its checkpoint), report.md and the verdict
against hand numbers, several processes on one folder, a torn runs.jsonl line, and a real
tiny 2 x 2 digits comparison."""

import json
import multiprocessing
import time
from pathlib import Path

import pytest
import pytorch_lightning as pl
from helpers import CONFIG, TINY, lock_holder

import dscl_plugin.cli as cli
import dscl_plugin.runs.pipeline as pipeline
import dscl_plugin.runs.stage1 as stage1
from dscl_plugin.errors import ConfigError
from dscl_plugin.runs.compare import compare, plan_runs
from dscl_plugin.runs.records import CLAIM_FILE, read_records

# made-up stage-2 results: overall per (method, seed); the groups follow from it (the
# rare class is few-shot, the common one many-shot: no medium class)
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
                "medium": None,
                "few": overall - 0.2,
            },
            "knn": {"precision_at_1": overall - 0.1},
            "train_class_counts": [14, 144],
            "class_names": ["rare", "common"],
        }


def _compare(out, run, *extra, seeds=(0, 1), log=lambda _: None):
    overrides = TINY + list(extra)
    return compare(CONFIG, ["supcon", "dscl"], list(seeds), out, overrides, "dscl-compare ...",
                   run=run, log=log)  # fmt: skip


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
    assert "| SupCon | 2 | 61.0 ± 1.4 | 71.0 ± 1.4 | empty | 41.0 ± 1.4 | 51.0 ± 1.4 |" in report
    assert "| DSCL | 2 | 67.5 ± 3.5 | 77.5 ± 3.5 | empty | 47.5 ± 3.5 | 57.5 ± 3.5 |" in report
    assert (
        "| DSCL − SupCon (paired) | 2 | +6.5 ± 2.1 | +6.5 ± 2.1 | empty | +6.5 ± 2.1 | +6.5 ± 2.1 |"
        in report
    )
    assert "| DSCL seed 1 | 70.0 | 80.0 | empty | 50.0 | 60.0 |" in report
    assert "`dscl/seed1`" in report and "Command: `dscl-compare ...`" in report
    assert "; medium empty: no class has 20 ... 60 training images" in report
    assert "train class sizes, largest first (2 classes, 158 images): common (144), rare (14)" in (
        report
    )
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


VERDICT = (
    "DSCL: ahead of SupCon, overall +6.5 ± 2.1 points over 2 paired seeds (ahead in 2 of 2 "
    "seeds); outside the spread: many +6.5 ± 2.1, few +6.5 ± 2.1"
)
TOO_FEW = (
    "2 paired seeds: too few for the verdict to hold; add `--seeds 0 1 2` to the same "
    "command (it runs only the new seeds), 5 or more before you act on a point or two"
)


def test_the_report_and_the_last_printed_lines_give_the_verdict_and_warn_under_3_seeds(
    tmp_path,
):
    out, printed = tmp_path / "cmp", []
    _compare(out, FakeRun(), log=printed.append)
    assert printed[-2:] == [f"dscl-compare: {VERDICT}", f"dscl-compare: warning: {TOO_FEW}"]
    report = (out / "report.md").read_text()
    assert "## Verdict against SupCon\n\nOn overall top-1, per method: ahead or behind" in (report)
    assert f"\n- {VERDICT}.\n\n**Warning**: {TOO_FEW}.\n" in report
    OVERALL[("supcon", 2)], OVERALL[("dscl", 2)] = 0.64, 0.66
    try:
        printed.clear()
        _compare(out, FakeRun(), seeds=(0, 1, 2), log=printed.append)  # the seed it asked for
    finally:
        del OVERALL[("supcon", 2)], OVERALL[("dscl", 2)]
    # +5, +8, +2 -> +5.0 ± 3.0 points
    assert printed[-1].startswith("dscl-compare: DSCL: ahead of SupCon, overall +5.0 ± 3.0")
    assert "Warning" not in (out / "report.md").read_text()


def test_a_rerun_with_other_settings_on_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "cmp"
    _compare(out, FakeRun(), seeds=(0,))
    with pytest.raises(ConfigError, match=r"holds supcon seed 0 run with trainer.epochs 2, now 3"):
        _compare(out, FakeRun(), "trainer.epochs=3", seeds=(0,))


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--methods", "supcon", "simclr"], "--methods: unknown method 'simclr'; use one of"),
        (["--methods", "supcon", "pacoo"], "unknown method 'pacoo'; did you mean 'paco'? use"),
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
    assert "(default: supcon dscl dscl_pbsd)" in " ".join(text.split())  # as typed, no list


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


class SlowRun(FakeRun):
    """A FakeRun that takes ``seconds`` and notes each start in the file ``starts``
    (one line per start, from any process)."""

    def __init__(self, starts, seconds=0.3):
        super().__init__()
        self.starts, self.seconds = starts, seconds

    def __call__(self, config, resume):
        with open(self.starts, "a") as file:
            file.write(f"{config.method} {config.seed}\n")
        time.sleep(self.seconds)
        return super().__call__(config, resume)


def _compare_in_a_process(out, starts, printed, together):
    lines = []

    def log(line):
        if not lines:  # planned and read runs.jsonl: both processes claim from here on
            together.wait(60)
        lines.append(line)

    _compare(out, SlowRun(starts), log=log)
    Path(printed).write_text("\n".join(lines))


def test_two_processes_on_one_out_start_each_run_once_and_both_write_the_whole_report(
    tmp_path,
):
    out, starts = tmp_path / "cmp", tmp_path / "starts.txt"
    context = multiprocessing.get_context("fork")
    together = context.Barrier(2)
    workers = [
        context.Process(
            target=_compare_in_a_process, args=(out, starts, tmp_path / f"log{i}", together)
        )
        for i in range(2)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0]
    started = starts.read_text().splitlines()
    assert sorted(started) == ["dscl 0", "dscl 1", "supcon 0", "supcon 1"]  # once each
    assert len(read_records(out / "runs.jsonl", note=pytest.fail)) == 4
    logs = [(tmp_path / f"log{i}").read_text() for i in range(2)]
    assert all(VERDICT in log for log in logs)  # each ends with every run's verdict
    assert "claimed by another process; taking the next run" in logs[0] + logs[1]
    assert "| DSCL − SupCon (paired) | 2 |" in (out / "report.md").read_text()


def test_a_run_claimed_by_a_process_that_dies_is_waited_for_then_taken_over(tmp_path):
    out = tmp_path / "cmp"
    folder = out / "dscl" / "seed0"
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "last.ckpt").write_text("left by the other process")
    holder = lock_holder(folder / CLAIM_FILE)
    assert holder.stdout.readline() == "held\n"
    printed = []

    def log(line):
        printed.append(line)
        if "waiting for the process that claimed it" in line:
            holder.kill()  # it dies without recording the run
            holder.wait()

    run = FakeRun()
    try:
        _compare(out, run, seeds=(0,), log=log)
    finally:
        holder.kill()
        holder.wait()
    assert run.calls == [("supcon", 0, None), ("dscl", 0, "last")]  # taken over, resumed
    assert printed[1:4] == [
        "dscl-compare: [1/2] supcon seed 0",
        "dscl-compare: [2/2] dscl seed 0: claimed by another process; taking the next run",
        "dscl-compare: [2/2] dscl seed 0: waiting for the process that claimed it (Ctrl-C "
        "stops waiting; that process writes the report when it is done)",
    ]
    assert len(read_records(out / "runs.jsonl")) == 2


def test_a_torn_last_line_is_one_note_and_its_run_is_recovered(tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    _compare(out, FakeRun(), seeds=(0,))
    runs = out / "runs.jsonl"
    text = runs.read_text()
    runs.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2])  # killed mid-write
    run = FakeRun()
    monkeypatch.setattr(pipeline, "run", lambda config, resume=None: run(config, resume))
    argv = ["--config", CONFIG, "--methods", "supcon", "dscl", "--seeds", "0", *TINY]
    assert cli.compare_main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr()
    notes = [line for line in printed.out.splitlines() if "note" in line]
    assert notes == [
        f"dscl-compare: note: {runs}: line 2 is not a complete JSON record (cut off "
        "mid-write?): ignored; its run counts as not recorded: a finished one is re-evaluated "
        "from its folder, an unfinished one resumes from its checkpoint, one without a "
        "checkpoint trains again"
    ]
    assert "Traceback" not in printed.err and run.calls == [("dscl", 0, "last")]
    assert [(r["method"], r["seed"]) for r in read_records(runs, note=pytest.fail)] == [
        ("supcon", 0),
        ("dscl", 0),
    ]


def test_out_naming_a_file_is_refused_in_one_line(tmp_path, capsys):
    out = tmp_path / "results.txt"
    out.write_text("not a folder")
    assert cli.compare_main(["--config", CONFIG, "--out", str(out), *TINY]) == 2
    assert capsys.readouterr().err == (
        f"dscl-compare: config error: --out '{out}' is a file: --out must be a folder (of "
        "runs and report).\n"
    )


def test_the_fields_a_run_function_records_join_its_record(tmp_path):
    def run(config, resume):
        return {**FakeRun()(config, resume), "recorded": {"loss_pbsd": 0.25 * config.seed}}

    records = _compare(tmp_path / "cmp", run)
    assert [r["loss_pbsd"] for r in records] == [0.0, 0.0, 0.25, 0.25]
    assert [r["loss_pbsd"] for r in read_records(tmp_path / "cmp" / "runs.jsonl")] == [
        0.0, 0.0, 0.25, 0.25]  # fmt: skip


@pytest.mark.slow
def test_the_long_tail_family_runs_paired_on_one_config_with_a_row_per_method(tmp_path, capsys):
    methods = ["supcon", "kcl", "tsc", "bcl", "paco", "dscl"]
    out = tmp_path / "family"
    argv = ["--config", "dscl_digits_lt", "--methods", *methods, "--seeds", "0"]
    assert cli.compare_main([*argv, "--out", str(out), *TINY, "trainer.epochs=1"]) == 0
    records = read_records(out / "runs.jsonl")
    assert sorted(r["method"] for r in records) == sorted(methods)
    report = (out / "report.md").read_text()
    for label in ("SupCon", "KCL", "TSC", "BCL", "PaCo", "DSCL"):
        assert f"| {label} | 1 |" in report  # a row per method in the summary table
    own = {r["method"] for r in records if r["own_classifier"]}
    assert own == {"bcl", "paco"}
    assert "| BCL's own classifier | 1 |" in report and "| PaCo's own classifier | 1 |" in report
