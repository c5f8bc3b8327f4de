"""A paired comparison of methods over seeds: per method the mean ± sample std of each
metric, and per seed its difference to a baseline method (the paired difference), as
summary rows, a Markdown table and a bar chart.

A run is a plain dict with ``method``, ``seed`` and one fraction per metric (``overall``,
``many``, ``medium``, ``few``: linear-probe top-1 by shot group; ``knn_p1``: kNN
precision@1; None where a group has no class). Seeds pair runs: the same seed fixes the
split, the initial weights, the batch order and the probe for every method, so
``d_s = metric(method, s) - metric(baseline, s)`` isolates the method. The std is the
sample std (n - 1). The verdict on a metric compares the mean of the ``d_s`` over the
``n >= 2`` seeds both ran with their sample std ``s_d``: ahead when ``mean > s_d``, behind
when ``mean < -s_d``, else a tie (the difference lies inside the seeds' spread); one
paired seed gives no verdict.
"""

import statistics
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dscl_plugin.data.shots import ACCURACY_GROUPS, SHOT_GROUPS
from dscl_plugin.evaluation.figures import agg_figure, save_png

METRICS = (*ACCURACY_GROUPS, "knn_p1")
METRIC_TITLES = {**{group: group for group in ACCURACY_GROUPS}, "knn_p1": "kNN P@1"}
Run = Mapping[str, Any]


def mean_std(values: Iterable[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample std (n - 1) of the values that are not None; ``(None, None)`` for
    none, and std None for a single value."""
    kept = [v for v in values if v is not None]
    if not kept:
        return None, None
    return statistics.fmean(kept), statistics.stdev(kept) if len(kept) > 1 else None


def pct(
    mean: float | None, std: float | None = None, signed: bool = False, missing: str = "-"
) -> str:
    """A fraction as percent with one decimal, ``"92.7 ± 1.3"`` (``"+0.4"`` signed);
    ``missing`` for None."""
    if mean is None:
        return missing
    text = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    return text + (f" ± {100 * std:.1f}" if std is not None else "")


def paired_reading(mean: float | None, std: float | None) -> str:
    """How a paired difference reads: ``"a tie"`` when ``|mean| <= std`` (inside the
    seeds' spread), ``"higher"`` or ``"lower"`` beyond it, ``"one seed"`` without a std
    (no spread to compare with) and ``"-"`` without a mean."""
    if mean is None:
        return "-"
    if std is None:
        return "one seed"
    if abs(mean) <= std:
        return "a tie"
    return "higher" if mean > 0 else "lower"


# a paired reading as a verdict against the baseline
VERDICTS = {"higher": "ahead of", "lower": "behind", "a tie": "a tie with"}


def seeds_ahead(
    runs: Sequence[Run], method: str, baseline: str, metric: str = "overall"
) -> tuple[int, int]:
    """``(k, n)``: of the ``n`` seeds where both ``method`` and ``baseline`` have a value
    of ``metric``, the ``k`` where ``method``'s is higher."""
    base = {r["seed"]: r[metric] for r in runs if r["method"] == baseline}
    pairs = [
        (r[metric], base[r["seed"]])
        for r in runs
        if r["method"] == method and base.get(r["seed"]) is not None and r[metric] is not None
    ]
    return sum(mine > theirs for mine, theirs in pairs), len(pairs)


def verdicts(
    summary: Sequence[Run],
    runs: Sequence[Run],
    labels: Mapping[str, str],
    baseline: str,
    metric: str = "overall",
    groups: Sequence[str] = SHOT_GROUPS,
) -> list[str]:
    """One line per method of :func:`summarise`'s rows but ``baseline``: its verdict on
    ``metric`` (the rule of this module's docstring), the paired difference in points,
    in how many paired seeds it is higher, and the ``groups`` whose paired difference
    lies outside its spread::

        DSCL: ahead of SupCon, overall +6.5 ± 2.1 points over 2 paired seeds (ahead in 2
        of 2 seeds); outside the spread: many +6.5 ± 2.1
    """
    lines = []
    base = labels.get(baseline, baseline)
    for row in summary:
        method = str(row["method"])
        if method == baseline:
            continue
        label = labels.get(method, method)
        k, n = seeds_ahead(runs, method, baseline, metric)
        mean, std = row[f"{metric}_diff_mean"], row[f"{metric}_diff_std"]
        title = METRIC_TITLES.get(metric, metric)
        if n == 0:
            lines.append(f"{label}: no verdict: no seed in common with {base}")
            continue
        if n == 1:
            lines.append(
                f"{label}: no verdict against {base}: 1 paired seed has no spread "
                f"({title} {pct(mean, signed=True)} points)"
            )
            continue
        beyond = [
            f"{METRIC_TITLES.get(g, g)} {pct(row[f'{g}_diff_mean'], row[f'{g}_diff_std'], True)}"
            for g in groups
            if paired_reading(row.get(f"{g}_diff_mean"), row.get(f"{g}_diff_std"))
            in ("higher", "lower")
        ]
        lines.append(
            f"{label}: {VERDICTS[paired_reading(mean, std)]} {base}, "
            f"{title} {pct(mean, std, signed=True)} points over {n} paired seeds "
            f"(ahead in {k} of {n} seeds)"
            + (f"; outside the spread: {', '.join(beyond)}" if beyond else "")
        )
    return lines


def summarise(
    runs: Sequence[Run],
    methods: Sequence[str],
    baseline: str,
    metrics: Sequence[str] = METRICS,
) -> list[dict[str, Any]]:
    """One row per method of ``methods`` that has runs, in that order: ``method``,
    ``seeds`` (its runs), per metric ``<m>_mean``, ``<m>_std`` over its runs and
    ``<m>_diff_mean``, ``<m>_diff_std`` of the paired differences
    ``d_s = <m>(method, s) - <m>(baseline, s)``, and ``paired``: the number of seeds
    that ``baseline`` also ran (None, and no differences, for the baseline).

    Raises:
        ValueError: a method with two runs of one seed.
    """
    by_method: dict[str, dict[object, Run]] = {}
    for run in runs:
        seeds = by_method.setdefault(str(run["method"]), {})
        if run["seed"] in seeds:
            raise ValueError(f"runs: {run['method']} has two runs of seed {run['seed']}")
        seeds[run["seed"]] = run
    base = by_method.get(baseline, {})
    rows = []
    for method in [m for m in methods if m in by_method]:
        mine = by_method[method]
        paired = [s for s in mine if s in base]
        row: dict[str, Any] = {"method": method, "seeds": len(mine)}
        for metric in metrics:
            row[f"{metric}_mean"], row[f"{metric}_std"] = mean_std(r[metric] for r in mine.values())
            diffs = [
                mine[s][metric] - base[s][metric]
                for s in paired
                if mine[s][metric] is not None and base[s][metric] is not None
            ]
            row[f"{metric}_diff_mean"], row[f"{metric}_diff_std"] = (
                mean_std(diffs) if method != baseline else (None, None)
            )
        row["paired"] = len(paired) if method != baseline else None
        rows.append(row)
    return rows


def format_table(
    summary: Sequence[Run],
    labels: Mapping[str, str],
    baseline: str,
    metrics: Sequence[str] = METRICS,
    no_difference: Sequence[str] = (),
    empty: Collection[str] = (),
) -> str:
    """A Markdown table of :func:`summarise`'s rows in percent: a row per method (mean ±
    std over its seeds), then a row ``<method> − <baseline> (paired)`` per other method
    but those in ``no_difference``, with the number of paired seeds. ``labels`` names
    the methods (default: the method's own name); a metric of ``empty`` (a shot group
    without classes) reads ``empty`` where it has no value, any other ``-``."""

    def label(method: object) -> str:
        return labels.get(str(method), str(method))

    def blank(metric: str) -> str:
        return "empty" if metric in empty else "-"

    lines = [
        "| method | seeds | " + " | ".join(METRIC_TITLES.get(m, m) for m in metrics) + " |",
        "|---|---|" + "---|" * len(metrics),
    ]
    lines += [
        f"| {label(r['method'])} | {r['seeds']} | "
        + " | ".join(pct(r[f"{m}_mean"], r[f"{m}_std"], missing=blank(m)) for m in metrics)
        + " |"
        for r in summary
    ]
    lines += [
        f"| {label(r['method'])} − {label(baseline)} (paired) | {r['paired']} | "
        + " | ".join(pct(r[f"{m}_diff_mean"], r[f"{m}_diff_std"], True, blank(m)) for m in metrics)
        + " |"
        for r in summary
        if r["method"] != baseline and r["method"] not in no_difference
    ]
    return "\n".join(lines)


def plot_comparison(
    summary: Sequence[Run],
    labels: Mapping[str, str],
    baseline: str,
    path: str | Path,
    title: str,
    metrics: Sequence[str] = METRICS,
) -> Path:
    """``compare.png``: left, each method's mean per shot group (and kNN) with its std
    as an error bar; right, each other method's paired difference to ``baseline`` with
    its std, around a zero line (a bar whose error bar crosses zero is a tie)."""
    import numpy as np

    fig = agg_figure((12, 4.8))
    absolute, paired = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    groups = np.arange(len(metrics))
    names = [METRIC_TITLES.get(m, m) for m in metrics]
    others = [r for r in summary if r["method"] != baseline]
    for ax, rows, suffix in ((absolute, summary, ""), (paired, others, "_diff")):
        width = 0.8 / max(len(rows), 1)
        for i, row in enumerate(rows):
            means = [_percent(row[f"{m}{suffix}_mean"]) for m in metrics]
            stds = [_percent(row[f"{m}{suffix}_std"]) for m in metrics]
            ax.bar(
                groups + (i - (len(rows) - 1) / 2) * width,
                [np.nan if v is None else v for v in means],
                width,
                yerr=[0.0 if v is None else v for v in stds],
                capsize=3,
                label=labels.get(str(row["method"]), str(row["method"])),
                color=f"C{summary.index(row)}",
            )
        ax.set_xticks(groups, names)
        ax.grid(True, axis="y", alpha=0.3)
    absolute.set_ylabel("accuracy (%): probe top-1, kNN precision@1")
    absolute.set_title("Mean ± std over seeds")
    paired.axhline(0, color="black", linewidth=0.8)
    paired.set_ylabel(f"difference to {labels.get(baseline, baseline)} (points)")
    paired.set_title(f"Paired difference to {labels.get(baseline, baseline)}, mean ± std")
    handles, names_shown = absolute.get_legend_handles_labels()
    fig.legend(handles, names_shown, loc="lower center", ncol=max(len(handles), 1), fontsize=9)
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return save_png(fig, path)


def _percent(value: float | None) -> float | None:
    return None if value is None else 100 * value
