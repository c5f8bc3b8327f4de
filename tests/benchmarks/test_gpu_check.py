"""benchmarks/gpu_check.py: stage orchestration, time budget, merging and the PASS/MISS table
(with stand-in stages; the real stages run in `gpu_check.py --device cpu`, the smoke run)."""

import csv
import json
import sys

import pytest
import torch

from benchmarks import gpu_check, train_step

LOSS_ROW = {
    "device": "cuda", "autocast": "none", "B": 256, "K": 4096, "D": 128, "dscl_ms": 1.0,
    "pml_ms": 2.0, "floor_ms": 0.5, "dscl/pml": 0.5, "dscl/floor": 2.0, "pml/floor": 4.0,
    "dscl_peak_mib": 30.0, "pml_peak_mib": 20.0,
}  # fmt: skip


def _train_rows(channels_last, ratios):
    return [
        {"setting": "resnet50_224px", "autocast": "bf16", "channels_last": channels_last,
         "method": method, "B": 64, "L": 5 if method == "dscl_pbsd" else 0,
         "x_supcon": ratio, "step_ms": (90.0 if channels_last else 100.0) + i}
        for i, (method, ratio) in enumerate(zip(("supcon", "dscl", "dscl_pbsd"), ratios))
    ]  # fmt: skip


def test_summary_rows_judge_every_target():
    tests = {"passed": 10, "failed": 0, "skipped": 2}
    train = _train_rows(False, (1.0, 1.04, 1.7)) + _train_rows(True, (1.0, 1.1, 1.5))
    rows = gpu_check.summary_rows(tests, [LOSS_ROW], train)
    got = {(r["check"], r["setting"]): (r["value"], r["result"]) for r in rows}
    assert got[("tests", "test_accelerators.py")] == (
        "10 passed, 0 failed, 2 skipped",
        "PASS",
    )
    loss = "none B=256 K=4096 D=128"
    assert got[("loss time / matmul floor", loss)] == (2.0, "PASS")
    assert got[("loss time / PML SupCon", loss)] == (0.5, "PASS")
    assert got[("loss peak memory / PML", loss)] == (1.5, "MISS")  # 30 MiB vs 20 MiB
    nchw, last = (
        "resnet50_224px bf16 NCHW B=64 L=5",
        "resnet50_224px bf16 channels_last B=64 L=5",
    )
    assert got[("train step DSCL / SupCon", nchw)] == (1.04, "PASS")
    assert got[("train step DSCL+PBSD / SupCon", nchw)] == (1.7, "MISS")
    assert got[("train step DSCL / SupCon", last)] == (1.1, "MISS")
    assert got[("train step DSCL+PBSD / SupCon", last)] == (1.5, "PASS")
    assert got[("channels_last / NCHW step time", "dscl")] == (0.9, "info")
    failed = gpu_check.summary_rows({"passed": 3, "failed": 1, "skipped": 0}, [], [])
    assert failed[0]["result"] == "MISS"
    assert gpu_check.summary_rows(None, [], [])[0]["result"] == "n/a"


def test_main_runs_stages_merges_results_and_kills_a_stage_past_its_share(
    tmp_path, monkeypatch, capsys
):
    junit = (
        '<testsuites><testsuite tests="5" failures="0" errors="0" skipped="2">'
        "</testsuite></testsuites>"
    )

    def writer(path, content):
        return [sys.executable, "-c", f"open({str(path)!r}, 'w').write({content!r})"]

    def commands(device, tmp):
        assert device == "cpu"
        loss_bf16 = dict(LOSS_ROW, autocast="bf16", **{"dscl/pml": 0.9})
        return {
            "tests": writer(tmp / "pytest.xml", junit),
            "loss_speed_float32": writer(tmp / "loss_none.json", json.dumps([LOSS_ROW])),
            "loss_speed_bf16": writer(tmp / "loss_bf16.json", json.dumps([loss_bf16])),
            "train_step_nchw": writer(
                tmp / "train_nchw.json", json.dumps(_train_rows(False, (1.0, 1.0, 1.2)))
            ),
            "train_step_channels_last": [
                sys.executable,
                "-c",
                "import time; time.sleep(60)",
            ],
        }

    monkeypatch.setattr(gpu_check, "_commands", commands)
    # the sleeping stage first, with 1/41 of the 40 s budget; the others share the rest
    stages = [("train_step_channels_last", 0.1)]
    stages += [(name, 1.0) for name, _ in gpu_check.STAGES if name != stages[0][0]]
    monkeypatch.setattr(gpu_check, "STAGES", tuple(stages))
    out = tmp_path / "out"
    assert gpu_check.main([str(out), "--device", "cpu", "--budget", "40"]) == 1
    printed = capsys.readouterr().out
    assert "train_step_channels_last timeout" in printed and "loss_speed_bf16 ok" in printed
    assert "| loss time / PML SupCon | bf16 B=256 K=4096 D=128 | 0.9 | <= 0.7 | MISS |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["tests"] == "ok"
    assert summary["stages"]["train_step_channels_last"].startswith("timeout")
    assert len(summary["loss_speed"]) == 2 and len(summary["train_step"]) == 3
    with open(out / "summary.csv") as f:
        assert len(list(csv.DictReader(f))) == 1 + 2 * 3 + 2  # tests, 2 loss rows, 1 layout
    assert (out / "pytest.xml").is_file() and (out / "gpu_check.log").is_file()
    assert {p.name for p in out.iterdir()} <= {
        "summary.json", "summary.csv", "loss_speed.csv", "train_step.csv", "pytest.xml",
        "gpu_check.log",
    }  # fmt: skip


def test_cuda_run_without_a_gpu_stops_at_once(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert gpu_check.main([str(tmp_path / "out"), "--budget", "1"]) == 2
    assert "use --device cpu" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_train_step_parts_run_under_bf16_autocast_in_channels_last():
    """The flags gpu_check passes to train_step.py, on a tiny ResNet-18 setting."""
    args = train_step._parse_args(
        ["--batch-size", "2", "--num-patches", "2", "--queue-size", "8", "--threads", "1",
         "--setting", "resnet18_32px", "--autocast", "bf16", "--channels-last", "--device", "cpu"]
    )  # fmt: skip
    bench = train_step._Bench("dscl_pbsd", "resnet18_32px", args)
    assert bench.view_q.is_contiguous(memory_format=torch.channels_last)
    conv = bench.model.backbone[0].weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    for part in bench.parts().values():
        part()
    assert bench.ema_forward().dtype == torch.bfloat16  # the encoders run under autocast
    assert conv.grad is not None and conv.grad.dtype == torch.float32
    assert int(bench.model.memory_bank.num_filled) == 8
