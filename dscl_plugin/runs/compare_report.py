"""``dscl-compare``'s answer: ``report.md`` (the verdict per method against the baseline,
the settings, the table of :mod:`dscl_plugin.evaluation.comparison` and one row per run),
``compare.png`` and the verdict lines the command prints last.

A record is one line of ``runs.jsonl`` (:func:`dscl_plugin.runs.compare.run_missing`).
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dscl_plugin.data import shots
from dscl_plugin.evaluation.comparison import (
    METRIC_TITLES,
    METRICS,
    format_table,
    pct,
    plot_comparison,
    summarise,
)
from dscl_plugin.evaluation.comparison import verdicts as paired_verdicts
from dscl_plugin.runs.variants import Variant

REPORT_FILE = "report.md"
FIGURE_FILE = "compare.png"
MIN_SEEDS = 3  # paired seeds below which the verdict comes with a warning
SHOWN_CLASSES = 30  # class sizes listed in full up to this many classes
VERDICT_RULE = (
    "ahead or behind when the mean of its per-seed differences lies outside their sample "
    "std (±), a tie inside it; one paired seed gives no verdict. Ahead in k of n: the "
    "paired seeds where it scored higher"
)


def summary_table(records: Sequence[Mapping[str, Any]], variants: Sequence[Variant]) -> str:
    """The Markdown table of ``records``: mean ± std per variant, paired differences to
    the first; a shot group without classes reads ``empty``."""
    names = [v.name for v in variants]
    labels = {v.name: v.label for v in variants}
    summary = summarise(records, names, names[0])
    return format_table(summary, labels, names[0], empty=empty_groups(records[0]))


def empty_groups(record: Mapping[str, Any]) -> dict[str, str]:
    """The shot groups of ``record``'s training set that hold no class, each with why:
    the reason its ``metrics.json`` gave, else the threshold no class meets (a record
    without its config, as a benchmark's, has only the reasons it gives)."""
    given = record.get("empty_groups") or {}
    if "config" not in record:
        return dict(given)
    config = record["config"]["eval"]
    rules = shots.empty_groups(
        record["class_counts"], config["many_threshold"], config["few_threshold"]
    )
    return {group: given.get(group) or rule for group, rule in rules.items()}


def class_sizes(record: Mapping[str, Any]) -> str:
    """``"T-shirt/top (300), Trouser (180), ..."``: each training class and its size,
    largest first (the first and last 10 beyond :data:`SHOWN_CLASSES` classes)."""
    counts = record["class_counts"]
    names = record.get("class_names") or [f"class {c}" for c in range(len(counts))]
    ranked = sorted(zip(names, counts), key=lambda pair: -pair[1])
    shown = [f"{name} ({count})" for name, count in ranked]
    if len(shown) > SHOWN_CLASSES:
        shown = [*shown[:10], f"… {len(shown) - 20} more …", *shown[-10:]]
    return ", ".join(shown)


def seeds_to_add(records: Sequence[Mapping[str, Any]], baseline: str) -> str | None:
    """The warning for fewer than :data:`MIN_SEEDS` seeds paired with ``baseline``, with
    the ``--seeds`` that completes them (the seeds run and the smallest unused); None
    from 3 on or without another method."""
    others = {r["method"] for r in records} - {baseline}
    if not others:
        return None
    base = seeds_of(records, baseline)
    paired = min(len(seeds_of(records, method) & base) for method in others)
    if paired >= MIN_SEEDS:
        return None
    wanted, candidate = {r["seed"] for r in records}, 0
    while len(wanted) < MIN_SEEDS:
        wanted.add(candidate)
        candidate += 1
    seeds = " ".join(map(str, sorted(wanted)))
    return (
        f"{paired} paired seed{'' if paired == 1 else 's'}: too few for the verdict to hold; "
        f"add `--seeds {seeds}` to the same command (it runs only the new seeds), 5 or more "
        "before you act on a point or two"
    )


def seeds_of(records: Sequence[Mapping[str, Any]], method: str) -> set[int]:
    """The seeds that ``method`` ran."""
    return {r["seed"] for r in records if r["method"] == method}


def verdict_lines(
    records: Sequence[Mapping[str, Any]], variants: Sequence[Variant]
) -> tuple[list[str], str | None]:
    """Per method but the first, its verdict against the first (the baseline) on overall
    top-1 (:func:`dscl_plugin.evaluation.comparison.verdicts`), and the warning of
    :func:`seeds_to_add`."""
    names = [v.name for v in variants]
    labels = {v.name: v.label for v in variants}
    summary = summarise(records, names, names[0])
    return paired_verdicts(summary, records, labels, names[0]), seeds_to_add(records, names[0])


def report_markdown(
    records: Sequence[Mapping[str, Any]],
    variants: Sequence[Variant],
    command: str,
    out_dir: str | Path,
) -> str:
    """``report.md``: the verdicts, the settings, the summary table with the paired
    differences to the first method, the figure and one row per run."""
    labels = {v.name: v.label for v in variants}
    names = [v.name for v in variants]
    first = records[0]
    config = first["config"]
    seeds = sorted({r["seed"] for r in records})
    title = " vs ".join(labels[n] for n in names if any(r["method"] == n for r in records))
    minutes = sum(r["seconds"] for r in records) / 60
    overrides = sorted({" ".join(r["overrides"]) for r in records})
    empty = empty_groups(first)
    verdicts, warning = verdict_lines(records, variants)
    lines = [f"# {title} on {data_name(first)}", "", f"Command: `{command}`", ""]
    if verdicts:
        lines += [
            f"## Verdict against {labels[names[0]]}",
            "",
            f"On overall top-1, per method: {VERDICT_RULE}.",
            "",
            *(f"- {line}." for line in verdicts),
            "",
            *([f"**Warning**: {warning}.", ""] if warning else []),
        ]
    lines += [
        "## Settings",
        "",
        f"- data: {data_name(first)}, {imbalance(first)}; shot groups many > "
        f"{config['eval']['many_threshold']}, few < {config['eval']['few_threshold']} "
        "training images"
        + "".join(f"; {group} empty: {reason}" for group, reason in empty.items()),
        f"- train class sizes, largest first ({len(first['class_counts'])} classes, "
        f"{sum(first['class_counts'])} images): {class_sizes(first)}",
        f"- config overrides: {' | '.join(f'`{o}`' if o else 'none' for o in overrides)}",
        f"- training: {config['model']['backbone']}, {first['epochs']} epochs, batch "
        f"{config['trainer']['batch_size']}; method overrides: "
        + "; ".join(f"{labels[v.name]} `{' '.join(v.overrides)}`" for v in variants),
        f"- {provenance(records)}",
        f"- machine: {'; '.join(sorted({str(r.get('machine')) for r in records}))}",
        f"- {len(records)} run(s), {minutes:.1f} min of run time",
        "",
        "## Results",
        "",
        f"Top-1 % of a class-balanced linear probe on the frozen features (overall and by "
        f"shot group) and kNN precision@1 %, mean ± sample std (n − 1) over seeds {seeds}. "
        f"A paired row is the mean ± std of a method's per-seed difference to "
        f"{labels[names[0]]}, over the seeds both ran (its second column).",
        "",
        summary_table(records, variants),
        "",
        f"![per shot group: mean ± std, and the paired differences]({FIGURE_FILE})",
        "",
        *own_classifier_section(records, variants),
        f"| run | {' | '.join(METRIC_TITLES[m] for m in METRICS)} | seconds | folder |",
        "|---" * (len(METRICS) + 3) + "|",
    ]
    for r in sorted(records, key=lambda r: (names.index(r["method"]), r["seed"])):
        cells = [pct(r[m], missing="empty" if m in empty else "-") for m in METRICS]
        folder = _relative(r["output_dir"], out_dir)
        lines.append(
            f"| {labels[r['method']]} seed {r['seed']} | {' | '.join(cells)} | "
            f"{r['seconds']:.0f}{' (resumed)' if r.get('resumed') else ''} | `{folder}` |"
        )
    return "\n".join(lines) + "\n"


def own_classifier_section(
    records: Sequence[Mapping[str, Any]], variants: Sequence[Variant]
) -> list[str]:
    """The lines of the table of the methods that train a classifier of their own (BCL,
    PaCo): its top-1 %, mean ± std over seeds, overall and by shot group, beside (not in)
    the shared linear probe's table; none when no method has one."""
    own = [
        {"method": r["method"], "seed": r["seed"], **r["own_classifier"]}
        for r in records
        if r.get("own_classifier")
    ]
    if not own:
        return []
    names = [v.name for v in variants if any(r["method"] == v.name for r in own)]
    labels = {v.name: f"{v.label}'s own classifier" for v in variants}
    metrics = shots.ACCURACY_GROUPS
    summary = summarise(own, names, names[0], metrics)
    table = format_table(
        summary, labels, names[0], metrics, no_difference=names, empty=empty_groups(records[0])
    )
    return [
        "Top-1 % of the classifier a method trains itself (scored on the same test set; "
        "not comparable with the linear probe above as a measure of the features), mean "
        "± sample std over seeds.",
        "",
        table,
        "",
    ]


def data_name(record: Mapping[str, Any]) -> str:
    """The data of ``record`` as titles name it: the folder of an ``image_folder``
    (``my_images (image_folder)``), else the dataset's name."""
    if record["dataset"] != "image_folder":
        return str(record["dataset"])
    return f"{Path(record['config']['data']['root']).name} (image_folder)"


def imbalance(record: Mapping[str, Any]) -> str:
    """How ``record``'s training set was cut: its imbalance factor, every image of an
    image folder as it is, or the data set's standard factor."""
    factor = record["imbalance_factor"]
    if factor is not None:
        return f"imbalance factor {factor:g}"
    if record["dataset"] == "image_folder":
        return "every image as it is"
    return "the data set's standard imbalance factor"


def provenance(records: Sequence[Mapping[str, Any]]) -> str:
    """``"dscl-plugin 0.1.0, commit 44380efb18"``; an installed package (no git
    checkout) is named by its version alone."""
    versions = ", ".join(sorted({str(r.get("version")) for r in records}))
    commits = sorted({str(r["git_commit"])[:10] for r in records if r.get("git_commit")})
    if not commits:
        return f"dscl-plugin {versions} (installed package, no git commit)"
    return f"dscl-plugin {versions}, commit {', '.join(commits)}"


def _relative(path: str, out_dir: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(out_dir).resolve()))
    except ValueError:
        return path


def write_report(
    records: Sequence[Mapping[str, Any]],
    variants: Sequence[Variant],
    out_dir: str | Path,
    command: str,
) -> tuple[Path, Path]:
    """``DIR/report.md`` and ``DIR/compare.png``."""
    out_dir = Path(out_dir)
    names = [v.name for v in variants]
    labels = {v.name: v.label for v in variants}
    summary = summarise(records, names, names[0])
    report = out_dir / REPORT_FILE
    report.write_text(report_markdown(records, variants, command, out_dir))
    title = f"{records[0]['dataset']}: " + ", ".join(
        f"{labels[r['method']]} ({r['seeds']} seeds)" for r in summary
    )
    figure = plot_comparison(summary, labels, names[0], out_dir / FIGURE_FILE, title)
    return report, figure
