"""Matplotlib figures drawn without pyplot (no GUI backend, no global figure state) and
written as PNG, and the per-class accuracy plot; matplotlib is imported when a figure is
made, not with this module."""

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dscl_plugin.safe_io import PathLike, writing

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Annotation
    from matplotlib.transforms import Bbox, BboxBase


def agg_figure(figsize: tuple[float, float]) -> "Figure":
    """A ``matplotlib.figure.Figure`` of ``figsize`` inches at 100 dpi on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig: "Figure", path: PathLike) -> Path:
    """Writes ``fig`` as a PNG to ``path``, creating its folder; returns the path."""
    with writing(path) as path:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, format="png")
    return path


def plot_per_class_accuracy(
    per_class: Sequence[float | None],
    class_counts: Sequence[int],
    path: PathLike,
    many_threshold: float | None = None,
    few_threshold: float | None = None,
    title: str | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Write a PNG scatter of per-class accuracy (%) against training class size (log x).

    Each point is labelled with its class name (``class_names``; default: its id; up to
    40 classes); x ticks sit at real class sizes (:func:`spread_ticks`); the shot
    thresholds, when given, are dashed lines named in the legend. Classes without test
    samples (None) or without training samples are left out.
    """
    from matplotlib.ticker import NullFormatter, NullLocator

    if len(per_class) != len(class_counts):
        raise ValueError(
            f"per_class ({len(per_class)}) and class_counts ({len(class_counts)}) differ"
        )
    if class_names is not None and len(class_names) != len(class_counts):
        raise ValueError(
            f"class_names ({len(class_names)}) and class_counts ({len(class_counts)}) differ"
        )
    names = [str(c) for c in range(len(per_class))] if class_names is None else list(class_names)
    points = [
        (n, 100 * a, c)
        for c, (a, n) in enumerate(zip(per_class, class_counts))
        if a is not None and n > 0
    ]
    fig = agg_figure((7, 4.5))
    ax = fig.add_subplot()
    if points:
        xs, ys, _ = zip(*points)
        labelled = len(points) <= 40
        ax.scatter(
            xs,
            ys,
            s=18,
            alpha=0.8,
            zorder=3,
            label="a class (its name beside it)" if labelled else "a class",
        )
        sizes = spread_ticks(sorted(set(xs)))
        ax.set_xscale("log")
        ax.set_xticks(sizes, [str(n) for n in sizes], rotation=45 if len(sizes) > 8 else 0)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())
    lines = [
        (many_threshold, "many-shot: > {:g} images", "tab:green"),
        (few_threshold, "few-shot: < {:g} images", "tab:red"),
    ]
    for threshold, label, colour in lines:
        if threshold is not None:
            ax.axvline(
                threshold,
                color=colour,
                linestyle="--",
                linewidth=1,
                label=label.format(threshold),
            )
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_ylim(-2, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    if points and labelled:  # placed once the axes have their final size
        label_points(ax, [(x, y, names[c]) for x, y, c in points])
    return save_png(fig, path)


def spread_ticks(sizes: Sequence[int], count: int = 12) -> list[int]:
    """Of the increasing class ``sizes`` (on a log axis), the smallest, the largest and
    those at least 1/``count`` of the log range from the previous kept one: at most
    about ``count`` ticks whose labels do not run into each other."""
    gap = math.log(sizes[-1] / sizes[0]) / count
    kept = [sizes[0]]
    for size in sizes[1:]:
        if math.log(size / kept[-1]) >= gap:
            kept.append(size)
    if len(sizes) > 1 and kept[-1] != sizes[-1]:
        kept[-1] = sizes[-1]
    return kept


# where a point's label may go, tried in order: (dx, dy) offset in points and alignment;
# then further up or down, with a leader line
NEAR = [
    (4, 3, "left", "bottom"),
    (4, -3, "left", "top"),
    (-4, 3, "right", "bottom"),
    (-4, -3, "right", "top"),
    (0, 6, "center", "bottom"),
    (0, -6, "center", "top"),
]
FAR = [
    (dx * j, dy * k, h, v) for k in (3, 5, 7, 9, 12) for j in (1, 5) for dx, dy, h, v in NEAR[:4]
]


def label_points(
    ax: "Axes", points: Sequence[tuple[float, float, str]], fontsize: float = 8
) -> list["Annotation"]:
    """Labels each ``(x, y, text)`` point of ``ax`` so that no two labels overlap each
    other, another point or the legend, inside the axes: at the first free place of
    :data:`NEAR`, else of :data:`FAR` with a leader line (where none is free, the place
    overlapping least, text on text counting ten times as much as text on a point).
    Call it once the figure's layout is final; returns the annotations."""
    frame = ax.get_window_extent()  # boxes in display units, from the figure's renderer
    marks = [ax.transData.transform((x, y)) for x, y, _ in points]
    radius = 4 * ax.figure.dpi / 72  # a marker's half-width in pixels
    legend = ax.get_legend()
    placed = [] if legend is None else [legend.get_window_extent()]
    labels = []
    for i, (x, y, text) in enumerate(points):
        others = [m for j, m in enumerate(marks) if j != i]
        best = None
        for place in [*NEAR, *FAR]:
            label = _annotation(ax, (x, y), text, place, fontsize, far=place in FAR)
            box = label.get_window_extent()
            cost: float = 10 * sum(_overlap(box, other) for other in placed)  # text on text: worst
            cost += sum(_overlap(box, _square(m, radius)) for m in others)
            cost += box.width * box.height - _overlap(box, frame)  # outside the axes
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, label, box)
            else:
                label.remove()
            if cost == 0:
                break
        assert best is not None
        placed.append(best[2])
        labels.append(best[1])
    return labels


def _annotation(
    ax: "Axes",
    xy: tuple[float, float],
    text: str,
    place: tuple[float, float, str, str],
    fontsize: float,
    far: bool,
) -> "Annotation":
    dx, dy, horizontal, vertical = place
    leader = dict(arrowstyle="-", color="grey", lw=0.5, shrinkA=0, shrinkB=2) if far else None
    return ax.annotate(
        text,
        xy,
        xytext=(dx, dy),
        textcoords="offset points",
        ha=horizontal,
        va=vertical,
        fontsize=fontsize,
        arrowprops=leader,
    )


def _square(centre: np.ndarray, half: float) -> "Bbox":
    from matplotlib.transforms import Bbox

    (x, y) = centre
    return Bbox([[x - half, y - half], [x + half, y + half]])


def _overlap(a: "BboxBase", b: "BboxBase") -> float:
    """The area two display boxes share."""
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return max(width, 0.0) * max(height, 0.0)
