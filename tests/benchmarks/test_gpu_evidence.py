"""benchmarks/gpu_evidence.py: resume from a JSONL, the budget (not started / killed), the
side-by-side decision, the per-method overrides and the summary table (stand-in workers);
the real flow in the slow `--device cpu --quick` smoke run."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dscl_plugin.training.config import load_config

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.fixture(scope="module")
def ev(import_benchmark):
    return import_benchmark("gpu_evidence")


def _run(ev, method, seed, epochs, overall, **extra):
    return {
        "dataset": ev.DATASET, "imbalance_factor": ev.RHO, "method": method, "seed": seed,
        "overall": overall, "many": overall + 0.1, "medium": overall, "few": overall - 0.1,
        "knn_p1": overall, "class_counts": [6000, 60], "seconds": 10.0, "epochs": epochs,
        "epochs_per_second": 1.0, "concurrency": 1, "gpu": "stand-in",
        "sweep_key": "trainer.epochs", "sweep_value": str(epochs), **extra,
    }  # fmt: skip


def _stand_in(ev, monkeypatch, started, sleeps=None, overall=None):
    """Workers.start: a process that appends a made-up run (after ``sleeps[method]`` s)."""
    sleeps, overall = sleeps or {}, overall or {}

    def start(self, job):
        started.append((job.method, job.seed))
        run = _run(ev, job.method, job.seed, 50, overall.get(job.method, 0.5), **job.context)
        code = (f"import time; time.sleep({sleeps.get(job.method, 0)}); "
                f"open({job.record!r}, 'a').write({json.dumps(run)!r} + '\\n')")  # fmt: skip
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)

    monkeypatch.setattr(ev.Workers, "start", start)


def _fixed_calibration(ev, monkeypatch, step_s, concurrency=3):
    def calibrate(args, workers, overrides, deadline):
        calibrate.calls += 1
        return {
            "concurrency": concurrency,
            "side_step_s": step_s,
            "alone_step_s": step_s,
        }

    calibrate.calls = 0
    monkeypatch.setattr(ev, "calibrate", calibrate)
    return calibrate


def test_resume_skips_the_runs_done_and_continues_with_the_next_seeds(
    ev, tmp_path, monkeypatch, capsys
):
    committed = tmp_path / "committed.jsonl"
    seed0 = {"supcon": 0.60, "dscl": 0.65, "dscl_pbsd": 0.70}
    committed.write_text(
        "".join(json.dumps(_run(ev, m, 0, 50, v)) + "\n" for m, v in seed0.items())
        + json.dumps(_run(ev, "supcon", 1, 200, 0.9))
        + "\n"
    )  # another schedule
    started = []
    _stand_in(
        ev,
        monkeypatch,
        started,
        overall={"supcon": 0.62, "dscl": 0.70, "dscl_pbsd": 0.71},
    )
    calibrate = _fixed_calibration(ev, monkeypatch, {m: 0.001 for m in seed0})
    out = tmp_path / "out"
    argv = [
        str(out),
        "--device",
        "cpu",
        "--epochs",
        "50",
        "--seeds",
        "0",
        "1",
        "--budget",
        "120",
    ]
    assert ev.main(argv + ["--resume", str(committed)]) == 0
    assert started == [("supcon", 1), ("dscl", 1), ("dscl_pbsd", 1)]  # seed 0 was done
    runs = [json.loads(line) for line in (out / ev.RUNS_FILE).read_text().splitlines()]
    assert len(runs) == 4 + 3 and {r["seed"] for r in runs if r["epochs"] == 50} == {
        0,
        1,
    }
    assert all(r["concurrency"] == 3 and r["data_pipeline"] == "device" for r in runs[4:])
    printed = capsys.readouterr().out
    # DSCL - SupCon per seed: +5.0 and +8.0 points -> +6.5 ± 2.1
    assert "| DSCL − SupCon (paired) | 2 | +6.5 ± 2.1 |" in printed
    assert "| SupCon | 2 | 61.0 ± 1.4 |" in printed and "| SupCon | 1 | 90.0 |" in printed
    summary = json.loads((out / ev.SUMMARY_FILE).read_text())
    assert set(summary["tables"]) == {"50", "200"}
    assert summary["status"]["finished"] == [
        "supcon seed 1",
        "dscl seed 1",
        "dscl_pbsd seed 1",
    ]
    # a second call with the same OUT has nothing left to run: no timing, no run
    started.clear()
    assert ev.main(argv) == 0
    assert started == [] and calibrate.calls == 1
    assert len((out / ev.RUNS_FILE).read_text().splitlines()) == 7


def test_a_run_that_cannot_finish_is_not_started_and_one_past_the_deadline_is_killed(
    ev, tmp_path, monkeypatch, capsys
):
    started = []
    _stand_in(ev, monkeypatch, started, sleeps={"dscl": 60})
    monkeypatch.setitem(ev.OVERHEAD_S, "cpu", 0.5)
    # predicted: 0.5 s + 58 steps x seconds per step; the budget is 4 s
    _fixed_calibration(ev, monkeypatch, {"supcon": 0.01, "dscl": 0.01, "dscl_pbsd": 1.0})
    out = tmp_path / "out"
    argv = [
        str(out),
        "--device",
        "cpu",
        "--epochs",
        "1",
        "--seeds",
        "0",
        "--budget",
        "4",
    ]
    assert ev.main(argv) == 0
    assert started == [("supcon", 0), ("dscl", 0)]
    status = json.loads((out / ev.SUMMARY_FILE).read_text())["status"]
    assert status == {"finished": ["supcon seed 0"], "failed": [], "killed": ["dscl seed 0"],
                      "not_started": ["dscl_pbsd seed 0"]}  # fmt: skip
    assert "killed: dscl seed 0" in capsys.readouterr().out
    assert [json.loads(x)["method"] for x in (out / ev.RUNS_FILE).read_text().splitlines()] == [
        "supcon"
    ]


@pytest.mark.parametrize("side_step, chosen", [(2.5, 3), (3.5, 1)])
def test_runs_go_side_by_side_only_when_that_does_more_work_per_second(
    ev, tmp_path, monkeypatch, side_step, chosen
):
    """Alone: SupCon and DSCL 1 s per step, DSCL+PBSD 2 s; side by side each takes
    ``side_step`` (x2 for PBSD): 3 x (1/2.5) = 1.2 > 1.1 alone-seconds per second, but
    3 x (1/3.5) = 0.86 < 1."""
    alone = {"supcon": 1.0, "dscl": 1.0, "dscl_pbsd": 2.0}

    def start(self, job):
        if job.parties == 1:
            seconds = {m: alone[m] for m, _ in job.probe_methods}
        else:
            seconds = {m: side_step * alone[m] for m, _ in job.probe_methods}
        code = f"open({job.result!r}, 'w').write({json.dumps(seconds)!r})"
        return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)

    monkeypatch.setattr(ev.Workers, "start", start)
    args = ev._parse_args([str(tmp_path), "--device", "cpu"])
    with open(tmp_path / "log", "w") as log:
        result = ev.calibrate(args, ev.Workers(args, log),
                              {m: [] for m in args.methods}, deadline=float("inf"))  # fmt: skip
    assert result["concurrency"] == chosen
    assert result["alone_step_s"] == alone
    assert result["side_step_s"] == {m: side_step * alone[m] for m in alone}
    assert ev.predicted_seconds(args, "dscl_pbsd", result, {}) == pytest.approx(
        ev.OVERHEAD_S["cpu"] + 200 * ev.STEPS_PER_EPOCH * (2.0 if chosen == 1 else 2 * side_step)
    )
    assert ev.predicted_seconds(args, "dscl_pbsd", result, {"dscl_pbsd": 7.0}) == 7.0


def test_each_method_trains_the_gpu_recipe_with_its_own_overrides(ev, tmp_path):
    args = ev._parse_args([str(tmp_path), "--epochs", "50"])
    configs = {
        m: load_config(ev.CONFIG, ev.run_overrides(args, m, 3, "loader", 5))
        for m in ev.lta.MAIN_METHODS
    }
    for config in configs.values():
        assert (config.seed, config.trainer.epochs, config.optim.warmup_epochs) == (
            3,
            50,
            2,
        )
        assert config.trainer.precision == "bf16-mixed" and config.trainer.num_workers == 5
        assert (config.model.backbone, config.data.input_size, config.model.patch_size) == (
            "resnet18", 32, 16)  # fmt: skip
    assert configs["supcon"].method == "supcon" and configs["supcon"].model.beta is None
    assert configs["dscl"].method == "dscl" and configs["dscl"].model.pbsd_weight == 0
    assert configs["dscl_pbsd"].model.pbsd_weight == 1.5
    assert "data.pipeline=device" in ev.run_overrides(args, "dscl", 0, "device", 5)
    cpu = ev._parse_args([str(tmp_path), "--device", "cpu"])
    assert "trainer.accelerator=cpu" in ev.run_overrides(cpu, "dscl", 0, "loader", 0)


@pytest.mark.parametrize(
    "argv, message",
    [(["--budget", "0"], "--budget must be > 0"), (["--epochs", "0"], "--epochs must be >= 1"),
     (["--concurrency", "two"], "--concurrency must be 'auto'"),
     (["--resume", "/no/such.jsonl"], "--resume: no file")],
)  # fmt: skip
def test_bad_arguments_name_the_option(ev, tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as error:
        ev._parse_args([str(tmp_path)] + argv)
    assert error.value.code == 2 and message in capsys.readouterr().err


def test_cuda_run_without_a_gpu_stops_at_once(ev, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert ev.main([str(tmp_path / "out"), "--budget", "1"]) == 2
    assert "--device cpu --quick" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.skipif(
    not FASHION_MNIST.is_dir(), reason="needs apt-get install dataset-fashion-mnist"
)
def test_quick_cpu_run_records_every_method(ev, tmp_path):
    out = tmp_path / "out"
    argv = [str(out), "--device", "cpu", "--quick", "--concurrency", "1", "--seeds", "0",
            "--data-root", str(FASHION_MNIST), "--budget", "1200"]  # fmt: skip
    assert ev.main(argv) == 0
    runs = [json.loads(x) for x in (out / ev.RUNS_FILE).read_text().splitlines()]
    assert [r["method"] for r in runs] == ev.lta.MAIN_METHODS  # one at a time, in order
    for run in runs:
        assert run["epochs"] == 1 and run["gpu"] is None and run["data_pipeline"] == "device"
        assert 0 <= run["few"] <= 1 and 0 <= run["knn_p1"] <= 1 and run["epochs_per_second"] > 0
