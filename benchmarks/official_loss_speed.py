"""Forward+backward time of BCLLoss and PaCoLoss vs the official losses, on the same inputs.

The official losses are read from clones of the authors' MIT-licensed repositories, which
this repository does not ship: ``--official-root DIR`` must hold

- ``DIR/Balanced-Contrastive-Learning`` (GitHub ``FlamieZhu/Balanced-Contrastive-Learning``):
  ``loss/contrastive.py`` ``BalSCL``, BCL's contrastive loss;
- ``DIR/Parametric-Contrastive-Learning`` (GitHub
  ``dvlab-research/Parametric-Contrastive-Learning``): ``PaCo/LT/losses.py`` ``PaCoLoss``.

KCL and TSC have no official loss to time: their loss lines sit inside the MoCo
builder's ``forward`` (``LTH14/targeted-supcon``, ``moco/builder.py``), with the encoders
and CUDA calls. BCL's logit-adjusted cross-entropy (``loss/logitadjust.py``) builds its
prior with ``torch.cuda.FloatTensor`` and does not run on a CPU.

Both sides get the same unit features: BCL two (B, D) views and C prototypes with grad
(the official ``features`` is their (B, 2, D) stack); PaCo a query with grad, keys and a
(K, D) queue with labels, and (B, C) class logits with grad, as the official training
passes ``cat([q, k, queue])``. Each row also records the largest difference of the two
loss values (they compute one number). Times are medians over ``--repeats`` round-robin
rounds (:mod:`benchmarks.timing`); the ratio is ours over the official, target <= 1.0.

    mkdir -p official && cd official
    git clone https://github.com/FlamieZhu/Balanced-Contrastive-Learning
    git clone https://github.com/dvlab-research/Parametric-Contrastive-Learning
    cd .. && python -m benchmarks.official_loss_speed --official-root official \\
        --json benchmarks/results/official_loss_speed.json
"""

import argparse
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

from benchmarks.reporting import print_and_save, provenance
from benchmarks.timing import calls_per_sample, median_ms
from dscl_plugin.losses import BCLLoss, PaCoLoss

OFFICIAL_FILES = {
    "bcl": ("Balanced-Contrastive-Learning", "loss/contrastive.py", "BalSCL"),
    "paco": ("Parametric-Contrastive-Learning", "PaCo/LT/losses.py", "PaCoLoss"),
}


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official-root", required=True, type=Path, help="see above")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--num-classes", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--queue-sizes", type=int, nargs="+", default=[4096, 8192])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--repeats", type=int, default=9, help="timed rounds (median, >= 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--quick", action="store_true", help="B {16}, C {10}, K {256}, D 32")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.num_classes, args.queue_sizes = [16], [10], [256]
        args.dim, args.repeats = 32, 5
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5, got {args.repeats}")
    return args


def official_class(root: Path, loss: str) -> type[torch.nn.Module]:
    """The official loss class of ``loss`` ("bcl" or "paco"), loaded from its file.

    Raises:
        ValueError: the file is not under ``root``, naming the clone to make.
    """
    repository, relative, name = OFFICIAL_FILES[loss]
    path = root / repository / relative
    if not path.is_file():
        raise ValueError(
            f"--official-root: {path} not found; clone the official repository into "
            f"{root / repository} (see python -m benchmarks.official_loss_speed --help)."
        )
    spec = importlib.util.spec_from_file_location(f"official_{loss}", path)
    assert spec is not None and spec.loader is not None
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cls: type[torch.nn.Module] = getattr(module, name)
    return cls


def official_commits(root: Path) -> dict[str, str]:
    """The checked-out commit of each official clone ("unknown" where it is no git clone)."""
    commits = {}
    for repository, _, _ in OFFICIAL_FILES.values():
        done = subprocess.run(
            ["git", "-C", str(root / repository), "rev-parse", "HEAD"],
            capture_output=True, text=True,
        )  # fmt: skip
        commits[repository] = done.stdout.strip() if done.returncode == 0 else "unknown"
    return commits


def _unit(gen: torch.Generator, *shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1)


def bcl_steps(
    official: type[torch.nn.Module], b: int, c: int, args: argparse.Namespace
) -> tuple[dict[str, Callable[[], None]], float]:
    """Forward+backward closures of ours and BalSCL on one batch, and |ours - official|."""
    gen = torch.Generator().manual_seed(0)
    view1, view2 = _unit(gen, b, args.dim), _unit(gen, b, args.dim)
    view1.requires_grad_(), view2.requires_grad_()
    prototypes = _unit(gen, c, args.dim).requires_grad_()
    labels = torch.randint(c, (b,), generator=gen)
    ours = BCLLoss(temperature=args.temperature)
    theirs = official(cls_num_list=[1] * c, temperature=args.temperature)

    def run_theirs() -> torch.Tensor:
        value: torch.Tensor = theirs(prototypes, torch.stack([view1, view2], dim=1), labels)
        return value

    gap = abs(ours(view1, view2, labels, prototypes).item() - run_theirs().item())
    steps = {
        "ours": lambda: ours(view1, view2, labels, prototypes).backward(),
        "official": lambda: run_theirs().backward(),
    }
    return steps, gap


def paco_steps(
    official: type[torch.nn.Module], b: int, k: int, c: int, args: argparse.Namespace
) -> tuple[dict[str, Callable[[], None]], float]:
    """Forward+backward closures of ours and the official PaCoLoss, and |ours - official|."""
    gen = torch.Generator().manual_seed(0)
    query = _unit(gen, b, args.dim).requires_grad_()
    key, queue = _unit(gen, b, args.dim), _unit(gen, k, args.dim)
    labels = torch.randint(c, (b,), generator=gen)
    queue_labels = torch.randint(c, (k,), generator=gen)
    logits = torch.randn(b, c, generator=gen).requires_grad_()
    counts = torch.randint(5, 1000, (c,), generator=gen)
    ours = PaCoLoss(counts, temperature=args.temperature)
    theirs = official(alpha=0.05, temperature=args.temperature, K=k, num_classes=c)
    theirs.weight = (counts.float() / counts.sum()).view(1, c)  # cal_weight_for_classes, on CPU
    extra = dict(queue=queue, queue_labels=queue_labels, queue_normalized=True)
    all_labels = torch.cat([labels, labels, queue_labels])

    def run_theirs() -> torch.Tensor:
        features = torch.cat([query, key, queue])
        value: torch.Tensor = theirs(features, all_labels, sup_logits=logits)
        return value

    gap = abs(ours(query, key, labels, logits, **extra).item() - run_theirs().item())
    steps = {
        "ours": lambda: ours(query, key, labels, logits, **extra).backward(),
        "official": lambda: run_theirs().backward(),
    }
    return steps, gap


def _row(
    loss: str, shape: dict[str, int], steps: dict[str, Callable[[], None]], gap: float,
    args: argparse.Namespace,
) -> dict[str, object]:  # fmt: skip
    times = median_ms(steps, calls_per_sample(steps, lambda: None), args.repeats, lambda: None)
    print(f"done {loss} {shape}", file=sys.stderr, flush=True)
    return {
        "loss": loss, **shape, "D": args.dim, "ours_ms": round(times["ours"], 2),
        "official_ms": round(times["official"], 2),
        "ratio": round(times["ours"] / times["official"], 2), "value_gap": float(f"{gap:.1e}"),
    }  # fmt: skip


def main(argv: list[str]) -> None:
    args = _parse_args(argv)
    bcl, paco = (official_class(args.official_root, loss) for loss in ("bcl", "paco"))
    torch.set_num_threads(args.threads)
    settings = provenance("python -m benchmarks.official_loss_speed", argv)
    settings |= {"threads": args.threads, "repeats": args.repeats, "target_ratio": 1.0}
    settings["official_commits"] = official_commits(args.official_root)
    rows = []
    for b in args.batch_sizes:
        for c in args.num_classes:
            rows.append(_row("bcl", {"B": b, "C": c, "K": 0}, *bcl_steps(bcl, b, c, args), args))
    for b in args.batch_sizes:
        for k in args.queue_sizes:
            c = max(args.num_classes)
            shape = {"B": b, "C": c, "K": k}
            rows.append(_row("paco", shape, *paco_steps(paco, b, k, c, args), args))
    heading = (
        f"torch {torch.__version__}, CPU, {args.threads} threads, median of {args.repeats} "
        "rounds; ratio = ours / official"
    )
    print_and_save(rows, heading, args.json, None, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
