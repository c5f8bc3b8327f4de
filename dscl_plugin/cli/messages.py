"""What the console scripts print when something goes wrong: one stderr line per error
with its exit code, config notes as one line each, and how to go on (the same command,
with ``--resume`` where a checkpoint exists)."""

import errno
import shlex
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from dscl_plugin.errors import (
    CheckpointError,
    ConfigError,
    ConfigNote,
    DataError,
    NonFiniteLossError,
    TrainingInterrupted,
)

if TYPE_CHECKING:
    from dscl_plugin.runs.folder import RunFolder


@contextmanager
def config_notes(prog: str) -> Iterator[None]:
    """Inside the block, each :class:`ConfigNote` warning (raised once a config is valid)
    is one line of stderr, ``prog: note: ...``, printed once; other warnings as usual."""
    show, printed = warnings.showwarning, set()

    def one_line(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        if not issubclass(category, ConfigNote):
            show(message, category, filename, lineno, file, line)
        elif str(message) not in printed:
            printed.add(str(message))
            print(f"{prog}: note: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("always", ConfigNote)
        warnings.showwarning = one_line
        yield


def _kind(error: Exception) -> str:
    """``config``, ``data`` or ``import``: the kind of error exit code 2 reports."""
    if isinstance(error, ConfigError):
        return "config"
    return "data" if isinstance(error, DataError) else "import"


# errno -> what to do before running again
_OS_FIXES = {
    errno.ENOSPC: "free space on its disk",
    errno.EDQUOT: "free space within your disk quota",
    errno.EACCES: "make it writable, or set output_dir= to a folder you can write",
    errno.EPERM: "make it writable, or set output_dir= to a folder you can write",
    errno.EROFS: "set output_dir= to a folder on a writable disk",
}


def os_error_line(error: OSError, folder: "RunFolder | None") -> str:
    """The path an OS error names (else the run's folder), why, and what to do."""
    path = error.filename or (None if folder is None else folder.root)
    where = f": '{path}'" if path else ""
    fix = _OS_FIXES.get(error.errno or 0, "fix that")
    return f"{error.strerror or error}{where}. {fix[0].upper()}{fix[1:]}"


def command_line(prog: str, argv: Sequence[str] | None, resume: bool) -> str:
    """The command that was run, with ``--resume`` when ``resume`` (once)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if resume and "--resume" not in args:
        args.append("--resume")
    return " ".join([prog, *map(shlex.quote, args)])


def how_to_go_on(
    prog: str, argv: Sequence[str] | None, last: Path | None, resume_existing: bool
) -> str:
    """How to go on after a failure: resume from stage 1's ``last`` checkpoint where there
    is one (the examples resume by themselves), else run the same command again."""
    if last is None or not last.is_file():
        return f"run the same command again: {command_line(prog, argv, False)}"
    return (
        f"resume from the last complete checkpoint '{last}' with: "
        f"{command_line(prog, argv, not resume_existing)}"
    )


def resume_hint(
    prog: str,
    argv: Sequence[str] | None,
    error: KeyboardInterrupt,
    resume_existing: bool,
) -> str:
    """What an interrupted user runs next: the same command, with ``--resume``."""
    checkpoint = error.checkpoint if isinstance(error, TrainingInterrupted) else None
    if checkpoint is None or not checkpoint.is_file():
        return "interrupted before the first checkpoint; run the same command to start again."
    command = command_line(prog, argv, not resume_existing)
    return f"interrupted; the last complete checkpoint is '{checkpoint}'. Resume with:\n  {command}"


def eval_checkpoint_problem(
    checkpoint: Path, config: str, overrides: Sequence[str], output_dir: Path
) -> str | None:
    """Why ``dscl-eval --checkpoint`` cannot score ``checkpoint`` before it is read: a
    folder (the files it takes, the command for the run in it), or a missing file (the
    ``dscl-train`` command that writes it, from ``--config config`` and ``overrides``,
    whose ``output_dir`` is ``output_dir``); None for a file that is there."""
    from dscl_plugin.runs.folder import RunFolder

    if checkpoint.is_dir():
        run = RunFolder(checkpoint)
        weights = next((p for p in (run.backbone, run.last_checkpoint) if p.is_file()), None)
        takes = (
            f"--checkpoint '{checkpoint}' is a folder: give a file, a run's backbone.pt or a "
            "training .ckpt (checkpoints/last.ckpt), with the run's config.yaml as --config"
        )
        return with_eval_command(takes, ":", run.config_file, weights)
    if checkpoint.exists():
        return None
    if checkpoint.name == "backbone.pt":
        root: Path | None = checkpoint.parent
    elif checkpoint.suffix == ".ckpt" and checkpoint.parent.name == "checkpoints":
        root = checkpoint.parent.parent
    else:
        root = None
    run = RunFolder(output_dir if root is None else root)
    if run.config_file.is_file():  # that run started: resume it from its own config
        resume = ["--resume"] if run.last_checkpoint.is_file() else []
        argv = ["--config", str(run.config_file), *resume]
    else:
        moved = [] if root is None or root == output_dir else [f"output_dir={root}"]
        kept = [o for o in overrides if not (moved and o.startswith("output_dir="))]
        argv = ["--config", config, *kept, *moved]
    return (
        f"Checkpoint file not found: '{checkpoint}'. dscl-train writes a run's weights to "
        f"{run.backbone} and {run.last_checkpoint}: {shlex.join(['dscl-train', *argv])}"
    )


def eval_config_missing(checkpoint: Path) -> str:
    """Why ``dscl-eval --checkpoint checkpoint`` needs ``--config``, with the command that
    scores it where ``checkpoint`` is (or lies in) a run's folder holding its
    ``config.yaml``."""
    from dscl_plugin.runs.folder import RunFolder

    if checkpoint.is_dir():
        run = RunFolder(checkpoint)
        weights = next((p for p in (run.backbone, run.last_checkpoint) if p.is_file()), None)
    else:
        in_checkpoints = checkpoint.parent.name == "checkpoints"
        run = RunFolder(checkpoint.parent.parent if in_checkpoints else checkpoint.parent)
        weights = checkpoint if checkpoint.is_file() else None
    needs = (
        "--config is required: the config the weights were trained with (a run's "
        "config.yaml, or the preset or YAML file given to dscl-train)"
    )
    return with_eval_command(needs, "; for this run:", run.config_file, weights)


def with_eval_command(note: str, joint: str, config_file: Path, weights: Path | None) -> str:
    """``note``, then ``joint`` and the ``dscl-eval`` command scoring ``weights`` with
    ``config_file`` where both files are there; else ``note`` and a full stop."""
    if weights is None or not config_file.is_file():
        return f"{note}."
    command = shlex.join(["dscl-eval", "--config", str(config_file), "--checkpoint", str(weights)])
    return f"{note}{joint} {command}"


def report_errors(
    prog: str,
    body: Callable[[], None],
    on_os_error: Callable[[OSError], str],
    on_interrupt: Callable[[KeyboardInterrupt], str],
) -> int:
    """Runs ``body`` with :func:`config_notes`; every error a command reports becomes one
    stderr line ``prog: ...`` and an exit code: 2 for config, data and import errors, 1
    for checkpoint errors, a non-finite loss and OS errors (``on_os_error`` says what the
    path and the fix are), 130 for Ctrl-C (``on_interrupt`` says how to go on); 0 when
    ``body`` returns."""
    try:
        with config_notes(prog):
            body()
    except (ConfigError, DataError, ImportError) as error:
        print(f"{prog}: {_kind(error)} error: {error}", file=sys.stderr)
        return 2
    except (CheckpointError, NonFiniteLossError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"{prog}: error: {on_os_error(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as error:
        print(f"{prog}: {on_interrupt(error)}", file=sys.stderr)
        return 130
    return 0
