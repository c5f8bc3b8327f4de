"""Fashion-MNIST-LT evidence on one GPU: SupCon vs DSCL vs DSCL+PBSD, GPU recipe, rho 100.

Every run trains ``dscl_fashion_mnist_lt_gpu` (preset)` (ResNet-18 with the CIFAR stem,
32 px views, 16 px patches, batch 256, queue 4096, bf16, 200 epochs) with the per-method
overrides of ``benchmarks/long_tail_accuracy.py`` (``METHODS``), then evaluates it
(class-balanced linear probe, shot groups, kNN P@1), in its own subprocess. Runs start in
order of seed, then method (``supcon``, ``dscl``, ``dscl_pbsd``), so the first wave holds
one run per method of seed 0.

Side by side: with ``--concurrency auto`` the script first times a few training steps of
each method alone (one process) and then one process per method at once (started
together behind a barrier), and runs N = 3 side by side only if that does more work per
second than one at a time (``--concurrency N`` skips the timing).

Budget: ``--budget SECONDS`` is a hard deadline for the whole script. A run whose
predicted wall time (its measured step time x steps + start and evaluation overhead,
replaced by the measured wall time of a finished run of the same method) exceeds the time
left is not started; a run still going at the deadline is killed and not recorded.

Record: each finished run appends one JSON line to ``OUT/gpu_evidence_runs.jsonl``
(method, seed, overall/many/medium/few, knn_p1, seconds, epochs, epochs_per_second, gpu,
commit, command, ...). A second call with the same OUT, or with ``--resume FILE`` (a
committed JSONL, copied into OUT's), skips the (method, seed, epochs) already done, so a
second lease continues with the next seeds. ``OUT/gpu_evidence.json`` holds the summary:
mean ± std over seeds and the paired differences to SupCon, one table per epoch count, in
the format of the CPU Fashion-MNIST-LT table (``long_tail_accuracy.summarise`` and
``format_table``, i.e. ``dscl-compare``'s :mod:`dscl_plugin.evaluation.comparison`).

Schedule: ``--epochs`` (default 200, the recipe) is recorded in every line (``epochs``,
and ``sweep_key``/``sweep_value`` ``trainer.epochs`` so that runs of different schedules
stay apart); the warm-up stays the recipe's 5 % of the epochs. Data path:
``--data-pipeline device`` (the default: Kornia views on the GPU, ``data.pipeline=device``)
or ``loader`` (``--workers`` loader processes per run, default the CPU cores shared by the
runs side by side).

Sizing (an ESTIMATE, not a result; replace it with the first lease's measured numbers):
FLOPs of one training step, counted with ``torch.utils.flop_counter.FlopCounterMode`` on
``benchmarks/train_step.py``'s ``resnet18_32px`` step (EMA update + key pass + query pass +
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
three runs in one lease even side by side: the first wave runs ``--epochs 50`` (recorded
in every line), which leaves a factor ~1.4 for the estimate to be wrong; later leases
continue with the next seeds at 50 epochs, or run the 200-epoch recipe one method per
lease.

    python benchmarks/gpu_evidence.py OUT --epochs 50 --budget 340    # on the GPU
    python benchmarks/gpu_evidence.py OUT --resume benchmarks/results/gpu_evidence_runs.jsonl
    python benchmarks/gpu_evidence.py OUT --device cpu --quick        # smoke test (< 5 min)
"""

import argparse
import json
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
import long_tail_accuracy as lta  # noqa: E402  (siblings: benchmarks is not a package)
from reporting import git_state  # noqa: E402

from dscl_plugin.runs.records import append_record

REPO = Path(__file__).resolve().parents[1]
CONFIG = "dscl_fashion_mnist_lt_gpu"
DATASET = "fashion_mnist_lt"
RHO = 100.0
RECIPE_EPOCHS = 200
WARMUP_FRACTION = 0.05  # the recipe's 10 of 200 epochs
RUNS_FILE = "gpu_evidence_runs.jsonl"
SUMMARY_FILE = "gpu_evidence.json"
STEPS_PER_EPOCH = 14886 // 256  # rho 100, batch 256, drop_last
# predicted start-up + evaluation seconds of a run before one of its method has finished
OVERHEAD_S = {"cuda": 40.0, "cpu": 60.0}
SPEEDUP_TO_RUN_SIDE_BY_SIDE = 1.1
QUICK = [  # --quick: a few steps with tiny sizes (a CPU smoke test of the whole flow); kNN
    # of k = 1 (P@1 without MAP@R over 6000 neighbours) and a small monitor split
    "trainer.epochs=1", "trainer.limit_train_batches=2", "trainer.batch_size=16",
    "model.queue_size=64", "model.backbone=small_cnn", "model.cifar_stem=false",
    "data.input_size=16", "model.patch_size=8", "probe.epochs=2", "probe.milestones=[1]",
    "trainer.log_every_n_steps=1", "eval.knn_k=1", "monitor.bank_size=256",
    "monitor.query_size=100",
]  # fmt: skip


def _parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path, help="folder for the runs and the summary (created)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="smoke test: a few steps, tiny sizes")
    parser.add_argument("--budget", type=float, default=340.0, help="seconds for everything")
    parser.add_argument(
        "--epochs", type=int, default=RECIPE_EPOCHS, help="trainer.epochs (recorded)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--methods", nargs="+", choices=lta.MAIN_METHODS, default=lta.MAIN_METHODS)
    parser.add_argument("--concurrency", default="auto", help="runs side by side: auto or N")
    parser.add_argument("--data-pipeline", choices=("device", "loader"), default="device")
    parser.add_argument(
        "--workers",
        type=int,
        help="loader processes per run (default: CPU cores / runs)",
    )
    parser.add_argument(
        "--data-root", default="data", help="data.root (the Fashion-MNIST IDX files)"
    )
    parser.add_argument(
        "--resume", type=Path, help="a JSONL of runs already done (copied into OUT's)"
    )
    parser.add_argument(
        "--log",
        type=Path,
        help="append the runs' output here (default OUT/gpu_evidence.log)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # JSON job spec of one subprocess
    args = parser.parse_args(argv)
    args.argv = list(argv)
    if args.worker is not None:
        return args
    if args.budget <= 0:
        parser.error(f"--budget must be > 0 seconds, got {args.budget}")
    if args.epochs < 1:
        parser.error(f"--epochs must be >= 1, got {args.epochs}")
    if any(seed < 0 for seed in args.seeds):
        parser.error(f"--seeds must be >= 0, got {args.seeds}")
    if args.concurrency != "auto" and not (
        args.concurrency.isdigit() and int(args.concurrency) > 0
    ):
        parser.error(
            f"--concurrency must be 'auto' or a positive integer, got {args.concurrency!r}"
        )
    if args.resume is not None and not args.resume.is_file():
        parser.error(f"--resume: no file {args.resume}")
    return args


# ---------------------------------------------------------------- what one run trains


def run_overrides(
    args: argparse.Namespace, method: str, seed: int, pipeline: str, workers: int
) -> list[str]:
    """Config overrides of one run: the method's, the seed, the schedule and the device."""
    warmup = round(args.epochs * WARMUP_FRACTION)
    overrides = lta.METHODS[method] + [
        f"seed={seed}", f"data.root={args.data_root}", "data.download=false",
        f"trainer.epochs={args.epochs}", f"optim.warmup_epochs={warmup}",
        "trainer.progress_bar=false", f"trainer.num_workers={workers}",
    ]  # fmt: skip
    if pipeline == "device":
        overrides.append("data.pipeline=device")
    if args.device == "cpu":
        overrides += [
            "trainer.accelerator=cpu",
            "trainer.precision=32-true",
            "trainer.num_threads=1",
        ]
    if args.quick:
        overrides += QUICK + ["optim.warmup_epochs=0"]
    return overrides


@dataclass
class Job:
    method: str
    seed: int
    overrides: list[str]
    probe_seconds: float = 0.0  # > 0: count the steps done in this window instead of a run
    probe_methods: list[list[object]] = field(
        default_factory=list
    )  # [method, overrides] to time in turn
    barrier: str | None = None  # folder: wait for ``parties`` workers before timing
    parties: int = 1
    result: str | None = None  # JSON file of a probe's seconds per step
    record: str | None = None  # JSONL to append a finished run to
    context: dict[str, object] = field(default_factory=dict)  # recorded with the run


# ---------------------------------------------------------------- inside a subprocess


def _wait_for_parties(folder: Path, parties: int, timeout: float = 120.0) -> None:
    """A barrier over processes: touch a file, wait until ``parties`` files exist."""
    (folder / f"ready_{os.getpid()}").touch()
    end = time.monotonic() + timeout
    while len(list(folder.iterdir())) < parties and time.monotonic() < end:
        time.sleep(0.05)


WARMUP_STEPS = 3


def _step_timer(job: Job):
    """A Lightning callback: after ``WARMUP_STEPS`` steps (and the barrier), counts the
    steps finished within ``job.probe_seconds`` and then stops the fit."""
    import pytorch_lightning as pl
    import torch

    class StepTimer(pl.Callback):
        def __init__(self) -> None:
            self.start: float | None = None
            self.last = 0.0
            self.steps = 0

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            now = time.perf_counter()
            if self.start is None:
                if trainer.global_step >= WARMUP_STEPS:
                    if job.barrier is not None:
                        _wait_for_parties(Path(job.barrier), job.parties)
                    self.start = time.perf_counter()
                return
            self.steps, self.last = self.steps + 1, now
            if now - self.start >= job.probe_seconds:
                trainer.should_stop = True

        def step_seconds(self) -> float:
            return (self.last - self.start) / self.steps

    return StepTimer()


def _train_timer():
    """A Lightning callback: the seconds from the first to the end of the last epoch."""
    import pytorch_lightning as pl

    class TrainTimer(pl.Callback):
        def on_train_start(self, trainer, module) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, trainer, module) -> None:
            self.seconds = time.perf_counter() - self.start

    return TrainTimer()


def run_worker(job: Job) -> None:
    """One subprocess: seconds per step of ``job.probe_methods`` in turn (to
    ``job.result``), or one full run appended to ``job.record``."""
    import contextlib
    import io

    import torch

    from dscl_plugin.runs.stage1 import train
    from dscl_plugin.runs.stage2 import evaluate
    from dscl_plugin.training.config import load_config

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dscl_gpu_") as output_dir:
        if job.probe_seconds:
            seconds = {}
            for method, overrides in job.probe_methods:
                # enough epochs for the window; the timer stops the fit; training steps
                # only (no monitor)
                extra = [
                    "trainer.epochs=1000",
                    "trainer.limit_train_batches=null",
                    "monitor.every=0",
                    f"output_dir={output_dir}/{method}",
                ]
                config = load_config(CONFIG, overrides + extra)
                timer = _step_timer(job)
                with contextlib.redirect_stdout(io.StringIO()):
                    train(config, callbacks=[timer])
                seconds[method] = timer.step_seconds()
            Path(job.result).write_text(json.dumps(seconds))
            return
        config = load_config(CONFIG, job.overrides + [f"output_dir={output_dir}"])
        timer = _train_timer()
        with contextlib.redirect_stdout(io.StringIO()):
            module = train(config, callbacks=[timer])
            metrics = evaluate(config, module)
    epochs = config.trainer.epochs
    run = {
        "dataset": DATASET, "imbalance_factor": RHO, "method": job.method, "seed": job.seed,
        **{key: metrics["linear_probe"][key] for key in lta.SHOTS},
        "knn_p1": metrics["knn"]["precision_at_1"], "class_counts": metrics["train_class_counts"],
        "seconds": round(time.perf_counter() - start, 1), "train_seconds": round(timer.seconds, 1),
        "epochs": epochs, "epochs_per_second": round(epochs / timer.seconds, 4),
        "recipe_epochs": RECIPE_EPOCHS, "sweep_key": "trainer.epochs", "sweep_value": str(epochs),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "torch": torch.__version__, **job.context, "overrides": job.overrides,
    }  # fmt: skip
    append_record(job.record, run)


# ---------------------------------------------------------------- the parent


class Workers:
    """The worker subprocesses: started in their own process group, their output appended
    to one log, killed as a group."""

    def __init__(self, args: argparse.Namespace, log: TextIO) -> None:
        self.out_dir, self.log = args.out_dir, log
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), self.env.get("PYTHONPATH")])
        )

    def start(self, job: Job) -> subprocess.Popen:
        spec = json.dumps(job.__dict__)
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            str(self.out_dir),
            "--worker",
            spec,
        ]
        self.log.write(
            f"\n$ gpu_evidence worker {job.method} seed {job.seed}: {' '.join(job.overrides)}\n"
        )
        self.log.flush()
        return subprocess.Popen(
            cmd,
            cwd=REPO,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @staticmethod
    def kill(proc: subprocess.Popen) -> None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _wait_all(procs: list[subprocess.Popen], deadline: float) -> bool:
    """Waits for ``procs`` until ``deadline``; kills them and returns False past it."""
    for proc in procs:
        try:
            proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            for p in procs:
                Workers.kill(p)
            return False
    return all(p.returncode == 0 for p in procs)


def calibrate(
    args: argparse.Namespace,
    workers: Workers,
    overrides: dict[str, list[str]],
    deadline: float,
) -> dict[str, object]:
    """Seconds per training step of every method alone (one process, in turn) and, for
    ``--concurrency auto``, with one process per method side by side; picks the number of
    runs side by side. ``--concurrency N`` times only that arrangement."""
    window = 0.5 if args.quick else 8.0
    fixed = None if args.concurrency == "auto" else int(args.concurrency)
    result: dict[str, object] = {"window_s": window}
    with tempfile.TemporaryDirectory(prefix="dscl_gpu_probe_") as tmp:
        if fixed in (None, 1):
            job = Job(
                "probe",
                -1,
                [],
                probe_seconds=window,
                result=f"{tmp}/alone.json",
                probe_methods=[[m, overrides[m]] for m in args.methods],
            )
            if not _wait_all([workers.start(job)], deadline):
                raise RuntimeError(
                    "timing the methods alone failed or ran past the budget (see the log)"
                )
            result["alone_step_s"] = json.loads(Path(job.result).read_text())
        if fixed != 1:
            n = fixed or len(args.methods)
            barrier = Path(tmp) / "barrier"
            barrier.mkdir()
            jobs = [Job("probe", -1, [], probe_seconds=window, barrier=str(barrier), parties=n,
                        result=f"{tmp}/side_{i}.json",
                        probe_methods=[[args.methods[i % len(args.methods)],
                                        overrides[args.methods[i % len(args.methods)]]]])
                    for i in range(n)]  # fmt: skip
            if not _wait_all([workers.start(job) for job in jobs], deadline):
                raise RuntimeError(
                    "timing the methods side by side failed or ran past the budget (see the log)"
                )
            side: dict[str, list[float]] = {}
            for job in jobs:
                for method, seconds in json.loads(Path(job.result).read_text()).items():
                    side.setdefault(method, []).append(seconds)
            result["side_by_side"] = n
            result["side_step_s"] = {m: sum(v) / len(v) for m, v in side.items()}
    if fixed is not None:
        result["concurrency"] = fixed
    else:  # alone-seconds of work done per second, side by side
        alone, side = result["alone_step_s"], result["side_step_s"]
        speedup = sum(alone[m] / side[m] for m in side) * result["side_by_side"] / len(side)
        result["speedup"] = round(speedup, 3)
        result["concurrency"] = (
            result["side_by_side"] if speedup > SPEEDUP_TO_RUN_SIDE_BY_SIDE else 1
        )
    return result


def predicted_seconds(
    args: argparse.Namespace,
    method: str,
    calibration: dict[str, object],
    measured: dict[str, float],
) -> float:
    """Wall seconds of one run: a finished run's, else steps x seconds per step + overhead."""
    if method in measured:
        return measured[method]
    key = "alone_step_s" if calibration["concurrency"] == 1 else "side_step_s"
    steps = 2 if args.quick else args.epochs * STEPS_PER_EPOCH
    return OVERHEAD_S[args.device] + steps * calibration[key][method]


def read_all_runs(args: argparse.Namespace) -> list[dict[str, object]]:
    """The runs in OUT's JSONL, after appending those of ``--resume`` that it lacks."""
    path = args.out_dir / RUNS_FILE
    if args.resume is not None and args.resume.resolve() != path.resolve():
        known = {_run_key(r) for r in lta.read_runs(path)}
        for run in lta.read_runs(args.resume):
            if _run_key(run) not in known:
                append_record(path, run)
    return lta.read_runs(path)


def _run_key(run: dict[str, object]) -> tuple:
    return run["method"], run["seed"], run["epochs"]


def summary_tables(runs: list[dict[str, object]]) -> dict[int, dict[str, object]]:
    """Per epoch count: the summary rows and the Markdown table of the CPU benchmark."""
    tables = {}
    for epochs in sorted({r["epochs"] for r in runs}, reverse=True):
        group = [r for r in runs if r["epochs"] == epochs]
        rows = lta.summarise(group)
        tables[epochs] = {"summary": rows, "table": lta.format_table(rows, group)}
    return tables


def throughput_rows(runs: list[dict[str, object]]) -> list[str]:
    """One line per (epochs, method): mean wall seconds and epochs per second."""
    lines = []
    for epochs, method in sorted({(r["epochs"], r["method"]) for r in runs}, reverse=True):
        mine = [r for r in runs if (r["epochs"], r["method"]) == (epochs, method)]
        wall = sum(r["seconds"] for r in mine) / len(mine)
        rate = sum(r["epochs_per_second"] for r in mine) / len(mine)
        lines.append(
            f"{epochs} epochs {lta.LABELS[method]}: {len(mine)} run(s), {wall:.0f} s wall, "
            f"{rate:.3f} epochs/s (side by side: {sorted({r['concurrency'] for r in mine})})"
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
    record = args.out_dir / RUNS_FILE
    done = {_run_key(r) for r in read_all_runs(args)}
    epochs = 1 if args.quick else args.epochs
    todo = [(seed, m) for seed in args.seeds for m in args.methods if (m, seed, epochs) not in done]
    pipeline = args.data_pipeline
    git = git_state()
    context = {
        "commit": git["commit"],
        "modified": git["modified"],
        "data_pipeline": pipeline,
        "command": shlex.join(["python", "benchmarks/gpu_evidence.py", *args.argv]),
    }
    status: dict[str, object] = {
        "finished": [],
        "failed": [],
        "killed": [],
        "not_started": [],
    }
    calibration: dict[str, object] = {}
    log_path = args.log or args.out_dir / "gpu_evidence.log"
    with open(log_path, "a") as log:
        workers = Workers(args, log)
        if todo:
            n_guess = 1 if args.concurrency == "auto" else int(args.concurrency)
            threads = os.cpu_count() or 1
            per_run = (
                args.workers
                if args.workers is not None
                else (
                    0
                    if args.device == "cpu"
                    else max(2, threads // max(n_guess, len(args.methods)) - 1)
                )
            )
            overrides = {m: run_overrides(args, m, 0, pipeline, per_run) for m in args.methods}
            started = time.monotonic()
            calibration = calibrate(args, workers, overrides, deadline)
            n = calibration["concurrency"]
            calibration["seconds"] = round(time.monotonic() - started, 1)
            print(
                f"gpu_evidence: step timing {json.dumps(calibration)}; {n} run(s) side by side",
                flush=True,
            )
            context.update(concurrency=n, workers=per_run)
            status.update(
                _schedule(
                    args,
                    workers,
                    todo,
                    n,
                    pipeline,
                    per_run,
                    context,
                    calibration,
                    record,
                    deadline,
                )
            )
    runs = [r for r in lta.read_runs(record) if r["method"] in args.methods]
    tables = summary_tables(runs)
    gpu = sorted({str(r["gpu"]) for r in runs}) or ["none"]
    print(
        f"\ngpu_evidence: Fashion-MNIST-LT rho {RHO:g}, GPU recipe; card(s) {', '.join(gpu)}; "
        f"{len(runs)} run(s) in {record}"
    )
    for epochs, entry in tables.items():
        print(
            f"\n{epochs} epochs (recipe {RECIPE_EPOCHS}): top-1 % of a class-balanced linear probe "
            f"and kNN P@1 %, mean ± std over paired seeds\n"
        )
        print(entry["table"])
    print("\n".join(throughput_rows(runs)))
    for key in ("failed", "killed", "not_started"):
        if status[key]:
            print(f"{key}: {', '.join(status[key])}")
    (args.out_dir / SUMMARY_FILE).write_text(
        json.dumps(
            {
                "calibration": calibration,
                "status": status,
                "context": context,
                "tables": {str(k): v for k, v in tables.items()},
            },
            indent=2,
        )
        + "\n"
    )
    return 1 if status["failed"] else 0


def _schedule(
    args: argparse.Namespace,
    workers: Workers,
    todo: list[tuple],
    n: int,
    pipeline: str,
    per_run: int,
    context: dict[str, object],
    calibration: dict[str, object],
    record: Path,
    deadline: float,
) -> dict[str, list[str]]:
    """Runs ``todo`` (seed, method) in order, ``n`` at a time; a run predicted to end past
    the deadline is not started, one still going at the deadline is killed."""
    status: dict[str, list[str]] = {
        "finished": [],
        "failed": [],
        "killed": [],
        "not_started": [],
    }
    measured: dict[str, float] = {}
    pending, running = list(todo), {}
    while pending or running:
        for proc, (name, method, started) in list(running.items()):
            if proc.poll() is not None:
                del running[proc]
                if proc.returncode == 0:
                    status["finished"].append(name)
                    measured[method] = time.monotonic() - started
                else:
                    status["failed"].append(name)
                print(
                    f"gpu_evidence: {name} {'done' if proc.returncode == 0 else 'FAILED'} "
                    f"({time.monotonic() - started:.0f} s)",
                    flush=True,
                )
        if time.monotonic() >= deadline:
            for proc, (name, _, _) in running.items():
                Workers.kill(proc)
                status["killed"].append(name)
            break
        while pending and len(running) < n:
            seed, method = pending.pop(0)
            name = f"{method} seed {seed}"
            if time.monotonic() + predicted_seconds(args, method, calibration, measured) > deadline:
                status["not_started"].append(name)
                continue
            job = Job(
                method,
                seed,
                run_overrides(args, method, seed, pipeline, per_run),
                record=str(record),
                context=context,
            )
            running[workers.start(job)] = (name, method, time.monotonic())
        time.sleep(0.2)
    status["not_started"] += [f"{m} seed {s}" for s, m in pending]
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
