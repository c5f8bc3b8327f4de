"""The performance blocks: step times per precision and method, the train step and its
FLOPs, the loss speed, the import cost, the monitor's cost, the PBSD diagnostics, the data
pipeline's rates and epochs, and the README's quick-start output and set-up timings."""

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import pbsd_diagnostics
from benchmarks.reporting import markdown_table
from dscl_plugin.evaluation.reports import format_metrics_table
from tools.render_docs.results import (
    Render,
    load_note,
    load_start,
    pick_columns,
    read_csv,
    read_json,
    settings,
    sidecar,
    source,
    value_range,
)


def precision(name: str) -> Render:
    """train_step.py --precisions rows: step time per precision and method."""

    def render(root: Path) -> str:
        data = read_json(root, name) if name.endswith(".json") else {"rows": read_csv(root, name)}
        rows = data["rows"]
        columns = {
            "precision": "precision", "method": "method", "B": "B", "L": "L", "K": "K",
            "step_ms": "step ms", "images_per_s": "img/s", "speedup": "speed vs fp32",
            "x_supcon": "× SupCon", "peak_mib": "peak MiB",
        }  # fmt: skip
        ratio = "; ".join(
            f"{p} {value_range(v, '.1f')}× the fp32 step time"
            for p, v in step_time_ratios(rows).items()
        )
        meta = sidecar(root, name) | settings(data)
        return "\n\n".join(
            [
                markdown_table(pick_columns(rows, columns)),
                f"Same method against fp32: {ratio}.",
                source([name], meta, timed=True),
            ]
        )

    return render


def step_time_ratios(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[float]]:
    """Per precision but the first row's (fp32), each method's step time over its step
    time in that precision (the step times as measured: the rows' ``speedup`` is rounded)."""
    first = rows[0]["precision"]
    base = {(r["setting"], r["method"]): r["step_ms"] for r in rows if r["precision"] == first}
    ratios: dict[str, list[float]] = {}
    for r in rows:
        if r["precision"] != first:
            ratios.setdefault(r["precision"], []).append(
                r["step_ms"] / base[(r["setting"], r["method"])]
            )
    return ratios


def recipe_steps(root: Path) -> str:
    """The first steps of the Fashion-MNIST-LT recipe per precision (dscl-train)."""
    name = "precision_fashion_mnist_lt_runs.json"
    data = read_json(root, name)
    steps = data["first_steps"]
    rows = [
        {
            "run": i + 1,
            "precision": r["precision"],
            "s per step (steps 1-3)": ", ".join(str(s) for s in r["step_s"]),
            "steps/s": r["steps_per_s"],
            "one epoch (116 steps) at that rate": f"{116 / r['steps_per_s'] / 60:.0f} min",
            "run wall incl. start-up": f"{r['wall_s_incl_startup']} s",
            "loss, steps 1-3": ", ".join(str(v) for v in r["loss_step"]),
        }
        for i, r in enumerate(steps["runs"])
    ]
    medians = [statistics.median(r["step_s"]) for r in steps["runs"]]
    pairs = ", ".join(
        f"runs {i + 1}–{i + 2} {medians[i + 1] / medians[i]:.1f}×"
        for i in range(0, len(medians) - 1, 2)
    )
    stopped = data["runs"][0]
    meta = sidecar(root, name) | {"commit": steps["commit"], "command": steps["command"]}
    return "\n\n".join(
        [
            markdown_table(rows),
            f"Median seconds per step, bf16 over the fp32 run before it: {pairs}. "
            f"The whole bf16 run (`{stopped['command']}`, commit `{data['commit'][:7]}`) was "
            f"{stopped['status']}: {stopped['steps_per_s']} steps/s, "
            f"{stopped['wall_s']:.0f} s of wall time.",
            source([name], meta, timed=True),
        ]
    )


def train_step(root: Path) -> str:
    name = "train_step.json"
    data = read_json(root, name)
    columns = {
        "setting": "setting", "method": "method", "B": "B", "L": "L", "images_per_s": "img/s",
        "step_ms": "step ms", "x_supcon": "× SupCon", "online_fwd_bwd_ms": "online fwd/bwd",
        "ema_fwd_ms": "EMA fwd", "patch_fwd_bwd_ms": "patch fwd/bwd",
        "patch_separate_ms": "L separate passes", "peak_mib": "peak MiB",
        "gflop_per_image": "GFLOP/image",
    }  # fmt: skip
    notes = []
    for setting in dict.fromkeys(r["setting"] for r in data["rows"]):
        rows = {r["method"]: r for r in data["rows"] if r["setting"] == setting}
        pbsd = rows["dscl_pbsd"]
        dscl = rows["dscl"]["x_supcon"]
        notes.append(
            f"{setting}: DSCL {dscl}× SupCon's step (target ≤ 1.05×: "
            f"{'met' if dscl <= 1.05 else 'missed'}), DSCL+PBSD {pbsd['x_supcon']}× (target "
            f"≤ 2.0×: {'met' if pbsd['x_supcon'] <= 2.0 else 'missed'}); the batched patch pass "
            f"{pbsd['patch_separate_ms'] / pbsd['patch_fwd_bwd_ms']:.2f}× as fast as L "
            f"separate passes"
        )
    return "\n\n".join(
        [
            markdown_table(pick_columns(data["rows"], columns)),
            "Times in ms, medians over the rounds. " + "; ".join(notes) + ".",
            source([name], settings(data), timed=True),
        ]
    )


def flops(root: Path) -> str:
    """FLOPs per image against step time, for the GPU sizing estimate."""
    data = read_json(root, "train_step.json")
    rows = {r["method"]: r for r in data["rows"] if r["setting"] == "resnet18_32px"}
    supcon, dscl, pbsd = (rows[m] for m in ("supcon", "dscl", "dscl_pbsd"))
    return (
        f"FLOPs of one `resnet18_32px` training step (B {supcon['B']}, L {pbsd['L']} patches, "
        f"K {supcon['K']}), counted by `FlopCounterMode`: SupCon "
        f"{supcon['gflop_per_image']:.2f}, DSCL {dscl['gflop_per_image']:.2f}, DSCL+PBSD "
        f"{pbsd['gflop_per_image']:.2f} GFLOP per image, a DSCL+PBSD / SupCon ratio of "
        f"{pbsd['gflop_per_image'] / supcon['gflop_per_image']:.2f}; the CPU step times of the "
        f"same run give {pbsd['x_supcon']}× ({load_note(settings(data))}). "
        + source(["train_step.json"], settings(data))
    )


def loss_speed(root: Path) -> str:
    name = "loss_speed.json"
    data = read_json(root, name)
    columns = {
        "B": "B", "K": "K", "dscl_ms": "DSCL ms", "pml_ms": "PML SupCon ms",
        "floor_ms": "matmul floor ms", "dscl/pml": "DSCL / PML", "dscl/floor": "DSCL / floor",
        "pml/floor": "PML / floor", "dscl_peak_mib": "DSCL peak MiB",
        "pml_peak_mib": "PML peak MiB",
    }  # fmt: skip
    rows = data["rows"]
    ratio = [r["dscl/pml"] for r in rows]
    floor = [r["dscl/floor"] for r in rows]
    largest = max(rows, key=lambda r: (r["B"], r["K"]))
    return "\n\n".join(
        [
            markdown_table(pick_columns(rows, columns)),
            f"DSCL / PML SupCon {min(ratio)}–{max(ratio)} (target ≤ 1: "
            f"{'met' if max(ratio) <= 1 else 'missed'}); DSCL / matmul floor "
            f"{min(floor)}–{max(floor)} (target ≤ 3.5: met in {sum(f <= 3.5 for f in floor)} of "
            f"{len(floor)} rows); peak memory at B {largest['B']}, K {largest['K']}: DSCL "
            f"{largest['dscl_peak_mib']} MiB, PML {largest['pml_peak_mib']} MiB. "
            f"D = {rows[0]['D']}, autocast {rows[0]['autocast']}.",
            source([name], settings(data), timed=True),
        ]
    )


def import_time(root: Path) -> str:
    name = "import_time.json"
    data = read_json(root, name)
    cli = data["cli_help"]
    rows = [
        {
            "what": f"`import {data['module']}` after `import {data['baseline']}`",
            "wall s (median)": f"{data['added_median_s']:.3f}",
            "CPU s (median)": f"{data['added_cpu_median_s']:.3f}",
            "samples": data["repeats"],
            "heavy modules imported": ", ".join(data["heavy_modules_imported"]) or "none",
        },
        {
            "what": "`dscl-train --help` (fresh interpreter, start-up excluded)",
            "wall s (median)": f"{cli['wall_median_s']:.2f}",
            "CPU s (median)": f"{cli['cpu_median_s']:.2f}",
            "samples": cli["repeats"],
            "heavy modules imported": ", ".join(cli["heavy_modules_imported"]) or "none",
        },
    ]
    versions = ", ".join(f"{k} {v}" for k, v in data.get("versions", {}).items())
    return "\n\n".join(
        [
            markdown_table(rows),
            f"The baseline itself took {data['baseline_median_s']:.2f} s (median). Target "
            f"≤ {data['target_added_s']} s added: {'met' if data['target_met'] else 'missed'}."
            + (f" Versions: {versions}." if versions else ""),
            source([name], settings(data), timed=True),
        ]
    )


def monitor(root: Path) -> str:
    name = "monitor_cost.json"
    data = read_json(root, name)
    columns = {
        "config": "preset", "steps_per_epoch": "steps / epoch", "bank": "bank (train)",
        "queries": "queries (test)", "knn_k": "k", "epoch_s": "epoch s",
        "monitor_first_s": "monitor s (first)", "monitor_s": "monitor s (later)",
        "monitor_pct_of_epoch": "later % of an epoch", "first_pct_of_epoch": "first %",
    }  # fmt: skip
    return "\n\n".join(
        [markdown_table(pick_columns(data["rows"], columns)), source([name], settings(data), True)]
    )


def pbsd(root: Path) -> str:
    name = "pbsd_diagnostics_fashion_mnist_lt.json"
    data = read_json(root, name)
    return "\n\n".join(
        [
            pbsd_diagnostics.format_table(data["result"]),
            f"Checkpoint: the DSCL+PBSD run of the README's reproduction (`{data['checkpoint']}`).",
            source([name], settings(data)),
        ]
    )


def pipeline_rates(root: Path) -> str:
    name = "data_pipeline.json"
    data = read_json(root, name)
    table = []
    for setting in dict.fromkeys(r["setting"] for r in data["rows"]):
        mine = [r for r in data["rows"] if r["setting"] == setting]
        loader = {r["workers"]: r["images_per_s"] for r in mine if r["path"].startswith("loader")}
        device = next(r for r in mine if r["path"].startswith("device"))
        table.append(
            {"setting": setting, "views (patches)": mine[0]["views"], "batch": mine[0]["batch"]}
            | {f"loader, {w} worker{'' if w == 1 else 's'}": v for w, v in loader.items()}
            | {
                f"device ({device['device'].upper()})": device["images_per_s"],
                "device / best loader": f"{device['images_per_s'] / max(loader.values()):.2f}×",
            }
        )
    meta = sidecar(root, name) | settings(data)
    return "\n\n".join(
        [
            markdown_table(table),
            f"Images/s of both views and all patches. Note in the file: {data['note']}",
            source([name], meta, timed=True),
        ]
    )


def pipeline_epochs(names: Sequence[str]) -> Render:
    def render(root: Path) -> str:
        rows, sources = [], []
        for name in names:
            data = read_json(root, name)
            meta = settings(data)
            walls = {r["pipeline"]: r["stage1_wall_s"] for r in data["rows"]}
            rows.append(
                {
                    "steps": data["rows"][0]["steps"],
                    "loader (1 worker), s": walls["loader"],
                    "device, s": walls["device"],
                    "device time / loader time": f"{walls['device'] / walls['loader']:.2f}",
                    "load (1 min, at the start)": load_start(meta),
                    "commit": f"`{meta['commit'][:7]}`",
                }
            )
            sources.append(source([name], meta, timed=True))
        if len(rows) == 2:  # the difference of two step counts: seconds per step
            steps = rows[0]["steps"] - rows[1]["steps"]
            per_step = {
                key: (rows[0][key] - rows[1][key]) / steps
                for key in ("loader (1 worker), s", "device, s")
            }
            sources.insert(
                0,
                f"Per step, from the difference of the two runs: loader "
                f"{per_step['loader (1 worker), s']:.1f} s, device {per_step['device, s']:.1f} s.",
            )
        return "\n\n".join([markdown_table(rows), *sources])

    return render


def quickstart(root: Path) -> str:
    name = "quickstart_digits_lt.json"
    data = read_json(root, name)
    meta = settings(data)
    table = format_metrics_table({k: data["metrics"][k] for k in ("linear_probe", "knn")})
    return (
        f"```text\n{table}\n```\n"
        + source([name], meta, timed=True)
        + f" The whole run took {meta['wall_seconds']:.0f} s."
    )


def setup(root: Path) -> str:
    name = "setup_timing.json"
    data = read_json(root, name)
    rows = [
        {
            "step": f"`{s['command']}`",
            "time": f"{s['seconds'] // 60:.0f} min {s['seconds'] % 60:.0f} s"
            if s["seconds"] >= 60
            else f"{s['seconds']:.0f} s",
            "exit": s["exit_code"],
        }
        for s in data["steps"]
    ]
    meta = settings(data)
    return "\n\n".join(
        [
            markdown_table(rows),
            f"A fresh clone and venv ({data['python']}), the commands above but the CPU-wheel "
            "line (its index is not reachable there): `pip install -e .` took torch's default "
            f"wheels, and the venv then held {data['venv_size_gb']:.1f} GB. "
            + source([name], meta, timed=True),
        ]
    )
