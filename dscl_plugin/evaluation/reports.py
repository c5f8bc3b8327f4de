"""Metrics as JSON files and as a printed table."""

import json
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from dscl_plugin.safe_io import PathLike, writing


def to_json(value: object) -> object:
    """Python scalars/lists/dicts; tensors and numpy values unwrapped, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(metrics: dict[str, object], path: PathLike) -> Path:
    """Write ``metrics`` as indented JSON (None, NaN and inf become null)."""
    text = json.dumps(to_json(metrics), indent=2, allow_nan=False) + "\n"
    with writing(path) as path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def format_metrics_table(metrics: dict[str, object], empty: Mapping[str, str] | None = None) -> str:
    """Two-column text table of the scalar metrics (nested dicts as ``outer/inner``).

    Values in [0, 1] are shown as percentages; lists are skipped; None and NaN as "-",
    or as ``empty (<why>)`` for a key of ``empty`` (an empty shot group and why).
    """
    rows: list[tuple[str, str]] = []
    empty = empty or {}

    def add(prefix: str, items: Mapping[str, object]) -> None:
        for key, value in items.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                add(f"{name}/", value)
            elif value is None:
                rows.append((name, f"empty ({empty[key]})" if key in empty else "-"))
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            elif isinstance(value, float) and 0.0 <= value <= 1.0:
                rows.append((name, f"{100 * value:.2f}%"))
            else:
                rows.append((name, f"{value:g}"))

    add("", {key: to_json(value) for key, value in metrics.items()})
    width = max([len("metric")] + [len(name) for name, _ in rows])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)
