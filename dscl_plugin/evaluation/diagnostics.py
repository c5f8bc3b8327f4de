"""The pull-gradient ratio picture of the paper's Fig. 2, from the CSV logs of
``trainer.log_grad_ratio`` runs. matplotlib is imported inside the drawing function only.
Retrieval pictures (Fig. 1 and 4): :mod:`dscl_plugin.evaluation.retrieval_figures`.
"""

import csv
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from dscl_plugin.evaluation.figures import agg_figure, save_png
from dscl_plugin.safe_io import PathLike


def read_grad_ratio(
    metrics_csv: PathLike, epoch: int | None = None
) -> dict[int, tuple[float, float]]:
    """``{class: (ratio, aligned value)}`` logged by ``trainer.log_grad_ratio`` at ``epoch``
    (default: the last epoch with values) in a CSVLogger ``metrics.csv``.

    Raises:
        ValueError: the file holds no ``grad_ratio`` values (for that epoch).
    """
    with open(metrics_csv, newline="") as f:
        rows = [row for row in csv.DictReader(f) if row.get("grad_ratio/overall")]
    if epoch is not None:
        rows = [row for row in rows if int(row["epoch"]) == epoch]
    if not rows:
        where = "" if epoch is None else f" for epoch {epoch}"
        raise ValueError(
            f"'{metrics_csv}' has no grad_ratio values{where}: train with "
            "trainer.log_grad_ratio=true."
        )
    row, ratios = rows[-1], {}
    for name, value in row.items():
        if name.startswith("grad_ratio/class_") and value:
            c = int(name.rsplit("_", 1)[1])
            ratios[c] = (float(value), float(row[f"grad_ratio_aligned/class_{c}"]))
    return dict(sorted(ratios.items()))


def plot_grad_ratio(
    runs: Mapping[str, PathLike],
    class_counts: Sequence[int],
    path: PathLike,
    epoch: int | None = None,
) -> Path:
    """PNG of the pull-gradient ratio against training class size, one line per run (e.g.
    ``{"SupCon": ".../metrics.csv", "DSCL": ".../metrics.csv"}``), with each run's
    aligned-feature value dashed (log-log axes; the paper's Fig. 2)."""
    from matplotlib.ticker import FuncFormatter

    fig = agg_figure((6, 4))
    ax = fig.add_subplot()
    for i, (name, metrics_csv) in enumerate(runs.items()):
        ratios = read_grad_ratio(metrics_csv, epoch)
        bad = [c for c in ratios if c >= len(class_counts)]
        if bad:
            raise ValueError(
                f"class_counts has {len(class_counts)} classes but '{metrics_csv}' logs "
                f"class {bad[0]}: pass the training class counts of that run."
            )
        points = sorted((class_counts[c], *ratios[c]) for c in ratios)
        sizes, measured, aligned = zip(*points)
        colour = f"C{i}"
        ax.plot(sizes, measured, "o-", color=colour, label=f"{name}: measured")
        ax.plot(
            sizes,
            aligned,
            "--",
            color=colour,
            alpha=0.7,
            label=f"{name}: aligned features",
        )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ticks = FuncFormatter(_one_two_five)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_formatter(ticks)
        axis.set_minor_formatter(ticks)
    ax.set_xlabel("training images of the class")
    ax.set_ylabel("||class term|| / ||own-key term||")
    when = "last epoch" if epoch is None else f"epoch {epoch}"
    ax.set_title(f"pull-gradient ratio per class, {when}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


def _one_two_five(value: float, _position: object = None) -> str:
    """Log-axis tick label: ``"20"``, ``"500"``, ``"1000"`` at 1, 2 and 5 times a power of
    ten, no label elsewhere (labelled 3s and 4s collide on a narrow axis)."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6 else ""
