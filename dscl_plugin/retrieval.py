"""Retrieval pictures of a frozen backbone: retrieval (the paper's Fig. 1) and patch
retrieval with response maps (Fig. 4), computed (:func:`compute_retrieval`) then drawn
(:func:`plot_retrieval_pictures`). matplotlib is imported inside the drawing functions only.

Patch features are taken in the backbone space, not through the projection head: the
box is pooled from the backbone feature map exactly as the PBSD teacher pools it
(:func:`dscl_plugin.models.pool_regions`), but stops before the head, because the frozen
evaluation retrieves with backbone features and the response map compares the box with
the cells of a backbone feature map (the head only ever sees pooled vectors).
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscl_plugin.data.shots import shot_groups
from dscl_plugin.figures import agg_figure, save_png
from dscl_plugin.models import pool_regions

PathLike = Union[str, Path]


# --- retrieval (Fig. 1) ------------------------------------------------------------------


def nearest_neighbours(queries: Tensor, references: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Top-``k`` references by cosine similarity: ``(similarities, indices)``, both (Q, k).

    Raises:
        ValueError: ``k`` is not in ``[1, len(references)]``.
    """
    if not 1 <= k <= len(references):
        raise ValueError(f"k must be in [1, {len(references)}] (the references), got {k}")
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(references.float(), dim=1).T
    return similarity.topk(k, dim=1)


def pick_queries(
    test_labels: Sequence[int],
    class_counts: Sequence[int],
    per_group: int = 2,
    many_threshold: int = 100,
    few_threshold: int = 20,
    seed: int = 0,
) -> List[Tuple[str, int]]:
    """``(group, test index)`` for up to ``per_group`` classes of each shot group (spread
    over the group from its largest to its smallest class), one seeded test image each."""
    test_labels = torch.as_tensor(test_labels)
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for group, classes in shot_groups(class_counts, many_threshold, few_threshold).items():
        classes = [c for c in sorted(classes, key=lambda c: -class_counts[c])
                   if bool((test_labels == c).any())]
        if not classes:
            continue
        n = min(per_group, len(classes))
        spread = [classes[round(i * (len(classes) - 1) / max(n - 1, 1))] for i in range(n)]
        for c in spread:
            candidates = torch.nonzero(test_labels == c).flatten()
            pick = candidates[torch.randint(len(candidates), (1,), generator=generator)]
            picks.append((group, int(pick)))
    return picks


def plot_retrieval(
    query_images: Sequence[Tensor],
    query_labels: Sequence[int],
    neighbour_images: Sequence[Sequence[Tensor]],
    neighbour_labels: Sequence[Sequence[int]],
    path: PathLike,
    row_titles: Optional[Sequence[str]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> Path:
    """PNG grid: one row per query (image (3, H, W) in [0, 1]) followed by its neighbours
    in rank order, each titled ``#rank ✓/✗ class`` (``class_names``, default the ids) and
    framed green if its class is the query's, red if not."""
    rows, k = len(query_images), len(neighbour_labels[0])
    fig, axes = _grid(rows, k + 1)
    for r in range(rows):
        _show(axes[r][0], query_images[r], f"query: {_name(query_labels[r], class_names)}",
              "black")
        if row_titles is not None:
            axes[r][0].set_ylabel(row_titles[r], fontsize=8)
        for j in range(k):
            text, colour = _match(j + 1, neighbour_labels[r][j], query_labels[r], class_names)
            _show(axes[r][j + 1], neighbour_images[r][j], text, colour)
    fig.suptitle(f"top-{k} training-set neighbours by cosine of frozen features", fontsize=10)
    fig.tight_layout()
    return save_png(fig, path)


# --- patch retrieval (Fig. 4) ------------------------------------------------------------


def box_features(
    feature_maps: Tensor, boxes: Tensor, image_size: Sequence[int], aligned: bool = True
) -> Tensor:
    """(N, C) pooled features of one box per image: :func:`~dscl_plugin.models.pool_regions`
    (the PBSD teacher pooling; ``aligned`` as ``model.roi_aligned``: True pools exactly the
    cells a box covers) of (N, C, h, w) maps at (N, 4) ``(x1, y1, x2, y2)`` pixel boxes."""
    return pool_regions(feature_maps, boxes[:, None], image_size, aligned)[:, 0]


def response_maps(
    box_feature: Tensor, feature_maps: Tensor, size: Optional[Sequence[int]] = None
) -> Tensor:
    """Cosine similarity of a (C,) box feature to every cell of (N, C, h, w) feature maps:
    (N, h, w), or bilinearly upsampled to ``size = (H, W)``: (N, H, W)."""
    cells = F.normalize(feature_maps.float(), dim=1)
    maps = torch.einsum("nchw,c->nhw", cells, F.normalize(box_feature.float(), dim=0))
    if size is None:
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear")[:, 0]


def plot_patch_retrieval(
    query_images: Sequence[Tensor],
    boxes: Tensor,
    query_labels: Sequence[int],
    retrieved_images: Sequence[Sequence[Tensor]],
    retrieved_labels: Sequence[Sequence[int]],
    maps: Sequence[Tensor],
    path: PathLike,
    class_names: Optional[Sequence[str]] = None,
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
        _show(axes[r][0], query_images[r], f"query patch: {_name(query_labels[r], class_names)}",
              "black")
        x1, y1, x2, y2 = boxes[r].tolist()
        axes[r][0].add_patch(
            Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, color="yellow", lw=2)
        )
        for j in range(k):
            text, colour = _match(j + 1, retrieved_labels[r][j], query_labels[r], class_names)
            grey = retrieved_images[r][j].mean(dim=0, keepdim=True).expand(3, -1, -1)
            ax = axes[r][j + 1]
            _show(ax, grey, text, colour)
            overlay = ax.imshow(maps[r][j].numpy(), cmap="jet", norm=scale, alpha=0.4,
                                interpolation="bilinear")
    fig.suptitle("patch retrieval: box feature vs training images, response map overlaid",
                 fontsize=10)
    fig.tight_layout()
    fig.colorbar(overlay, ax=[ax for row in axes for ax in row], shrink=0.8, pad=0.01,
                 label="cosine to the box feature")
    return save_png(fig, path)


# --- from a backbone ---------------------------------------------------------------------


def centre_box(image_size: Sequence[int], fraction: float = 0.5) -> Tensor:
    """``(x1, y1, x2, y2)`` of the centred box with ``fraction`` of the image's sides."""
    height, width = image_size[-2:]
    bw, bh = width * fraction, height * fraction
    return torch.tensor([(width - bw) / 2, (height - bh) / 2, (width + bw) / 2, (height + bh) / 2])


@dataclass(frozen=True)
class RetrievalSettings:
    """What :func:`compute_retrieval` shows: top-``k`` neighbours of ``per_group`` queries
    per shot group (``many_threshold``, ``few_threshold`` as in stage 2), features in
    batches of ``batch_size``, queries drawn with ``seed``, boxes pooled with ``aligned``
    (``model.roi_aligned``)."""

    k: int = 5
    per_group: int = 2
    many_threshold: int = 100
    few_threshold: int = 20
    batch_size: int = 256
    seed: int = 0
    aligned: bool = True


@dataclass
class Retrieval:
    """What :func:`compute_retrieval` found (indices into the test / training set).

    ``queries``: ``(group, test index)`` per row; ``neighbours`` (Q, k) training indices;
    ``patch_rows``: the rows with a patch query (the first of each shot group), ``boxes``
    their (P, 4) boxes, ``patch_neighbours`` (P, 3) training indices and ``maps`` (P, 3,
    H, W) response maps; ``class_counts`` of the training set.
    """

    queries: List[Tuple[str, int]]
    query_labels: List[int]
    class_counts: List[int]
    neighbours: Tensor
    neighbour_labels: Tensor
    patch_rows: List[int]
    boxes: Tensor
    patch_neighbours: Tensor
    patch_labels: Tensor
    maps: Tensor


@torch.no_grad()
def compute_retrieval(
    backbone: nn.Module,
    train_set,
    test_set,
    settings: RetrievalSettings = RetrievalSettings(),
    boxes: Optional[Tensor] = None,
    device: Union[str, torch.device] = "cpu",
) -> Retrieval:
    """Retrieval (Fig. 1) and patch retrieval (Fig. 4) of a frozen ``backbone``.

    ``backbone`` maps images to (B, C, h, w) feature maps (put it in eval mode); the data
    sets return ``(image tensor, label)`` with the evaluation transform. Queries:
    :func:`pick_queries`. Retrieval: top-``k`` training images by cosine of globally
    pooled features. Patch retrieval: the first query of each shot group, box
    ``boxes[p]`` (default: :func:`centre_box`), its :func:`box_features`, the top 3
    training images by cosine to their pooled features, and :func:`response_maps` on each.

    Raises:
        ValueError: the backbone returns no feature map, the test set has no image of a
            training class, or ``boxes`` is not one box per patch query.
    """
    from torch.utils.data import DataLoader

    from dscl_plugin.evaluation import extract_features

    s = settings
    backbone = backbone.to(device)

    def feature_maps(images: Tensor) -> Tensor:
        maps = backbone(images)
        if maps.ndim != 4:
            raise ValueError(
                "retrieval pictures need a backbone returning feature maps (B, C, h, w), got "
                f"shape {tuple(maps.shape)}"
            )
        return maps

    loaders = [DataLoader(d, batch_size=s.batch_size, shuffle=False) for d in (train_set, test_set)]
    (train_feats, train_labels), (_, test_labels) = [
        extract_features(lambda x: feature_maps(x).mean(dim=(2, 3)), loader, device)
        for loader in loaders
    ]
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    class_counts = torch.bincount(train_labels, minlength=num_classes).tolist()
    queries = pick_queries(
        test_labels, class_counts, s.per_group, s.many_threshold, s.few_threshold, s.seed
    )
    if not queries:
        raise ValueError("the test set has no image of a class to query")
    images = torch.stack([test_set[i][0] for _, i in queries]).to(device)
    maps = feature_maps(images)
    _, neighbours = nearest_neighbours(maps.mean(dim=(2, 3)).cpu(), train_feats, s.k)
    first_of_group: Dict[str, int] = {}
    for r, (group, _) in enumerate(queries):
        first_of_group.setdefault(group, r)
    patch_rows = list(first_of_group.values())
    size = images.shape[-2:]
    if boxes is None:
        boxes = centre_box(size).expand(len(patch_rows), 4)
    if len(boxes) != len(patch_rows):
        raise ValueError(
            f"boxes must hold one (x1, y1, x2, y2) box per patch query ({len(patch_rows)}: "
            f"one per shot group present), got shape {tuple(boxes.shape)}"
        )
    feats = box_features(maps[patch_rows], boxes.to(device, maps.dtype), size, s.aligned)
    _, patch_neighbours = nearest_neighbours(feats.cpu(), train_feats, min(3, len(train_feats)))
    overlays = [
        response_maps(feat, feature_maps(torch.stack([train_set[j][0] for j in row]).to(device)),
                      size).cpu()
        for feat, row in zip(feats, patch_neighbours.tolist())
    ]
    return Retrieval(
        queries, [int(test_labels[i]) for _, i in queries], class_counts, neighbours,
        train_labels[neighbours], patch_rows, boxes.cpu(), patch_neighbours,
        train_labels[patch_neighbours], torch.stack(overlays),
    )


def plot_retrieval_pictures(
    found: Retrieval,
    train_set,
    test_set,
    out_dir: PathLike,
    display: Optional[Callable[[Tensor], Tensor]] = None,
    class_names: Optional[Sequence[str]] = None,
) -> Dict[str, Path]:
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
        queries, labels, neighbours, found.neighbour_labels.tolist(), out / "retrieval.png", rows,
        class_names,
    )
    patch = plot_patch_retrieval(
        [queries[r] for r in found.patch_rows], found.boxes, [labels[r] for r in found.patch_rows],
        [[display(train_set[j][0]) for j in row] for row in found.patch_neighbours.tolist()],
        found.patch_labels.tolist(), found.maps, out / "patch_retrieval.png", class_names,
    )
    return {"retrieval": retrieval, "patch_retrieval": patch}


def retrieval_pictures(
    backbone: nn.Module,
    train_set,
    test_set,
    out_dir: PathLike,
    settings: RetrievalSettings = RetrievalSettings(),
    device: Union[str, torch.device] = "cpu",
    class_names: Optional[Sequence[str]] = None,
) -> Dict[str, Path]:
    """:func:`compute_retrieval` then :func:`plot_retrieval_pictures` (centre boxes,
    ImageNet-normalised images) into ``out_dir``."""
    found = compute_retrieval(backbone, train_set, test_set, settings, device=device)
    return plot_retrieval_pictures(found, train_set, test_set, out_dir, class_names=class_names)


def _undo_imagenet_normalisation(image: Tensor) -> Tensor:
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    mean = torch.tensor(IMAGENET_NORMALIZE["mean"])[:, None, None]
    std = torch.tensor(IMAGENET_NORMALIZE["std"])[:, None, None]
    return (image * std + mean).clamp(0, 1)


# --- drawing helpers -----------------------------------------------------------------------


def _grid(rows: int, cols: int):
    fig = agg_figure((1.9 * cols, 2.0 * rows + 0.4))
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _name(label: int, class_names: Optional[Sequence[str]]) -> str:
    return str(label) if class_names is None else class_names[label]


def _match(
    rank: int, label: int, query_label: int, class_names: Optional[Sequence[str]] = None
) -> Tuple[str, str]:
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

