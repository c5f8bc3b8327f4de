"""Forward+backward time of KCLLoss, TSCLoss, PaCoLoss and BCLLoss vs SupConLoss.

Every loss gets the same batch and queue: ``query`` (with grad) and ``key`` (B, D),
``labels`` of C classes and a (K, D) unit queue with labels (``queue_normalized=True``
for all), as in MoCo-style training. KCL and TSC draw ``k = 6`` positives; TSC (C
targets, D dims) runs as a training step (centroid update and Hungarian matching
included); PaCo also gets (B, C) class logits with grad. BCL has no queue: it gets two
views with grad and C prototypes with grad (``K = 0`` rows); its 2B anchors are both
views, so its baseline is SupCon with both views as anchors (``(L(v1, v2) + L(v2, v1)) / 2``,
the SupCon of Khosla et al. on that batch; ``supcon_one_way_ms`` is one direction). The
ratio column is the loss's median time over its baseline's in the same round-robin; the
target is <= 1.5.

Times are medians over ``--repeats`` rounds that run the methods of one (B, K) round-robin
(a load change on a shared machine hits all alike); a sample averages as many calls as
fill about 50 ms.

    python -m benchmarks.family_loss_speed --json benchmarks/results/family_loss_speed.json
    python -m benchmarks.family_loss_speed --quick
"""

import argparse
import sys
from collections.abc import Callable

import torch
import torch.nn.functional as F

from benchmarks.reporting import print_and_save, provenance
from benchmarks.timing import calls_per_sample, median_ms
from dscl_plugin.losses import BCLLoss, KCLLoss, PaCoLoss, SupConLoss, TSCLoss

QUEUE_METHODS = ("kcl", "tsc", "paco")


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--queue-sizes", type=int, nargs="+", default=[4096, 65536])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--num-positives", type=int, default=6, help="k of KCL and TSC")
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (median, >= 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="B {16}, K {1024}, D 32")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.queue_sizes, args.dim, args.repeats = [16], [1024], 32, 5
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5, got {args.repeats}")
    return args


def _steps(args: argparse.Namespace, b: int, k: int) -> dict[str, Callable[[], None]]:
    """One forward+backward closure per method on shared inputs (K = 0: BCL's row)."""
    gen = torch.Generator().manual_seed(0)
    d, c, device = args.dim, args.num_classes, args.device
    query = torch.randn(b, d, generator=gen).to(device).requires_grad_()
    key = torch.randn(b, d, generator=gen).to(device)
    labels = torch.randint(c, (b,), generator=gen).to(device)
    queue = F.normalize(torch.randn(k, d, generator=gen), dim=1).to(device)
    queue_labels = torch.randint(c, (k,), generator=gen).to(device)
    counts = torch.bincount(labels.cpu(), minlength=c) + 1
    supcon = SupConLoss()
    if k == 0:
        view2 = key.clone().requires_grad_()
        prototypes = torch.randn(c, d, generator=gen).to(device).requires_grad_()
        bcl = BCLLoss()
        return {
            "supcon": lambda: (
                (supcon(query, view2, labels) + supcon(view2, query, labels)).div(2).backward()
            ),
            "supcon_one_way": lambda: supcon(query, view2, labels).backward(),
            "bcl": lambda: bcl(query, view2, labels, prototypes).backward(),
        }
    logits = torch.randn(b, c, generator=gen).to(device).requires_grad_()
    draws = torch.Generator(device=device).manual_seed(0)
    kcl = KCLLoss(args.num_positives, generator=draws)
    tsc = TSCLoss(c, d, args.num_positives, generator=draws).to(device)
    paco = PaCoLoss(counts).to(device)
    extra = dict(queue=queue, queue_labels=queue_labels, queue_normalized=True)
    return {
        "supcon": lambda: supcon(query, key, labels, **extra).backward(),
        "kcl": lambda: kcl(query, key, labels, **extra).backward(),
        "tsc": lambda: tsc(query, key, labels, **extra).backward(),
        "paco": lambda: paco(query, key, labels, logits, **extra).backward(),
    }


def _median_ms(args: argparse.Namespace, steps: dict[str, Callable[[], None]]) -> dict[str, float]:
    """Median time (ms) of every method, run round-robin."""
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)
    return median_ms(steps, calls_per_sample(steps, sync), args.repeats, sync)


def main(argv: list[str]) -> None:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    settings = provenance("python -m benchmarks.family_loss_speed", argv)
    settings |= {"threads": args.threads, "repeats": args.repeats, "target_ratio": 1.5}
    rows = []
    for b in args.batch_sizes:
        for k in [*args.queue_sizes, 0]:
            result = _median_ms(args, _steps(args, b, k))
            baseline = "supcon(q, k, M)" if k else "supcon, both views anchors"
            for method in result.keys() - {"supcon", "supcon_one_way"}:
                rows.append({
                    "device": args.device, "loss": method, "B": b, "K": k, "D": args.dim,
                    "C": args.num_classes, "loss_ms": round(result[method], 2),
                    "baseline": baseline, "supcon_ms": round(result["supcon"], 2),
                    "ratio": round(result[method] / result["supcon"], 2),
                    "supcon_one_way_ms": round(result.get("supcon_one_way", result["supcon"]), 2),
                })  # fmt: skip
            print(f"done B={b} K={k}", file=sys.stderr, flush=True)
    order = {m: i for i, m in enumerate((*QUEUE_METHODS, "bcl"))}
    rows.sort(key=lambda r: (order[str(r["loss"])], r["B"], r["K"]))
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    heading = (
        f"torch {torch.__version__}, {where}, {args.threads} threads, median of "
        f"{args.repeats} rounds, k = {args.num_positives}"
    )
    print_and_save(rows, heading, args.json, None, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
