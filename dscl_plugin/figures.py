"""Matplotlib figures drawn without pyplot (no GUI backend, no global figure state) and
written as PNG; matplotlib is imported when a figure is made, not with this module."""

from pathlib import Path
from typing import Tuple, Union


def agg_figure(figsize: Tuple[float, float]):
    """A ``matplotlib.figure.Figure`` of ``figsize`` inches at 100 dpi on an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: Union[str, Path]) -> Path:
    """Writes ``fig`` as a PNG to ``path``, creating its folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path
