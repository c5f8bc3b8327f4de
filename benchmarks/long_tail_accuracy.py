"""Long-tailed top-1 accuracy: SupCon vs DSCL vs DSCL+PBSD over paired seeds, beside a
linear probe on the raw pixels.

A caller of ``dscl-compare``'s engine (:func:`dscl_plugin.runs.compare.compare`): per
imbalance factor one comparison folder ``OUT/<dataset>[_<tag>][_quick]/rho<rho>/`` with
``runs.jsonl``, ``report.md``, ``compare.png`` and a run folder per method and seed,
resumable as ``dscl-compare``'s (a later call runs only what ``runs.jsonl`` lacks, so
parts (``--imbalance-factors``, ``--methods``, ``--seeds``) can run one after another).
What it adds to ``dscl-compare``: the datasets' configs (``dscl_<dataset>`` presets) and
imbalance factors, the raw-pixel baseline (``raw_pixels``: the same probe and kNN on the
flattened, normalised input pixels of the same split), the PBSD ablations
(``ABLATIONS``), each run's last-epoch mean ``loss_dscl`` and ``loss_pbsd`` in its record,
and ``--sweep`` (:mod:`benchmarks.sweep`, the paper's Fig. 5).

    python -m benchmarks.long_tail_accuracy                  # digits_lt, rho 10 and 50, 5 seeds
    python -m benchmarks.long_tail_accuracy --dataset fashion_mnist_lt   # rho 100 and 10, 3 seeds
    python -m benchmarks.long_tail_accuracy --dataset fashion_mnist_lt --imbalance-factors 10 \\
        --seeds 2 --methods supcon dscl               # one part of it
    python -m benchmarks.long_tail_accuracy --dataset fashion_mnist_lt --summarise
    python -m benchmarks.long_tail_accuracy --quick          # smoke test
    python -m benchmarks.long_tail_accuracy --methods supcon dscl --seeds 0 1 \\
        --imbalance-factors 10 --sweep model.alpha=0.05,0.11,0.2,0.5

``--set KEY=VALUE`` adds config overrides to every run (a longer or cheaper harness, e.g.
``--epochs 18 --set trainer.precision=bf16-mixed --tag 18ep_bf16``); ``--threads`` is
``trainer.num_threads`` (default 1: on a shared 2-core machine, two 1-thread runs side by
side beat one 2-thread run).
"""

import argparse
import csv
import statistics
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from benchmarks import sweep
from dscl_plugin.data.shots import ACCURACY_GROUPS
from dscl_plugin.errors import ConfigError
from dscl_plugin.evaluation.metrics import knn_metrics, shot_metrics
from dscl_plugin.evaluation.probes import linear_probe
from dscl_plugin.runs import pipeline
from dscl_plugin.runs.compare import RUNS_FILE, compare
from dscl_plugin.runs.compare_report import summary_table
from dscl_plugin.runs.compute import torch_threads
from dscl_plugin.runs.datasets import build_dataset_split
from dscl_plugin.runs.folder import RunFolder
from dscl_plugin.runs.records import read_records
from dscl_plugin.runs.variants import VARIANTS, Variant
from dscl_plugin.training.schema import Config
from dscl_plugin.transforms import eval_transform

REPO = Path(__file__).resolve().parents[1]
# the baseline without training (its config is SupCon's; only data, probe and eval count)
RAW_PIXELS = Variant("raw_pixels", "raw pixels", VARIANTS["supcon"].overrides, "probe on pixels")
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
METHODS = {**VARIANTS, **ABLATIONS}
LABELS = {RAW_PIXELS.name: RAW_PIXELS.label} | {name: v.label for name, v in METHODS.items()}
# dataset -> (config, default imbalance factors, default number of seeds)
DATASETS = {
    "digits_lt": ("dscl_digits_lt", [10.0, 50.0], 5),
    "fashion_mnist_lt": ("dscl_fashion_mnist_lt", [100.0, 10.0], 3),
    "cifar10_lt": ("dscl_cifar10_lt", [100.0], 3),
    "cifar100_lt": ("dscl_cifar100_lt", [100.0], 3),
}
QUICK = [  # --quick: 1 epoch of 2 batches, 2 probe epochs
    "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.log_every_n_steps=1",
    "optim.warmup_epochs=0", "probe.epochs=2", "probe.milestones=[1]", "monitor.every=0",
]  # fmt: skip


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", choices=list(DATASETS), default="digits_lt")
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        help="paired seeds (default 0..N-1: 5 for digits_lt, else 3)",
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
        help="config overrides for every run, e.g. trainer.precision=bf16-mixed",
    )
    parser.add_argument("--tag", help="a harness name appended to the folder: runs kept apart")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(VARIANTS))
    parser.add_argument("--threads", type=int, default=1, help="trainer.num_threads")
    parser.add_argument(
        "--quick", action="store_true", help="smoke test: first rho, 1 epoch of 2 batches"
    )
    parser.add_argument("--data-root", default="data", help="data.root; never downloads")
    parser.add_argument(
        "--out", type=Path, default=REPO / "outputs" / "long_tail_accuracy", help="folder"
    )
    parser.add_argument(
        "--summarise", action="store_true", help="train nothing: print the recorded runs' tables"
    )
    parser.add_argument(
        "--sweep",
        nargs="+",
        metavar="KEY=V1,V2",
        help="sweep config keys one at a time for the non-SupCon --methods, e.g. "
        "model.alpha=0.05,0.11,0.2,0.5 (benchmarks/sweep.py)",
    )
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    _, default_rhos, seeds = DATASETS[args.dataset]
    if args.seeds is None:
        args.seeds = list(range(2 if args.quick else seeds))
    if args.imbalance_factors is None:
        args.imbalance_factors = default_rhos[:1] if args.quick else default_rhos
    args.grid = None
    if args.sweep:
        try:
            args.grid = sweep.parse_sweep(args.sweep)
        except ValueError as error:
            parser.error(str(error))
    return args


def overrides(args: argparse.Namespace, rho: float) -> list[str]:
    """The config overrides every method's run at ``rho`` shares."""
    common = [
        f"data.imbalance_factor={rho}",
        f"data.root={args.data_root}",
        "data.download=false",
        "trainer.progress_bar=false",
        f"trainer.num_threads={args.threads}",
    ]
    epochs = [] if args.epochs is None else [f"trainer.epochs={args.epochs}"]
    return common + epochs + args.set + (QUICK if args.quick else [])


def raw_pixel_metrics(config: Config) -> dict[str, Any]:
    """Stage 2's metrics of the probe (``config.probe``) and kNN on the flattened,
    normalised pixels of the config's split."""
    transform = eval_transform(config.data.input_size)
    datasets = {s: build_dataset_split(config, s, transform) for s in ("train", "test")}
    data = {}
    for split, dataset in datasets.items():
        images, labels = zip(*(dataset[i] for i in range(len(dataset))))
        data[split] = (torch.stack(images).flatten(1), torch.tensor(labels))
    counts, e = datasets["train"].class_counts, config.eval
    with torch_threads(config.trainer.num_threads):
        logits = linear_probe(
            *data["train"], data["test"][0], len(counts), config.probe.schedule(config.seed)
        )
        knn = knn_metrics(*data["train"], *data["test"], k=e.knn_k or "max_bin_count")
    probe = shot_metrics(logits, data["test"][1], counts, e.many_threshold, e.few_threshold)
    return {
        "linear_probe": {key: probe[key] for key in ACCURACY_GROUPS},
        "knn": knn,
        "train_class_counts": list(counts),
    }


def last_epoch_losses(config: Config) -> dict[str, float | None]:
    """Mean contrastive term (``loss_dscl``, SupCon's ``loss_supcon``), recorded as
    ``loss_dscl``, and ``loss_pbsd`` (0 when not logged) over the last epoch's logged steps
    of a run."""
    with open(RunFolder.of(config).logs / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("loss_dscl") or r.get("loss_supcon")]
    last = [r for r in rows if r["epoch"] == rows[-1]["epoch"]] if rows else []

    def mean(*names: str) -> float | None:
        values = [float(next((r[n] for n in names if r.get(n)), 0)) for r in last]
        return statistics.fmean(values) if values else None

    return {"loss_dscl": mean("loss_dscl", "loss_supcon"), "loss_pbsd": mean("loss_pbsd")}


def run(config: Config, resume: str | None) -> dict[str, Any] | None:
    """One run of the engine: the raw-pixel probe in a ``raw_pixels`` folder (the engine's
    ``DIR/<method>/seed<s>``), else stage 1 and 2 with the last epoch's losses recorded."""
    if Path(config.output_dir).parent.name == RAW_PIXELS.name:
        return raw_pixel_metrics(config)
    metrics = pipeline.run(config, resume=resume)
    if metrics is None:
        return None
    return {**metrics, "recorded": last_epoch_losses(config)}


def folder(args: argparse.Namespace, rho: float) -> Path:
    """``OUT/<dataset>[_sweep][_<tag>][_quick]/rho<rho>``: one comparison folder."""
    name = args.dataset + ("_sweep" if args.grid else "")
    name += (f"_{args.tag}" if args.tag else "") + ("_quick" if args.quick else "")
    return args.out / name / f"rho{rho:g}"


def sweep_variants(args: argparse.Namespace) -> dict[str, tuple[Variant, str, str]]:
    """``--sweep``: per non-SupCon method and swept value, a variant named
    ``<method>@<key>=<value>``, with its method, key and value."""
    found = {}
    for method, key, value in sweep.sweep_jobs(args.grid, args.methods):
        if key is not None and value is not None:
            base = METHODS[method]
            name = f"{method}@{key}={value}"
            overrides = (*base.overrides, *sweep.sweep_overrides(key, value))
            found[name] = (Variant(name, f"{base.label}, {key} {value}", overrides), key, value)
    return found


def as_sweep_records(
    records: Sequence[Mapping[str, Any]], swept: Mapping[str, tuple[Variant, str, str]]
) -> list[dict[str, Any]]:
    """``records`` as :func:`benchmarks.sweep.summarise_sweep` reads them: the method's
    own name with ``sweep_key`` and ``sweep_value`` (None for SupCon)."""
    found = []
    for record in records:
        variant_key_value = swept.get(record["method"])
        if variant_key_value is None:
            found.append({**record, "sweep_key": None, "sweep_value": None})
        else:
            method = record["method"].split("@")[0]
            _, key, value = variant_key_value
            found.append({**record, "method": method, "sweep_key": key, "sweep_value": value})
    return found


def main(argv: Sequence[str] | None = None) -> dict[float, list[dict[str, Any]]]:
    """The records of every imbalance factor (with ``--sweep``, as sweep records); a
    config problem, found before anything runs, exits with status 2."""
    args = _parse_args(argv)
    try:
        return {rho: _one_factor(args, rho) for rho in args.imbalance_factors}
    except ConfigError as error:
        print(f"long_tail_accuracy: {error}", file=sys.stderr)
        raise SystemExit(2) from error


def _one_factor(args: argparse.Namespace, rho: float) -> list[dict[str, Any]]:
    out = folder(args, rho)
    swept = sweep_variants(args) if args.grid else {}
    extra = {RAW_PIXELS.name: RAW_PIXELS, **ABLATIONS, **{n: v for n, (v, _, _) in swept.items()}}
    if args.summarise:
        records = read_records(out / RUNS_FILE)
        named = {**METHODS, **extra}
        variants = [named[m] for m in named if any(r["method"] == m for r in records)]
        print(f"{out}:\n{summary_table(records, variants)}" if records else f"{out}: no runs")
    else:
        methods = ["supcon", *swept] if args.grid else [*args.methods, RAW_PIXELS.name]
        command = " ".join(["python -m benchmarks.long_tail_accuracy", *args.argv])
        config = DATASETS[args.dataset][0]
        records = compare(
            config, methods, args.seeds, out, overrides(args, rho), command, run, extra
        )
    if not args.grid:
        return records
    records = as_sweep_records(records, swept)
    if records:
        stem = out.parent / "sweep"
        tables = sweep.write_sweep_reports(records, args.grid, LABELS, stem)
        print("\n\n".join(tables) + f"\nwrote {stem}_rho{rho:g}_<key>.{{csv,md,png}}")
    return records


if __name__ == "__main__":
    main()
