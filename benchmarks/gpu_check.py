"""The prepared device check: CUDA tests, loss speed and train-step speed, one table.

Stages, each a subprocess with its share of ``--budget`` seconds (time a stage leaves
unused passes to the next ones; a stage past its share is killed and reported):

1. ``pytest tests/test_accelerators.py`` (the CUDA cases run where a GPU is present);
2. ``benchmarks.loss_speed`` at B {256, 1024} x K {4096, 65536}, D 128, in float32
   and under bf16 autocast, with a ``torch.profiler`` table per method and size in the log;
3. ``benchmarks.train_step``: ResNet-50, 224 px views, 5 patches of 64 px, B 64,
   a 65536-key queue, bf16 autocast, in NCHW and in channels-last memory format.

Results go to ``OUT_DIR``: ``summary.json`` (everything), ``summary.csv`` (the targets),
``loss_speed.csv``, ``train_step.csv``, ``pytest.xml`` and ``gpu_check.log`` (every
stage's output). The printed table gives PASS/MISS for every target of issue 10:

- DSCLLoss forward+backward <= 2.5x the three-matmul floor;
- DSCLLoss <= 0.7x PML's SupConLoss on the same candidates, peak memory <= PML's;
- train step: DSCL <= 1.05x SupCon, DSCL+PBSD <= 1.6x SupCon.

``--device cpu`` is a smoke mode that runs every stage with tiny sizes on a CPU (raise
``--budget`` on a busy machine); its ratios say nothing about a GPU. The exit status is 2
without a CUDA device (and no ``--device cpu``), 1 if a stage failed or timed out (tests
included), else 0: a
missed target is a measurement, reported as MISS.

    python -m benchmarks.gpu_check /tmp/gpu_check            # CUDA
    python -m benchmarks.gpu_check /tmp/smoke --device cpu   # smoke test of the script
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from benchmarks.reporting import git_state, markdown_table, module_command, write_csv

REPO = Path(__file__).resolve().parents[1]

# (name, share of the budget)
STAGES = (
    ("tests", 2.0),
    ("loss_speed_float32", 1.0),
    ("loss_speed_bf16", 1.0),
    ("train_step_nchw", 1.5),
    ("train_step_channels_last", 1.5),
)
TARGETS = {
    "dscl/floor": 2.5,
    "dscl/pml": 0.7,
    "dscl_peak/pml_peak": 1.0,
    "dscl/supcon": 1.05,
    "dscl_pbsd/supcon": 1.6,
}


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for the results (created)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for all stages")
    return parser.parse_args(argv)


def _commands(device: str, tmp: Path) -> dict[str, list[str]]:
    """The command of every stage; ``--device cpu`` gets tiny sizes."""
    python = sys.executable
    cuda = device == "cuda"
    tests = [python, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
    tests += [
        f"--junitxml={tmp / 'pytest.xml'}",
        str(REPO / "tests" / "test_accelerators.py"),
    ]
    if not cuda:
        tests += ["-k", "cpu and float32"]  # the smoke run: one precision
    loss = [*module_command("benchmarks.loss_speed"), "--device", device, "--profile"]
    if cuda:
        loss += [
            "--batch-sizes",
            "256",
            "1024",
            "--queue-sizes",
            "4096",
            "65536",
            "--dim",
            "128",
        ]
    else:
        loss += [
            "--batch-sizes",
            "16",
            "--queue-sizes",
            "256",
            "--dim",
            "32",
            "--repeats",
            "5",
        ]
    train = [*module_command("benchmarks.train_step"), "--device", device, "--autocast", "bf16"]
    if cuda:
        train += [
            "--settings",
            "resnet50_224px",
            "--batch-size",
            "64",
            "--num-patches",
            "5",
        ]
        train += ["--queue-size", "65536", "--repeats", "10"]
    else:
        train += [
            "--settings",
            "resnet18_32px",
            "--batch-size",
            "2",
            "--num-patches",
            "2",
        ]
        train += ["--queue-size", "64", "--repeats", "1", "--threads", "1"]
    return {
        "tests": tests,
        "loss_speed_float32": loss + ["--autocast", "none", "--json", str(tmp / "loss_none.json")],
        "loss_speed_bf16": loss + ["--autocast", "bf16", "--json", str(tmp / "loss_bf16.json")],
        "train_step_nchw": train + ["--json", str(tmp / "train_nchw.json")],
        "train_step_channels_last": train
        + ["--channels-last", "--json", str(tmp / "train_cl.json")],
    }


def _run(cmd: list[str], timeout: float, log) -> str:
    """Runs ``cmd`` (and every process it starts) for at most ``timeout`` seconds."""
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        code = proc.wait(timeout=max(timeout, 1.0))
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        return f"timeout after {timeout:.0f} s"
    return "ok" if code == 0 else f"exit {code}"


def _read_json(path: Path) -> list:
    """The rows of a ``--json`` file of loss_speed.py or train_step.py (none if missing)."""
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    return data["rows"] if isinstance(data, dict) else data


def _test_counts(path: Path) -> dict[str, int] | None:
    """passed/failed/skipped counts from pytest's JUnit XML, or None without one."""
    if not path.is_file():
        return None
    suite = ET.parse(path).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    total, failed, errors, skipped = (
        int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")
    )
    passed = total - failed - errors - skipped
    return {"passed": passed, "failed": failed + errors, "skipped": skipped}


def _check(check: str, setting: str, value, limit: float | None) -> dict[str, object]:
    """A summary row; ``value`` is a ratio (PASS if <= ``limit``) or a text."""
    if isinstance(value, float):
        value = round(value, 2)
    target = "" if limit is None else f"<= {limit}"
    if value is None:
        result = "n/a"
    else:
        result = "info" if limit is None else "PASS" if value <= limit else "MISS"
    return dict(check=check, setting=setting, value=value, target=target, result=result)


def summary_rows(
    tests: dict[str, int] | None, loss_rows: list[dict], train_rows: list[dict]
) -> list[dict[str, object]]:
    """One row per checked quantity: ``check, setting, value, target, result``."""
    if tests is None:
        rows = [dict(check="tests", setting="test_accelerators.py", value=None, target="all pass",
                     result="n/a")]  # fmt: skip
    else:
        ok = tests["failed"] == 0 and tests["passed"] > 0
        text = ", ".join(f"{n} {k}" for k, n in tests.items())
        rows = [dict(check="tests", setting="test_accelerators.py", value=text, target="all pass",
                     result="PASS" if ok else "MISS")]  # fmt: skip
    for r in loss_rows:
        setting = f"{r['autocast']} B={r['B']} K={r['K']} D={r['D']}"
        peak = r["dscl_peak_mib"] / r["pml_peak_mib"] if r["pml_peak_mib"] > 0 else None
        rows += [
            _check(
                "loss time / matmul floor",
                setting,
                r["dscl/floor"],
                TARGETS["dscl/floor"],
            ),
            _check("loss time / PML SupCon", setting, r["dscl/pml"], TARGETS["dscl/pml"]),
            _check("loss peak memory / PML", setting, peak, TARGETS["dscl_peak/pml_peak"]),
        ]
    steps = {(r["channels_last"], r["method"]): r for r in train_rows}
    layouts = sorted({r["channels_last"] for r in train_rows})
    for layout in layouts:
        first = steps[(layout, "supcon")]
        name = "channels_last" if layout else "NCHW"
        num_patches = steps[(layout, "dscl_pbsd")]["L"]
        setting = f"{first['setting']} {first['autocast']} {name} B={first['B']} L={num_patches}"
        for method, label in (("dscl", "DSCL"), ("dscl_pbsd", "DSCL+PBSD")):
            ratio = steps[(layout, method)]["x_supcon"]
            rows.append(
                _check(
                    f"train step {label} / SupCon",
                    setting,
                    ratio,
                    TARGETS[f"{method}/supcon"],
                )
            )
    if len(layouts) == 2:  # channels-last pays where this is < 1
        for method in ("supcon", "dscl", "dscl_pbsd"):
            ratio = steps[(True, method)]["step_ms"] / steps[(False, method)]["step_ms"]
            rows.append(_check("channels_last / NCHW step time", method, ratio, None))
    return rows


def _environment(device: str) -> dict[str, object]:
    import torch

    env = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["cuda"] = torch.version.cuda
    env["commit"] = git_state()["commit"]
    return env


def main(argv: Sequence[str]) -> int:
    args = _parse_args(argv)
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                "gpu_check: no CUDA device; use --device cpu for the smoke run",
                file=sys.stderr,
            )
            return 2
    out = args.out_dir
    out.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + args.budget
    status: dict[str, str] = {}
    with (
        tempfile.TemporaryDirectory() as tmp_dir,
        open(out / "gpu_check.log", "w") as log,
    ):
        tmp = Path(tmp_dir)
        commands = _commands(args.device, tmp)
        for i, (stage, share) in enumerate(STAGES):
            remaining_shares = sum(s for _, s in STAGES[i:])
            timeout = (deadline - time.monotonic()) * share / remaining_shares
            started = time.monotonic()
            status[stage] = _run(commands[stage], timeout, log)
            took = time.monotonic() - started
            print(f"{stage}: {status[stage]} ({took:.0f} s)", file=sys.stderr, flush=True)
        if (tmp / "pytest.xml").is_file():
            (out / "pytest.xml").write_bytes((tmp / "pytest.xml").read_bytes())
        tests = _test_counts(tmp / "pytest.xml")
        loss_rows = _read_json(tmp / "loss_none.json") + _read_json(tmp / "loss_bf16.json")
        train_rows = _read_json(tmp / "train_nchw.json") + _read_json(tmp / "train_cl.json")
    rows = summary_rows(tests, loss_rows, train_rows)
    environment = _environment(args.device)
    summary = dict(
        environment=environment,
        stages=status,
        targets=rows,
        loss_speed=loss_rows,
        train_step=train_rows,
    )
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    write_csv(out / "summary.csv", rows)
    write_csv(out / "loss_speed.csv", loss_rows)
    write_csv(out / "train_step.csv", train_rows)
    where = environment.get("gpu", "CPU smoke run: ratios say nothing about a GPU")
    print(f"gpu_check: {where}, torch {environment['torch']}, commit {environment['commit']}")
    print("stages: " + ", ".join(f"{k} {v}" for k, v in status.items()))
    print(markdown_table(rows))
    failed = any(v != "ok" for v in status.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
