"""What ``import dscl_plugin`` costs on top of the libraries it plugs into.

Each sample is a fresh interpreter that imports ``lightly.loss, lightly.models,
lightly.transforms, pytorch_metric_learning.losses`` (the baseline a Lightly or PML
user already pays), then ``dscl_plugin``, timing both with ``time.perf_counter`` (wall)
and ``time.process_time`` (CPU: the fair number on a machine shared with other jobs,
where waiting for a core inflates wall time); it also records whether PyTorch
Lightning, OmegaConf or matplotlib got imported. Reports medians over ``--repeats``
interpreters. Target: <= 0.3 s added.

It also times ``dscl-train --help`` from a fresh interpreter (start of Python to the
printed help, ``--help-repeats`` times; wall and CPU medians) and records the heavy
modules loaded by then (none expected: the CLI imports Lightning and OmegaConf only when
a command runs).

    python -m benchmarks.import_time  # 7 interpreters, writes results/import_time.json

The JSON's ``settings`` hold the command, commit, machine, load average at the start and
the end, and the wall time; ``versions`` the libraries' versions.
    python -m benchmarks.import_time --repeats 3 --module dscl_plugin.training
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from benchmarks.reporting import finish, provenance

ROOT = Path(__file__).resolve().parents[1]
BASELINE = "lightly.loss, lightly.models, lightly.transforms, pytorch_metric_learning.losses"
HEAVY = ("pytorch_lightning", "omegaconf", "matplotlib")
VERSIONED = ("torch", "lightly", "pytorch-metric-learning", "pytorch-lightning")
TARGET_S = 0.3

SAMPLE = """
import json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
import {baseline}
t1, c1 = time.perf_counter(), time.process_time()
import {module}
t2, c2 = time.perf_counter(), time.process_time()
print(json.dumps({{"baseline_s": t1 - t0, "added_s": t2 - t1,
                  "baseline_cpu_s": c1 - c0, "added_cpu_s": c2 - c1,
                  "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""

HELP_SAMPLE = """
import contextlib, io, json, sys, time
t0, c0 = time.perf_counter(), time.process_time()
from dscl_plugin.cli import train_main
with contextlib.redirect_stdout(io.StringIO()):
    try:
        train_main(["--help"])
    except SystemExit:
        pass
print(json.dumps({{"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0,
                  "heavy": sorted(m for m in {heavy!r} if m in sys.modules)}}))
"""


def help_sample() -> dict:
    """One ``dscl-train --help`` in a fresh interpreter (interpreter start-up excluded)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", HELP_SAMPLE.format(heavy=HEAVY)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def sample(module: str) -> dict:
    code = SAMPLE.format(baseline=BASELINE, module=module, heavy=HEAVY)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env=env,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--module", default="dscl_plugin")
    parser.add_argument("--help-repeats", type=int, default=5, help="dscl-train --help samples")
    parser.add_argument(
        "--output",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "import_time.json",
    )
    args = parser.parse_args(argv)
    settings = provenance("python -m benchmarks.import_time", argv)

    samples = [sample(args.module) for _ in range(args.repeats)]
    helps = [help_sample() for _ in range(args.help_repeats)]
    added = statistics.median(s["added_s"] for s in samples)
    added_cpu = statistics.median(s["added_cpu_s"] for s in samples)
    result = {
        "module": args.module,
        "baseline": BASELINE,
        "repeats": args.repeats,
        "baseline_median_s": statistics.median(s["baseline_s"] for s in samples),
        "added_median_s": added,
        "added_all_s": [s["added_s"] for s in samples],
        "baseline_cpu_median_s": statistics.median(s["baseline_cpu_s"] for s in samples),
        "added_cpu_median_s": added_cpu,
        "heavy_modules_imported": samples[0]["heavy"],
        "target_added_s": TARGET_S,
        "target_met": min(added, added_cpu) <= TARGET_S and not samples[0]["heavy"],
        "cli_help": {
            "repeats": args.help_repeats,
            "wall_median_s": statistics.median(h["wall_s"] for h in helps),
            "cpu_median_s": statistics.median(h["cpu_s"] for h in helps),
            "heavy_modules_imported": helps[0]["heavy"],
        },
        "versions": {name: _version(name) for name in VERSIONED},
        "settings": finish(settings),
    }
    print(
        f"| module | baseline wall / CPU s | added wall / CPU s (median of {args.repeats}) "
        f"| heavy imports | target <= {TARGET_S} s |"
    )
    print("|---|---|---|---|---|")
    print(
        f"| {args.module} | {result['baseline_median_s']:.2f} / "
        f"{result['baseline_cpu_median_s']:.2f} | {added:.3f} / {added_cpu:.3f} | "
        f"{', '.join(result['heavy_modules_imported']) or 'none'} | "
        f"{'met' if result['target_met'] else 'missed'} |"
    )
    cli = result["cli_help"]
    print(
        f"\n| dscl-train --help (median of {args.help_repeats}) | wall s | CPU s | heavy imports |"
    )
    print("|---|---|---|---|")
    print(
        f"| import dscl_plugin.cli + parse --help | {cli['wall_median_s']:.2f} | "
        f"{cli['cpu_median_s']:.2f} | {', '.join(cli['heavy_modules_imported']) or 'none'} |"
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
