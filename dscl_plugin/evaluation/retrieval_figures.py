"""Retrieval pictures: ``retrieval.png`` (Fig. 1) and ``patch_retrieval.png`` (Fig. 4) of
what :func:`~dscl_plugin.evaluation.retrieval.compute_retrieval` found. matplotlib is
imported inside the drawing functions only."""

from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from dscl_plugin.evaluation.figures import agg_figure, save_png
from dscl_plugin.evaluation.retrieval import (
    Retrieval,
    RetrievalSettings,
    compute_retrieval,
)

PathLike = str | Path


def plot_retrieval(
    query_images: Sequence[Tensor],
    query_labels: Sequence[int],
    neighbour_images: Sequence[Sequence[Tensor]],
    neighbour_labels: Sequence[Sequence[int]],
    path: PathLike,
    row_titles: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
) -> Path:
    """PNG grid: one row per query (image (3, H, W) in [0, 1]) followed by its neighbours
    in rank order, each titled ``#rank ✓/✗ class`` (``class_names``, default the ids) and
    framed green if its class is the query's, red if not."""
    rows, k = len(query_images), len(neighbour_labels[0])
    fig, axes = _grid(rows, k + 1)
    for r in range(rows):
        _show(
            axes[r][0],
            query_images[r],
            f"query: {_name(query_labels[r], class_names)}",
            "black",
        )
        if row_titles is not None:
            axes[r][0].set_ylabel(row_titles[r], fontsize=8)
        for j in range(k):
            text, colour = _match(j + 1, neighbour_labels[r][j], query_labels[r], class_names)
            _show(axes[r][j + 1], neighbour_images[r][j], text, colour)
    fig.suptitle(f"top-{k} training-set neighbours by cosine of frozen features", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


def plot_patch_retrieval(
    query_images: Sequence[Tensor],
    boxes: Tensor,
    query_labels: Sequence[int],
    retrieved_images: Sequence[Sequence[Tensor]],
    retrieved_labels: Sequence[Sequence[int]],
    maps: Sequence[Tensor],
    path: PathLike,
    class_names: Sequence[str] | None = None,
) -> Path:
    """PNG: per row a query image with its box (yellow), then the retrieved training images
    (in grey, titled as in :func:`plot_retrieval`) with the box feature's response map
    (N, H, W per row) overlaid in colour on one scale for the whole figure, shown by a
    colour bar (cosine of each cell to the box feature)."""
    from matplotlib.colors import Normalize
    from matplotlib.patches import Rectangle

    rows, k = len(query_images), len(retrieved_labels[0])
    scale = Normalize(min(float(m.min()) for m in maps), max(float(m.max()) for m in maps))
    fig, axes = _grid(rows, k + 1)
    overlay = None
    for r in range(rows):
        _show(
            axes[r][0],
            query_images[r],
            f"query patch: {_name(query_labels[r], class_names)}",
            "black",
        )
        x1, y1, x2, y2 = boxes[r].tolist()
        axes[r][0].add_patch(
            Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, color="yellow", lw=2)
        )
        for j in range(k):
            text, colour = _match(j + 1, retrieved_labels[r][j], query_labels[r], class_names)
            grey = retrieved_images[r][j].mean(dim=0, keepdim=True).expand(3, -1, -1)
            ax = axes[r][j + 1]
            _show(ax, grey, text, colour)
            overlay = ax.imshow(
                maps[r][j].numpy(),
                cmap="jet",
                norm=scale,
                alpha=0.4,
                interpolation="bilinear",
            )
    fig.suptitle(
        "patch retrieval: box feature vs training images, response map overlaid",
        fontsize=10,
    )
    fig.tight_layout()
    fig.colorbar(
        overlay,
        ax=[ax for row in axes for ax in row],
        shrink=0.8,
        pad=0.01,
        label="cosine to the box feature",
    )
    return save_png(fig, path)


def plot_retrieval_pictures(
    found: Retrieval,
    train_set,
    test_set,
    out_dir: PathLike,
    display: Callable[[Tensor], Tensor] | None = None,
    class_names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Writes ``retrieval.png`` (:func:`plot_retrieval`) and ``patch_retrieval.png``
    (:func:`plot_patch_retrieval`) of ``found`` to ``out_dir``. ``display`` turns a dataset
    tensor into a (3, H, W) image in [0, 1] (default: undo the ImageNet normalisation of
    ``eval_transform``); ``class_names`` label the classes (default: their ids).

    Returns:
        ``dict(retrieval=path, patch_retrieval=path)``.
    """
    display = display or _undo_imagenet_normalisation
    queries = [display(test_set[i][0]) for _, i in found.queries]
    labels = found.query_labels
    rows = [f"{g} (n={found.class_counts[c]})" for (g, _), c in zip(found.queries, labels)]
    out = Path(out_dir)
    neighbours = [[display(train_set[j][0]) for j in row] for row in found.neighbours.tolist()]
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
        [[display(train_set[j][0]) for j in row] for row in found.patch_neighbours.tolist()],
        found.patch_labels.tolist(),
        found.maps,
        out / "patch_retrieval.png",
        class_names,
    )
    return {"retrieval": retrieval, "patch_retrieval": patch}


def retrieval_pictures(
    backbone: nn.Module,
    train_set,
    test_set,
    out_dir: PathLike,
    settings: RetrievalSettings = RetrievalSettings(),
    device: str | torch.device = "cpu",
    class_names: Sequence[str] | None = None,
) -> dict[str, Path]:
    """:func:`compute_retrieval` then :func:`plot_retrieval_pictures` (centre boxes,
    ImageNet-normalised images) into ``out_dir``."""
    found = compute_retrieval(backbone, train_set, test_set, settings, device=device)
    return plot_retrieval_pictures(found, train_set, test_set, out_dir, class_names=class_names)


def _undo_imagenet_normalisation(image: Tensor) -> Tensor:
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    mean = torch.tensor(IMAGENET_NORMALIZE["mean"])[:, None, None]
    std = torch.tensor(IMAGENET_NORMALIZE["std"])[:, None, None]
    return (image * std + mean).clamp(0, 1)


def _grid(rows: int, cols: int):
    fig = agg_figure((1.9 * cols, 2.0 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _name(label: int, class_names: Sequence[str] | None) -> str:
    return str(label) if class_names is None else class_names[label]


def _match(
    rank: int, label: int, query_label: int, class_names: Sequence[str] | None = None
) -> tuple[str, str]:
    """Title ``#rank ✓ name`` and frame colour of a retrieved image: green if its class is
    the query's, red if not."""
    correct = label == query_label
    return f"#{rank} {'✓' if correct else '✗'} {_name(label, class_names)}", (
        "green" if correct else "red"
    )


def _show(ax, image: Tensor, title: str, colour: str) -> None:
    ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=8, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3 if colour != "black" else 1)
