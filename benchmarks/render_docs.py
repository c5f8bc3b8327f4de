"""Renders the measured tables of README.md and docs/*.md from the committed result files.

Every measured table, with its notes and a ``Source:`` line, sits between two markers:

    <!-- rendered: BLOCK_ID (benchmarks/render_docs.py from benchmarks/results; do not edit) -->
    ...
    <!-- end rendered: BLOCK_ID -->

``BLOCKS`` maps each id to its files under ``benchmarks/results/`` and the function that
renders it with the benchmarks' own table code (:mod:`dscl_plugin.evaluation.comparison`
through ``long_tail_accuracy.py``, ``sweep.py`` and ``dscl_plugin.runs.compare``, and
``reporting.markdown_table``). The ``Source:`` line comes from the file's own metadata (or
its ``<name>.meta.json`` beside it, for files written before the scripts recorded it):
the file, the commit(s), the command, the machine and, where a time is shown, the load.
± is the sample std (n − 1) over seeds; a paired difference inside its ± is a tie
(:func:`dscl_plugin.evaluation.comparison.paired_reading`).

    python benchmarks/render_docs.py            # rewrite every block of every page
    python benchmarks/render_docs.py --check    # exit 1 naming the blocks that differ

A block whose file ``benchmarks/remeasure.sh`` writes (``Block.made_by``) shows what to run
while that file is missing; every other block fails without its files.
"""

import argparse
import csv
import json
import math
import re
import statistics
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import long_tail_accuracy as lta  # noqa: E402  (siblings: benchmarks is not a package)
import pbsd_diagnostics  # noqa: E402
import sweep  # noqa: E402
from reporting import REPO, markdown_table  # noqa: E402

from dscl_plugin.evaluation import comparison  # noqa: E402
from dscl_plugin.evaluation.reports import format_metrics_table  # noqa: E402
from dscl_plugin.runs.compare_report import summary_table  # noqa: E402
from dscl_plugin.runs.variants import VARIANTS  # noqa: E402

RESULTS = "benchmarks/results"
PAGES = ("README.md", "docs/*.md")
BEGIN = "<!-- rendered: {} (benchmarks/render_docs.py from benchmarks/results; do not edit) -->"
END = "<!-- end rendered: {} -->"
MARKERS = re.compile(
    r"<!-- rendered: (?P<id>[\w.-]+) \(.*?\) -->\n(?P<body>.*?)<!-- end rendered: (?P=id) -->",
    re.S,
)
FENCES = re.compile(r"^```.*?^```", re.S | re.M)
SHOTS = lta.SHOTS
STD_NOTE = (
    "± is the sample std (n − 1) over seeds; a paired row is the mean ± std of the per-seed "
    "differences to SupCon, a tie when its mean lies inside its ±."
)
Render = Callable[[Path], str]


@dataclass(frozen=True)
class Block:
    """A rendered block: its result files (relative to the repository) and its renderer;
    ``made_by`` names the ``remeasure.sh`` part that writes the first file."""

    sources: tuple[str, ...]
    render: Render
    made_by: str | None = None


# --- reading result files and their metadata -------------------------------------------


def _json(root: Path, name: str) -> Any:
    return json.loads((root / RESULTS / name).read_text())


def _jsonl(root: Path, name: str) -> list[dict[str, Any]]:
    return lta.read_runs(root / RESULTS / name)


def _csv(root: Path, name: str) -> list[dict[str, Any]]:
    with open(root / RESULTS / name, newline="") as f:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None if text == "" else text


def _sidecar(root: Path, name: str) -> dict[str, Any]:
    """``<name>.meta.json`` beside a result file written before its script recorded
    commit, command, machine or load (empty if there is none)."""
    path = root / RESULTS / (name.rsplit(".", 1)[0] + ".meta.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def _settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata of a result JSON in one shape: ``commit``, ``command``, ``machine``,
    ``load``, ``load_end``, ``wall_seconds`` (missing keys absent)."""
    s = data.get("settings", data)
    found = {
        "commit": s.get("commit") or (s.get("git") or {}).get("commit") or s.get("commits"),
        "command": s.get("command") or s.get("commands"),
        "machine": s.get("machine"),
        "load": s.get("load_average") or s.get("load_average_1_5_15_min") or s.get("load"),
        "load_end": s.get("load_average_end"),
        "wall_seconds": s.get("wall_seconds"),
    }
    return {k: v for k, v in found.items() if v}


def _run_settings(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The metadata of a set of recorded runs (long_tail_accuracy.py, dscl-compare)."""
    commits = [r.get("git_commit") or (r.get("git") or {}).get("commit") for r in runs]
    loads = [r["load_average"][0] for r in runs if r.get("load_average")]
    found = {
        "commit": _by_count(c for c in commits if c),
        "command": _by_count(r["command"] for r in runs if r.get("command")),
        "machine": "; ".join(sorted({r["machine"] for r in runs if r.get("machine")})),
        "load": f"load average {_range(loads, '.1f')} (1 min, as each run started)"
        if loads
        else None,
    }
    return {k: v for k, v in found.items() if v}


def _range(values: Sequence[float], spec: str) -> str:
    """``"a–b"`` of the smallest and largest value, or ``"a"`` when they print alike."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}–{high}"


def _by_count(values: Iterable[str]) -> list[str]:
    return [v for v, _ in Counter(values).most_common()]


def _source(files: Sequence[str], meta: Mapping[str, Any], timed: bool = False) -> str:
    """``Source: `file`; commit …; `command`; machine …; load …`` (load where ``timed``)."""
    commits = meta.get("commit") or []
    commits = [commits] if isinstance(commits, str) else commits
    commands = meta.get("command") or []
    commands = [commands] if isinstance(commands, str) else commands
    parts = [", ".join(f"`{RESULTS}/{f}`" for f in files)]
    parts.append(
        "commit " + ", ".join(f"`{c[:7]}`" for c in commits) if commits else "commit not recorded"
    )
    if commands:
        more = f" (+{len(commands) - 1} more, per run in the file)" if len(commands) > 1 else ""
        parts.append(f"`{commands[0]}`{more}")
    parts.append(meta.get("machine") or "machine not recorded")
    if timed:
        parts.append(_load(meta))
    return "Source: " + "; ".join(parts) + "."


def _load(meta: Mapping[str, Any]) -> str:
    load, end = meta.get("load"), meta.get("load_end")
    if not load:
        return "load not recorded"
    text = load if isinstance(load, str) else f"load average {load[0]:.1f} (1 min) at the start"
    return text + (f", {end[0]:.1f} at the end" if end else "")


def _load_start(meta: Mapping[str, Any]) -> str:
    load = meta.get("load")
    return "not recorded" if not load else load if isinstance(load, str) else f"{load[0]:.1f}"


def _seconds(values: Sequence[float]) -> str:
    low, high = min(values), max(values)
    if high < 120:
        return f"{low:.0f}–{high:.0f} s"
    return f"{low / 60:.0f}–{high / 60:.0f} min"


# --- comparison tables (mean ± std over paired seeds) ------------------------------------


def _paired_notes(
    summary: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]], metrics: Sequence[str]
) -> str:
    """Each method's overall paired difference to SupCon, how it reads and in how many
    seeds it is higher; the other metrics whose difference lies outside its ±; SupCon
    against raw pixels where the table has them."""
    labels = lta.LABELS
    others = [r for r in summary if r.get("paired") and r["method"] != "raw_pixels"]
    overall = [
        f"{labels[r['method']]} {_diff(r, 'overall')} "
        f"({comparison.paired_reading(r['overall_diff_mean'], r['overall_diff_std'])}; "
        f"ahead in {_higher(runs, r['method'], 'supcon')})"
        for r in others
    ]
    beyond = [
        f"{labels[r['method']]} {comparison.METRIC_TITLES[m]} {_diff(r, m)}"
        for r in others
        for m in metrics[1:]
        if comparison.paired_reading(r[f"{m}_diff_mean"], r[f"{m}_diff_std"]) != "a tie"
        and r[f"{m}_diff_mean"] is not None
    ]
    text = "Overall against SupCon: " + ", ".join(overall) + "."
    if beyond:
        text += " Outside their ±: " + ", ".join(beyond) + "."
    raw = next((r for r in summary if r["method"] == "raw_pixels"), None)
    if raw is not None:
        against = [
            f"{comparison.METRIC_TITLES[m]} "
            f"{comparison.pct(-raw[f'{m}_diff_mean'], raw[f'{m}_diff_std'], signed=True)}"
            for m in metrics
            if raw[f"{m}_diff_mean"] is not None
        ]
        text += (
            f" SupCon against raw pixels (paired): {', '.join(against)}; overall ahead in "
            f"{_higher(runs, 'supcon', 'raw_pixels')}."
        )
    return text


def _higher(runs: Sequence[Mapping[str, Any]], method: str, baseline: str) -> str:
    """``"k of n seeds"``: the paired seeds where ``method``'s overall beats ``baseline``'s."""
    k, n = comparison.seeds_ahead(runs, method, baseline)
    return f"{k} of {n} seeds"


def _diff(row: Mapping[str, Any], metric: str) -> str:
    return comparison.pct(row[f"{metric}_diff_mean"], row[f"{metric}_diff_std"], signed=True)


def _lta_block(name: str, rho: float, meta_file: str | None = None) -> Render:
    """A long_tail_accuracy.py table (raw pixels and the three methods) of one rho."""

    def render(root: Path) -> str:
        runs = [
            r
            for r in _jsonl(root, name)
            if r["imbalance_factor"] == rho and r["method"] in ("raw_pixels", *lta.MAIN_METHODS)
        ]
        summary = lta.summarise(runs)
        recorded = _settings(_json(root, meta_file)) if meta_file else {}
        meta = _sidecar(root, name) | recorded | _run_settings(runs)
        trained = [r["seconds"] for r in runs if r["method"] != "raw_pixels"]
        return "\n\n".join(
            [
                lta.format_table(summary, runs).strip(),
                f"{STD_NOTE} {_paired_notes(summary, runs, comparison.METRICS)}",
                _source([name], meta, timed=True)
                + f" {len(trained)} trained runs, {_seconds(trained)} each; run time against "
                f"SupCon's, per seed: {_time_ratios(runs)}.",
            ]
        )

    return render


def _time_ratios(runs: Sequence[Mapping[str, Any]]) -> str:
    """Per method, the range over seeds of its run time over SupCon's."""
    base = {r["seed"]: r["seconds"] for r in runs if r["method"] == "supcon"}
    ratios: dict[str, list[float]] = {}
    for r in runs:
        if r["method"] not in ("supcon", "raw_pixels") and r["seed"] in base:
            ratios.setdefault(lta.LABELS[r["method"]], []).append(r["seconds"] / base[r["seed"]])
    return ", ".join(f"{label} {_range(v, '.2f')}×" for label, v in ratios.items())


def _digits(root: Path) -> str:
    """The digits_lt tables of long_tail_accuracy.json (top-1 only: no kNN then)."""
    saved = _json(root, "long_tail_accuracy.json")
    parts = []
    for rho in (10.0, 50.0):
        runs = [r for r in saved["runs"] if r["imbalance_factor"] == rho]
        rows = comparison.summarise(runs, list(lta.LABELS), "supcon", SHOTS)
        seeds = sorted({r["seed"] for r in runs})
        parts += [
            f"digits_lt, imbalance {rho:g} (train class sizes {runs[0]['class_counts']}; "
            f"seeds {seeds})",
            comparison.format_table(rows, lta.LABELS, "supcon", SHOTS, ("raw_pixels",)),
            _paired_notes(rows, runs, SHOTS),
        ]
    meta = _settings(saved)
    source = _source(["long_tail_accuracy.json"], meta, timed=True)
    wall = meta.get("wall_seconds")
    return "\n\n".join(
        [*parts, f"{STD_NOTE}\n{source} Wall time {wall / 60:.1f} min." if wall else source]
    )


def _ablation(root: Path) -> str:
    """Seed 0 at rho 100: SupCon, DSCL and the PBSD settings, one run each."""
    name = "long_tail_accuracy_fashion_mnist_lt_runs.jsonl"
    methods = ["supcon", "dscl", "pbsd_w0.5", "dscl_pbsd", "pbsd_scale0.3", "pbsd_patch8"]
    runs = [
        r
        for r in _jsonl(root, name)
        if r["imbalance_factor"] == 100.0 and r["seed"] == 0 and r["method"] in methods
    ]
    rows = comparison.summarise(runs, methods, "supcon")
    seeds = [
        r
        for r in _jsonl(root, name)
        if r["imbalance_factor"] == 100.0 and r["method"] in lta.MAIN_METHODS
    ]
    spread = ", ".join(
        f"{lta.LABELS[r['method']]} ± {100 * r['overall_diff_std']:.1f}"
        for r in comparison.summarise(seeds, lta.MAIN_METHODS, "supcon")
        if r["paired"]
    )
    pbsd = [r for r in runs if r["loss_pbsd"]]
    queue = 4096  # the preset's model.queue_size, as in these runs
    losses = (
        f"Last-epoch mean loss_pbsd of the PBSD runs "
        f"{min(r['loss_pbsd'] for r in pbsd):.2f}–{max(r['loss_pbsd'] for r in pbsd):.2f} "
        f"(log(1 + K) = {math.log(1 + queue):.2f} for a uniform target, K = {queue}); "
        f"loss_dscl {min(r['loss_dscl'] for r in runs):.2f}–"
        f"{max(r['loss_dscl'] for r in runs):.2f}."
    )
    meta = _sidecar(root, name) | _run_settings(runs)
    return "\n\n".join(
        [
            comparison.format_table(rows, lta.LABELS, "supcon"),
            "One seed, so no ±: for scale, the paired overall differences to SupCon over "
            f"seeds {sorted({r['seed'] for r in seeds})} at this ρ spread by {spread} points "
            "(the table at the top). " + losses,
            _source([name], meta),
        ]
    )


def _sweep(name: str, key: str, rho: float) -> Render:
    def render(root: Path) -> str:
        runs = [r for r in _jsonl(root, name) if r["imbalance_factor"] == rho]
        mine = [r for r in runs if r["method"] == "supcon" or r.get("sweep_key") == key]
        seeds = sorted({r["seed"] for r in mine if r.get("sweep_key") == key})
        mine = [r for r in mine if r["seed"] in seeds]
        rows = sweep.summarise_sweep(mine, key)
        meta = _sidecar(root, name) | _run_settings(mine)
        seconds = [r["seconds"] for r in mine]
        return "\n\n".join(
            [
                f"{mine[0]['dataset']}, imbalance {rho:g}: {key} over seeds {seeds}",
                sweep.format_sweep_table(rows, lta.LABELS),
                _source([name], meta, timed=True) + f" {len(mine)} runs, {_seconds(seconds)} each, "
                f"{sum(seconds) / 3600:.2f} h in all.",
            ]
        )

    return render


def _vit(root: Path) -> str:
    name = "vit_digits_lt_runs.csv"
    runs = _csv(root, name)
    methods = [m for m in lta.MAIN_METHODS if any(r["method"] == m for r in runs)]
    rows = comparison.summarise(runs, methods, "supcon", SHOTS)
    per_run = [
        {"method": lta.LABELS[r["method"]], "seed": r["seed"]}
        | {m: comparison.pct(r[m]) for m in SHOTS}
        | {"seconds": f"{r['seconds']:.0f}"}
        for r in sorted(runs, key=lambda r: (r["seed"], methods.index(r["method"])))
    ]
    return "\n\n".join(
        [
            f"digits_lt, imbalance {runs[0]['imbalance_factor']:g}, tiny ViT (train class "
            f"sizes {runs[0]['class_counts']}; seeds {sorted({r['seed'] for r in runs})})",
            comparison.format_table(rows, lta.LABELS, "supcon", SHOTS),
            f"{STD_NOTE} {_paired_notes(rows, runs, SHOTS)}",
            markdown_table(per_run),
            _source([name], _sidecar(root, name), timed=True),
        ]
    )


def _compare_digits(root: Path) -> str:
    name = "compare_digits_lt/runs.jsonl"
    records = [json.loads(line) for line in (root / RESULTS / name).read_text().splitlines()]
    variants = [VARIANTS[m] for m in dict.fromkeys(r["method"] for r in records)]
    summary = comparison.summarise(records, [v.name for v in variants], variants[0].name)
    minutes = sum(r["seconds"] for r in records) / 60
    return "\n\n".join(
        [
            summary_table(records, variants),
            f"{STD_NOTE} {_paired_notes(summary, records, comparison.METRICS)}",
            _source([name], _run_settings(records), timed=True)
            + f" {len(records)} runs, {minutes:.1f} min of run time.",
        ]
    )


def _reproduced(root: Path) -> str:
    """The headline rerun at the head (one seed of each method) against the old seeds."""
    new = _jsonl(root, "headline_reproduction/runs.jsonl")
    old = [
        r
        for r in _jsonl(root, "long_tail_accuracy_fashion_mnist_lt_runs.jsonl")
        if r["imbalance_factor"] == 100.0
    ]
    parts = []
    for run in new:
        before = [r["overall"] for r in old if r["method"] == run["method"]]
        then = next((r["overall"] for r in old if r["method"] == run["method"]
                     and r["seed"] == run["seed"]), None)  # fmt: skip
        inside = min(before) <= run["overall"] <= max(before)
        parts.append(
            f"{run['label']} {comparison.pct(run['overall'])} (seed {run['seed']} then "
            f"{comparison.pct(then)}; old seeds {comparison.pct(min(before))}–"
            f"{comparison.pct(max(before))}: {'within' if inside else 'outside'} their range)"
        )
    meta = _run_settings(new)
    return (
        f"**Reproduced at `{meta['commit'][0][:7]}`** (overall top-1 %, "
        f"`{' '.join(new[0]['overrides']) or 'no overrides'}`): "
        + "; ".join(parts)
        + ". "
        + _source(["headline_reproduction/runs.jsonl"], meta, timed=True)
    )


# --- performance tables ---------------------------------------------------------------------


def _pick(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> list[dict]:
    """``rows`` with only ``columns`` (key -> header), in that order."""
    return [{header: row.get(key, "–") for key, header in columns.items()} for row in rows]


def _precision(name: str) -> Render:
    """train_step.py --precisions rows: step time per precision and method."""

    def render(root: Path) -> str:
        data = _json(root, name) if name.endswith(".json") else {"rows": _csv(root, name)}
        rows = data["rows"]
        columns = {
            "precision": "precision", "method": "method", "B": "B", "L": "L", "K": "K",
            "step_ms": "step ms", "images_per_s": "img/s", "speedup": "speed vs fp32",
            "x_supcon": "× SupCon", "peak_mib": "peak MiB",
        }  # fmt: skip
        slower = {
            p: [r["speedup"] for r in rows if r["precision"] == p]
            for p in dict.fromkeys(r["precision"] for r in rows)
            if p != rows[0]["precision"]
        }
        ratio = "; ".join(
            f"{p} {_range([1 / x for x in v], '.1f')}× the fp32 step time"
            for p, v in slower.items()
        )
        meta = _sidecar(root, name) | _settings(data)
        return "\n\n".join(
            [
                markdown_table(_pick(rows, columns)),
                f"Same method against fp32: {ratio}.",
                _source([name], meta, timed=True),
            ]
        )

    return render


def _recipe_steps(root: Path) -> str:
    """The first steps of the Fashion-MNIST-LT recipe per precision (dscl-train)."""
    name = "precision_fashion_mnist_lt_runs.json"
    data = _json(root, name)
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
    meta = _sidecar(root, name) | {"commit": steps["commit"], "command": steps["command"]}
    return "\n\n".join(
        [
            markdown_table(rows),
            f"Median seconds per step, bf16 over the fp32 run before it: {pairs}. "
            f"The whole bf16 run (`{stopped['command']}`, commit `{data['commit'][:7]}`) was "
            f"{stopped['status']}: {stopped['steps_per_s']} steps/s, "
            f"{stopped['wall_s']:.0f} s of wall time.",
            _source([name], meta, timed=True),
        ]
    )


def _train_step(root: Path) -> str:
    name = "train_step.json"
    data = _json(root, name)
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
            markdown_table(_pick(data["rows"], columns)),
            "Times in ms, medians over the rounds. " + "; ".join(notes) + ".",
            _source([name], _settings(data), timed=True),
        ]
    )


def _flops(root: Path) -> str:
    """FLOPs per image against step time, for the GPU sizing estimate."""
    data = _json(root, "train_step.json")
    rows = {r["method"]: r for r in data["rows"] if r["setting"] == "resnet18_32px"}
    supcon, dscl, pbsd = (rows[m] for m in ("supcon", "dscl", "dscl_pbsd"))
    return (
        f"FLOPs of one `resnet18_32px` training step (B {supcon['B']}, L {pbsd['L']} patches, "
        f"K {supcon['K']}), counted by `FlopCounterMode`: SupCon "
        f"{supcon['gflop_per_image']:.2f}, DSCL {dscl['gflop_per_image']:.2f}, DSCL+PBSD "
        f"{pbsd['gflop_per_image']:.2f} GFLOP per image, a DSCL+PBSD / SupCon ratio of "
        f"{pbsd['gflop_per_image'] / supcon['gflop_per_image']:.2f}; the CPU step times of the "
        f"same run give {pbsd['x_supcon']}× ({_load(_settings(data))}). "
        + _source(["train_step.json"], _settings(data))
    )


def _loss_speed(root: Path) -> str:
    name = "loss_speed.json"
    data = _json(root, name)
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
            markdown_table(_pick(rows, columns)),
            f"DSCL / PML SupCon {min(ratio)}–{max(ratio)} (target ≤ 1: "
            f"{'met' if max(ratio) <= 1 else 'missed'}); DSCL / matmul floor "
            f"{min(floor)}–{max(floor)} (target ≤ 3.5: met in {sum(f <= 3.5 for f in floor)} of "
            f"{len(floor)} rows); peak memory at B {largest['B']}, K {largest['K']}: DSCL "
            f"{largest['dscl_peak_mib']} MiB, PML {largest['pml_peak_mib']} MiB. "
            f"D = {rows[0]['D']}, autocast {rows[0]['autocast']}.",
            _source([name], _settings(data), timed=True),
        ]
    )


def _import_time(root: Path) -> str:
    name = "import_time.json"
    data = _json(root, name)
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
            _source([name], _settings(data), timed=True),
        ]
    )


def _monitor(root: Path) -> str:
    name = "monitor_cost.json"
    data = _json(root, name)
    columns = {
        "config": "preset", "steps_per_epoch": "steps / epoch", "bank": "bank (train)",
        "queries": "queries (test)", "knn_k": "k", "epoch_s": "epoch s",
        "monitor_first_s": "monitor s (first)", "monitor_s": "monitor s (later)",
        "monitor_pct_of_epoch": "later % of an epoch", "first_pct_of_epoch": "first %",
    }  # fmt: skip
    return "\n\n".join(
        [markdown_table(_pick(data["rows"], columns)), _source([name], _settings(data), True)]
    )


def _pbsd(root: Path) -> str:
    name = "pbsd_diagnostics_fashion_mnist_lt.json"
    data = _json(root, name)
    return "\n\n".join(
        [
            pbsd_diagnostics.format_table(data["result"]),
            f"Checkpoint: the DSCL+PBSD run of the README's reproduction (`{data['checkpoint']}`).",
            _source([name], _settings(data)),
        ]
    )


# --- data pipeline -------------------------------------------------------------------------


def _pipeline_rates(root: Path) -> str:
    name = "data_pipeline.json"
    data = _json(root, name)
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
    meta = _sidecar(root, name) | _settings(data)
    return "\n\n".join(
        [
            markdown_table(table),
            f"Images/s of both views and all patches. Note in the file: {data['note']}",
            _source([name], meta, timed=True),
        ]
    )


def _pipeline_epochs(names: Sequence[str]) -> Render:
    def render(root: Path) -> str:
        rows, sources = [], []
        for name in names:
            data = _json(root, name)
            meta = _settings(data)
            walls = {r["pipeline"]: r["stage1_wall_s"] for r in data["rows"]}
            rows.append(
                {
                    "steps": data["rows"][0]["steps"],
                    "loader (1 worker), s": walls["loader"],
                    "device, s": walls["device"],
                    "device time / loader time": f"{walls['device'] / walls['loader']:.2f}",
                    "load (1 min, at the start)": _load_start(meta),
                    "commit": f"`{meta['commit'][:7]}`",
                }
            )
            sources.append(_source([name], meta, timed=True))
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


# --- README: quick start and set-up ----------------------------------------------------------


def _quickstart(root: Path) -> str:
    name = "quickstart_digits_lt.json"
    data = _json(root, name)
    meta = _settings(data)
    table = format_metrics_table({k: data["metrics"][k] for k in ("linear_probe", "knn")})
    return (
        f"```text\n{table}\n```\n"
        + _source([name], meta, timed=True)
        + f" The whole run took {meta['wall_seconds']:.0f} s."
    )


def _setup(root: Path) -> str:
    name = "setup_timing.json"
    data = _json(root, name)
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
    meta = _settings(data)
    return "\n\n".join(
        [
            markdown_table(rows),
            f"A fresh clone and venv ({data['python']}), the commands above but the CPU-wheel "
            "line (its index is not reachable there): `pip install -e .` took torch's default "
            f"wheels, and the venv then held {data['venv_size_gb']:.1f} GB. "
            + _source([name], meta, timed=True),
        ]
    )


BLOCKS: dict[str, Block] = {
    "fashion-mnist-lt-rho100": Block(
        ("long_tail_accuracy_fashion_mnist_lt_runs.jsonl",),
        _lta_block(
            "long_tail_accuracy_fashion_mnist_lt_runs.jsonl",
            100.0,
            "long_tail_accuracy_fashion_mnist_lt.json",
        ),
    ),  # fmt: skip
    "fashion-mnist-lt-rho10": Block(
        ("long_tail_accuracy_fashion_mnist_lt_runs.jsonl",),
        _lta_block(
            "long_tail_accuracy_fashion_mnist_lt_runs.jsonl",
            10.0,
            "long_tail_accuracy_fashion_mnist_lt.json",
        ),
    ),  # fmt: skip
    "fashion-mnist-lt-reproduced": Block(
        ("headline_reproduction/runs.jsonl", "long_tail_accuracy_fashion_mnist_lt_runs.jsonl"),
        _reproduced,
        "--headline",
    ),
    "fashion-mnist-lt-ablation": Block(
        ("long_tail_accuracy_fashion_mnist_lt_runs.jsonl",), _ablation
    ),
    "pbsd-diagnostics": Block(("pbsd_diagnostics_fashion_mnist_lt.json",), _pbsd, "--headline"),
    "digits-lt": Block(("long_tail_accuracy.json",), _digits),
    "vit-digits-lt": Block(("vit_digits_lt_runs.csv",), _vit),
    "sweep-fashion-mnist-lt-alpha": Block(
        ("sweep_fashion_mnist_lt_runs.jsonl",),
        _sweep("sweep_fashion_mnist_lt_runs.jsonl", "model.alpha", 100.0),
    ),
    "sweep-digits-lt-alpha": Block(
        ("sweep_digits_lt_runs.jsonl",), _sweep("sweep_digits_lt_runs.jsonl", "model.alpha", 10.0)
    ),
    "sweep-digits-lt-num-patches": Block(
        ("sweep_digits_lt_runs.jsonl",),
        _sweep("sweep_digits_lt_runs.jsonl", "model.num_patches", 10.0),
    ),
    "sweep-digits-lt-pbsd-weight": Block(
        ("sweep_digits_lt_runs.jsonl",),
        _sweep("sweep_digits_lt_runs.jsonl", "model.pbsd_weight", 10.0),
    ),
    "compare-digits-lt": Block(("compare_digits_lt/runs.jsonl",), _compare_digits),
    "quickstart-output": Block(("quickstart_digits_lt.json",), _quickstart, "--quickstart"),
    "setup-timing": Block(("setup_timing.json",), _setup, "--setup"),
    "train-step": Block(("train_step.json",), _train_step, "--benchmarks"),
    "train-step-flops": Block(("train_step.json",), _flops, "--benchmarks"),
    "loss-speed": Block(("loss_speed.json",), _loss_speed, "--benchmarks"),
    "import-time": Block(("import_time.json",), _import_time, "--benchmarks"),
    "monitor-cost": Block(("monitor_cost.json",), _monitor),
    "precision-amx": Block(
        ("train_step_cpu_precision_amx.json",),
        _precision("train_step_cpu_precision_amx.json"),
        "--benchmarks",
    ),
    "precision-cnn5-avx2": Block(
        ("train_step_cpu_precision.csv",), _precision("train_step_cpu_precision.csv")
    ),
    "precision-resnet18-avx2": Block(
        ("train_step_cpu_precision_resnet18.csv",),
        _precision("train_step_cpu_precision_resnet18.csv"),
    ),
    "precision-recipe-steps": Block(("precision_fashion_mnist_lt_runs.json",), _recipe_steps),
    "data-pipeline-rates": Block(("data_pipeline.json",), _pipeline_rates),
    "data-pipeline-epoch": Block(
        ("data_pipeline_epoch.json",), _pipeline_epochs(["data_pipeline_epoch.json"])
    ),
    "data-pipeline-steps": Block(
        ("data_pipeline_epoch_10steps.json", "data_pipeline_epoch_2steps.json"),
        _pipeline_epochs(["data_pipeline_epoch_10steps.json", "data_pipeline_epoch_2steps.json"]),
    ),
}


# --- pages -----------------------------------------------------------------------------------


def pending(block_id: str, root: Path) -> bool:
    """True while a ``remeasure.sh`` block's first file is missing."""
    block = BLOCKS[block_id]
    return block.made_by is not None and not (root / RESULTS / block.sources[0]).is_file()


def render_block(block_id: str, root: Path) -> str:
    """The block's text between its markers (ending in a newline).

    Raises:
        FileNotFoundError: a result file of a block that ``remeasure.sh`` does not make.
    """
    block = BLOCKS[block_id]
    if pending(block_id, root):
        body = (
            f"*Not measured at this commit yet:* `bash benchmarks/remeasure.sh {block.made_by}` "
            f"writes `{RESULTS}/{block.sources[0]}`, and `python benchmarks/render_docs.py` "
            "fills this block from it."
        )
    else:
        body = block.render(root)
    return f"{BEGIN.format(block_id)}\n{body.strip()}\n{END.format(block_id)}"


def pages(root: Path) -> list[Path]:
    return [p for pattern in PAGES for p in sorted(root.glob(pattern))]


def _markers(text: str) -> list[re.Match]:
    """The blocks of ``text`` outside fenced code (where a page may show a marker)."""
    fences = [m.span() for m in FENCES.finditer(text)]
    return [m for m in MARKERS.finditer(text) if not any(a <= m.start() < b for a, b in fences)]


def _substitute(text: str, root: Path) -> str:
    new, last = [], 0
    for match in _markers(text):
        new += [text[last : match.start()], render_block(match["id"], root)]
        last = match.end()
    return "".join(new) + text[last:]


def render_pages(root: Path) -> dict[Path, tuple[str, str]]:
    """``{page: (text, rendered text)}`` for every page with a block.

    Raises:
        ValueError: a marker names an unknown block or lacks its pair, or a block is on no
            page or on two.
    """
    result, seen = {}, Counter()
    for page in pages(root):
        text = page.read_text()
        ids = [m["id"] for m in _markers(text)]
        outside = FENCES.sub("", text)
        if outside.count("<!-- rendered: ") + outside.count("<!-- end rendered: ") != 2 * len(ids):
            raise ValueError(f"{page.relative_to(root)}: a marker without its pair")
        unknown = [i for i in ids if i not in BLOCKS]
        if unknown:
            raise ValueError(f"{page.relative_to(root)}: unknown rendered block(s) {unknown}")
        seen.update(ids)
        if ids:
            new = _substitute(text, root)
            result[page] = (text, new)
    placed = {i: seen[i] for i in BLOCKS if seen[i] != 1}
    if placed:
        raise ValueError(f"every block must be on exactly one page; found {placed}")
    return result


def differing_blocks(root: Path) -> list[str]:
    """``page: block id`` of every block whose page differs from its rendering."""
    differing = []
    for page, (text, _) in render_pages(root).items():
        for match in _markers(text):
            if match[0] != render_block(match["id"], root):
                differing.append(f"{page.relative_to(root)}: {match['id']}")
    return differing


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="rewrite nothing; exit 1 if a block differs"
    )
    parser.add_argument("--root", type=Path, default=REPO, help="repository root")
    args = parser.parse_args(argv)
    if args.check:
        differing = differing_blocks(args.root)
        for item in differing:
            print(f"differs from its result file: {item}")
        waiting = [i for i in BLOCKS if pending(i, args.root)]
        if waiting:
            print(f"waiting for benchmarks/remeasure.sh: {', '.join(waiting)}")
        return 1 if differing else 0
    for page, (text, new) in render_pages(args.root).items():
        if new != text:
            page.write_text(new)
            print(f"rendered {page.relative_to(args.root)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
