"""``curves.png``: a run's training curves against epoch, read from its CSV log
(``logs/metrics.csv``): the loss and every term the method logs (``loss_<term>``), the
learning rate, the queue fill and the online kNN accuracy by shot group
(``monitor/knn_*``).

The log holds step rows (``loss_step``, the terms such as ``loss_dscl`` and
``loss_pbsd``, ``lr``, ``queue_fill``) and one row per epoch end (``loss_epoch``,
``monitor/...``), each with its ``epoch`` and global ``step``. A resumed run continues
the file and logs again the steps after its checkpoint; the later value of a step wins,
so the curve stays one line.
"""

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dscl_plugin.data.shots import ACCURACY_GROUPS
from dscl_plugin.evaluation.figures import agg_figure, save_png

GROUP_COLOURS = {"overall": "black", "many": "tab:green", "medium": "tab:orange", "few": "tab:red"}
Series = tuple[list[float], list[float]]


@dataclass
class Panel:
    """One plot: ``series`` maps a legend label to its (epochs, values)."""

    title: str
    ylabel: str
    series: dict[str, Series] = field(default_factory=dict)
    ylim: tuple[float, float] | None = None
    empty_note: str = "nothing logged"


def read_log(path: str | Path) -> list[dict[str, str]]:
    """The rows of a Lightning CSV log (empty cells as ``""``)."""
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def _values(rows: Sequence[Mapping[str, str]], key: str) -> dict[int, tuple[int, float]]:
    """``{step: (epoch, value)}`` of the rows where ``key`` is set, the last row of a step
    winning (a resumed run logs the steps after its checkpoint again)."""
    found = {}
    for row in rows:
        if row.get(key, "") not in ("", None) and row.get("step", "") != "":
            found[int(row["step"])] = (int(float(row["epoch"])), float(row[key]))
    return found


def _epoch_ends(rows: Sequence[Mapping[str, str]]) -> dict[int, int]:
    """``{epoch: its last global step}`` from the epoch-end rows (``loss_epoch``)."""
    return {epoch: step for step, (epoch, _) in _values(rows, "loss_epoch").items()}


def _to_epochs(steps: dict[int, tuple[int, float]], ends: dict[int, int]) -> Series:
    """Step values against fractional epochs: step ``s`` of epoch ``e`` (the (s+1)-th
    step) lies at ``e + (s + 1 - first step of e) / steps of e``; an unfinished epoch is
    as long as the one before it (or, the first, as far as it got)."""

    def length(epoch: int) -> int | None:
        return ends[epoch] - ends.get(epoch - 1, -1) if epoch in ends else None

    last_seen: dict[int, int] = {}
    for step, (epoch, _) in steps.items():
        last_seen[epoch] = max(step, last_seen.get(epoch, step))
    xs, ys = [], []
    for step, (epoch, value) in sorted(steps.items()):
        start = ends.get(epoch - 1, -1) + 1
        steps_in_epoch = length(epoch) or length(epoch - 1) or last_seen[epoch] + 1 - start
        xs.append(epoch + (step + 1 - start) / max(steps_in_epoch, 1))
        ys.append(value)
    return xs, ys


def _per_epoch(steps: dict[int, tuple[int, float]], scale: float = 1.0) -> Series:
    """Epoch-end values at ``epoch + 1`` (the end of that epoch)."""
    points = sorted((epoch + 1, scale * value) for epoch, value in steps.values())
    return [float(x) for x, _ in points], [y for _, y in points]


def loss_terms(rows: Sequence[Mapping[str, str]]) -> list[str]:
    """The loss terms a log holds: its ``loss_*`` columns other than Lightning's
    ``loss_step`` and ``loss_epoch`` (the total), in the log's order."""
    columns = dict.fromkeys(key for row in rows for key in row)
    return [k for k in columns if k.startswith("loss_") and k not in ("loss_step", "loss_epoch")]


def training_curves(rows: Sequence[Mapping[str, str]]) -> list[Panel]:
    """The four panels of ``curves.png`` from a run's CSV log rows: the total loss and
    each of :func:`loss_terms` (per step, under its own name) and the epoch mean,
    learning rate, queue fill (%), online kNN top-1 (%) by shot group. A series with
    no logged value other than 0 is left out (e.g. a term that is always 0, or the
    few-shot group of a data set without few-shot classes)."""
    ends = _epoch_ends(rows)
    loss = Panel("Training loss", "loss (nats)")
    for key, label in (("loss_step", "total (per step)"), *((t, t) for t in loss_terms(rows))):
        steps = _values(rows, key)
        if steps and any(value != 0 for _, value in steps.values()):
            loss.series[label] = _to_epochs(steps, ends)
    if ends:
        loss.series["total (epoch mean)"] = _per_epoch(_values(rows, "loss_epoch"))
    lr = Panel("Learning rate", "learning rate")
    fill = Panel(
        "Memory queue fill",
        "queue filled (%)",
        ylim=(0, 105),
        empty_note="no queue (a batch method)",
    )
    for panel, key, scale in ((lr, "lr", 1.0), (fill, "queue_fill", 100.0)):
        xs, ys = _to_epochs(_values(rows, key), ends)
        if xs:
            panel.series[key] = xs, [scale * y for y in ys]
    knn = Panel(
        "Online kNN top-1 by shot group",
        "kNN top-1 accuracy (%)",
        ylim=(0, 102),
        empty_note="not monitored (monitor.every: 0)",
    )
    for group in ACCURACY_GROUPS:
        steps = _values(rows, f"monitor/knn_{group}")
        if steps:
            knn.series[group] = _per_epoch(steps, scale=100.0)
    return [loss, lr, fill, knn]


def plot_training_curves(
    rows: Sequence[Mapping[str, str]], path: str | Path, title: str | None = None
) -> Path:
    """Writes :func:`training_curves` as a 2 x 2 figure to ``path`` (one epoch axis)."""
    from matplotlib.ticker import MaxNLocator

    fig = agg_figure((11, 7.5))
    axes = fig.subplots(2, 2, sharex=True).flat
    panels = training_curves(rows)
    last = max((max(xs) for p in panels for xs, _ in p.series.values() if xs), default=1.0)
    for ax, panel in zip(axes, panels):
        for label, (xs, ys) in panel.series.items():
            epoch_points = label in ACCURACY_GROUPS or "epoch mean" in label
            ax.plot(
                xs,
                ys,
                marker="o" if epoch_points else None,
                markersize=3,
                label=label,
                color=GROUP_COLOURS.get(label),
            )
        if not panel.series:
            ax.text(0.5, 0.5, panel.empty_note, ha="center", va="center", transform=ax.transAxes)
        if panel.ylim is not None:
            ax.set_ylim(*panel.ylim)
        ax.set_xlim(0, 1.03 * max(last, 1.0))
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.xaxis.set_tick_params(labelbottom=True)
        ax.set_title(panel.title)
        ax.set_xlabel("epoch")
        ax.set_ylabel(panel.ylabel)
        ax.grid(True, alpha=0.3)
        if len(panel.series) > 1:
            ax.legend(loc="best", fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_png(fig, path)
