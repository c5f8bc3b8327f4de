"""Forward+backward time and peak memory of DSCLLoss vs PML's SupConLoss.

Both losses get the same candidates: DSCLLoss(query, key, labels, queue, queue_labels)
and ``pytorch_metric_learning.losses.SupConLoss`` with ``embeddings = query``,
``ref_emb = cat(key, queue)``, ``ref_labels = cat(labels, queue_labels)`` (built
outside the timed region). Only ``query`` requires grad, as in MoCo-style training.
The matmul floor times the three products that bound any such loss: ``q @ C.T``,
``G @ C`` and ``G.T @ q`` with ``C`` the (2B + K, D) candidates, in float32.

``--autocast bf16`` (or fp16) runs both losses under ``torch.autocast`` with ``query``
and ``key`` in that dtype, as an autocast model's head returns them, and the queue in
float32, as ``LabeledMemoryBank`` stores it. DSCLLoss still computes in float32, so
the floor stays float32; PML's SupConLoss computes its similarities in the autocast
dtype.

Times are medians over ``--repeats`` rounds in one subprocess per (B, K) that runs
the three methods round-robin (a load change on a shared machine hits all alike);
for small configurations a sample averages as many calls as fill about 50 ms.
Peak memory on the CPU is measured in its own subprocess per (method, B, K): after a
warm-up on tiny inputs (lazy set-up), the increase of ``ru_maxrss`` during one
forward+backward over its value once the inputs are allocated. On CUDA it is measured
in the timing subprocess after the warm-up: the increase of
``torch.cuda.max_memory_allocated`` during one forward+backward over the allocation
before it (``reset_peak_memory_stats`` isolates the methods).

``--json`` writes ``{"settings": ..., "rows": [...]}``: the command, commit, machine, load
average at the start and the end, and the wall time.

    python -m benchmarks.loss_speed                 # B {64, 256} x K {0, 4096, 65536}
    python -m benchmarks.loss_speed --quick --json out.json
    python -m benchmarks.loss_speed --device cuda --batch-sizes 256 1024 \
        --queue-sizes 4096 65536 --autocast bf16 --csv out.csv
"""

import argparse
import json
import resource
import subprocess
import sys
from collections.abc import Callable
from contextlib import nullcontext

import torch

from benchmarks.reporting import REPO, module_command, print_and_save, provenance
from benchmarks.timing import calls_per_sample, median_ms

METHODS = ("dscl", "pml_supcon", "matmul_floor")
AUTOCAST = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--queue-sizes", type=int, nargs="+", default=[0, 4096, 65536])
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=9, help="timed runs (median, >= 5)")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument(
        "--autocast",
        choices=list(AUTOCAST),
        default="none",
        help="autocast dtype of the losses",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print a torch.profiler table per method (stderr)",
    )
    parser.add_argument("--quick", action="store_true", help="B {16, 64}, K {0, 1024}, D 32")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--worker", choices=("time",) + METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--queue-size", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.queue_sizes, args.dim = [16, 64], [0, 1024], 32
    if args.repeats < 5:
        parser.error(f"--repeats must be >= 5, got {args.repeats}")
    return args


def _step_fn(
    method: str,
    b: int,
    k: int,
    d: int,
    classes: int,
    device: str,
    amp: torch.dtype | None = None,
) -> Callable:
    """Allocates the inputs and returns a closure running one forward+backward
    (the losses under ``torch.autocast(amp)`` unless ``amp`` is None)."""
    gen = torch.Generator().manual_seed(0)
    feature_dtype = amp or torch.float32
    query = torch.randn(b, d, generator=gen).to(device, feature_dtype).requires_grad_()
    key = torch.randn(b, d, generator=gen).to(device, feature_dtype)
    labels = torch.randint(classes, (b,), generator=gen).to(device)
    queue = torch.randn(k, d, generator=gen).to(device)
    queue_labels = torch.randint(classes, (k,), generator=gen).to(device)

    def autocast():
        if amp is None:
            return nullcontext()
        return torch.autocast(torch.device(device).type, dtype=amp)

    if method == "dscl":
        from dscl_plugin.losses import DSCLLoss

        loss_fn = DSCLLoss(beta=8.0)

        def dscl() -> None:
            with autocast():
                loss = loss_fn(query, key, labels, queue, queue_labels)
            loss.backward()

        return dscl
    if method == "pml_supcon":
        from pytorch_metric_learning.losses import SupConLoss

        loss_fn = SupConLoss(temperature=0.07)
        ref_emb, ref_labels = torch.cat([key, queue]), torch.cat([labels, queue_labels])

        def pml_supcon() -> None:
            with autocast():
                loss = loss_fn(query, labels, ref_emb=ref_emb, ref_labels=ref_labels)
            loss.backward()

        return pml_supcon
    candidates = torch.randn(2 * b + k, d, generator=gen).to(device)
    grad_logits = torch.randn(b, 2 * b + k, generator=gen).to(device)
    q = query.detach().float()

    def floor() -> None:
        q @ candidates.T
        grad_logits @ candidates
        grad_logits.T @ q

    return floor


def _time_worker(args: argparse.Namespace) -> dict[str, float]:
    """Median forward+backward time (ms) of every method, run round-robin so that a
    load change on a shared machine affects all of them alike. A sample times as
    many back-to-back calls as fill about 50 ms (small configurations), divided out.
    On CUDA also the peak memory (MiB) of one forward+backward of each loss."""
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    amp = AUTOCAST[args.autocast]
    steps = {
        m: _step_fn(
            m,
            args.batch_size,
            args.queue_size,
            args.dim,
            args.num_classes,
            args.device,
            amp,
        )
        for m in METHODS
    }
    calls = calls_per_sample(steps, sync)
    result = {}
    if cuda:
        for method in METHODS[:2]:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            steps[method]()
            torch.cuda.synchronize()
            result[f"{method}_peak_mib"] = (torch.cuda.max_memory_allocated() - base) / 2**20
    result.update(median_ms(steps, calls, args.repeats, sync))
    if args.profile:
        _print_profiles(args, steps)
    return result


def _print_profiles(args: argparse.Namespace, steps: dict[str, Callable]) -> None:
    """A ``torch.profiler`` table of one forward+backward of every method, on stderr."""
    from torch.profiler import ProfilerActivity, profile

    cuda = args.device.startswith("cuda")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    for method, step in steps.items():
        with profile(activities=activities) as prof:
            step()
            if cuda:
                torch.cuda.synchronize()
        sort = "self_device_time_total" if cuda else "self_cpu_time_total"
        print(
            f"profile: {method}, B={args.batch_size} K={args.queue_size} D={args.dim} "
            f"autocast {args.autocast}\n{prof.key_averages().table(sort_by=sort, row_limit=12)}",
            file=sys.stderr,
        )


def _memory_worker(args: argparse.Namespace, method: str) -> float:
    """Peak memory (MiB) of one forward+backward above the inputs, alone in a process (CPU)."""
    amp = AUTOCAST[args.autocast]
    tiny = _step_fn(method, 4, 4, args.dim, args.num_classes, args.device, amp)
    tiny()  # lazy imports and kernel set-up, kept out of the baseline
    del tiny
    step = _step_fn(
        method,
        args.batch_size,
        args.queue_size,
        args.dim,
        args.num_classes,
        args.device,
        amp,
    )
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def _subprocess(args: argparse.Namespace, worker: str, b: int, k: int):
    cmd = [
        *module_command("benchmarks.loss_speed"), "--worker", worker, "--batch-size", str(b),
        "--queue-size", str(k), "--dim", str(args.dim), "--device", args.device,
        "--num-classes", str(args.num_classes), "--repeats", str(args.repeats),
        "--threads", str(args.threads), "--autocast", args.autocast,
    ]  # fmt: skip
    if args.profile and worker == "time":
        cmd.append("--profile")
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str]) -> None:
    args = _parse_args(argv)
    if args.worker:
        torch.set_num_threads(args.threads)
        if args.worker == "time":
            print(json.dumps(_time_worker(args)))
        else:
            print(json.dumps(_memory_worker(args, args.worker)))
        return
    settings = provenance("python -m benchmarks.loss_speed", argv)
    settings |= {"threads": args.threads, "repeats": args.repeats}
    rows = []
    for b in args.batch_sizes:
        for k in args.queue_sizes:
            result = _subprocess(args, "time", b, k)
            dscl, pml, floor = (result[m] for m in METHODS)
            if args.device.startswith("cuda"):
                peak = {m: result[f"{m}_peak_mib"] for m in METHODS[:2]}
            else:
                peak = {m: _subprocess(args, m, b, k) for m in METHODS[:2]}
            rows.append({
                "device": args.device, "autocast": args.autocast,
                "B": b, "K": k, "D": args.dim,
                "dscl_ms": round(dscl, 2), "pml_ms": round(pml, 2),
                "floor_ms": round(floor, 2), "dscl/pml": round(dscl / pml, 2),
                "dscl/floor": round(dscl / floor, 2), "pml/floor": round(pml / floor, 2),
                "dscl_peak_mib": round(peak["dscl"], 1),
                "pml_peak_mib": round(peak["pml_supcon"], 1),
            })  # fmt: skip
            print(f"done B={b} K={k}", file=sys.stderr, flush=True)
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    heading = (
        f"torch {torch.__version__}, {where}, {args.threads} threads, autocast "
        f"{args.autocast}, median of {args.repeats} runs"
    )
    print_and_save(rows, heading, args.json, args.csv, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
