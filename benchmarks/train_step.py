"""Images/s and peak memory of one training step: SupCon vs DSCL vs DSCL+PBSD.

Methods, all with the same EMA key encoder and a full labelled queue of ``--queue-size``
keys: ``supcon`` (``SupConModel``), ``dscl`` (``DSCLModel``, ``pbsd_weight=0``) and
``dscl_pbsd`` (``DSCLModel``, ``--num-patches`` patches in one batched forward).
Settings: ``cnn5`` at 28 px views / 14 px patches (the Fashion-MNIST-LT CPU recipe),
``resnet18`` + CIFAR stem at 32 px views / 16 px patches and ``resnet50`` at 224 px / 64 px.

A step is ``update_momentum`` + ``forward`` + ``backward`` + ``SGD.step``; images/s is
B over its median time. The split times the parts on their own with the model's
modules: online forward/backward (query pass + contrastive loss + backward, the keys
given), EMA forward (key pass, no grad), patch forward/backward (region pooling +
the batched patch pass + PBSD loss + backward), and the same patch work as L
separate passes of B patches (as the official code does). All methods of a setting
run round-robin in one subprocess, so a load change on a shared machine hits all alike.

Peak memory is the increase during the first step over the value once the model and
the batch are allocated: of ``ru_maxrss`` on the CPU, measured in its own subprocess
per (setting, method) (it includes the allocator's and the SGD momentum buffers'
first-touch growth), and of ``torch.cuda.max_memory_allocated`` on CUDA, measured in
the timing subprocess before its rounds (``reset_peak_memory_stats`` isolates the
methods).

``--autocast bf16`` runs every forward under ``torch.autocast`` (bf16 needs no
GradScaler); ``--channels-last`` puts the models and the views in channels-last memory
format (the patches reach the backbone as NCHW, as a data loader delivers them).
``--precisions fp32 bf16 bf16_cl`` instead times each of these (fp32; bf16 autocast; bf16
autocast + channels-last) in the same round-robin, so they share the machine's load;
``--step-only`` times the whole step only (no split). Every row names its ``precision``;
``speedup`` is the first precision's step time over the row's. ``gflop_per_image`` is
the floating-point work of one step per image, counted once per method and precision by
``torch.utils.flop_counter.FlopCounterMode`` (matrix products and convolutions).

``--json`` writes ``{"settings": ..., "rows": [...]}``: the command, commit, machine (and
its CPU bf16 flags), load average at the start and the end, and the wall time.

    python -m benchmarks.train_step                      # both settings
    python -m benchmarks.train_step --quick --json out.json --csv out.csv
    python -m benchmarks.train_step --device cuda --settings resnet50_224px \
        --autocast bf16 --channels-last --csv out.csv
    python -m benchmarks.train_step --device cpu --threads 1 --step-only \
        --settings cnn5_28px resnet18_32px --precisions fp32 bf16 bf16_cl \
        --csv benchmarks/results/train_step_cpu_precision.csv
"""

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.reporting import REPO, module_command, print_and_save, provenance
from dscl_plugin.models import (
    DSCLModel,
    SupConModel,
    build_backbone,
    forward_without_stat_update,
    pool_regions,
)
from dscl_plugin.training.precision import cpu_bf16_flags

METHODS = ("supcon", "dscl", "dscl_pbsd")
# name: (--autocast, --channels-last)
PRECISIONS = {
    "fp32": ("none", False),
    "bf16": ("bf16", False),
    "bf16_cl": ("bf16", True),
}
# name: (backbone, cifar_stem, view px, patch px, CPU batch, CUDA batch)
SETTINGS = {
    "cnn5_28px": ("cnn5", False, 28, 14, 128, 512),
    "resnet18_32px": ("resnet18", True, 32, 16, 8, 256),
    "resnet50_224px": ("resnet50", False, 224, 64, 2, 64),
}


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--batch-size", type=int, help="B for every setting (default per setting)")
    parser.add_argument("--num-patches", type=int, default=5)
    parser.add_argument("--queue-size", type=int, default=8192)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs (median)")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--autocast", choices=("none", "bf16"), default="none")
    parser.add_argument("--channels-last", action="store_true", help="channels-last models/views")
    parser.add_argument(
        "--precisions", nargs="+", choices=list(PRECISIONS),
        help="time these round-robin (replaces --autocast/--channels-last)",
    )  # fmt: skip
    parser.add_argument("--step-only", action="store_true", help="time the whole step only")
    parser.add_argument("--quick", action="store_true", help="resnet18 32 px only, B 4, 3 repeats")
    parser.add_argument("--json", help="also write the rows to this JSON file")
    parser.add_argument("--csv", help="also write the rows to this CSV file")
    parser.add_argument("--worker", choices=("time",) + METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--setting", choices=list(SETTINGS), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.settings, args.batch_size, args.repeats = ["resnet18_32px"], 4, 3
    if args.precisions is None:
        args.precisions = [_precision_name(args.autocast, args.channels_last)]
    return args


def _precision_name(autocast: str, channels_last: bool) -> str:
    return next(k for k, v in PRECISIONS.items() if v == (autocast, channels_last))


def _with_precision(args: argparse.Namespace, precision: str) -> argparse.Namespace:
    """``args`` with ``--autocast``/``--channels-last`` of ``precision``."""
    autocast, channels_last = PRECISIONS[precision]
    changed = {"autocast": autocast, "channels_last": channels_last}
    return argparse.Namespace(**{**vars(args), **changed})


def _batch_size(args: argparse.Namespace, setting: str) -> int:
    if args.batch_size:
        return args.batch_size
    return SETTINGS[setting][5 if args.device.startswith("cuda") else 4]


class _Bench:
    """One method's model, optimizer, batch and its timed closures."""

    def __init__(self, method: str, setting: str, args: argparse.Namespace) -> None:
        name, cifar_stem, view, patch, *_ = SETTINGS[setting]
        b, num_patches, device = (
            _batch_size(args, setting),
            args.num_patches,
            args.device,
        )
        torch.manual_seed(0)
        backbone, dim = build_backbone(name, cifar_stem=cifar_stem)
        common = dict(queue_size=args.queue_size)
        if method == "supcon":
            self.model = SupConModel(backbone, dim, **common)
        else:
            pbsd = 1.5 if method == "dscl_pbsd" else 0.0
            self.model = DSCLModel(backbone, dim, pbsd_weight=pbsd, **common)
        self.model.to(device).train()
        self.amp = args.autocast == "bf16"
        self.device_type = torch.device(device).type
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=1e-3, momentum=0.9)
        g = torch.Generator().manual_seed(0)
        bank = self.model.memory_bank
        bank.enqueue(  # unit-norm keys, as DSCLModel stores them
            torch.nn.functional.normalize(torch.randn(bank.size[0], bank.size[1], generator=g)).to(
                device
            ),
            torch.randint(args.num_classes, (bank.size[0],), generator=g).to(device),
        )
        self.view_q = torch.randn(b, 3, view, view, generator=g).to(device)
        self.view_k = torch.randn(b, 3, view, view, generator=g).to(device)
        self.labels = torch.randint(args.num_classes, (b,), generator=g).to(device)
        self.patches = self.boxes = None
        if method == "dscl_pbsd":
            self.patches = torch.randn(b, num_patches, 3, patch, patch, generator=g).to(device)
            xy = torch.randint(0, view // 2, (b, num_patches, 2), generator=g)
            self.boxes = torch.cat([xy, xy + view // 2], dim=-1).float().to(device)
        if args.channels_last:
            self.model.to(memory_format=torch.channels_last)
            self.view_q = self.view_q.contiguous(memory_format=torch.channels_last)
            self.view_k = self.view_k.contiguous(memory_format=torch.channels_last)

    def autocast(self):
        """bf16 autocast for ``--autocast bf16``, else nothing."""
        if not self.amp:
            return nullcontext()
        return torch.autocast(self.device_type, dtype=torch.bfloat16)

    def step(self) -> None:
        self.model.update_momentum()
        with self.autocast():
            out = self.model(self.view_q, self.view_k, self.patches, self.boxes, self.labels)
        self.optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        self.optimizer.step()

    @torch.no_grad()
    def ema_forward(self) -> torch.Tensor:
        m = self.model
        with self.autocast():
            return m.projection_head_momentum(m.backbone_momentum(self.view_k).mean(dim=(2, 3)))

    def online_forward_backward(self) -> None:
        m = self.model
        key, (queue, queue_labels) = self._key, m.memory_bank.get()
        with self.autocast():
            query = m.projection_head(m.embed(self.view_q))
            loss = m.criterion(query, key, self.labels, queue, queue_labels, queue_normalized=True)
        loss.backward()

    def patch_forward_backward(self, separate: bool) -> None:
        with self.autocast():
            loss = self._patch_loss(separate)
        loss.backward()

    def _patch_loss(self, separate: bool) -> torch.Tensor:
        m, b, num_patches = self.model, *self.patches.shape[:2]
        with torch.no_grad():
            teacher = m.projection_head(
                pool_regions(self._feature_map, self.boxes, self.view_q.shape[-2:])
            )
        if separate:
            pooled = torch.stack(
                [
                    forward_without_stat_update(m.backbone, self.patches[:, i]).mean(dim=(2, 3))
                    for i in range(num_patches)
                ],
                dim=1,
            )
        else:
            pooled = forward_without_stat_update(m.backbone, self.patches.flatten(0, 1))
            pooled = pooled.mean(dim=(2, 3)).reshape(b, num_patches, -1)
        student = m.projection_head(pooled)
        queue = m.memory_bank.get()[0]
        return m.pbsd_criterion(student, teacher, self._key, queue, queue_normalized=True)

    def parts(self, step_only: bool = False) -> dict[str, Callable[[], None]]:
        """The timed parts; keys and the q-view map are computed once, untimed."""
        if step_only:
            return {"step": self.step}
        self._key = self.ema_forward()
        with torch.no_grad(), self.autocast():
            self._feature_map = self.model.backbone(self.view_q)
        parts = {
            "step": self.step,
            "online_fwd_bwd": self.online_forward_backward,
            "ema_fwd": self.ema_forward,
        }
        if self.patches is not None:
            parts["patch_fwd_bwd"] = lambda: self.patch_forward_backward(separate=False)
            parts["patch_separate_fwd_bwd"] = lambda: self.patch_forward_backward(separate=True)
        return parts


def _time_worker(args: argparse.Namespace) -> dict[str, dict[str, dict[str, float]]]:
    """Median time (ms) of every part of every method in every precision, run round-robin
    (keyed precision, then method); on CUDA also ``peak_mib`` per method."""
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    keys = [(p, m) for p in args.precisions for m in METHODS]
    benches = {(p, m): _Bench(m, args.setting, _with_precision(args, p)) for p, m in keys}
    peaks: dict[str, dict[str, float]] = {p: {} for p in args.precisions}
    if cuda:
        benches[keys[0]].ema_forward()  # persistent cuBLAS/cuDNN set-up, before any peak
        for (precision, method), bench in benches.items():
            peaks[precision][method] = _cuda_peak_of_first_step(bench)
    flops = {key: _gflop_per_image(bench) for key, bench in benches.items()}
    parts = {key: bench.parts(args.step_only) for key, bench in benches.items()}
    times: dict[tuple, dict[str, list[float]]] = {
        key: {p: [] for p in key_parts} for key, key_parts in parts.items()
    }
    for i in range(args.repeats + 1):  # the first round warms up and is not timed
        for key, key_parts in parts.items():
            for part, fn in key_parts.items():
                sync()
                start = time.perf_counter()
                fn()
                sync()
                if i > 0:
                    times[key][part].append(time.perf_counter() - start)
        print(f"  {args.setting}: round {i}/{args.repeats}", file=sys.stderr, flush=True)
    result: dict[str, dict[str, dict[str, float]]] = {p: {} for p in args.precisions}
    for (precision, method), part_times in times.items():
        result[precision][method] = {p: 1000 * statistics.median(t) for p, t in part_times.items()}
        result[precision][method]["gflop_per_image"] = flops[(precision, method)]
        if cuda:
            result[precision][method]["peak_mib"] = peaks[precision][method]
    return result


def _gflop_per_image(bench: _Bench) -> float:
    """GFLOP of one training step of ``bench`` per image of its batch (a step of its own,
    which also warms it up)."""
    with FlopCounterMode(display=False) as counter:
        bench.step()
    return counter.get_total_flops() / 1e9 / bench.labels.shape[0]


def _cuda_peak_of_first_step(bench: _Bench) -> float:
    """Peak CUDA memory (MiB) of ``bench``'s first step above what was allocated before."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    bench.step()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _memory_worker(args: argparse.Namespace, method: str) -> float:
    """Peak memory (MiB) of the first training step above the model and batch (CPU)."""
    bench = _Bench(method, args.setting, args)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    bench.step()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def _subprocess(args: argparse.Namespace, worker: str, setting: str):
    cmd = [
        *module_command("benchmarks.train_step"), "--worker", worker, "--setting", setting,
        "--device", args.device, "--num-patches", str(args.num_patches),
        "--queue-size", str(args.queue_size), "--num-classes", str(args.num_classes),
        "--repeats", str(args.repeats), "--threads", str(args.threads),
        "--autocast", args.autocast, "--precisions", *args.precisions,
    ]  # fmt: skip
    if args.batch_size:
        cmd += ["--batch-size", str(args.batch_size)]
    if args.channels_last:
        cmd += ["--channels-last"]
    if args.step_only:
        cmd += ["--step-only"]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def _rows(args: argparse.Namespace, setting: str) -> list[dict[str, object]]:
    times = _subprocess(args, "time", setting)
    b, first = _batch_size(args, setting), args.precisions[0]
    rows = []
    for precision in args.precisions:
        autocast, channels_last = PRECISIONS[precision]
        for method in METHODS:
            t = times[precision][method]
            if "peak_mib" in t:
                peak = t["peak_mib"]
            else:
                peak = _subprocess(_with_precision(args, precision), method, setting)
            row = {
                "device": args.device, "setting": setting, "precision": precision,
                "autocast": autocast, "channels_last": channels_last, "method": method, "B": b,
                "L": args.num_patches if method == "dscl_pbsd" else 0, "K": args.queue_size,
                "images_per_s": round(1000 * b / t["step"], 1),
                "step_ms": round(t["step"], 1),
                "x_supcon": round(t["step"] / times[precision]["supcon"]["step"], 2),
                "speedup": round(times[first][method]["step"] / t["step"], 2),
                "gflop_per_image": round(t["gflop_per_image"], 3),
            }  # fmt: skip
            if not args.step_only:
                row.update({
                    "online_fwd_bwd_ms": round(t["online_fwd_bwd"], 1),
                    "ema_fwd_ms": round(t["ema_fwd"], 1),
                    "patch_fwd_bwd_ms": round(t.get("patch_fwd_bwd", 0.0), 1),
                    "patch_separate_ms": round(t.get("patch_separate_fwd_bwd", 0.0), 1),
                })  # fmt: skip
            row["peak_mib"] = round(peak, 1)
            rows.append(row)
    return rows


def main(argv: list[str]) -> None:
    args = _parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        result = _time_worker(args) if args.worker == "time" else _memory_worker(args, args.worker)
        print(json.dumps(result))
        return
    settings = provenance("python -m benchmarks.train_step", argv)
    settings |= {"cpu_bf16_flags": cpu_bf16_flags(), "threads": args.threads}
    settings["repeats"] = args.repeats
    rows = [row for setting in args.settings for row in _rows(args, setting)]
    if args.device.startswith("cuda"):
        where = torch.cuda.get_device_name()
    else:
        where = f"{platform.processor() or 'CPU'} (bf16 flags: {cpu_bf16_flags() or 'none'})"
    heading = (
        f"torch {torch.__version__}, {where}, {args.threads} threads, median of {args.repeats} runs"
    )
    print_and_save(rows, heading, args.json, args.csv, settings)


if __name__ == "__main__":
    main(sys.argv[1:])
