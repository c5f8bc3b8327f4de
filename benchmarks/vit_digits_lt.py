"""A tiny ViT on digits_lt: SupCon vs DSCL vs DSCL+PBSD over paired seeds (CPU-sized).

The runs of ``long_tail_accuracy.py`` (same pipeline, config ``dscl_digits_lt` (preset)`,
method overrides, paired seeds, summary) with the backbone swapped for the config's
CPU-sized ViT: ``model.backbone=vit_tiny`` with its ``vit_*`` keys (4 layers, width 96,
3 heads, 4 px tokens: a 4x4 grid on 16 px views, 2x2 on the 8 px PBSD patches; mean of
the patch tokens) and AdamW (lr 1e-3, weight decay 0.05, fixed before any run), the
optimiser ViTs are usually trained with. Everything else (15 epochs, views, patches,
probe) is the config's.

    python benchmarks/vit_digits_lt.py              # rho 10, 2 seeds (~10-15 min on 1 thread)
    python benchmarks/vit_digits_lt.py --quick      # smoke test

Writes ``benchmarks/results/vit_digits_lt{,_quick}.json``, ``.csv`` and ``_runs.csv`` (one
row per run, as it finishes, with its commit, command and machine).
"""

import argparse
import csv
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import long_tail_accuracy as lta  # noqa: E402  (the shared runs and summary)
from reporting import git_state, write_csv  # noqa: E402

from dscl_plugin.runs.provenance import machine_description
from dscl_plugin.training.config import load_config  # noqa: E402

CONFIG = "dscl_digits_lt"
VIT = [
    "model.backbone=vit_tiny",
    "optim.name=adamw",
    "optim.lr=1e-3",
    "optim.weight_decay=0.05",
]
METHODS = ("supcon", "dscl", "dscl_pbsd")
QUICK = [
    "trainer.epochs=1",
    "trainer.limit_train_batches=2",
    "optim.warmup_epochs=0",
    "probe.epochs=2",
    "probe.milestones=[1]",
]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=2, help="paired seeds 0..N-1")
    parser.add_argument("--imbalance-factor", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 epoch of 2 batches")
    parser.add_argument("--output-dir", default=str(lta.REPO / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    if args.quick:
        args.seeds = 1
    return args


def _overrides(args: argparse.Namespace, seed: int, method: str, output_dir: str) -> list[str]:
    common = [
        f"data.imbalance_factor={args.imbalance_factor}",
        f"seed={seed}",
        "trainer.progress_bar=false",
        f"output_dir={output_dir}",
    ]
    return common + VIT + (QUICK if args.quick else []) + lta.METHODS[method]


def _one_run(args: argparse.Namespace, seed: int, method: str) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="dscl_vit_") as tmp:
        config = load_config(CONFIG, _overrides(args, seed, method, tmp))
        start = time.perf_counter()
        result = lta._method_run(config)
        seconds = time.perf_counter() - start
    return {
        "dataset": "digits_lt",
        "imbalance_factor": args.imbalance_factor,
        "method": method,
        "seed": seed,
        **{m: result[m] for m in lta.METRICS},
        "seconds": round(seconds, 2),
        "epochs": config.trainer.epochs,
        "class_counts": result["class_counts"],
        "commit": args.git["commit"],
        "command": " ".join(["python", "benchmarks/vit_digits_lt.py", *args.argv]),
        "machine": args.machine,
    }


def main(argv: Sequence[str] | None = None) -> list[dict[str, object]]:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    git = args.git = git_state()
    args.machine = machine_description()
    lta._quiet()
    stem = Path(args.output_dir) / ("vit_digits_lt_quick" if args.quick else "vit_digits_lt")
    stem.parent.mkdir(parents=True, exist_ok=True)
    runs, start = [], time.perf_counter()
    for seed in range(args.seeds):
        for method in METHODS:
            runs.append(_one_run(args, seed, method))
            r = runs[-1]
            with open(f"{stem}_runs.csv", "w" if len(runs) == 1 else "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(r))
                if len(runs) == 1:
                    writer.writeheader()
                writer.writerow(r)
            print(
                f"[{len(runs)}/{args.seeds * len(METHODS)} {time.perf_counter() - start:5.0f}s] "
                f"seed={seed} {method:<10} "
                + "  ".join(f"{m} {100 * r[m]:.1f}" for m in lta.METRICS),
                flush=True,
            )
    wall = time.perf_counter() - start
    summary = lta.summarise(runs)
    table = lta.format_table(summary, runs)
    print(
        f"\nTiny ViT, top-1 % of a class-balanced linear probe, mean ± std over paired seeds; "
        f"{args.threads} torch thread(s), wall {wall / 60:.1f} min\n\n{table}"
    )
    write_csv(Path(f"{stem}.csv"), summary)
    settings = {
        "command": " ".join(["python", "benchmarks/vit_digits_lt.py", *args.argv]),
        "threads": args.threads,
        "machine": f"{os.cpu_count()} CPU cores, {platform.platform()}",
        "torch": torch.__version__,
        "git": git,
        "wall_seconds": round(wall, 1),
        "config": CONFIG,
        "vit_overrides": VIT,
        "method_overrides": {m: lta.METHODS[m] for m in METHODS},
    }
    Path(f"{stem}.json").write_text(
        json.dumps(
            {"settings": settings, "summary": summary, "runs": runs, "table": table},
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {stem}.csv, {stem}.json, {stem}_runs.csv")
    return summary


if __name__ == "__main__":
    main()
