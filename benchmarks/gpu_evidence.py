"""Fashion-MNIST-LT evidence on one GPU: SupCon vs DSCL vs DSCL+PBSD, GPU recipe, rho 100.

A caller of ``dscl-compare``'s engine (:mod:`dscl_plugin.runs.compare`) that fits a GPU
lease: every run trains the ``dscl_fashion_mnist_lt_gpu`` preset (ResNet-18 with the
CIFAR stem, 32 px views, 16 px patches, batch 256, queue 4096, bf16, 200 epochs) as the
method's variant (:data:`dscl_plugin.runs.variants.VARIANTS`), then evaluates it
(class-balanced linear probe, shot groups, kNN P@1), in its own subprocess, as one run of
the engine's plan: seed-major, so the first wave holds one run per method of seed 0.

Side by side: with ``--concurrency auto`` the script first times a few training steps of
each method alone (one process) and then one process per method at once (started
together behind a barrier), and runs N = 3 side by side only if that does more work per
second than one at a time (``--concurrency N`` skips the timing; :mod:`benchmarks.gpu_workers`).

Budget: ``--budget SECONDS`` is a hard deadline for the whole script. A run whose
predicted wall time (its measured step time x steps + start and evaluation overhead,
replaced by the measured wall time of a finished run of the same method) exceeds the time
left is not started; a run still going at the deadline is killed and not recorded (its
checkpoint in ``--work`` lets a later call on the same machine resume it).

Record: the runs live in ``--work`` (default ``$TMPDIR/dscl_gpu_evidence``), one engine
folder per setting, ``<epochs>ep_<data pipeline>[_quick]/`` (``runs.jsonl`` and a run
folder per method and seed). ``OUT/gpu_evidence_runs.jsonl`` gets every recorded run of
the work folders (the engine's record with ``train_seconds``, ``epochs_per_second``,
``gpu``, ``torch``, ``data_pipeline`` and ``concurrency``), ``OUT/gpu_evidence.json`` the
step timing, the runs' status and one table per setting (the engine's
:func:`~dscl_plugin.runs.compare_report.summary_table`). ``--resume FILE`` (a committed
``gpu_evidence_runs.jsonl``) adds its runs to the work folders first, so a second lease
skips the (method, seed) of a setting already done and continues with the next seeds.

Schedule: ``--epochs`` (default 200, the recipe); the warm-up stays the recipe's 5 % of the
epochs. Data path: ``--data-pipeline device`` (the default: Kornia views on the GPU,
``data.pipeline=device``) or ``loader`` (``--workers`` loader processes per run, default
the CPU cores shared by the runs side by side).

Sizing (an ESTIMATE, not a result; replace it with the first lease's measured numbers):
FLOPs of one training step, counted with ``torch.utils.flop_counter.FlopCounterMode`` on
``benchmarks.train_step``'s ``resnet18_32px`` step (EMA update + key pass + query pass +
loss + backward + SGD, 5 patches of 16 px): SupCon and DSCL 4.44 GFLOP per image, DSCL+PBSD
8.63 GFLOP per image, i.e. 1.14 and 2.21 TFLOP per step of 256. rho 100 has 14,886 training
images: 58 steps per epoch, 11,600 steps in 200 epochs, 13.2 PFLOP (SupCon, DSCL) and
25.6 PFLOP (DSCL+PBSD) per run. The H200 peaks at about 790 TFLOP/s dense bf16; a
ResNet-18 on 32 px images reaches a small fraction of it: its convolutions shrink to
4x4 maps with at most 512 channels, half its kernels are memory-bound BN/ReLU/add, and
every step pays Python, Lightning and launch overhead for two encoders (plus five patch
passes). We assume 10 % (~80 TFLOP/s, about what a well-fed A100 reaches on this network:
~25k images/s x 3.3 GFLOP), hence ~14 ms (SupCon, DSCL) and ~28 ms (DSCL+PBSD) per step,
0.8 s and 1.6 s per epoch, 165 s and 325 s of training per 200-epoch run alone, 3.3 s of
GPU time per epoch of the three together. CPU step times do not follow the FLOP ratio
(an fp32 ResNet-18 run on an AVX2 CPU gave DSCL+PBSD 2.64x SupCon's step: docs/gpu.md),
so DSCL+PBSD may cost more than twice SupCon per step. The loader path may be slower
than that: 256 x (2 views + 5 patches) PIL augmentations per step on ~5 cores per run.
One lease gives this script ~340 s (``gpu_check.sh``), of which ~60 s go to the step
timing and ~40 s per run to start-up and evaluation: ~240 s of training for a wave of
three side by side, i.e. ~70 epochs at 3.3 s per epoch-of-three. So 200 epochs do NOT fit
three runs in one lease even side by side: the first wave runs ``--epochs 50``, which
leaves a factor ~1.4 for the estimate to be wrong; later leases continue with the next
seeds at 50 epochs, or run the 200-epoch recipe one method per lease.

    python -m benchmarks.gpu_evidence OUT --epochs 50 --budget 340    # on the GPU
    python -m benchmarks.gpu_evidence OUT --resume benchmarks/results/gpu_evidence_runs.jsonl
    python -m benchmarks.gpu_evidence OUT --device cpu --quick        # smoke test
"""

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.gpu_workers import Job, Workers, calibrate, time_steps, train_timer
from dscl_plugin.errors import ConfigError
from dscl_plugin.runs.compare import RUNS_FILE, plan_runs, run_missing
from dscl_plugin.runs.compare_report import summary_table
from dscl_plugin.runs.records import append_record, read_records
from dscl_plugin.runs.variants import VARIANTS
from dscl_plugin.training.schema import Config

CONFIG = "dscl_fashion_mnist_lt_gpu"
RHO = 100.0
RECIPE_EPOCHS = 200
WARMUP_FRACTION = 0.05  # the recipe's 10 of 200 epochs
RECORDS_FILE = "gpu_evidence_runs.jsonl"
SUMMARY_FILE = "gpu_evidence.json"
STEPS_PER_EPOCH = 14886 // 256  # rho 100, batch 256, drop_last
# predicted start-up + evaluation seconds of a run before one of its method has finished
OVERHEAD_S = {"cuda": 40.0, "cpu": 60.0}
QUICK = [  # --quick: a few steps with tiny sizes (a CPU smoke test of the whole flow); kNN
    # of k = 1 (P@1 without MAP@R over 6000 neighbours) and a small monitor split
    "trainer.limit_train_batches=2", "trainer.batch_size=16",
    "model.queue_size=64", "model.backbone=small_cnn", "model.cifar_stem=false",
    "data.input_size=16", "model.patch_size=8", "probe.epochs=2", "probe.milestones=[1]",
    "trainer.log_every_n_steps=1", "eval.knn_k=1", "monitor.bank_size=256",
    "monitor.query_size=100",
]  # fmt: skip


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for the records and the summary")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="smoke test: a few steps, tiny sizes")
    parser.add_argument("--budget", type=float, default=340.0, help="seconds for everything")
    parser.add_argument("--epochs", type=int, default=RECIPE_EPOCHS, help="trainer.epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--methods", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--concurrency", default="auto", help="runs side by side: auto or N")
    parser.add_argument("--data-pipeline", choices=("device", "loader"), default="device")
    parser.add_argument("--workers", type=int, help="loader processes per run (cores / runs)")
    parser.add_argument("--data-root", default="data", help="data.root (Fashion-MNIST files)")
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dscl_gpu_evidence",
        help="the engine folders of the runs (checkpoints: not under OUT)",
    )
    parser.add_argument("--resume", type=Path, help="a gpu_evidence_runs.jsonl of earlier runs")
    parser.add_argument("--log", type=Path, help="the runs' output (default OUT/gpu_evidence.log)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON job spec of one subprocess
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.worker is not None:
        return args
    if args.budget <= 0:
        parser.error(f"--budget must be > 0 seconds, got {args.budget}")
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if args.concurrency != "auto" and not (
        args.concurrency.isdigit() and int(args.concurrency) > 0
    ):
        parser.error(
            f"--concurrency must be 'auto' or a positive integer, got {args.concurrency!r}"
        )
    if args.resume is not None and not args.resume.is_file():
        parser.error(f"--resume: no file {args.resume}")
    args.out_dir, args.work = args.out_dir.resolve(), args.work.resolve()
    if args.quick:  # one epoch (of QUICK's two steps)
        args.epochs = 1
    return args


def common_overrides(args: argparse.Namespace, workers: int) -> list[str]:
    """The config overrides every method's run shares: the schedule, data and device (the
    engine adds the method's, the seed and the run folder)."""
    warmup = round(args.epochs * WARMUP_FRACTION)
    overrides = [
        f"data.root={args.data_root}", "data.download=false", f"trainer.epochs={args.epochs}",
        f"optim.warmup_epochs={warmup}", "trainer.progress_bar=false",
        f"trainer.num_workers={workers}", f"data.pipeline={args.data_pipeline}",
    ]  # fmt: skip
    if args.device == "cpu":
        overrides += ["trainer.accelerator=cpu", "trainer.precision=32-true"]
        overrides += ["trainer.num_threads=1"]
    return overrides + (QUICK if args.quick else [])


def setting(epochs: int, pipeline: str, quick: bool = False) -> str:
    """The name of the engine folder of one setting in ``--work``."""
    return f"{epochs}ep_{pipeline}" + ("_quick" if quick else "")


def timed_run(context: dict[str, Any]) -> Callable[[Config, str | None], dict[str, Any]]:
    """The engine's run function of a worker: stage 1 (unless a resumed run had finished
    it) and stage 2, recording the training time, the card and ``context``."""

    def run(config: Config, resume: str | None) -> dict[str, Any]:
        import torch

        from dscl_plugin.runs.compute import torch_threads
        from dscl_plugin.runs.folder import resumes_finished
        from dscl_plugin.runs.stage1 import train
        from dscl_plugin.runs.stage2 import evaluate

        timer, module = train_timer(), None
        with torch_threads(config.trainer.num_threads):
            if resume is None or not resumes_finished(config, resume):
                module = train(config, resume, callbacks=[timer])
            metrics = evaluate(config, module)
        seconds = timer.seconds
        recorded = {
            "train_seconds": None if seconds is None else round(seconds, 1),
            "epochs_per_second": None if not seconds else round(timer.epochs / seconds, 4),
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "torch": torch.__version__,
            **context,
        }
        return {**metrics, "recorded": recorded}

    return run


def run_worker(job: Job) -> None:
    """One subprocess: the step timing of a probe job, or the engine's run of one planned
    (method, seed), recorded in the folder's ``runs.jsonl``."""
    if job.probe_seconds:
        time_steps(job, CONFIG)
        return
    folder = str(job.folder)
    plan = plan_runs(CONFIG, [job.method], [job.seed], folder, job.overrides)
    run_missing(plan, folder, timed_run(job.context), job.command, job.overrides)


def predicted_seconds(
    args: argparse.Namespace, method: str, calibration: dict[str, Any], measured: dict[str, float]
) -> float:
    """Wall seconds of one run: a finished run's, else steps x seconds per step + overhead."""
    if method in measured:
        return measured[method]
    key = "alone_step_s" if calibration["concurrency"] == 1 else "side_step_s"
    steps = 2 if args.quick else args.epochs * STEPS_PER_EPOCH
    return OVERHEAD_S[args.device] + steps * calibration[key][method]


def add_resumed(path: Path, work: Path) -> None:
    """Appends the records of ``path`` to the engine folders of their settings in ``work``
    where those lack their (method, seed)."""
    for record in read_records(path, ("epochs", "data_pipeline", "method", "seed")):
        runs = work / setting(record["epochs"], record["data_pipeline"]) / RUNS_FILE
        runs.parent.mkdir(parents=True, exist_ok=True)
        if all(
            (r["method"], r["seed"]) != (record["method"], record["seed"])
            for r in read_records(runs)
        ):
            append_record(runs, record)


def recorded(work: Path, quick: bool) -> dict[str, list[dict[str, Any]]]:
    """The records of the engine folders in ``work``, by folder name: those of ``--quick``
    runs or those of the others."""
    found = {p.parent.name: read_records(p) for p in sorted(work.glob(f"*/{RUNS_FILE}"))}
    return {n: rs for n, rs in found.items() if rs and n.endswith("_quick") == quick}


def export(args: argparse.Namespace) -> list[dict[str, Any]]:
    """``OUT/gpu_evidence_runs.jsonl``: the records of ``--work`` (rewritten whole)."""
    records = [r for group in recorded(args.work, args.quick).values() for r in group]
    (args.out_dir / RECORDS_FILE).write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


def summary_tables(args: argparse.Namespace) -> dict[str, str]:
    """Per setting: the engine's table of mean ± std and paired differences to SupCon."""
    tables = {}
    for name, records in recorded(args.work, args.quick).items():
        variants = [v for m, v in VARIANTS.items() if any(r["method"] == m for r in records)]
        tables[name] = summary_table(records, variants)
    return tables


def throughput_rows(records: list[dict[str, Any]]) -> list[str]:
    """One line per (setting, method): mean wall seconds and epochs per second."""
    lines = []
    for key in sorted(
        {(r["epochs"], r["data_pipeline"], r["method"]) for r in records}, reverse=True
    ):
        mine = [r for r in records if (r["epochs"], r["data_pipeline"], r["method"]) == key]
        wall = sum(r["seconds"] for r in mine) / len(mine)
        rates = [r["epochs_per_second"] for r in mine if r.get("epochs_per_second")]
        rate = f"{sum(rates) / len(rates):.3f} epochs/s" if rates else "no training timed"
        side = sorted({str(r.get("concurrency")) for r in mine})
        lines.append(
            f"{key[0]} epochs, {key[1]} data, {VARIANTS[key[2]].label}: {len(mine)} run(s), "
            f"{wall:.0f} s wall, {rate} (side by side: {', '.join(side)})"
        )
    return lines


def main(argv: Sequence[str]) -> int:
    args = _parse_args(argv)
    if args.worker is not None:
        run_worker(Job(**json.loads(args.worker)))
        return 0
    deadline = time.monotonic() + args.budget
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print(
                "gpu_evidence: no CUDA device; use --device cpu --quick for the smoke run",
                file=sys.stderr,
            )
            return 2
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.resume is not None:
        add_resumed(args.resume, args.work)
    folder = args.work / setting(args.epochs, args.data_pipeline, args.quick)
    n_guess = 1 if args.concurrency == "auto" else int(args.concurrency)
    cores = os.cpu_count() or 1
    per_run = args.workers
    if per_run is None:
        per_run = (
            0 if args.device == "cpu" else max(2, cores // max(n_guess, len(args.methods)) - 1)
        )
    overrides = common_overrides(args, per_run)
    try:
        plan = plan_runs(CONFIG, args.methods, args.seeds, folder, overrides)
    except ConfigError as error:
        print(f"gpu_evidence: {error}", file=sys.stderr)
        return 2
    done = {(r["method"], r["seed"]) for r in read_records(folder / RUNS_FILE)}
    todo = [p for p in plan if (p.variant.name, p.seed) not in done]
    status: dict[str, list[str]] = {"finished": [], "failed": [], "killed": [], "not_started": []}
    calibration: dict[str, Any] = {}
    context: dict[str, Any] = {"data_pipeline": args.data_pipeline, "workers": per_run}
    with open(args.log or args.out_dir / "gpu_evidence.log", "a") as log:
        workers = Workers(args.out_dir, log)
        if todo:
            started = time.monotonic()
            probe = {m: [*overrides, *VARIANTS[m].overrides] for m in args.methods}
            calibration = calibrate(args, workers, probe, deadline)
            calibration["seconds"] = round(time.monotonic() - started, 1)
            n = calibration["concurrency"]
            print(f"gpu_evidence: step timing {json.dumps(calibration)}; {n} run(s) side by side")
            context["concurrency"] = n
            command = shlex.join(["python", "-m", "benchmarks.gpu_evidence", *args.argv])
            jobs = [
                Job(p.variant.name, p.seed, overrides, str(folder), command, context) for p in todo
            ]
            status = _schedule(args, workers, jobs, calibration, deadline)
    records = export(args)
    tables = summary_tables(args)
    gpu = sorted({str(r["gpu"]) for r in records}) or ["none"]
    print(
        f"\ngpu_evidence: Fashion-MNIST-LT rho {RHO:g}, GPU recipe; card(s) {', '.join(gpu)}; "
        f"{len(records)} run(s) in {args.out_dir / RECORDS_FILE}"
    )
    for name, table in tables.items():
        print(
            f"\n{name} (recipe {RECIPE_EPOCHS} epochs): top-1 % of a class-balanced linear "
            f"probe and kNN P@1 %, mean ± std over paired seeds\n\n{table}"
        )
    print("\n".join(throughput_rows(records)))
    for key in ("failed", "killed", "not_started"):
        if status[key]:
            print(f"{key}: {', '.join(status[key])}")
    summary = {"calibration": calibration, "status": status, "context": context, "tables": tables}
    (args.out_dir / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    return 1 if status["failed"] else 0


def _schedule(
    args: argparse.Namespace,
    workers: Workers,
    jobs: list[Job],
    calibration: dict[str, Any],
    deadline: float,
) -> dict[str, list[str]]:
    """Runs ``jobs`` in order, ``calibration["concurrency"]`` at a time; a run predicted
    to end past the deadline is not started, one still going at the deadline is killed.
    ``OUT/gpu_evidence_runs.jsonl`` is rewritten as each run finishes."""
    status: dict[str, list[str]] = {"finished": [], "failed": [], "killed": [], "not_started": []}
    measured: dict[str, float] = {}
    pending, running = list(jobs), {}
    while pending or running:
        for proc, (job, started) in list(running.items()):
            if proc.poll() is None:
                continue
            del running[proc]
            name, ok = f"{job.method} seed {job.seed}", proc.returncode == 0
            status["finished" if ok else "failed"].append(name)
            if ok:
                measured[job.method] = time.monotonic() - started
                export(args)
            took = time.monotonic() - started
            print(f"gpu_evidence: {name} {'done' if ok else 'FAILED'} ({took:.0f} s)", flush=True)
        if time.monotonic() >= deadline:
            for proc, (job, _) in running.items():
                Workers.kill(proc)
                status["killed"].append(f"{job.method} seed {job.seed}")
            break
        while pending and len(running) < calibration["concurrency"]:
            job = pending.pop(0)
            if (
                time.monotonic() + predicted_seconds(args, job.method, calibration, measured)
                > deadline
            ):
                status["not_started"].append(f"{job.method} seed {job.seed}")
                continue
            running[workers.start(job)] = (job, time.monotonic())
        time.sleep(0.2)
    status["not_started"] += [f"{job.method} seed {job.seed}" for job in pending]
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
