"""The subprocesses of :mod:`benchmarks.gpu_evidence`: what one is asked to do (``Job``),
the Lightning callbacks that time it from the inside (seconds per training step, seconds of
training), the parent's side (``Workers``: each in its own process group, its output in one
log, killed as a group) and the step timing that decides how many runs go side by side
(:func:`calibrate`)."""

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from benchmarks.reporting import REPO, module_command

WARMUP_STEPS = 3
SPEEDUP_TO_RUN_SIDE_BY_SIDE = 1.1


@dataclass
class Job:
    """One subprocess: a run (``method``, ``seed``) of the engine folder ``folder``, or,
    with ``probe_seconds`` > 0, the step timing of ``probe_methods`` in turn."""

    method: str
    seed: int
    overrides: list[str]  # the config overrides every method's run shares
    folder: str | None = None  # the engine's comparison folder of a run
    command: str = ""  # recorded with the run
    context: dict[str, Any] = field(default_factory=dict)  # recorded with the run
    probe_seconds: float = 0.0  # > 0: count the steps done in this window instead of a run
    probe_methods: list[list[Any]] = field(default_factory=list)  # [method, overrides] in turn
    barrier: str | None = None  # folder: wait for ``parties`` workers before timing
    parties: int = 1
    result: str | None = None  # JSON file of a probe's seconds per step


def _wait_for_parties(folder: Path, parties: int, timeout: float = 120.0) -> None:
    """A barrier over processes: touch a file, wait until ``parties`` files exist."""
    (folder / f"ready_{os.getpid()}").touch()
    end = time.monotonic() + timeout
    while len(list(folder.iterdir())) < parties and time.monotonic() < end:
        time.sleep(0.05)


def step_timer(job: Job) -> Any:
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


def train_timer() -> Any:
    """A Lightning callback: ``seconds`` from the start to the end of training and the
    ``epochs`` trained in them (a resumed run trains only its remaining epochs)."""
    import pytorch_lightning as pl

    class TrainTimer(pl.Callback):
        seconds: float | None = None
        epochs = 0

        def on_train_start(self, trainer, module) -> None:
            self.start, self.first_epoch = time.perf_counter(), trainer.current_epoch

        def on_train_end(self, trainer, module) -> None:
            self.seconds = time.perf_counter() - self.start
            self.epochs = trainer.max_epochs - self.first_epoch

    return TrainTimer()


def time_steps(job: Job, config_name: str) -> None:
    """Seconds per training step of every ``job.probe_methods`` in turn (training steps
    only: no monitor), written to ``job.result``."""
    import contextlib
    import io

    from dscl_plugin.runs.stage1 import train
    from dscl_plugin.training.config import load_config

    seconds = {}
    with tempfile.TemporaryDirectory(prefix="dscl_gpu_") as output_dir:
        for method, overrides in job.probe_methods:
            # enough epochs for the window: the timer stops the fit
            extra = ["trainer.epochs=1000", "trainer.limit_train_batches=null", "monitor.every=0"]
            config = load_config(
                config_name, overrides + extra + [f"output_dir={output_dir}/{method}"]
            )
            timer = step_timer(job)
            with contextlib.redirect_stdout(io.StringIO()):
                train(config, callbacks=[timer])
            seconds[method] = timer.step_seconds()
    Path(str(job.result)).write_text(json.dumps(seconds))


class Workers:
    """The worker subprocesses (``python -m benchmarks.gpu_evidence OUT --worker JOB``):
    started in their own process group from the repository root, their output appended to
    one log, killed as a group."""

    def __init__(self, out_dir: Path, log: TextIO) -> None:
        self.out_dir, self.log = out_dir, log
        self.env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.env["PYTHONPATH"] = os.pathsep.join(
            filter(None, [str(REPO), self.env.get("PYTHONPATH")])
        )

    def start(self, job: Job) -> subprocess.Popen:
        cmd = module_command(
            "benchmarks.gpu_evidence", str(self.out_dir), "--worker", json.dumps(job.__dict__)
        )
        self.log.write(f"\n$ gpu_evidence worker {job.method} seed {job.seed}\n")
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


def wait_all(procs: list[subprocess.Popen], deadline: float) -> bool:
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
) -> dict[str, Any]:
    """Seconds per training step of every method alone (one process, in turn) and, for
    ``--concurrency auto``, with one process per method side by side; picks the number of
    runs side by side. ``--concurrency N`` times only that arrangement."""
    window = 0.5 if args.quick else 8.0
    fixed = None if args.concurrency == "auto" else int(args.concurrency)
    result: dict[str, Any] = {"window_s": window}
    with tempfile.TemporaryDirectory(prefix="dscl_gpu_probe_") as tmp:
        if fixed in (None, 1):
            probe = [[m, overrides[m]] for m in args.methods]
            job = Job("probe", -1, [], probe_seconds=window, result=f"{tmp}/alone.json",
                      probe_methods=probe)  # fmt: skip
            if not wait_all([workers.start(job)], deadline):
                raise RuntimeError(
                    "timing the methods alone failed or ran past the budget (see the log)"
                )
            result["alone_step_s"] = json.loads(Path(f"{tmp}/alone.json").read_text())
        if fixed != 1:
            n = fixed or len(args.methods)
            barrier = Path(tmp) / "barrier"
            barrier.mkdir()
            methods = [args.methods[i % len(args.methods)] for i in range(n)]
            jobs = [Job("probe", -1, [], probe_seconds=window, barrier=str(barrier), parties=n,
                        result=f"{tmp}/side_{i}.json", probe_methods=[[m, overrides[m]]])
                    for i, m in enumerate(methods)]  # fmt: skip
            if not wait_all([workers.start(job) for job in jobs], deadline):
                raise RuntimeError(
                    "timing the methods side by side failed or ran past the budget (see the log)"
                )
            side: dict[str, list[float]] = {}
            for job in jobs:
                for method, seconds in json.loads(Path(str(job.result)).read_text()).items():
                    side.setdefault(method, []).append(seconds)
            result["side_by_side"] = n
            result["side_step_s"] = {m: sum(v) / len(v) for m, v in side.items()}
    if fixed is not None:
        result["concurrency"] = fixed
    else:  # alone-seconds of work done per second, side by side
        alone, side_s = result["alone_step_s"], result["side_step_s"]
        speedup = sum(alone[m] / side_s[m] for m in side_s) * result["side_by_side"] / len(side_s)
        result["speedup"] = round(speedup, 3)
        result["concurrency"] = (
            result["side_by_side"] if speedup > SPEEDUP_TO_RUN_SIDE_BY_SIDE else 1
        )
    return result
