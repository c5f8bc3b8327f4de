"""Matplotlib figures drawn without pyplot (no GUI backend, no global figure state) and
written as PNG, and the per-class accuracy plot; matplotlib is imported when a figure is
made, not with this module."""

from collections.abc import Sequence
from pathlib import Path

from dscl_plugin.files import PathLike


def agg_figure(figsize: tuple[float, float]):
    """A ``matplotlib.figure.Figure`` of ``figsize`` inches at 100 dpi on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: PathLike) -> Path:
    """Writes ``fig`` as a PNG to ``path``, creating its folder; returns the path."""
    path = Path(path)
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
    40 classes); x ticks sit at the real class sizes (at most 12 of them); the shot
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
        if labelled:
            for x, y, c in points:
                ax.annotate(
                    names[c],
                    (x, y),
                    xytext=(3, 3),
                    textcoords="offset points",
                    fontsize=8,
                )
        sizes = sorted(set(xs))
        if len(sizes) > 12:  # keep 12 sizes spread over the range
            sizes = [sizes[round(i * (len(sizes) - 1) / 11)] for i in range(12)]
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
    return save_png(fig, path)
