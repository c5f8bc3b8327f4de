"""Reading the committed result files under ``benchmarks/results/`` and their metadata, in
one shape, and the ``Source:`` line printed under every rendered table (file, commit,
command, machine and, where a time is shown, the load)."""

import csv
import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from dscl_plugin.runs.compare import read_records

RESULTS = "benchmarks/results"
# the key of a record in the runs files that long_tail_accuracy.py wrote before it ran
# through dscl-compare's engine (one file for every dataset, rho and sweep value)
RUN_KEY = ("dataset", "imbalance_factor", "method", "seed", "sweep_key", "sweep_value")
# a block's renderer: the repository root -> the block's text
Render = Callable[[Path], str]


def read_json(root: Path, name: str) -> Any:
    """A result JSON file."""
    return json.loads((root / RESULTS / name).read_text())


def read_jsonl(root: Path, name: str) -> list[dict[str, Any]]:
    """A runs file: a later line with the same :data:`RUN_KEY` replaces an earlier one."""
    return read_records(root / RESULTS / name, RUN_KEY)


def read_csv(root: Path, name: str) -> list[dict[str, Any]]:
    """A result CSV file, its cells as JSON values where they parse (else text)."""
    with open(root / RESULTS / name, newline="") as f:
        return [{k: _value(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None if text == "" else text


def sidecar(root: Path, name: str) -> dict[str, Any]:
    """``<name>.meta.json`` beside a result file written before its script recorded
    commit, command, machine or load (empty if there is none)."""
    path = root / RESULTS / (name.rsplit(".", 1)[0] + ".meta.json")
    return json.loads(path.read_text()) if path.is_file() else {}


def settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """The metadata of a result JSON in one shape: ``commit``, ``command``, ``machine``,
    ``load``, ``load_end``, ``wall_seconds`` (missing keys absent)."""
    s = data.get("settings", data)
    found = {
        "commit": s.get("commit") or (s.get("git") or {}).get("commit") or s.get("commits"),
        "command": s.get("command") or s.get("commands"),
        "machine": s.get("machine"),
        "load": s.get("load_average") or s.get("load_average_1_5_15_min") or s.get("load"),
        "load_end": s.get("load_average_end"),
        "wall_seconds": s.get("wall_seconds"),
    }
    return {k: v for k, v in found.items() if v}


def run_settings(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The metadata of a set of recorded runs (long_tail_accuracy.py, dscl-compare)."""
    commits = [r.get("git_commit") or (r.get("git") or {}).get("commit") for r in runs]
    loads = [r["load_average"][0] for r in runs if r.get("load_average")]
    found = {
        "commit": _by_count(c for c in commits if c),
        "command": _by_count(r["command"] for r in runs if r.get("command")),
        "machine": "; ".join(sorted({r["machine"] for r in runs if r.get("machine")})),
        "load": f"load average {value_range(loads, '.1f')} (1 min, as each run started)"
        if loads
        else None,
    }
    return {k: v for k, v in found.items() if v}


def value_range(values: Sequence[float], spec: str) -> str:
    """``"a–b"`` of the smallest and largest value, or ``"a"`` when they print alike."""
    low, high = format(min(values), spec), format(max(values), spec)
    return low if low == high else f"{low}–{high}"


def _by_count(values: Iterable[str]) -> list[str]:
    return [v for v, _ in Counter(values).most_common()]


def source(files: Sequence[str], meta: Mapping[str, Any], timed: bool = False) -> str:
    """``Source: `file`; commit …; `command`; machine …; load …`` (load where ``timed``)."""
    commits = meta.get("commit") or []
    commits = [commits] if isinstance(commits, str) else commits
    commands = meta.get("command") or []
    commands = [commands] if isinstance(commands, str) else commands
    parts = [", ".join(f"`{RESULTS}/{f}`" for f in files)]
    parts.append(
        "commit " + ", ".join(f"`{c[:7]}`" for c in commits) if commits else "commit not recorded"
    )
    if commands:
        more = f" (+{len(commands) - 1} more, per run in the file)" if len(commands) > 1 else ""
        parts.append(f"`{commands[0]}`{more}")
    parts.append(meta.get("machine") or "machine not recorded")
    if timed:
        parts.append(load_note(meta))
    return "Source: " + "; ".join(parts) + "."


def load_note(meta: Mapping[str, Any]) -> str:
    """The load average at the start (and the end) of a timed measurement."""
    load, end = meta.get("load"), meta.get("load_end")
    if not load:
        return "load not recorded"
    text = load if isinstance(load, str) else f"load average {load[0]:.1f} (1 min) at the start"
    return text + (f", {end[0]:.1f} at the end" if end else "")


def load_start(meta: Mapping[str, Any]) -> str:
    """The 1-minute load average at the start, for a table cell."""
    load = meta.get("load")
    return "not recorded" if not load else load if isinstance(load, str) else f"{load[0]:.1f}"


def seconds_range(values: Sequence[float]) -> str:
    """``"a–b s"`` (or minutes from 2 min up) of the shortest and longest time."""
    low, high = min(values), max(values)
    if high < 120:
        return f"{low:.0f}–{high:.0f} s"
    return f"{low / 60:.0f}–{high / 60:.0f} min"


def pick_columns(rows: Sequence[Mapping[str, Any]], columns: Mapping[str, str]) -> list[dict]:
    """``rows`` with only ``columns`` (key -> header), in that order ("–" where missing)."""
    return [{header: row.get(key, "–") for key, header in columns.items()} for row in rows]
