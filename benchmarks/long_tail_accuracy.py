"""Long-tailed top-1 accuracy: SupCon vs DSCL vs DSCL+PBSD over paired seeds.

Training and evaluation run through the project's own pipeline: one config file per
dataset (``configs/dscl_<dataset>.yaml``) loaded with :func:`dscl_plugin.config.load_config`
and per-method overrides, then :func:`dscl_plugin.pipeline.train` and
:func:`dscl_plugin.pipeline.evaluate` (frozen backbone, class-balanced linear probe,
shot-group top-1). The three methods share every setting (backbone, views, epochs,
optimiser, probe) and differ only in:

- ``supcon``:    ``method=supcon model.beta=null model.pbsd_weight=0``
- ``dscl``:      ``method=dscl model.pbsd_weight=0`` (beta from the config, 8)
- ``dscl_pbsd``: ``method=dscl`` (pbsd_weight from the config, 1.5)

Seeds are paired: ``seed=s`` fixes the long-tailed train subset, the test split, the
initial weights, the batch order and the probe for every method, so each method's
difference to SupCon is taken per seed (mean +- std of the per-seed differences).
``raw_pixels`` is the same probe on the flattened, normalised input pixels of the same
split (a reference: learned features should beat it). std is the sample std (ddof 1).

digits_lt shot groups use many ``n_c > 60``, few ``n_c < 20`` (its largest class has
144 images; 100 would leave 1-2 many-shot classes). ``torch.set_num_threads(--threads)``
(default 1: on the shared 2-core machine 2 threads ran 5-10x slower under load).

    python benchmarks/long_tail_accuracy.py                  # digits_lt, rho 10 and 50, 5 seeds
    python benchmarks/long_tail_accuracy.py --quick          # smoke test (< 1 min)
    python benchmarks/long_tail_accuracy.py --cifar --data-root data   # + CIFAR-10/100-LT if present

Writes ``<output-dir>/<name>.json``, ``<name>.csv`` (summary) and ``<name>_runs.csv``
(one row per run, written as runs finish), ``<name>`` = ``long_tail_accuracy`` (or
``long_tail_accuracy_quick``).
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
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from dscl_plugin.config import Config, load_config
from dscl_plugin.evaluation import linear_probe, shot_metrics
from dscl_plugin.pipeline import build_dataset_split, evaluate, train
from dscl_plugin.transforms import eval_transform

REPO = Path(__file__).resolve().parents[1]
METHODS = {
    "supcon": ["method=supcon", "model.alpha=null", "model.beta=null", "model.pbsd_weight=0"],
    "dscl": ["method=dscl", "model.pbsd_weight=0"],
    "dscl_pbsd": ["method=dscl"],
}
LABELS = {"raw_pixels": "raw pixels", "supcon": "SupCon", "dscl": "DSCL", "dscl_pbsd": "DSCL+PBSD"}
METRICS = ("overall", "many", "medium", "few")
# dataset -> (config file, many threshold, few threshold)
DATASETS = {
    "digits_lt": ("configs/dscl_digits_lt.yaml", 60, 20),
    "cifar10_lt": ("configs/dscl_cifar10_lt.yaml", 100, 20),
    "cifar100_lt": ("configs/dscl_cifar100_lt.yaml", 100, 20),
}


def _parse_args(argv: Optional[Sequence[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5, help="paired seeds 0..N-1 (>= 5 unless --quick)")
    parser.add_argument("--imbalance-factors", type=float, nargs="+", default=[10.0, 50.0], help="digits_lt rho")
    parser.add_argument("--epochs", type=int, help="trainer.epochs (default: the config's, 15 for digits_lt)")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="rho 10, 2 seeds, 1 epoch of 2 batches, 2 probe epochs")
    parser.add_argument("--cifar", action="store_true", help="also CIFAR-10-LT / CIFAR-100-LT if present under --data-root")
    parser.add_argument("--data-root", default="data", help="CIFAR location (never downloads)")
    parser.add_argument("--cifar-imbalance-factors", type=float, nargs="+", default=[100.0])
    parser.add_argument("--output-dir", default=str(REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.imbalance_factors, args.seeds = [10.0], min(args.seeds, 2)
    elif args.seeds < 5:
        parser.error(f"--seeds must be >= 5 for a paired comparison (got {args.seeds}); use --quick to smoke-test")
    if "supcon" not in args.methods:
        parser.error("--methods must include supcon (the paired baseline)")
    return args


def _overrides(args: argparse.Namespace, dataset: str, rho: float, seed: int) -> List[str]:
    _, many, few = DATASETS[dataset]
    overrides = [
        f"data.imbalance_factor={rho}",
        f"data.root={args.data_root}",
        "data.download=false",
        f"seed={seed}",
        f"eval.many_threshold={many}",
        f"eval.few_threshold={few}",
        "trainer.progress_bar=false",
    ]
    if args.epochs is not None:
        overrides.append(f"trainer.epochs={args.epochs}")
    if args.quick:
        overrides += [
            "trainer.epochs=1",
            "trainer.limit_train_batches=2",
            "optim.warmup_epochs=0",
            "probe.epochs=2",
            "probe.milestones=[1]",
        ]
    return overrides


def _config(args: argparse.Namespace, dataset: str, rho: float, seed: int, method: str, output_dir: str) -> Config:
    path = REPO / DATASETS[dataset][0]
    extra = [] if method == "raw_pixels" else METHODS[method]
    return load_config(path, _overrides(args, dataset, rho, seed) + extra + [f"output_dir={output_dir}"])


def _raw_pixel_run(config: Config) -> Dict[str, object]:
    """The linear probe of ``config.probe`` on flattened normalised pixels."""
    transform = eval_transform(config.data.input_size)
    data = {}
    for split in ("train", "test"):
        dataset = build_dataset_split(config, split, transform)
        images, labels = zip(*(dataset[i] for i in range(len(dataset))))
        data[split] = (torch.stack(images).flatten(1), torch.tensor(labels))
        if split == "train":
            class_counts, num_classes = dataset.class_counts, dataset.num_classes
    p = config.probe
    logits = linear_probe(
        data["train"][0], data["train"][1], data["test"][0], num_classes, epochs=p.epochs, lr=p.lr,
        batch_size=p.batch_size, milestones=p.milestones, class_balanced=p.class_balanced,
        weight_decay=p.weight_decay, seed=config.seed,
    )
    metrics = shot_metrics(logits, data["test"][1], class_counts, config.eval.many_threshold, config.eval.few_threshold)
    return {key: metrics[key] for key in METRICS} | {"class_counts": list(class_counts)}


def _method_run(config: Config) -> Dict[str, object]:
    """Stage 1 then stage 2 of the pipeline; its own printed table is swallowed."""
    with contextlib.redirect_stdout(io.StringIO()):
        module = train(config)
        metrics = evaluate(config, module)
    return dict(metrics["linear_probe"]) | {"class_counts": metrics["train_class_counts"]}


def _one_run(args: argparse.Namespace, dataset: str, rho: float, seed: int, method: str) -> Dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="dscl_lt_") as tmp:
        config = _config(args, dataset, rho, seed, method, tmp)
        start = time.perf_counter()
        result = _raw_pixel_run(config) if method == "raw_pixels" else _method_run(config)
        seconds = time.perf_counter() - start
    return {"dataset": dataset, "imbalance_factor": rho, "method": method, "seed": seed,
            **{key: result[key] for key in METRICS}, "seconds": round(seconds, 2),
            "epochs": config.trainer.epochs, "class_counts": result["class_counts"]}


def _cifar_present(name: str, root: str) -> bool:
    from dscl_plugin.data import build_dataset

    try:
        build_dataset(name, "test", root=root, download=False)
    except FileNotFoundError:
        return False
    return True


def _mean_std(values: List[Optional[float]]) -> Dict[str, Optional[float]]:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    std = statistics.stdev(values) if len(values) > 1 else None
    return {"mean": statistics.fmean(values), "std": std, "n": len(values)}


def summarise(runs: List[Dict[str, object]]) -> List[Dict[str, object]]:
    """Mean +- std per (dataset, rho, method, metric) and of the per-seed differences to SupCon."""
    rows = []
    settings = sorted({(r["dataset"], r["imbalance_factor"]) for r in runs}, key=lambda s: (s[0] != "digits_lt", s))
    for dataset, rho in settings:
        group = [r for r in runs if (r["dataset"], r["imbalance_factor"]) == (dataset, rho)]
        baseline = {r["seed"]: r for r in group if r["method"] == "supcon"}
        for method in [m for m in LABELS if any(r["method"] == m for r in group)]:
            mine = [r for r in group if r["method"] == method]
            row = {"dataset": dataset, "imbalance_factor": rho, "method": method, "seeds": len(mine)}
            for metric in METRICS:
                stats = _mean_std([r[metric] for r in mine])
                row[f"{metric}_mean"], row[f"{metric}_std"] = stats["mean"], stats["std"]
                diffs = [r[metric] - baseline[r["seed"]][metric] for r in mine
                         if r["seed"] in baseline and r[metric] is not None and baseline[r["seed"]][metric] is not None]
                stats = _mean_std(diffs) if method != "supcon" else {"mean": None, "std": None}
                row[f"{metric}_diff_mean"], row[f"{metric}_diff_std"] = stats["mean"], stats["std"]
            rows.append(row)
    return rows


def _pct(mean: Optional[float], std: Optional[float], signed: bool = False) -> str:
    if mean is None:
        return "-"
    text = f"{100 * mean:+.1f}" if signed else f"{100 * mean:.1f}"
    return text + (f" ± {100 * std:.1f}" if std is not None else "")


def format_table(summary: List[Dict[str, object]], runs: List[Dict[str, object]]) -> str:
    """Markdown table: top-1 % (mean ± std over seeds) and the paired difference to SupCon."""
    lines = []
    for dataset, rho in dict.fromkeys((r["dataset"], r["imbalance_factor"]) for r in summary):
        counts = next(r["class_counts"] for r in runs if (r["dataset"], r["imbalance_factor"]) == (dataset, rho))
        rows = [r for r in summary if (r["dataset"], r["imbalance_factor"]) == (dataset, rho)]
        lines += [
            f"{dataset}, imbalance {rho:g} (train class sizes {counts}; {rows[0]['seeds']} seeds)",
            "",
            "| method | overall | many | medium | few |",
            "|---|---|---|---|---|",
        ]
        lines += ["| " + LABELS[r["method"]] + " | " + " | ".join(
            _pct(r[f"{m}_mean"], r[f"{m}_std"]) for m in METRICS) + " |" for r in rows]
        lines += ["| " + f"{LABELS[r['method']]} − SupCon (paired)" + " | " + " | ".join(
            _pct(r[f"{m}_diff_mean"], r[f"{m}_diff_std"], signed=True) for m in METRICS) + " |"
                  for r in rows if r["method"] not in ("supcon", "raw_pixels")]
        lines.append("")
    return "\n".join(lines)


def _write(path_stem: Path, args: argparse.Namespace, runs: List[Dict[str, object]],
           summary: List[Dict[str, object]], wall: float, table: str) -> None:
    with open(f"{path_stem}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(summary[0]))
        writer.writeheader()
        writer.writerows(summary)
    settings = {
        "command": " ".join(["python", "benchmarks/long_tail_accuracy.py", *args.argv]),
        "threads": args.threads,
        "machine": f"{os.cpu_count()} CPU cores, {platform.platform()}",
        "torch": torch.__version__,
        "git": args.git,
        "wall_seconds": round(wall, 1),
        "configs": {d: DATASETS[d][0] for d in dict.fromkeys(r["dataset"] for r in runs)},
        "method_overrides": METHODS,
        "common_overrides_example": _overrides(args, runs[0]["dataset"], runs[0]["imbalance_factor"], 0),
    }
    Path(f"{path_stem}.json").write_text(
        json.dumps({"settings": settings, "summary": summary, "runs": runs, "table": table}, indent=2) + "\n"
    )


def _git_state() -> Dict[str, object]:
    """HEAD commit and the files that differ from it (the code the numbers came from)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD"), "modified": git("diff", "--name-only", "HEAD").split()}


def _append_run(path: Path, run: Dict[str, object], first: bool) -> None:
    with open(path, "w" if first else "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(run))
        if first:
            writer.writeheader()
        writer.writerow(run)


def _quiet() -> None:
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Optional[Sequence[str]] = None) -> List[Dict[str, object]]:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    args.git = _git_state()  # at start: the code imported for every run
    _quiet()
    settings = [("digits_lt", rho) for rho in args.imbalance_factors]
    if args.cifar:
        for name in ("cifar10_lt", "cifar100_lt"):
            if _cifar_present(name, args.data_root):
                settings += [(name, rho) for rho in args.cifar_imbalance_factors]
            else:
                print(f"{name}: not found under '{args.data_root}', skipped (this script never downloads)")
    stem = Path(args.output_dir) / ("long_tail_accuracy_quick" if args.quick else "long_tail_accuracy")
    stem.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(d, rho, seed, method) for d, rho in settings for seed in range(args.seeds)
            for method in ["raw_pixels", *args.methods]]
    runs, start = [], time.perf_counter()
    for i, (dataset, rho, seed, method) in enumerate(jobs):
        runs.append(_one_run(args, dataset, rho, seed, method))
        _append_run(Path(f"{stem}_runs.csv"), runs[-1], first=i == 0)
        r, elapsed = runs[-1], time.perf_counter() - start
        print(f"[{i + 1}/{len(jobs)} {elapsed:6.0f}s] {dataset} rho={rho:g} seed={seed} {method:<10} "
              + "  ".join(f"{m} {_pct(r[m], None)}" for m in METRICS) + f"  ({r['seconds']:.0f}s)", flush=True)
    wall = time.perf_counter() - start
    summary = summarise(runs)
    table = format_table(summary, runs)
    print(f"\nTop-1 % of a class-balanced linear probe, mean ± std over paired seeds; "
          f"{torch.get_num_threads()} torch thread(s), wall {wall / 60:.1f} min\n")
    print(table)
    _write(stem, args, runs, summary, wall, table)
    print(f"wrote {stem}.csv, {stem}.json, {stem}_runs.csv")
    return summary


if __name__ == "__main__":
    main()
