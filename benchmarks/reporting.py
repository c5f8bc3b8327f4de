"""What the benchmark scripts share to report: Markdown tables, CSV files and where the
numbers came from (commit, command, machine, load: :func:`provenance`), which the docs
tool (``python -m tools.render_docs``) prints under every table it renders. Means,
standard deviations and percentages are the package's
(:mod:`dscl_plugin.evaluation.comparison`).
"""

import csv
import json
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from dscl_plugin.runs.provenance import load_average, machine_description, package_stamp

REPO = Path(__file__).resolve().parents[1]


def markdown_table(rows: Sequence[Mapping[str, object]]) -> str:
    """A Markdown table: the first row's keys as header, one line per row."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(str(v) for v in row.values()) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(
    path: Path, rows: Sequence[Mapping[str, object]], extrasaction: str = "raise"
) -> None:
    """``rows`` as CSV with the first row's keys as columns (nothing written for no rows)."""
    if not rows:
        return
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), extrasaction=extrasaction)
        writer.writeheader()
        writer.writerows(rows)


def git_state() -> dict[str, object]:
    """HEAD commit and the files that differ from it (the code the numbers came from)."""

    def git(*cmd: str) -> str:
        return subprocess.run(
            ["git", *cmd], cwd=REPO, capture_output=True, text=True
        ).stdout.strip()

    return {
        "commit": package_stamp()["git_commit"],
        "modified": git("diff", "--name-only", "HEAD").split(),
    }


def provenance(command: str, argv: Sequence[str] | None = None) -> dict[str, object]:
    """Where numbers are being made, taken when a measurement starts: ``command``
    (``command`` and the arguments ``argv``, default ``sys.argv[1:]``, e.g. ``python -m
    benchmarks.train_step --quick``), ``commit`` and ``modified`` (:func:`git_state`),
    ``machine`` (CPU model, cores, OS, any GPU), ``load_average`` (1/5/15 min), torch and
    Python versions and the UTC ``date``. :func:`finish` adds the end of the run."""
    import torch

    args = list(sys.argv[1:] if argv is None else argv)
    return {
        "command": " ".join([command, *map(shlex.quote, args)]),
        **git_state(),
        "machine": machine_description(),
        "load_average": load_average(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "started": time.time(),
    }


def module_command(module: str, *args: str) -> list[str]:
    """``python -m <module> <args>`` with this interpreter: a worker subprocess of a
    benchmark, run from the repository root (``cwd=REPO``) so that ``benchmarks`` imports."""
    return [sys.executable, "-m", module, *args]


def finish(settings: Mapping[str, object]) -> dict[str, object]:
    """``settings`` of :func:`provenance` with the wall time since it was taken
    (``wall_seconds``) and the load average at the end (``load_average_end``)."""
    done = {k: v for k, v in settings.items() if k != "started"}
    started = settings.get("started")
    if isinstance(started, float):
        done["wall_seconds"] = round(time.time() - started, 1)
    done["load_average_end"] = load_average()
    return done


def print_and_save(
    rows: Sequence[Mapping[str, object]],
    heading: str,
    json_path: str | None = None,
    csv_path: str | None = None,
    settings: Mapping[str, object] | None = None,
) -> None:
    """Print ``heading`` and ``rows`` as a Markdown table; save them as JSON (``{"settings":
    ..., "rows": [...]}`` with ``settings``, :func:`finish`-ed, else the list of rows) and
    CSV where a path is given."""
    print(heading)
    print(markdown_table(rows))
    if json_path:
        data: object = list(rows)
        if settings is not None:
            data = {"settings": finish(settings), "rows": list(rows)}
        Path(json_path).write_text(json.dumps(data, indent=2) + "\n")
    if csv_path:
        write_csv(Path(csv_path), rows)
