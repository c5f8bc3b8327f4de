"""The long-tail family's blocks: the seven-method ``dscl-compare`` runs (engine table, own
classifiers, verdicts), the numbers each paper's authors report on ImageNet-LT, and the
family's loss speed against SupCon and against the official losses."""

import shlex
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import dscl_plugin.methods  # noqa: F401  (registers the methods and their labels)
from benchmarks.reporting import markdown_table
from dscl_plugin.evaluation import comparison
from dscl_plugin.runs.compare_report import own_classifier_section, summary_table, verdict_lines
from dscl_plugin.runs.variants import Variant
from dscl_plugin.training.registry import method_label
from tools.render_docs.results import (
    Render,
    pick_columns,
    read_json,
    read_jsonl,
    run_settings,
    settings,
    source,
)

PUBLISHED = "published_imagenet_lt.json"


def _variants(records: Sequence[Mapping[str, Any]]) -> list[Variant]:
    """The methods of ``records`` as the engine ran them, in the order of the first
    record's ``--methods`` (``runs.jsonl`` holds them in the order they finished)."""
    variants = {
        r["method"]: Variant(r["method"], r["label"], tuple(r["method_overrides"])) for r in records
    }
    words = shlex.split(records[0]["command"])
    named = words[words.index("--methods") + 1 :] if "--methods" in words else []
    order = {name: i for i, name in enumerate(named)}
    return sorted(variants.values(), key=lambda v: order.get(v.name, len(order)))


def compare_family(name: str) -> Render:
    """A family ``dscl-compare`` (``<folder>/runs.jsonl``): the engine's table, the own
    classifiers' table and the verdicts against the first method."""

    def render(root: Path) -> str:
        records = read_jsonl(root, name)
        variants = _variants(records)
        verdicts, warning = verdict_lines(records, variants)
        minutes = sum(r["seconds"] for r in records) / 60
        return "\n\n".join(
            [
                summary_table(records, variants),
                "\n".join(own_classifier_section(records, variants)).strip(),
                f"Verdicts against {variants[0].label} (overall top-1 of the probe):\n\n"
                + "\n".join(f"- {line}." for line in verdicts)
                + (f"\n\n{warning}." if warning else ""),
                source([name], run_settings(records), timed=True)
                + f" {len(records)} runs, {minutes:.1f} min of run time.",
            ]
        )

    return render


def beside_published(name: str) -> Render:
    """Each method's overall top-1 here (``name``'s runs, mean ± std and the paired
    difference to the first method) beside the ImageNet-LT top-1 its authors report
    (``published_imagenet_lt.json``: value, setting and source of each)."""

    def render(root: Path) -> str:
        records = read_jsonl(root, name)
        variants = _variants(records)
        summary = {
            row["method"]: row
            for row in comparison.summarise(
                records, [v.name for v in variants], variants[0].name, ["overall"]
            )
        }
        published = read_json(root, PUBLISHED)
        cited = {row["method"]: row for row in published["rows"]}
        rows = []
        for variant in variants:
            here, paper = summary[variant.name], cited.get(variant.name)
            rows.append({
                "method": variant.label,
                "here: overall": comparison.pct(here["overall_mean"], here["overall_std"]),
                f"here: − {variants[0].label}": comparison.pct(
                    here["overall_diff_mean"], here["overall_diff_std"], signed=True
                ),
                "ImageNet-LT top-1 (authors)": _published_value(paper),
                "their setting": paper["setting"] if paper else "–",
                "source": f"[{paper['source']}]({paper['url']})" if paper else "–",
            })  # fmt: skip
        dataset = records[0]["dataset"]
        return "\n\n".join(
            [
                markdown_table(rows),
                f'"here": {dataset}, imbalance {records[0]["imbalance_factor"]:g}, '
                f"{len({r['seed'] for r in records})} paired seeds (`{name}`). "
                f"{published['note']}",
            ]
        )

    return render


def _published_value(paper: Mapping[str, Any] | None) -> str:
    """``"52.4 (mean of 5 trials)"``, ``"57.7"``, or "–" for a method nobody cited."""
    if paper is None:
        return "–"
    trials = paper.get("trials")
    return f"{paper['overall']}" + (f" (mean of {len(trials)} trials)" if trials else "")


def _timing_block(
    name: str, columns: Mapping[str, str], summary: Callable[[list[dict], dict], str]
) -> Render:
    """The rows of the timing result ``name`` (``{"settings", "rows"}``) in ``columns``,
    the line ``summary(rows, settings)`` and the source line."""

    def render(root: Path) -> str:
        data = read_json(root, name)
        return "\n\n".join(
            [
                markdown_table(pick_columns(data["rows"], columns)),
                summary(data["rows"], data["settings"]),
                source([name], settings(data), timed=True),
            ]
        )

    return render


def _against_supcon(rows: list[dict], meta: dict) -> str:
    target = meta["target_ratio"]
    one_way = [round(r["loss_ms"] / r["supcon_one_way_ms"], 2) for r in rows if r["loss"] == "bcl"]
    return (
        f"Ratios to the baseline (target ≤ {target}): {_ranges(rows, target)}. BCL's 2B "
        "anchors are both views, so its baseline is SupCon with both views as anchors; "
        f"against one-direction SupCon it is {min(one_way)}–{max(one_way)}× "
        f"({'met' if max(one_way) <= target else 'missed'}). D = {rows[0]['D']}, "
        f"C = {rows[0]['C']}, {meta['threads']} thread."
    )


def _against_official(rows: list[dict], meta: dict) -> str:
    commits = ", ".join(f"{repo} `{c[:7]}`" for repo, c in meta["official_commits"].items())
    return (
        f"Ours over the official (target ≤ {meta['target_ratio']}): "
        f"{_ranges(rows, meta['target_ratio'])}. D = {rows[0]['D']}, {meta['threads']} "
        f"thread; official code: {commits}."
    )


family_loss_speed = _timing_block(
    "family_loss_speed.json",
    {
        "loss": "loss",
        "B": "B",
        "K": "K",
        "loss_ms": "loss ms",
        "baseline": "baseline",
        "supcon_ms": "baseline ms",
        "ratio": "loss / baseline",
    },  # fmt: skip
    _against_supcon,
)
"""KCL, TSC, PaCo and BCL forward + backward against SupCon on the same batch."""

official_loss_speed = _timing_block(
    "official_loss_speed.json",
    {
        "loss": "loss",
        "B": "B",
        "C": "C",
        "K": "K",
        "ours_ms": "ours ms",
        "official_ms": "official ms",
        "ratio": "ours / official",
        "value_gap": "loss value gap",
    },  # fmt: skip
    _against_official,
)
"""BCLLoss and PaCoLoss forward + backward against the official losses."""


def _ranges(rows: Sequence[Mapping[str, Any]], target: float) -> str:
    """``"KCL 1.04–1.17 (met); ..."``: each loss's ratio range against ``target``."""
    ranges = []
    for loss in dict.fromkeys(r["loss"] for r in rows):
        ratios = [r["ratio"] for r in rows if r["loss"] == loss]
        met = sum(r <= target for r in ratios)
        verdict = "met" if met == len(ratios) else f"met in {met} of {len(ratios)} rows"
        ranges.append(f"{method_label(loss)} {min(ratios)}–{max(ratios)} ({verdict})")
    return "; ".join(ranges)
