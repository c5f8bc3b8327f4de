"""The accuracy blocks: the long-tailed comparisons (mean ± std over paired seeds, the paired
differences to SupCon and how they read), the ablation, the sweeps, the tiny ViT, the
``dscl-compare`` example and the headline's reproduction."""

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import sweep
from benchmarks.long_tail_accuracy import LABELS
from benchmarks.reporting import markdown_table
from dscl_plugin.evaluation import comparison
from dscl_plugin.runs.compare_report import summary_table
from dscl_plugin.runs.variants import VARIANTS
from tools.render_docs.results import (
    RESULTS,
    Render,
    read_csv,
    read_json,
    read_jsonl,
    run_settings,
    seconds_range,
    settings,
    sidecar,
    source,
    value_range,
)

SHOTS = comparison.METRICS[:4]  # the top-1 groups (the digits and ViT runs have no kNN)
MAIN_METHODS = list(VARIANTS)
STD_NOTE = (
    "± is the sample std (n − 1) over seeds; a paired row is the mean ± std of the per-seed "
    "differences to SupCon, a tie when its mean lies inside its ±."
)


def setting_summary(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± std per method and metric of the runs of one dataset and imbalance factor,
    and the paired differences to SupCon (:func:`dscl_plugin.evaluation.comparison.summarise`)."""
    return comparison.summarise(runs, list(LABELS), "supcon")


def setting_table(summary: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]]) -> str:
    """A heading (dataset, imbalance factor, class sizes, seeds) and the table of
    :func:`setting_summary`, raw pixels without a paired row."""
    first = runs[0]
    return (
        f"{first['dataset']}, imbalance {first['imbalance_factor']:g} (train class sizes "
        f"{first['class_counts']}; seeds {sorted({r['seed'] for r in runs})})\n\n"
        + comparison.format_table(summary, LABELS, "supcon", no_difference=("raw_pixels",))
    )


def paired_notes(
    summary: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]], metrics: Sequence[str]
) -> str:
    """Each method's overall paired difference to SupCon, how it reads and in how many
    seeds it is higher; the other metrics whose difference lies outside its ±; SupCon
    against raw pixels where the table has them."""
    labels = LABELS
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


def long_tail_block(name: str, rho: float, meta_file: str | None = None) -> Render:
    """A long_tail_accuracy.py table (raw pixels and the three methods) of one rho."""

    def render(root: Path) -> str:
        runs = [
            r
            for r in read_jsonl(root, name)
            if r["imbalance_factor"] == rho and r["method"] in ("raw_pixels", *MAIN_METHODS)
        ]
        summary = setting_summary(runs)
        recorded = settings(read_json(root, meta_file)) if meta_file else {}
        meta = sidecar(root, name) | recorded | run_settings(runs)
        trained = [r["seconds"] for r in runs if r["method"] != "raw_pixels"]
        return "\n\n".join(
            [
                setting_table(summary, runs),
                f"{STD_NOTE} {paired_notes(summary, runs, comparison.METRICS)}",
                source([name], meta, timed=True)
                + f" {len(trained)} trained runs, {seconds_range(trained)} each; run time against "
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
            ratios.setdefault(LABELS[r["method"]], []).append(r["seconds"] / base[r["seed"]])
    return ", ".join(f"{label} {value_range(v, '.2f')}×" for label, v in ratios.items())


def digits(root: Path) -> str:
    """The digits_lt tables of long_tail_accuracy.json (top-1 only: no kNN then)."""
    saved = read_json(root, "long_tail_accuracy.json")
    parts = []
    for rho in (10.0, 50.0):
        runs = [r for r in saved["runs"] if r["imbalance_factor"] == rho]
        rows = comparison.summarise(runs, list(LABELS), "supcon", SHOTS)
        seeds = sorted({r["seed"] for r in runs})
        parts += [
            f"digits_lt, imbalance {rho:g} (train class sizes {runs[0]['class_counts']}; "
            f"seeds {seeds})",
            comparison.format_table(rows, LABELS, "supcon", SHOTS, ("raw_pixels",)),
            paired_notes(rows, runs, SHOTS),
        ]
    meta = settings(saved)
    line = source(["long_tail_accuracy.json"], meta, timed=True)
    wall = meta.get("wall_seconds")
    return "\n\n".join(
        [*parts, f"{STD_NOTE}\n{line} Wall time {wall / 60:.1f} min." if wall else line]
    )


def ablation(root: Path) -> str:
    """Seed 0 at rho 100: SupCon, DSCL and the PBSD settings, one run each."""
    name = "long_tail_accuracy_fashion_mnist_lt_runs.jsonl"
    methods = ["supcon", "dscl", "pbsd_w0.5", "dscl_pbsd", "pbsd_scale0.3", "pbsd_patch8"]
    runs = [
        r
        for r in read_jsonl(root, name)
        if r["imbalance_factor"] == 100.0 and r["seed"] == 0 and r["method"] in methods
    ]
    rows = comparison.summarise(runs, methods, "supcon")
    seeds = [
        r
        for r in read_jsonl(root, name)
        if r["imbalance_factor"] == 100.0 and r["method"] in MAIN_METHODS
    ]
    spread = ", ".join(
        f"{LABELS[r['method']]} ± {100 * r['overall_diff_std']:.1f}"
        for r in comparison.summarise(seeds, MAIN_METHODS, "supcon")
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
    meta = sidecar(root, name) | run_settings(runs)
    return "\n\n".join(
        [
            comparison.format_table(rows, LABELS, "supcon"),
            "One seed, so no ±: for scale, the paired overall differences to SupCon over "
            f"seeds {sorted({r['seed'] for r in seeds})} at this ρ spread by {spread} points "
            "(the table at the top). " + losses,
            source([name], meta),
        ]
    )


def sweep_block(name: str, key: str, rho: float) -> Render:
    def render(root: Path) -> str:
        runs = [r for r in read_jsonl(root, name) if r["imbalance_factor"] == rho]
        mine = [r for r in runs if r["method"] == "supcon" or r.get("sweep_key") == key]
        seeds = sorted({r["seed"] for r in mine if r.get("sweep_key") == key})
        mine = [r for r in mine if r["seed"] in seeds]
        rows = sweep.summarise_sweep(mine, key)
        meta = sidecar(root, name) | run_settings(mine)
        seconds = [r["seconds"] for r in mine]
        return "\n\n".join(
            [
                f"{mine[0]['dataset']}, imbalance {rho:g}: {key} over seeds {seeds}",
                sweep.format_sweep_table(rows, LABELS),
                source([name], meta, timed=True)
                + f" {len(mine)} runs, {seconds_range(seconds)} each, "
                f"{sum(seconds) / 3600:.2f} h in all.",
            ]
        )

    return render


def vit(root: Path) -> str:
    name = "vit_digits_lt_runs.csv"
    runs = read_csv(root, name)
    methods = [m for m in MAIN_METHODS if any(r["method"] == m for r in runs)]
    rows = comparison.summarise(runs, methods, "supcon", SHOTS)
    per_run = [
        {"method": LABELS[r["method"]], "seed": r["seed"]}
        | {m: comparison.pct(r[m]) for m in SHOTS}
        | {"seconds": f"{r['seconds']:.0f}"}
        for r in sorted(runs, key=lambda r: (r["seed"], methods.index(r["method"])))
    ]
    return "\n\n".join(
        [
            f"digits_lt, imbalance {runs[0]['imbalance_factor']:g}, tiny ViT (train class "
            f"sizes {runs[0]['class_counts']}; seeds {sorted({r['seed'] for r in runs})})",
            comparison.format_table(rows, LABELS, "supcon", SHOTS),
            f"{STD_NOTE} {paired_notes(rows, runs, SHOTS)}",
            markdown_table(per_run),
            source([name], sidecar(root, name), timed=True),
        ]
    )


def compare_digits(root: Path) -> str:
    name = "compare_digits_lt/runs.jsonl"
    records = [json.loads(line) for line in (root / RESULTS / name).read_text().splitlines()]
    variants = [VARIANTS[m] for m in dict.fromkeys(r["method"] for r in records)]
    summary = comparison.summarise(records, [v.name for v in variants], variants[0].name)
    minutes = sum(r["seconds"] for r in records) / 60
    return "\n\n".join(
        [
            summary_table(records, variants),
            f"{STD_NOTE} {paired_notes(summary, records, comparison.METRICS)}",
            source([name], run_settings(records), timed=True)
            + f" {len(records)} runs, {minutes:.1f} min of run time.",
        ]
    )


def reproduced(root: Path) -> str:
    """The headline rerun at a later commit (one seed of each method) against the committed
    runs: how far each method moved from its seed's old run (overall, and the range of its
    shot groups' moves), whether it lies in the old seeds' range, and whether its paired
    difference to SupCon lies inside the old seeds' paired mean ± std."""
    new = read_jsonl(root, "headline_reproduction/runs.jsonl")
    old = [
        r
        for r in read_jsonl(root, "long_tail_accuracy_fashion_mnist_lt_runs.jsonl")
        if r["imbalance_factor"] == 100.0 and r["method"] in MAIN_METHODS
    ]
    parts = []
    for run in new:
        mine = [r for r in old if r["method"] == run["method"]]
        before = [r["overall"] for r in mine]
        then = next((r for r in mine if r["seed"] == run["seed"]), None)
        moved = "" if then is None else f": {_moved(run, then)}"
        inside = min(before) <= run["overall"] <= max(before)
        parts.append(
            f"{run['label']} {comparison.pct(run['overall'])} (seed {run['seed']} then "
            f"{comparison.pct(None if then is None else then['overall'])}{moved}; old seeds "
            f"{comparison.pct(min(before))}–{comparison.pct(max(before))}: "
            f"{'within' if inside else 'outside'} their range)"
        )
    meta = run_settings(new)
    return (
        f"**Rerun at `{meta['commit'][0][:7]}`** (overall top-1 %, "
        f"`{' '.join(new[0]['overrides']) or 'no overrides'}`): "
        + "; ".join(parts)
        + ". "
        + _rerun_against_supcon(new, old)
        + source(["headline_reproduction/runs.jsonl"], meta, timed=True)
    )


def _moved(run: Mapping[str, Any], then: Mapping[str, Any]) -> str:
    """``"+0.7, shot groups +0.0 to +1.3"``: the points ``run`` moved from ``then``."""
    text = f"{100 * (run['overall'] - then['overall']):+.1f}"
    groups = sorted(
        100 * (run[m] - then[m])
        for m in SHOTS[1:]
        if run.get(m) is not None and then.get(m) is not None
    )
    if groups:
        low, high = f"{groups[0]:+.1f}", f"{groups[-1]:+.1f}"
        text += f", shot groups {low}" + ("" if low == high else f" to {high}")
    return text


def _rerun_against_supcon(
    new: Sequence[Mapping[str, Any]], old: Sequence[Mapping[str, Any]]
) -> str:
    """Each rerun method's overall difference to the rerun SupCon, against the old seeds'
    paired mean ± std of that difference: inside it for every method, the tie holds."""
    supcon = next((r for r in new if r["method"] == "supcon"), None)
    rows = {r["method"]: r for r in comparison.summarise(old, MAIN_METHODS, "supcon")}
    found = []
    for run in new:
        row = rows.get(run["method"])
        if supcon is None or run is supcon or row is None or row["overall_diff_std"] is None:
            continue
        diff, mean, std = (
            run["overall"] - supcon["overall"],
            row["overall_diff_mean"],
            row["overall_diff_std"],
        )
        found.append((run["label"], diff, mean, std, mean - std <= diff <= mean + std))
    if not found:
        return ""
    diffs = ", ".join(f"{label} {comparison.pct(diff, signed=True)}" for label, diff, *_ in found)
    spans = ", ".join(comparison.pct(mean, std, signed=True) for _, _, mean, std, _ in found)
    inside = all(item[-1] for item in found)
    return (
        f"At this seed, overall against SupCon: {diffs}, "
        f"{'each inside' if inside else 'not all inside'} the old seeds' paired mean ± std "
        f"({spans}): {'the tie holds' if inside else 'see the table above'}. "
    )
