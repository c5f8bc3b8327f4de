"""``dscl-compare``: methods x paired seeds on one config, each a normal run in its own
folder, recorded and resumable, summarised as ``report.md`` and ``compare.png``.

``DIR/<method>/seed<s>/`` is a run folder like ``dscl-train``'s (``config.yaml``,
checkpoints, ``metrics.json``, ``curves.png``), so ``dscl-eval`` and ``--resume`` work on
it. Every finished run appends one JSON line to ``DIR/runs.jsonl`` (method, seed,
metrics, epochs, wall time, commit, machine and its load average at the start,
settings). A later call starts only the runs that line lacks; a run with a checkpoint but
no line (interrupted) resumes from it.

Several processes may share one ``DIR`` (one per GPU or machine): each run is claimed
while it trains (:mod:`dscl_plugin.runs.records`), a process skips a claimed run and takes
the next, then waits for the runs others hold (taking over one whose process ended), so
every process ends with every run recorded and writes the report; report writes take
turns under the lock of ``runs.jsonl``. The report is
:mod:`dscl_plugin.runs.compare_report`'s.
"""

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dscl_plugin.data.shots import ACCURACY_GROUPS
from dscl_plugin.errors import ConfigError
from dscl_plugin.methods import check_method
from dscl_plugin.runs import pipeline
from dscl_plugin.runs.compare_report import summary_table, verdict_lines, write_report
from dscl_plugin.runs.folder import RunFolder, changed_settings, method_options_key
from dscl_plugin.runs.provenance import load_average, machine_description, package_stamp
from dscl_plugin.runs.records import append_record, claim, locked, read_records
from dscl_plugin.runs.variants import Variant, resolve_variants
from dscl_plugin.training.config import load_config, to_dict
from dscl_plugin.training.registry import available_methods, load_plugins
from dscl_plugin.training.schema import Config

RUNS_FILE = "runs.jsonl"
# settings every recorded run of one folder shares (data.root may move)
SHARED_KEYS = ("data", "model", "optim", "probe", "eval", "trainer.epochs", "trainer.batch_size")
# overrides the comparison sets itself, and the option that sets them
RESERVED = {"method": "--methods", "seed": "--seeds", "output_dir": "--out"}
# (config, resume "last" or None) -> the stage-2 metrics (None on a non-main process); the
# fields of a "recorded" mapping among them join the run's record (a benchmark's extras)
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


def _check_recorded(
    plan: Iterable[PlannedRun], recorded: Mapping[tuple[str, int], dict[str, Any]], runs: Path
) -> None:
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


# what happens to the run of a runs.jsonl line that does not parse
IGNORED_LINE = (
    "its run counts as not recorded: a finished one is re-evaluated from its folder, an "
    "unfinished one resumes from its checkpoint, one without a checkpoint trains again"
)


def _key(planned: PlannedRun) -> tuple[str, int]:
    return planned.variant.name, planned.seed


def records_reader(
    runs: Path, log: Callable[[str], None]
) -> Callable[[], dict[tuple[str, int], dict[str, Any]]]:
    """Reads ``runs`` anew at each call, as ``{(method, seed): record}``; a line that does
    not parse is told to ``log`` once, with what becomes of its run."""
    told: set[str] = set()

    def note(message: str) -> None:
        if message not in told:
            told.add(message)
            log(f"dscl-compare: note: {message}; {IGNORED_LINE}")

    return lambda: {(r["method"], r["seed"]): r for r in read_records(runs, note=note)}


def run_missing(
    plan: Sequence[PlannedRun],
    out_dir: str | Path,
    run: RunFunction,
    command: str = "",
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Runs the planned runs that ``DIR/runs.jsonl`` lacks (resuming a folder that has a
    checkpoint), appending a record for each; returns the records of ``plan``.

    Each run is claimed first (:func:`dscl_plugin.runs.records.claim`): a run another
    process holds is skipped for the next one, and waited for at the end; once it is
    let go, it is either recorded (nothing to do) or taken over (its process ended).

    Raises:
        ConfigError: a recorded run was trained with other settings than planned.
    """
    runs = Path(out_dir) / RUNS_FILE
    runs.parent.mkdir(parents=True, exist_ok=True)
    read = records_reader(runs, log)
    recorded = read()
    _check_recorded(plan, recorded, runs)
    missing = [p for p in plan if _key(p) not in recorded]
    log(f"dscl-compare: {len(plan) - len(missing)} of {len(plan)} run(s) recorded in {runs}")
    context = {"command": command, "machine": machine_description(), **package_stamp()}

    def start(planned: PlannedRun, label: str) -> None:
        found = read()  # another process may have recorded it since
        if _key(planned) in found:
            _check_recorded([planned], found, runs)
            log(f"dscl-compare: {label}: recorded by another process")
            return
        last = RunFolder.of(planned.config).last_checkpoint
        resume = "last" if last.is_file() else None
        log(f"dscl-compare: {label}" + (f" (resuming {last})" if resume else ""))
        load, began = load_average(), time.perf_counter()
        metrics = run(planned.config, resume)
        if metrics is None:  # not the main process
            return
        seconds = time.perf_counter() - began
        context_now = context | {"load_average": load}
        append_record(runs, _record(planned, overrides, metrics, seconds, resume, context_now))

    held_elsewhere = []
    for i, planned in enumerate(missing):
        label = f"[{i + 1}/{len(missing)}] {planned.variant.name} seed {planned.seed}"
        with claim(RunFolder.of(planned.config).root) as held:
            if held:
                start(planned, label)
            else:
                log(f"dscl-compare: {label}: claimed by another process; taking the next run")
                held_elsewhere.append((label, planned))
    for label, planned in held_elsewhere:
        log(
            f"dscl-compare: {label}: waiting for the process that claimed it (Ctrl-C stops "
            "waiting; that process writes the report when it is done)"
        )
        with claim(RunFolder.of(planned.config).root, wait=True):
            start(planned, label)
    recorded = read()
    return [recorded[key] for key in map(_key, plan) if key in recorded]


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
        **{group: probe[group] for group in ACCURACY_GROUPS},
        "knn_p1": metrics["knn"]["precision_at_1"],
        "own_classifier": own_classifier_scores(metrics),
        "class_counts": metrics["train_class_counts"],
        "class_names": metrics.get("class_names"),
        "empty_groups": metrics.get("empty_groups"),
        "epochs": config.trainer.epochs,
        "seconds": round(seconds, 1),
        "resumed": resume is not None,
        "output_dir": config.output_dir,
        "overrides": list(overrides),
        "method_overrides": list(planned.variant.overrides),
        **metrics.get("recorded", {}),
        **context,
        "config": to_dict(config),
    }


def own_classifier_scores(metrics: Mapping[str, Any]) -> dict[str, float | None] | None:
    """The top-1 of the method's own classifier, overall and by shot group, from a run's
    ``metrics.json`` (None for a method without one)."""
    own = metrics.get("own_classifier")
    return None if own is None else {g: own[g] for g in ACCURACY_GROUPS}


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
) -> list[dict[str, Any]]:
    """:func:`plan_runs`, :func:`run_missing` (``run`` trains and evaluates one config),
    then :func:`~dscl_plugin.runs.compare_report.write_report` of every recorded run of
    the planned methods and settings (other seeds too), whose verdicts it prints last;
    returns those records.

    Raises:
        ConfigError: ``out_dir`` is a file; see :func:`plan_runs` and :func:`run_missing`.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out '{out}' is a file: --out must be a folder (of runs and report).")
    plan = plan_runs(config, methods, seeds, out, overrides, extra_variants)
    if not run_missing(plan, out, run, command, overrides, log):
        return []  # a process other than the main one of a run
    variants = list({p.variant.name: p.variant for p in plan}.values())
    runs = out / RUNS_FILE
    with locked(runs):  # one report at a time: the last one written holds every record
        records = comparable(records_reader(runs, log)().values(), plan)
        report, figure = write_report(records, variants, out, command)
    log(summary_table(records, variants))
    log(f"dscl-compare: wrote {report} and {figure}")
    verdicts, warning = verdict_lines(records, variants)
    for line in [*verdicts, *([f"warning: {warning}"] if warning else [])]:
        log(f"dscl-compare: {line}")
    return records


def comparable(
    records: Iterable[dict[str, Any]], plan: Sequence[PlannedRun]
) -> list[dict[str, Any]]:
    """The ``records`` of the planned methods trained with the planned settings
    (:data:`SHARED_KEYS`), whatever their seed, in plan order then by seed."""
    planned = {p.variant.name: p.config for p in plan}
    order = list(planned)
    kept = [
        r
        for r in records
        if r["method"] in planned
        and not changed_settings(r["config"], planned[r["method"]], SHARED_KEYS)
    ]
    return sorted(kept, key=lambda r: (r["seed"], order.index(r["method"])))
