"""benchmarks/gpu_evidence.py: resume from a JSONL, the budget (not started / killed), the
side-by-side decision, the per-method configs and the summary table (stand-in workers);
the real flow, through dscl-compare's engine, in the slow `--device cpu --quick` run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import gpu_evidence as ev
from benchmarks import gpu_workers
from dscl_plugin.runs.compare import RUNS_FILE, plan_runs
from dscl_plugin.runs.variants import VARIANTS

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
METHODS = list(VARIANTS)


def _record(method, seed, epochs, overall, **extra):
    return {
        "method": method, "seed": seed, "dataset": "fashion_mnist_lt", "imbalance_factor": 100.0,
        "overall": overall, "many": overall + 0.1, "medium": overall, "few": overall - 0.1,
        "knn_p1": overall, "class_counts": [6000, 60], "seconds": 10.0, "epochs": epochs,
        "epochs_per_second": 1.0, "concurrency": 1, "gpu": "stand-in", "data_pipeline": "device",
        **extra,
    }  # fmt: skip


def _stand_in(monkeypatch, started, sleeps=None, overall=None):
    """Workers.start: a process that records a made-up run of the job's engine folder
    (after ``sleeps[method]`` s)."""
    sleeps, overall = sleeps or {}, overall or {}

    def start(self, job):
        started.append((job.method, job.seed))
        record = _record(job.method, job.seed, 50, overall.get(job.method, 0.5), **job.context)
        Path(job.folder).mkdir(parents=True, exist_ok=True)  # as the engine does
        runs = str(Path(job.folder) / RUNS_FILE)
        code = (f"import time; time.sleep({sleeps.get(job.method, 0)}); "
                f"open({runs!r}, 'a').write({json.dumps(record)!r} + '\\n')")  # fmt: skip
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)

    monkeypatch.setattr(ev.Workers, "start", start)


def _fixed_calibration(monkeypatch, step_s, concurrency=3):
    def calibrate(args, workers, overrides, deadline):
        calibrate.calls += 1
        return {"concurrency": concurrency, "side_step_s": step_s, "alone_step_s": step_s}

    calibrate.calls = 0
    monkeypatch.setattr(ev, "calibrate", calibrate)
    return calibrate


def _argv(out, tmp_path, *extra):
    return [str(out), "--device", "cpu", "--work", str(tmp_path / "work"), *extra]


def test_resume_skips_the_runs_done_and_continues_with_the_next_seeds(
    tmp_path, monkeypatch, capsys
):
    committed = tmp_path / "committed.jsonl"
    seed0 = {"supcon": 0.60, "dscl": 0.65, "dscl_pbsd": 0.70}
    lines = [_record(m, 0, 50, v) for m, v in seed0.items()] + [_record("supcon", 1, 200, 0.9)]
    committed.write_text("".join(json.dumps(r) + "\n" for r in lines))  # + another schedule
    started = []
    _stand_in(monkeypatch, started, overall={"supcon": 0.62, "dscl": 0.70, "dscl_pbsd": 0.71})
    calibrate = _fixed_calibration(monkeypatch, {m: 0.001 for m in seed0})
    out = tmp_path / "out"
    argv = _argv(out, tmp_path, "--epochs", "50", "--seeds", "0", "1", "--budget", "120")
    assert ev.main(argv + ["--resume", str(committed)]) == 0
    assert started == [("supcon", 1), ("dscl", 1), ("dscl_pbsd", 1)]  # seed 0 was done
    assert sorted(p.parent.name for p in (tmp_path / "work").glob(f"*/{RUNS_FILE}")) == [
        "200ep_device", "50ep_device"]  # fmt: skip
    runs = [json.loads(line) for line in (out / ev.RECORDS_FILE).read_text().splitlines()]
    assert len(runs) == 4 + 3 and {r["seed"] for r in runs if r["epochs"] == 50} == {0, 1}
    assert sum(r.get("concurrency") == 3 and r["data_pipeline"] == "device" for r in runs) == 3
    printed = capsys.readouterr().out
    # DSCL - SupCon per seed: +5.0 and +8.0 points -> +6.5 ± 2.1
    assert "| DSCL − SupCon (paired) | 2 | +6.5 ± 2.1 |" in printed
    assert "| SupCon | 2 | 61.0 ± 1.4 |" in printed and "| SupCon | 1 | 90.0 |" in printed
    summary = json.loads((out / ev.SUMMARY_FILE).read_text())
    assert set(summary["tables"]) == {"50ep_device", "200ep_device"}
    assert summary["status"]["finished"] == ["supcon seed 1", "dscl seed 1", "dscl_pbsd seed 1"]
    # a second call with the same work folder has nothing left to run: no timing, no run
    started.clear()
    assert ev.main(argv) == 0
    assert started == [] and calibrate.calls == 1
    assert len((out / ev.RECORDS_FILE).read_text().splitlines()) == 7


def test_a_run_that_cannot_finish_is_not_started_and_one_past_the_deadline_is_killed(
    tmp_path, monkeypatch, capsys
):
    started = []
    _stand_in(monkeypatch, started, sleeps={"dscl": 60})
    monkeypatch.setitem(ev.OVERHEAD_S, "cpu", 0.5)
    # predicted: 0.5 s + 58 steps x seconds per step; the budget is 4 s
    _fixed_calibration(monkeypatch, {"supcon": 0.01, "dscl": 0.01, "dscl_pbsd": 1.0})
    out = tmp_path / "out"
    assert ev.main(_argv(out, tmp_path, "--epochs", "1", "--seeds", "0", "--budget", "4")) == 0
    assert started == [("supcon", 0), ("dscl", 0)]
    status = json.loads((out / ev.SUMMARY_FILE).read_text())["status"]
    assert status == {"finished": ["supcon seed 0"], "failed": [], "killed": ["dscl seed 0"],
                      "not_started": ["dscl_pbsd seed 0"]}  # fmt: skip
    assert "killed: dscl seed 0" in capsys.readouterr().out
    records = (out / ev.RECORDS_FILE).read_text().splitlines()
    assert [json.loads(x)["method"] for x in records] == ["supcon"]


def test_the_records_of_quick_runs_stay_out_of_a_real_runs_file(tmp_path):
    for name, seed in (("50ep_device", 0), ("1ep_device_quick", 1)):
        (tmp_path / name).mkdir()
        (tmp_path / name / RUNS_FILE).write_text(json.dumps(_record("dscl", seed, 50, 0.5)) + "\n")
    assert list(ev.recorded(tmp_path, quick=False)) == ["50ep_device"]
    assert list(ev.recorded(tmp_path, quick=True)) == ["1ep_device_quick"]


@pytest.mark.parametrize("side_step, chosen", [(2.5, 3), (3.5, 1)])
def test_runs_go_side_by_side_only_when_that_does_more_work_per_second(
    tmp_path, monkeypatch, side_step, chosen
):
    """Alone: SupCon and DSCL 1 s per step, DSCL+PBSD 2 s; side by side each takes
    ``side_step`` (x2 for PBSD): 3 x (1/2.5) = 1.2 > 1.1 alone-seconds per second, but
    3 x (1/3.5) = 0.86 < 1."""
    alone = {"supcon": 1.0, "dscl": 1.0, "dscl_pbsd": 2.0}

    def start(self, job):
        factor = 1.0 if job.parties == 1 else side_step
        seconds = {m: factor * alone[m] for m, _ in job.probe_methods}
        code = f"open({job.result!r}, 'w').write({json.dumps(seconds)!r})"
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)

    monkeypatch.setattr(gpu_workers.Workers, "start", start)
    args = ev._parse_args([str(tmp_path), "--device", "cpu"])
    with open(tmp_path / "log", "w") as log:
        workers = gpu_workers.Workers(args.out_dir, log)
        result = gpu_workers.calibrate(args, workers, {m: [] for m in METHODS}, float("inf"))
    assert result["concurrency"] == chosen
    assert result["alone_step_s"] == alone
    assert result["side_step_s"] == {m: side_step * alone[m] for m in alone}
    assert ev.predicted_seconds(args, "dscl_pbsd", result, {}) == pytest.approx(
        ev.OVERHEAD_S["cpu"] + 200 * ev.STEPS_PER_EPOCH * (2.0 if chosen == 1 else 2 * side_step)
    )
    assert ev.predicted_seconds(args, "dscl_pbsd", result, {"dscl_pbsd": 7.0}) == 7.0


def test_each_method_trains_the_gpu_recipe_as_its_variant(tmp_path):
    args = ev._parse_args([str(tmp_path), "--epochs", "50", "--data-pipeline", "loader"])
    plan = plan_runs(ev.CONFIG, METHODS, [3], tmp_path, ev.common_overrides(args, 5))
    configs = {p.variant.name: p.config for p in plan}
    for config in configs.values():
        assert (config.seed, config.trainer.epochs, config.optim.warmup_epochs) == (3, 50, 2)
        assert config.trainer.precision == "bf16-mixed" and config.trainer.num_workers == 5
        assert config.data.pipeline == "loader"
        assert (config.model.backbone, config.data.input_size, config.model.patch_size) == (
            "resnet18", 32, 16)  # fmt: skip
    assert configs["supcon"].method == "supcon" and configs["supcon"].model.beta is None
    assert configs["dscl"].method == "dscl" and configs["dscl"].model.pbsd_weight == 0
    assert configs["dscl_pbsd"].model.pbsd_weight == 1.5
    cpu = ev._parse_args([str(tmp_path), "--device", "cpu"])
    assert "trainer.accelerator=cpu" in ev.common_overrides(cpu, 0)
    assert "data.pipeline=device" in ev.common_overrides(cpu, 0)


@pytest.mark.parametrize(
    "argv, message",
    [(["--budget", "0"], "--budget must be > 0"), (["--epochs", "0"], "--epochs must be >= 1"),
     (["--concurrency", "two"], "--concurrency must be 'auto'"),
     (["--resume", "/no/such.jsonl"], "--resume: no file")],
)  # fmt: skip
def test_bad_arguments_name_the_option(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as error:
        ev._parse_args([str(tmp_path)] + argv)
    assert error.value.code == 2 and message in capsys.readouterr().err


def test_a_bad_seed_is_one_line_and_exit_2_before_anything_runs(tmp_path, capsys):
    out = tmp_path / "out"
    assert ev.main(_argv(out, tmp_path, "--seeds", "0", "0")) == 2
    assert "--seeds: [0] given twice" in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


def test_cuda_run_without_a_gpu_stops_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert ev.main([str(tmp_path / "out"), "--budget", "1"]) == 2
    assert "--device cpu --quick" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason="needs apt-get install dataset-fashion-mnist"
)
def test_quick_cpu_run_records_every_method(tmp_path):
    out = tmp_path / "out"
    argv = _argv(out, tmp_path, "--quick", "--concurrency", "1", "--seeds", "0",
                 "--data-root", str(FASHION_MNIST), "--budget", "1200")  # fmt: skip
    assert ev.main(argv) == 0
    runs = [json.loads(x) for x in (out / ev.RECORDS_FILE).read_text().splitlines()]
    assert [r["method"] for r in runs] == METHODS  # one at a time, in order
    for run in runs:
        assert run["epochs"] == 1 and run["gpu"] is None and run["data_pipeline"] == "device"
        assert 0 <= run["few"] <= 1 and 0 <= run["knn_p1"] <= 1 and run["epochs_per_second"] > 0
        assert run["output_dir"] == str(
            tmp_path / "work" / "1ep_device_quick" / run["method"] / "seed0"
        )
    tables = json.loads((out / ev.SUMMARY_FILE).read_text())["tables"]
    assert "| DSCL+PBSD − SupCon (paired) | 1 |" in tables["1ep_device_quick"]
