"""Long-tailed top-1 accuracy: SupCon vs DSCL vs DSCL+PBSD over paired seeds.

Training and evaluation run through the project's own pipeline: one config file per
dataset (``dscl_<dataset>`` (preset)) loaded with :func:`dscl_plugin.training.config.load_config`
and per-method overrides, then :func:`dscl_plugin.runs.stage1.train` and
:func:`dscl_plugin.runs.stage2.evaluate` (frozen backbone, class-balanced linear probe,
shot-group top-1, kNN precision@1). The three methods share every setting (backbone, views,
epochs, optimiser, probe) and differ only in:

- ``supcon``:    ``method=supcon model.beta=null model.pbsd_weight=0``
- ``dscl``:      ``method=dscl model.pbsd_weight=0`` (beta from the config, 8)
- ``dscl_pbsd``: ``method=dscl`` (pbsd_weight from the config, 1.5)

plus PBSD ablations (``pbsd_w0.5``, ``pbsd_scale0.3``, ``pbsd_patch8``; see ``METHODS``).
Seeds are paired: ``seed=s`` fixes the long-tailed train subset, the initial weights, the
batch order and the probe for every method, so each method's difference to SupCon is taken
per seed (mean +- std of the per-seed differences). ``raw_pixels`` is the same probe (and
kNN) on the flattened, normalised input pixels of the same split: learned features should
beat it. std is the sample std (ddof 1).

Every finished run is appended to ``<name>_runs.jsonl``; a later call skips the runs already
there (``--fresh`` starts over), so parts (``--imbalance-factors``, ``--methods``,
``--seeds``) can run one after another or side by side, and ``--summarise`` merges them into
one table without training. ``torch.set_num_threads(--threads)`` (default 1: on a shared
2-core machine, two 1-thread runs side by side beat one 2-thread run).

    python benchmarks/long_tail_accuracy.py                  # digits_lt, rho 10 and 50, 5 seeds
    python benchmarks/long_tail_accuracy.py --dataset fashion_mnist_lt   # rho 100 and 10, 3 seeds
    python benchmarks/long_tail_accuracy.py --dataset fashion_mnist_lt --imbalance-factors 10 \
        --seeds 2 --methods supcon dscl               # one part of it
    python benchmarks/long_tail_accuracy.py --dataset fashion_mnist_lt --summarise
    python benchmarks/long_tail_accuracy.py --quick          # smoke test (< 1 min)
    python benchmarks/long_tail_accuracy.py --methods supcon dscl --seeds 0 1 \
        --imbalance-factors 10 --sweep model.alpha=0.05,0.11,0.2,0.5   # Fig. 5: see sweep.py

Writes ``<output-dir>/<name>.json``, ``<name>.csv`` (summary: one row per dataset x rho x
method), ``<name>_runs.csv`` (one row per run) and ``<name>_runs.jsonl``; ``<name>`` is
``long_tail_accuracy`` for digits_lt and ``long_tail_accuracy_<dataset>`` otherwise
(``_<tag>`` appended with ``--tag``, ``_quick`` with ``--quick``). ``--set KEY=VALUE`` adds
config overrides to every run (a longer or cheaper harness, e.g. ``--epochs 18 --set
trainer.precision=bf16-mixed --tag 18ep_bf16``).
"""

import argparse
import contextlib
import csv
import io
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import sweep  # noqa: E402  (siblings: benchmarks is not a package)
from reporting import git_state, pct, write_csv  # noqa: E402

from dscl_plugin.evaluation import comparison
from dscl_plugin.evaluation.comparison import METRICS
from dscl_plugin.evaluation.metrics import knn_metrics, shot_metrics
from dscl_plugin.evaluation.probes import linear_probe  # noqa: E402
from dscl_plugin.runs.compare import append_record, read_records
from dscl_plugin.runs.datasets import build_dataset_split
from dscl_plugin.runs.provenance import load_average, machine_description
from dscl_plugin.runs.stage1 import train  # noqa: E402
from dscl_plugin.runs.stage2 import evaluate  # noqa: E402
from dscl_plugin.runs.variants import VARIANTS, Variant
from dscl_plugin.training.config import load_config  # noqa: E402
from dscl_plugin.training.schema import Config
from dscl_plugin.transforms import eval_transform  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# PBSD ablations (DSCL + PBSD with one setting changed), beside the package's variants
ABLATIONS = {
    v.name: v
    for v in (
        Variant("pbsd_w0.5", "DSCL+PBSD, λ 0.5", ("method=dscl", "model.pbsd_weight=0.5")),
        Variant(
            "pbsd_scale0.3",
            "DSCL+PBSD, patch area 0.3–0.6",
            ("method=dscl", "model.patch_scale=[0.3,0.6]"),
        ),
        Variant("pbsd_patch8", "DSCL+PBSD, 8 px patches", ("method=dscl", "model.patch_size=8")),
    )
}
METHODS = {name: list(v.overrides) for name, v in {**VARIANTS, **ABLATIONS}.items()}
MAIN_METHODS = list(VARIANTS)
LABELS = {"raw_pixels": "raw pixels"} | {
    name: v.label for name, v in {**VARIANTS, **ABLATIONS}.items()
}
BASELINE = "supcon"
SHOTS = ("overall", "many", "medium", "few")
# dataset -> (config file, default imbalance factors, default and minimum number of seeds)
DATASETS = {
    "digits_lt": ("dscl_digits_lt", [10.0, 50.0], 5),
    "fashion_mnist_lt": ("dscl_fashion_mnist_lt", [100.0, 10.0], 3),
    "cifar10_lt": ("dscl_cifar10_lt", [100.0], 3),
    "cifar100_lt": ("dscl_cifar100_lt", [100.0], 3),
}


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="digits_lt")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="paired seeds to run (default 0..N-1: 5 for digits_lt, else 3)",
    )
    parser.add_argument(
        "--imbalance-factors",
        type=float,
        nargs="+",
        help="rho values (default: digits_lt 10 50, fashion_mnist_lt 100 10, CIFAR 100)",
    )
    parser.add_argument("--epochs", type=int, help="trainer.epochs (default: the config's)")
    parser.add_argument(
        "--set",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for every run of every method, e.g. "
        "trainer.precision=bf16-mixed (recorded in each run's command)",
    )
    parser.add_argument(
        "--tag",
        help="a harness name appended to the result files "
        "(long_tail_accuracy_<dataset>_<tag>...): runs with other settings are kept apart",
    )
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=MAIN_METHODS)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: first rho, 1 epoch of 2 batches, 2 probe epochs",
    )
    parser.add_argument(
        "--data-root",
        default="data",
        help="data.root (CIFAR, Fashion-MNIST); never downloads",
    )
    parser.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="forget the runs recorded in <name>_runs.jsonl",
    )
    parser.add_argument(
        "--summarise",
        action="store_true",
        help="train nothing: merge the recorded runs into the tables",
    )
    parser.add_argument(
        "--keep-dir",
        help="keep each run's output_dir (checkpoints, logs) under this folder",
    )
    parser.add_argument(
        "--sweep",
        nargs="+",
        metavar="KEY=V1,V2",
        help="sweep config keys one at a time for the non-SupCon --methods, e.g. "
        "model.alpha=0.05,0.11,0.2,0.5 (sweep.py)",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _, default_rhos, min_seeds = DATASETS[args.dataset]
    args.min_seeds = 1 if args.quick else min_seeds
    if args.seeds is None:
        args.seeds = list(range(2 if args.quick else min_seeds))
    if args.imbalance_factors is None:
        args.imbalance_factors = default_rhos[:1] if args.quick else default_rhos
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds must be >= 0, got {args.seeds}")
    args.grid = None
    if args.sweep:
        try:
            args.grid = sweep.parse_sweep(args.sweep)
            for method, key, value in sweep.sweep_jobs(args.grid, args.methods):
                _config(args, args.imbalance_factors[0], 0, method, "unused", (key, value))
        except ValueError as error:  # ConfigError is a ValueError
            parser.error(str(error))
    return args


def _overrides(args: argparse.Namespace, rho: float, seed: int) -> list[str]:
    overrides = [
        f"data.imbalance_factor={rho}",
        f"data.root={args.data_root}",
        "data.download=false",
        f"seed={seed}",
        "trainer.progress_bar=false",
    ]
    if args.epochs is not None:
        overrides.append(f"trainer.epochs={args.epochs}")
    overrides += args.set
    if args.quick:
        overrides += [
            "trainer.epochs=1",
            "trainer.limit_train_batches=2",
            "trainer.log_every_n_steps=1",
            "optim.warmup_epochs=0",
            "probe.epochs=2",
            "probe.milestones=[1]",
        ]
    return overrides


def _config(
    args: argparse.Namespace,
    rho: float,
    seed: int,
    method: str,
    output_dir: str,
    swept: tuple | None = None,
) -> Config:
    extra = [] if method == "raw_pixels" else METHODS[method]
    if swept is not None and swept[0] is not None:  # (key, value) of a --sweep run
        extra = extra + sweep.sweep_overrides(*swept)
    path = DATASETS[args.dataset][0]
    return load_config(path, _overrides(args, rho, seed) + extra + [f"output_dir={output_dir}"])


def _raw_pixel_run(config: Config) -> dict[str, object]:
    """The linear probe of ``config.probe`` and the kNN on flattened normalised pixels."""
    transform = eval_transform(config.data.input_size)
    data = {}
    for split in ("train", "test"):
        dataset = build_dataset_split(config, split, transform)
        images, labels = zip(*(dataset[i] for i in range(len(dataset))))
        data[split] = (torch.stack(images).flatten(1), torch.tensor(labels))
        if split == "train":
            class_counts, num_classes = dataset.class_counts, dataset.num_classes
    p, e = config.probe, config.eval
    logits = linear_probe(
        data["train"][0],
        data["train"][1],
        data["test"][0],
        num_classes,
        p.schedule(config.seed),
    )
    metrics = shot_metrics(logits, data["test"][1], class_counts, e.many_threshold, e.few_threshold)
    knn = knn_metrics(*data["train"], *data["test"], k=e.knn_k or "max_bin_count")
    return {key: metrics[key] for key in SHOTS} | {
        "knn_p1": knn["precision_at_1"],
        "class_counts": list(class_counts),
    }


def _last_epoch_losses(output_dir: str) -> dict[str, float | None]:
    """Mean contrastive term (``loss_dscl``, SupCon's ``loss_supcon``), recorded as
    ``loss_dscl``, and ``loss_pbsd`` (0 when not logged) over the last epoch's logged steps."""
    with open(Path(output_dir) / "logs" / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss_step")]
    last = [r for r in rows if r["epoch"] == rows[-1]["epoch"]] if rows else []

    def mean(*names: str) -> float | None:
        values = [float(next((r[n] for n in names if r.get(n)), 0)) for r in last]
        return statistics.fmean(values) if values else None

    return {"loss_dscl": mean("loss_dscl", "loss_supcon"), "loss_pbsd": mean("loss_pbsd")}


def _method_run(config: Config) -> dict[str, object]:
    """Stage 1 then stage 2 of the pipeline; its own printed table is swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        module = train(config)
        metrics = evaluate(config, module)
    return dict(metrics["linear_probe"]) | {
        "knn_p1": metrics["knn"]["precision_at_1"],
        "class_counts": metrics["train_class_counts"],
        **_last_epoch_losses(config.output_dir),
    }


def _output_dir(args: argparse.Namespace, rho: float, seed: int, method: str, swept: tuple | None):
    """A temporary folder, or
    ``--keep-dir/<dataset>_rho<rho>_seed<seed>_<method>[_<key>=<value>]``."""
    if args.keep_dir is None:
        return tempfile.TemporaryDirectory(prefix="dscl_lt_")
    name = f"{args.dataset}_rho{rho:g}_seed{seed}_{method}" + (
        "" if swept is None else "_" + "=".join(swept)
    )
    return contextlib.nullcontext(str(Path(args.keep_dir) / name))


def _one_run(
    args: argparse.Namespace,
    rho: float,
    seed: int,
    method: str,
    swept: tuple | None = None,
) -> dict[str, object]:
    load = load_average()
    with _output_dir(args, rho, seed, method, swept) as output_dir:
        config = _config(args, rho, seed, method, output_dir, swept)
        start = time.perf_counter()
        result = _raw_pixel_run(config) if method == "raw_pixels" else _method_run(config)
        seconds = time.perf_counter() - start
    return {
        "dataset": args.dataset,
        "imbalance_factor": rho,
        "method": method,
        "seed": seed,
        **{key: result[key] for key in METRICS},
        "seconds": round(seconds, 2),
        "epochs": config.trainer.epochs,
        "class_counts": result["class_counts"],
        "loss_dscl": result.get("loss_dscl"),
        "loss_pbsd": result.get("loss_pbsd"),
        "threads": args.threads,
        "git": args.git,
        "machine": args.machine,
        "load_average": load,
        **({} if swept is None else {"sweep_key": swept[0], "sweep_value": swept[1]}),
        "command": " ".join(["python", "benchmarks/long_tail_accuracy.py", *args.argv]),
    }


def _settings(runs: list[dict[str, object]]) -> list[tuple]:
    """The (dataset, rho) of ``runs``, rho descending per dataset."""
    return sorted(
        {(r["dataset"], r["imbalance_factor"]) for r in runs}, key=lambda s: (s[0], -s[1])
    )


def summarise(runs: list[dict[str, object]]) -> list[dict[str, object]]:
    """Per (dataset, rho): :func:`dscl_plugin.evaluation.comparison.summarise` (mean ± std
    per method and metric, paired differences to SupCon), the rows led by both keys."""
    rows = []
    for dataset, rho in _settings(runs):
        group = [r for r in runs if (r["dataset"], r["imbalance_factor"]) == (dataset, rho)]
        rows += [
            {"dataset": dataset, "imbalance_factor": rho, **row}
            for row in comparison.summarise(group, list(LABELS), BASELINE)
        ]
    return rows


def format_table(summary: list[dict[str, object]], runs: list[dict[str, object]]) -> str:
    """Per dataset and rho, a heading (class sizes, seeds) and the Markdown table of
    :func:`dscl_plugin.evaluation.comparison.format_table`: top-1 % and kNN precision@1 %
    (mean ± std over seeds) and the paired difference to SupCon."""
    lines = []
    for dataset, rho in dict.fromkeys((r["dataset"], r["imbalance_factor"]) for r in summary):
        group = [r for r in runs if (r["dataset"], r["imbalance_factor"]) == (dataset, rho)]
        rows = [r for r in summary if (r["dataset"], r["imbalance_factor"]) == (dataset, rho)]
        seeds = sorted({r["seed"] for r in group})
        lines += [
            f"{dataset}, imbalance {rho:g} (train class sizes {group[0]['class_counts']}; "
            f"seeds {seeds})",
            "",
            comparison.format_table(rows, LABELS, BASELINE, no_difference=("raw_pixels",)),
            "",
        ]
    return "\n".join(lines)


def missing_seeds(summary: list[dict[str, object]], min_seeds: int) -> list[str]:
    """Settings with fewer than ``min_seeds`` paired seeds, as readable warnings."""
    return [
        f"{r['dataset']} rho={r['imbalance_factor']:g} {r['method']}: {r['seeds']} seed(s), "
        f"fewer than the {min_seeds} a comparison needs"
        for r in summary
        if r["seeds"] < min_seeds
    ]


def _write(
    stem: Path,
    args: argparse.Namespace,
    runs: list[dict[str, object]],
    summary: list[dict[str, object]],
    table: str,
) -> None:
    write_csv(Path(f"{stem}.csv"), summary)
    write_csv(
        Path(f"{stem}_runs.csv"),
        [{**r, "git": r["git"]["commit"]} for r in runs],
        extrasaction="ignore",
    )
    settings = {
        "commands": sorted({r["command"] for r in runs}),
        "commits": sorted({r["git"]["commit"] for r in runs}),
        "modified_files": sorted({f for r in runs for f in r["git"]["modified"]}),
        "threads": sorted({r["threads"] for r in runs}),
        "machine": f"{os.cpu_count()} CPU cores, {platform.platform()}",
        "torch": torch.__version__,
        "run_seconds_total": round(sum(r["seconds"] for r in runs), 1),
        "config": DATASETS[args.dataset][0],
        "method_overrides": METHODS,
        "common_overrides_example": _overrides(args, runs[0]["imbalance_factor"], 0),
    }
    Path(f"{stem}.json").write_text(
        json.dumps(
            {"settings": settings, "summary": summary, "runs": runs, "table": table},
            indent=2,
        )
        + "\n"
    )


def read_runs(path: Path) -> list[dict[str, object]]:
    """The runs recorded in ``path`` (JSON lines); a later record of the same
    (dataset, rho, method, seed, swept key and value) replaces an earlier one."""
    return read_records(path, RUN_KEY)


RUN_KEY = ("dataset", "imbalance_factor", "method", "seed", "sweep_key", "sweep_value")


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in (
        "pytorch_lightning",
        "lightning",
        "lightning.pytorch",
        "lightning_fabric",
        "lightning.fabric",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)


def _run_sweep(args: argparse.Namespace) -> list[str]:
    """``--sweep``: SupCon once per seed, every other method at every swept value; runs are
    recorded in ``sweep_<dataset>_runs.jsonl`` (resumable like the main runs); one table and
    plot per rho and swept key (:func:`sweep.write_sweep_reports`)."""
    stem = Path(args.output_dir) / f"sweep_{args.dataset}{'_quick' if args.quick else ''}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    log = Path(f"{stem}_runs.jsonl")
    if args.fresh:
        log.unlink(missing_ok=True)
    done = {
        (
            r["imbalance_factor"],
            r["method"],
            r["seed"],
            r.get("sweep_key"),
            r.get("sweep_value"),
        )
        for r in read_runs(log)
    }
    jobs = (
        []
        if args.summarise
        else [
            (rho, seed, method, (key, value))
            for rho in args.imbalance_factors
            for seed in args.seeds
            for method, key, value in sweep.sweep_jobs(args.grid, args.methods)
            if (rho, method, seed, key, value) not in done
        ]
    )
    start = time.perf_counter()
    for i, (rho, seed, method, swept) in enumerate(jobs):
        run = _one_run(args, rho, seed, method, swept if swept[0] is not None else None)
        append_record(log, run)
        print(
            f"[{i + 1}/{len(jobs)} {time.perf_counter() - start:6.0f}s] "
            f"rho={rho:g} seed={seed} {method} "
            f"{'' if swept[0] is None else '='.join(swept)}  overall {pct(run['overall'])}",
            flush=True,
        )
    runs = [r for r in read_runs(log) if r["dataset"] == args.dataset and r["seed"] in args.seeds]
    tables = sweep.write_sweep_reports(runs, args.grid, LABELS, stem) if runs else []
    print("\n\n".join(tables) + f"\nwrote {stem}_rho<rho>_<key>.{{csv,md,png}}")
    return tables


def main(argv: Sequence[str] | None = None) -> list:
    """The summary rows, or with ``--sweep`` the sweep tables."""
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    args.git = git_state()  # at start: the code imported for every run
    args.machine = machine_description()
    _quiet()
    if args.grid:
        return _run_sweep(args)
    name = (
        "long_tail_accuracy"
        if args.dataset == "digits_lt"
        else f"long_tail_accuracy_{args.dataset}"
    )
    if args.tag:
        name += f"_{args.tag}"
    stem = Path(args.output_dir) / (f"{name}_quick" if args.quick else name)
    stem.parent.mkdir(parents=True, exist_ok=True)
    log = Path(f"{stem}_runs.jsonl")
    if args.fresh:
        log.unlink(missing_ok=True)
    done = {(r["imbalance_factor"], r["method"], r["seed"]) for r in read_runs(log)}
    jobs = (
        []
        if args.summarise
        else [
            (rho, seed, method)
            for rho in args.imbalance_factors
            for seed in args.seeds
            for method in ["raw_pixels", *args.methods]
            if (rho, method, seed) not in done
        ]
    )
    start = time.perf_counter()
    for i, (rho, seed, method) in enumerate(jobs):
        run = _one_run(args, rho, seed, method)
        append_record(log, run)
        print(
            f"[{i + 1}/{len(jobs)} {time.perf_counter() - start:6.0f}s] "
            f"{args.dataset} rho={rho:g} seed={seed} "
            f"{method:<13} "
            + "  ".join(f"{m} {pct(run[m])}" for m in METRICS)
            + f"  ({run['seconds']:.0f}s)",
            flush=True,
        )
    runs = [r for r in read_runs(log) if r["dataset"] == args.dataset]
    if not runs:
        print(f"no runs recorded in {log}")
        return []
    summary = summarise(runs)
    table = format_table(summary, runs)
    print(
        f"\nTop-1 % of a class-balanced linear probe and kNN precision@1 %, mean ± std over paired "
        f"seeds; {len(jobs)} new run(s) in {(time.perf_counter() - start) / 60:.1f} min\n"
    )
    print(table)
    for warning in missing_seeds(summary, args.min_seeds):
        print(f"warning: {warning}")
    _write(stem, args, runs, summary, table)
    print(f"wrote {stem}.csv, {stem}.json, {stem}_runs.csv ({len(runs)} runs from {log.name})")
    return summary


if __name__ == "__main__":
    main()
