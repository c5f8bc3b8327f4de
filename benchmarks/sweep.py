"""Hyper-parameter sweeps for ``long_tail_accuracy.py --sweep`` (the paper's Fig. 5).

``--sweep model.alpha=0.05,0.11,0.2,0.5`` sweeps one config key over a grid, one key at a
time (every other setting stays at the config's value); SupCon, which has no such key,
is the horizontal reference line. This module parses the grid, builds each run's
overrides, and writes one table (CSV + Markdown) and one plot per swept key.
"""

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.reporting import write_csv
from dscl_plugin.data.shots import ACCURACY_GROUPS
from dscl_plugin.evaluation import comparison
from dscl_plugin.evaluation.comparison import pct

# a swept key that excludes another setting (alpha and beta are two names for one weight)
EXCLUSIVE = {"model.alpha": "model.beta", "model.beta": "model.alpha"}


def parse_sweep(specs: Sequence[str]) -> dict[str, list[str]]:
    """``["model.alpha=0.05,0.11", ...]`` -> ``{"model.alpha": ["0.05", "0.11"], ...}``.

    Raises:
        ValueError: a spec is not ``key.path=v1,v2,...``, a value is empty, not a finite
            number or repeated, or a key is swept twice.
    """
    grid: dict[str, list[str]] = {}
    for spec in specs:
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key or "." not in key or not values.strip():
            raise ValueError(
                f"--sweep {spec!r} must have the form section.key=v1,v2,... "
                "(e.g. model.alpha=0.05,0.11,0.2,0.5)"
            )
        items = [v.strip() for v in values.split(",")]
        for value in items:
            if not _is_number(value):
                raise ValueError(
                    f"--sweep {spec!r}: value {value!r} is not a finite number; give a "
                    "comma-separated list of numbers without spaces or brackets"
                )
        numbers = [float(v) for v in items]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"--sweep {spec!r}: a value is repeated")
        if key in grid:
            raise ValueError(f"--sweep: {key} is swept twice; give all its values in one list")
        grid[key] = items
    return grid


def _is_number(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def sweep_overrides(key: str, value: str) -> list[str]:
    """Config overrides of one swept run: ``key=value`` (and ``model.beta=null`` for an
    alpha, ``model.alpha=null`` for a beta)."""
    overrides = [f"{key}={value}"]
    if key in EXCLUSIVE:
        overrides.append(f"{EXCLUSIVE[key]}=null")
    return overrides


def sweep_jobs(
    grid: Mapping[str, Sequence[str]], methods: Sequence[str]
) -> list[tuple[str, str | None, str | None]]:
    """``(method, key, value)`` of one seed's runs: the SupCon baseline once (key and value
    None), then every other method at every value of every swept key."""
    jobs: list[tuple[str, str | None, str | None]] = [("supcon", None, None)]
    for key, values in grid.items():
        jobs += [(m, key, v) for m in methods if m != "supcon" for v in values]
    return jobs


def summarise_sweep(runs: Sequence[Mapping[str, object]], key: str) -> list[dict[str, object]]:
    """One row per (method, value) of ``key`` plus the SupCon baseline (value None): mean
    and sample std over seeds of every metric, and of the per-seed difference to SupCon
    (:func:`dscl_plugin.evaluation.comparison.summarise`, each value a method of its
    own). Runs are dicts with ``method``, ``seed``, ``sweep_key``, ``sweep_value`` and the
    metrics; the baseline runs have ``method == "supcon"``."""
    groups: dict[tuple, list[Mapping[str, object]]] = {
        ("supcon", None): [r for r in runs if r["method"] == "supcon"]
    }
    for r in runs:
        if r["method"] != "supcon" and r["sweep_key"] == key:
            groups.setdefault((r["method"], float(r["sweep_value"])), []).append(r)
    order = sorted(groups, key=lambda g: (g[0] != "supcon", g[0], g[1] or 0.0))  # SupCon first
    names = {
        group: f"{group[0]}={group[1]}" if group[1] is not None else "supcon" for group in order
    }
    tagged = [{**r, "method": names[group]} for group in order for r in groups[group]]
    rows = {
        row["method"]: row
        for row in comparison.summarise(
            tagged, [names[g] for g in order], "supcon", ACCURACY_GROUPS
        )
    }
    return [
        {"key": key, "value": group[1], "method": group[0]}
        | {k: v for k, v in rows[names[group]].items() if k != "method"}
        for group in order
        if names[group] in rows
    ]


def format_sweep_table(rows: Sequence[Mapping[str, object]], labels: Mapping[str, str]) -> str:
    """Markdown: top-1 % (mean ± std over seeds) and the paired difference to SupCon."""
    key = rows[0]["key"]
    lines = [
        f"| method | {key} | overall | many | medium | few | overall − SupCon (paired) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        value = "–" if r["value"] is None else f"{r['value']:g}"
        cells = [pct(r[f"{m}_mean"], r[f"{m}_std"]) for m in ACCURACY_GROUPS]
        diff = pct(r["overall_diff_mean"], r["overall_diff_std"], signed=True)
        lines.append(
            f"| {labels.get(r['method'], r['method'])} | {value} | "
            + " | ".join(cells)
            + f" | {diff} |"
        )
    return "\n".join(lines)


def plot_sweep(
    rows: Sequence[Mapping[str, object]],
    labels: Mapping[str, str],
    path: Path,
    title: str = "",
) -> Path:
    """PNG, one panel per metric: top-1 % against the swept value (mean ± std over seeds)
    per method, SupCon as a horizontal line with its ± std band (the paper's Fig. 5)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    key = rows[0]["key"]
    fig = Figure(figsize=(12, 3.2), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(ACCURACY_GROUPS))
    baseline = next((r for r in rows if r["method"] == "supcon"), None)
    methods = list(dict.fromkeys(r["method"] for r in rows if r["method"] != "supcon"))
    for ax, metric in zip(axes, ACCURACY_GROUPS):
        if baseline is not None and baseline[f"{metric}_mean"] is not None:
            mean, std = (
                100 * baseline[f"{metric}_mean"],
                100 * (baseline[f"{metric}_std"] or 0),
            )
            ax.axhline(mean, color="grey", linestyle="--", label=labels.get("supcon", "supcon"))
            ax.axhspan(mean - std, mean + std, color="grey", alpha=0.15)
        for i, method in enumerate(methods):
            mine = [r for r in rows if r["method"] == method and r[f"{metric}_mean"] is not None]
            xs = [r["value"] for r in mine]
            ys = [100 * r[f"{metric}_mean"] for r in mine]
            errs = [100 * (r[f"{metric}_std"] or 0) for r in mine]
            ax.errorbar(
                xs,
                ys,
                yerr=errs,
                marker="o",
                capsize=3,
                color=f"C{i}",
                label=labels.get(method, method),
            )
        ax.set_title(metric if metric == "overall" else f"{metric}-shot classes", fontsize=10)
        ax.set_xlabel(key)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("top-1 accuracy (%)")
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_sweep(
    rows: Sequence[Mapping[str, object]],
    labels: Mapping[str, str],
    stem: Path,
    title: str = "",
) -> dict[str, Path]:
    """``<stem>.csv`` (the rows), ``<stem>.md`` (the table) and ``<stem>.png`` (the plot)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = {kind: stem.with_name(f"{stem.name}.{kind}") for kind in ("csv", "md", "png")}
    write_csv(paths["csv"], rows)
    table = format_sweep_table(rows, labels)
    paths["md"].write_text((f"{title}\n\n" if title else "") + table + "\n")
    plot_sweep(rows, labels, paths["png"], title)
    return paths


def write_sweep_reports(
    runs: Sequence[Mapping[str, object]],
    grid: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    stem: Path,
) -> list[str]:
    """:func:`write_sweep` for every imbalance factor of ``runs`` (one dataset) and every
    swept key, as ``<stem>_rho<rho>_<key>.{csv,md,png}``; returns the titled tables."""
    tables = []
    for dataset, rho in dict.fromkeys((r["dataset"], r["imbalance_factor"]) for r in runs):
        mine = [r for r in runs if (r["dataset"], r["imbalance_factor"]) == (dataset, rho)]
        seeds = len({r["seed"] for r in mine})
        for key in grid:
            rows = summarise_sweep(mine, key)
            title = f"{dataset}, imbalance {rho:g}: {key} sweep, top-1 % over {seeds} paired seeds"
            write_sweep(rows, labels, stem.with_name(f"{stem.name}_rho{rho:g}_{key}"), title)
            tables.append(f"{title}\n\n{format_sweep_table(rows, labels)}")
    return tables
