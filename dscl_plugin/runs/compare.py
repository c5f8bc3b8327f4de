"""``dscl-compare``: methods x paired seeds on one config, each a normal run in its own
folder, recorded and resumable, summarised as ``report.md`` and ``compare.png``.

``DIR/<method>/seed<s>/`` is a run folder like ``dscl-train``'s (``config.yaml``,
checkpoints, ``metrics.json``, ``curves.png``), so ``dscl-eval`` and ``--resume`` work on
it. Every finished run appends one JSON line to ``DIR/runs.jsonl`` (method, seed,
metrics, epochs, wall time, commit, machine and its load average at the start,
settings). A later call starts only the runs that line lacks; a run with a checkpoint but
no line (interrupted) resumes from it.
The tables and paired differences are :mod:`dscl_plugin.evaluation.comparison`'s.
"""

import fcntl
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dscl_plugin.errors import ConfigError
from dscl_plugin.evaluation.comparison import format_table, plot_comparison, summarise
from dscl_plugin.methods import check_method
from dscl_plugin.runs import pipeline
from dscl_plugin.runs.folder import RunFolder, changed_settings, method_options_key
from dscl_plugin.runs.provenance import load_average, machine_description, package_stamp
from dscl_plugin.runs.variants import Variant, resolve_variants
from dscl_plugin.training.config import load_config, to_dict
from dscl_plugin.training.registry import available_methods, load_plugins
from dscl_plugin.training.schema import Config

RUNS_FILE = "runs.jsonl"
REPORT_FILE = "report.md"
FIGURE_FILE = "compare.png"
# settings every recorded run of one folder shares (data.root may move)
SHARED_KEYS = ("data", "model", "optim", "probe", "eval", "trainer.epochs", "trainer.batch_size")
# overrides the comparison sets itself, and the option that sets them
RESERVED = {"method": "--methods", "seed": "--seeds", "output_dir": "--out"}
# (config, resume "last" or None) -> the stage-2 metrics (None on a non-main process)
RunFunction = Callable[[Config, str | None], Mapping[str, Any] | None]


@dataclass
class PlannedRun:
    variant: Variant
    seed: int
    config: Config


def plan_runs(
    config: str | Path,
    methods: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    overrides: Sequence[str] = (),
    extra_variants: Mapping[str, Variant] | None = None,
) -> list[PlannedRun]:
    """One run per (method, seed), seed-major, its config ``config`` + ``overrides`` +
    the variant's overrides, ``seed`` and ``output_dir=DIR/<method>/seed<s>``; every
    config is loaded and checked before anything runs.

    Raises:
        ConfigError: an unknown method, a seed given twice or negative, an override that
            the comparison sets itself or that the config does not have, a config that
            a method rejects; one line each.
    """
    repeated = sorted({s for s in seeds if list(seeds).count(s) > 1})
    if repeated:
        raise ConfigError(f"--seeds: {repeated} given twice; each seed is one paired run.")
    if not seeds or min(seeds) < 0:
        raise ConfigError(f"--seeds: give one or more seeds >= 0, got {list(seeds)}.")
    for item in overrides:
        key = item.split("=", 1)[0]
        if key in RESERVED:
            raise ConfigError(f"{item!r}: dscl-compare sets {key} itself; use {RESERVED[key]}.")
    load_plugins()
    variants = resolve_variants(methods, available_methods(), extra_variants)
    plan = []
    for seed in seeds:
        for variant in variants:
            folder = Path(out_dir) / variant.name / f"seed{seed}"
            run_config = load_config(
                config, [*overrides, *variant.overrides, f"seed={seed}", f"output_dir={folder}"]
            )
            _check_run(variant, run_config)
            plan.append(PlannedRun(variant, seed, run_config))
    return plan


def _check_run(variant: Variant, config: Config) -> None:
    check_method(config)
    t = config.trainer
    if t.devices * t.num_nodes > 1:
        raise ConfigError(
            "trainer.devices/num_nodes: dscl-compare runs one process per run; "
            "train each run with dscl-train for DDP."
        )
    if variant.name == "dscl_pbsd" and config.model.pbsd_weight == 0:
        raise ConfigError(
            "--methods dscl_pbsd: the config has model.pbsd_weight 0 (no PBSD); use a dscl_* "
            "config or set model.pbsd_weight and model.num_patches."
        )


def read_records(path: str | Path, key: Sequence[str] = ("method", "seed")) -> list[dict]:
    """The JSON lines of ``path`` (none if it is missing); a later line with the same
    ``key`` fields replaces an earlier one."""
    path = Path(path)
    if not path.is_file():
        return []
    records = {}
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[tuple(record.get(k) for k in key)] = record
    return list(records.values())


def append_record(path: str | Path, record: Mapping[str, Any]) -> None:
    """Appends one JSON line under an exclusive lock (runs may finish side by side)."""
    with open(path, "a") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.write(json.dumps(record) + "\n")


def _check_recorded(plan: Iterable[PlannedRun], recorded: Mapping[tuple, dict], runs: Path):
    for planned in plan:
        record = recorded.get((planned.variant.name, planned.seed))
        if record is None:
            continue
        keys = (*SHARED_KEYS, method_options_key(planned.config))
        changes = changed_settings(record["config"], planned.config, keys)
        if changes:
            key, old, new = changes[0]
            more = f" (+{len(changes) - 1} more)" if len(changes) > 1 else ""
            raise ConfigError(
                f"{runs} holds {planned.variant.name} seed {planned.seed} run with {key} {old!r}, "
                f"now {new!r}{more}: use another --out, or the same settings to add to it."
            )


def run_missing(
    plan: Sequence[PlannedRun],
    out_dir: str | Path,
    run: RunFunction,
    command: str = "",
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Runs the planned runs that ``DIR/runs.jsonl`` lacks (resuming a folder that has a
    checkpoint), appending a record for each; returns the records of ``plan``.

    Raises:
        ConfigError: a recorded run was trained with other settings than planned.
    """
    runs = Path(out_dir) / RUNS_FILE
    runs.parent.mkdir(parents=True, exist_ok=True)
    recorded = {(r["method"], r["seed"]): r for r in read_records(runs)}
    _check_recorded(plan, recorded, runs)
    missing = [p for p in plan if (p.variant.name, p.seed) not in recorded]
    log(f"dscl-compare: {len(plan) - len(missing)} of {len(plan)} run(s) recorded in {runs}")
    context = {"command": command, "machine": machine_description(), **package_stamp()}
    for i, planned in enumerate(missing):
        last = RunFolder.of(planned.config).last_checkpoint
        resume = "last" if last.is_file() else None
        log(
            f"dscl-compare: [{i + 1}/{len(missing)}] {planned.variant.name} seed {planned.seed}"
            + (f" (resuming {last})" if resume else "")
        )
        load, start = load_average(), time.perf_counter()
        metrics = run(planned.config, resume)
        if metrics is None:  # not the main process
            continue
        seconds = time.perf_counter() - start
        record = _record(
            planned, overrides, metrics, seconds, resume, context | {"load_average": load}
        )
        append_record(runs, record)
        recorded[(planned.variant.name, planned.seed)] = record
    return [recorded[key] for key in ((p.variant.name, p.seed) for p in plan) if key in recorded]


def _record(
    planned: PlannedRun,
    overrides: Sequence[str],
    metrics: Mapping[str, Any],
    seconds: float,
    resume: str | None,
    context: Mapping[str, Any],
) -> dict[str, Any]:
    config = planned.config
    probe = metrics["linear_probe"]
    return {
        "method": planned.variant.name,
        "label": planned.variant.label,
        "seed": planned.seed,
        "dataset": config.data.name,
        "imbalance_factor": config.data.imbalance_factor,
        **{group: probe[group] for group in ("overall", "many", "medium", "few")},
        "knn_p1": metrics["knn"]["precision_at_1"],
        "class_counts": metrics["train_class_counts"],
        "epochs": config.trainer.epochs,
        "seconds": round(seconds, 1),
        "resumed": resume is not None,
        "output_dir": config.output_dir,
        "overrides": list(overrides),
        "method_overrides": list(planned.variant.overrides),
        **context,
        "config": to_dict(config),
    }


def report_markdown(
    records: Sequence[Mapping[str, Any]],
    variants: Sequence[Variant],
    command: str,
    out_dir: str | Path,
) -> str:
    """``report.md``: the settings, the summary table with the paired differences to the
    first method, the figure and one row per run."""
    labels = {v.name: v.label for v in variants}
    names = [v.name for v in variants]
    first = records[0]
    config = first["config"]
    seeds = sorted({r["seed"] for r in records})
    factor = first["imbalance_factor"]
    title = " vs ".join(labels[n] for n in names if any(r["method"] == n for r in records))
    minutes = sum(r["seconds"] for r in records) / 60
    overrides = sorted({" ".join(r["overrides"]) for r in records})
    lines = [
        f"# {title} on {first['dataset']}",
        "",
        f"Command: `{command}`",
        "",
        f"- data: {first['dataset']}, imbalance factor "
        f"{'of the data set' if factor is None else f'{factor:g}'}, "
        f"train class sizes {first['class_counts']}; shot groups many > "
        f"{config['eval']['many_threshold']}, few < {config['eval']['few_threshold']} "
        "training images",
        f"- config overrides: {' | '.join(f'`{o}`' if o else 'none' for o in overrides)}",
        f"- training: {config['model']['backbone']}, {first['epochs']} epochs, batch "
        f"{config['trainer']['batch_size']}; method overrides: "
        + "; ".join(f"{labels[v.name]} `{' '.join(v.overrides)}`" for v in variants),
        f"- commit: {', '.join(sorted({str(r.get('git_commit'))[:10] for r in records}))} "
        f"(dscl-plugin {', '.join(sorted({str(r.get('version')) for r in records}))})",
        f"- machine: {'; '.join(sorted({str(r.get('machine')) for r in records}))}",
        f"- {len(records)} run(s), {minutes:.1f} min of run time",
        "",
        f"Top-1 % of a class-balanced linear probe on the frozen features (overall and by "
        f"shot group) and kNN precision@1 %, mean ± sample std (n − 1) over seeds {seeds}. "
        f"A paired row is the mean ± std of a method's per-seed difference to "
        f"{labels[names[0]]}, over the seeds both ran (its second column): a difference "
        "inside the seeds' spread is a tie.",
        "",
        summary_table(records, variants),
        "",
        f"![per shot group: mean ± std, and the paired differences]({FIGURE_FILE})",
        "",
        "| run | overall | many | medium | few | kNN P@1 | seconds | folder |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in sorted(records, key=lambda r: (names.index(r["method"]), r["seed"])):
        cells = [_pct(r[m]) for m in ("overall", "many", "medium", "few", "knn_p1")]
        folder = _relative(r["output_dir"], out_dir)
        lines.append(
            f"| {labels[r['method']]} seed {r['seed']} | {' | '.join(cells)} | "
            f"{r['seconds']:.0f}{' (resumed)' if r.get('resumed') else ''} | `{folder}` |"
        )
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _relative(path: str, out_dir: str | Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path(out_dir).resolve()))
    except ValueError:
        return path


def summary_table(records: Sequence[Mapping[str, Any]], variants: Sequence[Variant]) -> str:
    """The Markdown table of ``records``: mean ± std per variant, paired differences to
    the first."""
    names = [v.name for v in variants]
    labels = {v.name: v.label for v in variants}
    return format_table(summarise(records, names, names[0]), labels, names[0])


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


def run_pipeline(config: Config, resume: str | None) -> dict[str, Any] | None:
    """One run as ``dscl-train`` runs it (:func:`dscl_plugin.runs.pipeline.run`): stage 1,
    resumed from ``last.ckpt`` when ``resume`` is ``"last"``, then stage 2."""
    return pipeline.run(config, resume=resume)


def compare(
    config: str | Path,
    methods: Sequence[str],
    seeds: Sequence[int],
    out_dir: str | Path,
    overrides: Sequence[str] = (),
    command: str = "",
    run: RunFunction = run_pipeline,
    extra_variants: Mapping[str, Variant] | None = None,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """:func:`plan_runs`, :func:`run_missing` (``run`` trains and evaluates one config),
    then :func:`write_report`; returns the records."""
    plan = plan_runs(config, methods, seeds, out_dir, overrides, extra_variants)
    records = run_missing(plan, out_dir, run, command, overrides, log)
    if not records:  # a process other than the main one of a run
        return records
    variants = list({p.variant.name: p.variant for p in plan}.values())
    report, figure = write_report(records, variants, out_dir, command)
    log(summary_table(records, variants))
    log(f"dscl-compare: wrote {report} and {figure}")
    return records
