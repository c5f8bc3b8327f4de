"""Retrieval figures: ``retrieval.png`` (Fig. 1) and ``patch_retrieval.png`` (Fig. 4) of
what :func:`~dscl_plugin.evaluation.retrieval.compute_retrieval` found. matplotlib is
imported inside the drawing functions only."""

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from dscl_plugin.evaluation.figures import agg_figure, save_png
from dscl_plugin.evaluation.retrieval import Retrieval
from dscl_plugin.safe_io import PathLike


def plot_retrieval(
    query_images: Sequence[Tensor],
    query_labels: Sequence[int],
    neighbour_images: Sequence[Sequence[Tensor]],
    neighbour_labels: Sequence[Sequence[int]],
    path: PathLike,
    row_titles: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """Writes a PNG grid: one row per query (image (3, H, W) in [0, 1]) followed by its
    neighbours in rank order, each titled ``#rank ✓/✗ class`` (``class_names``, default the
    ids) and framed green if its class is the query's, red if not."""
    fig, axes = _query_rows(query_images, query_labels, neighbour_labels, "query", class_names)
    for r, row in enumerate(axes):
        if row_titles is not None:
            row[0].set_ylabel(row_titles[r], fontsize=8)
        for j, image in enumerate(neighbour_images[r]):
            _show_match(
                row[j + 1], image, j + 1, neighbour_labels[r][j], query_labels[r], class_names
            )
    k = len(neighbour_labels[0])
    return _save(fig, f"top-{k} training-set neighbours by cosine of frozen features", path)


def plot_patch_retrieval(
    query_images: Sequence[Tensor],
    boxes: Tensor,
    query_labels: Sequence[int],
    retrieved_images: Sequence[Sequence[Tensor]],
    retrieved_labels: Sequence[Sequence[int]],
    maps: Tensor,
    path: PathLike,
    class_names: Sequence[str] | None = None,
    row_titles: Sequence[str] | None = None,
) -> Path:
    """Writes a PNG: per row a query image with its box (yellow; ``row_titles`` beside
    it, as in :func:`plot_retrieval`), then the retrieved training images (in grey,
    titled as in :func:`plot_retrieval`) with the box feature's response map
    (``maps[row]``: (N, H, W)) overlaid in colour on one scale for the whole figure,
    shown by a colour bar (cosine of each cell to the box feature)."""
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    scale = Normalize(float(maps.min()), float(maps.max()))
    fig, axes = _query_rows(
        query_images, query_labels, retrieved_labels, "query patch", class_names
    )
    overlay = None
    for r, row in enumerate(axes):
        x1, y1, x2, y2 = boxes[r].tolist()
        box = Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, color="yellow", lw=2)
        row[0].add_patch(box)
        if row_titles is not None:
            row[0].set_ylabel(row_titles[r], fontsize=8)
        for j, image in enumerate(retrieved_images[r]):
            grey = image.mean(dim=0, keepdim=True).expand(3, -1, -1)
            _show_match(
                row[j + 1], grey, j + 1, retrieved_labels[r][j], query_labels[r], class_names
            )
            overlay = row[j + 1].imshow(
                maps[r][j].numpy(), cmap="jet", norm=scale, alpha=0.4, interpolation="bilinear"
            )
    title = "patch retrieval: box feature vs training images, response map overlaid"
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    every_ax = [ax for row in axes for ax in row]
    fig.colorbar(overlay, ax=every_ax, shrink=0.8, pad=0.01, label="cosine to the box feature")
    return save_png(fig, path)


def write_retrieval_figures(
    found: Retrieval,
    train_set: Any,
    test_set: Any,
    out_dir: PathLike,
    display: Callable[[Tensor], Tensor] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Writes ``retrieval.png`` (:func:`plot_retrieval`) and ``patch_retrieval.png``
    (:func:`plot_patch_retrieval`) of ``found`` to ``out_dir``, with the images of the
    data sets it was computed on, each row labelled by its query's shot group and class
    size (``many (n=6000)``). ``display`` turns a dataset tensor into a (3, H, W)
    image in [0, 1] (default: undo the ImageNet normalisation of ``eval_transform``);
    ``class_names`` label the classes (default: their ids).

    Returns:
        ``dict(retrieval=path, patch_retrieval=path)``.
    """
    show = display or _undo_imagenet_normalisation
    queries = [show(test_set[i][0]) for _, i in found.queries]
    labels = found.query_labels
    rows = [f"{g} (n={found.class_counts[c]})" for (g, _), c in zip(found.queries, labels)]
    out = Path(out_dir)
    neighbours = [[show(train_set[j][0]) for j in row] for row in found.neighbours.tolist()]
    retrieval = plot_retrieval(
        queries,
        labels,
        neighbours,
        found.neighbour_labels.tolist(),
        out / "retrieval.png",
        rows,
        class_names,
    )
    patch = plot_patch_retrieval(
        [queries[r] for r in found.patch_rows],
        found.boxes,
        [labels[r] for r in found.patch_rows],
        [[show(train_set[j][0]) for j in row] for row in found.patch_neighbours.tolist()],
        found.patch_labels.tolist(),
        found.maps,
        out / "patch_retrieval.png",
        class_names,
        [rows[r] for r in found.patch_rows],
    )
    return {"retrieval": retrieval, "patch_retrieval": patch}


def _undo_imagenet_normalisation(image: Tensor) -> Tensor:
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    mean = torch.tensor(IMAGENET_NORMALIZE["mean"])[:, None, None]
    std = torch.tensor(IMAGENET_NORMALIZE["std"])[:, None, None]
    return (image * std + mean).clamp(0, 1)


def _query_rows(
    query_images: Sequence[Tensor],
    query_labels: Sequence[int],
    retrieved_labels: Sequence[Sequence[int]],
    prefix: str,
    class_names: Sequence[str] | None,
) -> tuple[Any, list[list[Any]]]:
    """A figure of one row per query, the query image first (titled ``prefix: class``)
    and a cell for each retrieved image: ``(figure, axes[row][column])``."""
    rows, cols = len(query_images), len(retrieved_labels[0]) + 1
    fig = agg_figure((1.9 * cols, 2.0 * rows + 0.4))
    axes = [list(row) for row in fig.subplots(rows, cols, squeeze=False)]
    for row, image, label in zip(axes, query_images, query_labels):
        _show(row[0], image, f"{prefix}: {_name(label, class_names)}", "black")
    return fig, axes


def _save(fig: Any, title: str, path: PathLike) -> Path:
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return str(label) if class_names is None else class_names[label]


def _show_match(
    ax: Any,
    image: Tensor,
    rank: int,
    label: int,
    query_label: int,
    class_names: Sequence[str] | None,
) -> None:
    """A retrieved image titled ``#rank ✓ name`` and framed green if its class is the
    query's, ``✗`` and red if not."""
    correct = label == query_label
    title = f"#{rank} {'✓' if correct else '✗'} {_name(label, class_names)}"
    _show(ax, image, title, "green" if correct else "red")


def _show(ax: Any, image: Tensor, title: str, colour: str) -> None:
    ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=8, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3 if colour != "black" else 1)
