"""The paper's diagnostics as pictures: pull-gradient ratio (Fig. 2), retrieval (Fig. 1)
and patch retrieval with response maps (Fig. 4).

Training layer: reads the CSV logs of ``trainer.log_grad_ratio`` runs and the frozen
backbone of a trained method. matplotlib is imported inside the drawing functions only.

Patch features are taken in the backbone space, not through the projection head: the
box is pooled from the backbone feature map exactly as the PBSD teacher pools it
(:func:`dscl_plugin.models.pool_regions`), but stops before the head, because the frozen
evaluation retrieves with backbone features and the response map compares the box with
the cells of a backbone feature map (the head only ever sees pooled vectors).
"""

import csv
import math
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscl_plugin.data.shots import shot_groups
from dscl_plugin.models import pool_regions

GROUPS = ("many", "medium", "few")
PathLike = Union[str, Path]


# --- gradient ratio (Fig. 2) -------------------------------------------------------------


def read_grad_ratio(
    metrics_csv: PathLike, epoch: Optional[int] = None
) -> Dict[int, Tuple[float, float]]:
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
    epoch: Optional[int] = None,
) -> Path:
    """PNG of the pull-gradient ratio against training class size, one line per run (e.g.
    ``{"SupCon": ".../metrics.csv", "DSCL": ".../metrics.csv"}``), with each run's
    aligned-feature value dashed (log-log axes; the paper's Fig. 2)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(6, 4), dpi=100)
    FigureCanvasAgg(fig)
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
        ax.plot(sizes, aligned, "--", color=colour, alpha=0.7, label=f"{name}: aligned features")
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
    return _save(fig, path)


def _one_two_five(value: float, _position: object = None) -> str:
    """Log-axis tick label: ``"20"``, ``"500"``, ``"1000"`` at 1, 2 and 5 times a power of
    ten, no label elsewhere (labelled 3s and 4s collide on a narrow axis)."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if min(abs(mantissa - m) for m in (1, 2, 5)) < 1e-6 else ""


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
    similarities: Tensor,
    path: PathLike,
    row_titles: Optional[Sequence[str]] = None,
) -> Path:
    """PNG grid: one row per query (image (3, H, W) in [0, 1]) followed by its neighbours,
    each titled with its label and cosine, framed green if the label matches, red if not."""
    rows, k = len(query_images), similarities.shape[1]
    fig, axes = _grid(rows, k + 1)
    for r in range(rows):
        title = f"query: class {query_labels[r]}"
        _show(axes[r][0], query_images[r], title, "black")
        if row_titles is not None:
            axes[r][0].set_ylabel(row_titles[r], fontsize=8)
        for j in range(k):
            text, colour = _match(neighbour_labels[r][j], query_labels[r], similarities[r, j])
            _show(axes[r][j + 1], neighbour_images[r][j], text, colour)
    fig.suptitle(f"top-{k} training-set neighbours by cosine of frozen features", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


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
    similarities: Tensor,
    path: PathLike,
) -> Path:
    """PNG: per row a query image with its box (yellow), then the retrieved training images
    (in grey) with the box feature's response map (N, H, W per row) overlaid in colour
    (jet, scaled per image: red = most similar cells)."""
    from matplotlib.patches import Rectangle

    rows, k = len(query_images), similarities.shape[1]
    fig, axes = _grid(rows, k + 1)
    for r in range(rows):
        _show(axes[r][0], query_images[r], f"query patch: class {query_labels[r]}", "black")
        x1, y1, x2, y2 = boxes[r].tolist()
        axes[r][0].add_patch(
            Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, color="yellow", lw=2)
        )
        for j in range(k):
            text, colour = _match(retrieved_labels[r][j], query_labels[r], similarities[r, j])
            grey = retrieved_images[r][j].mean(dim=0, keepdim=True).expand(3, -1, -1)
            ax = axes[r][j + 1]
            _show(ax, grey, text, colour)
            ax.imshow(maps[r][j].numpy(), cmap="jet", alpha=0.4, interpolation="bilinear")
    fig.suptitle("patch retrieval: box feature vs training images, response map overlaid",
                 fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


# --- from a trained method -----------------------------------------------------------------


def centre_box(image_size: Sequence[int], fraction: float = 0.5) -> Tensor:
    """``(x1, y1, x2, y2)`` of the centred box with ``fraction`` of the image's sides."""
    height, width = image_size[-2:]
    bw, bh = width * fraction, height * fraction
    return torch.tensor([(width - bw) / 2, (height - bh) / 2, (width + bw) / 2, (height + bh) / 2])


@torch.no_grad()
def retrieval_pictures(
    backbone: nn.Module,
    train_set,
    test_set,
    out_dir: PathLike,
    k: int = 5,
    per_group: int = 2,
    many_threshold: int = 100,
    few_threshold: int = 20,
    boxes: Optional[Tensor] = None,
    device: Union[str, torch.device] = "cpu",
    batch_size: int = 256,
    seed: int = 0,
    display: Optional[Callable[[Tensor], Tensor]] = None,
    aligned: bool = True,
) -> Dict[str, Path]:
    """Writes ``retrieval.png`` and ``patch_retrieval.png`` to ``out_dir``.

    ``backbone`` maps images to (B, C, h, w) feature maps (put it in eval mode); the data
    sets return ``(image tensor, label)`` with the evaluation transform. Queries:
    :func:`pick_queries` (``per_group`` per shot group). Retrieval: top-``k`` training images
    by cosine of globally pooled features. Patch retrieval: one query per group, box
    ``boxes[r]`` (default: :func:`centre_box`), its :func:`box_features`, the top 3 training
    images by cosine to their pooled features, and :func:`response_maps` on each.
    ``display`` turns a dataset tensor into a (3, H, W) image in [0, 1] (default: undo
    the ImageNet normalisation of ``eval_transform``).

    Returns:
        ``dict(retrieval=path, patch_retrieval=path)``.

    Raises:
        ValueError: the backbone returns no feature map, the test set has no image of a
            training class, or ``boxes`` is not one box per patch query.
    """
    from torch.utils.data import DataLoader

    from dscl_plugin.evaluation import extract_features

    display = display or _undo_imagenet_normalisation
    backbone = backbone.to(device)

    def feature_maps(images: Tensor) -> Tensor:
        maps = backbone(images)
        if maps.ndim != 4:
            raise ValueError(
                "retrieval pictures need a backbone returning feature maps (B, C, h, w), got "
                f"shape {tuple(maps.shape)}"
            )
        return maps

    def embed(images: Tensor) -> Tensor:
        return feature_maps(images).mean(dim=(2, 3))

    loaders = [DataLoader(d, batch_size=batch_size, shuffle=False) for d in (train_set, test_set)]
    (train_feats, train_labels), (_, test_labels) = [
        extract_features(embed, loader, device) for loader in loaders
    ]
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    class_counts = torch.bincount(train_labels, minlength=num_classes).tolist()
    queries = pick_queries(
        test_labels, class_counts, per_group, many_threshold, few_threshold, seed
    )
    if not queries:
        raise ValueError("the test set has no image of a class to query")
    images = torch.stack([test_set[i][0] for _, i in queries]).to(device)
    labels = [int(test_labels[i]) for _, i in queries]
    maps = feature_maps(images)
    sims, idx = nearest_neighbours(maps.mean(dim=(2, 3)).cpu(), train_feats, k)
    rows = [f"{g} (n={class_counts[c]})" for (g, _), c in zip(queries, labels)]
    out = Path(out_dir)
    paths = {
        "retrieval": plot_retrieval(
            [display(x) for x in images.cpu()], labels,
            [[display(train_set[j][0]) for j in row] for row in idx.tolist()],
            train_labels[idx].tolist(), sims, out / "retrieval.png", rows,
        )
    }
    first_of_group: Dict[str, int] = {}  # patch retrieval: the first query of each group
    for r, (group, _) in enumerate(queries):
        first_of_group.setdefault(group, r)
    firsts = list(first_of_group.values())
    size = images.shape[-2:]
    if boxes is None:
        boxes = centre_box(size).expand(len(firsts), 4)
    if len(boxes) != len(firsts):
        raise ValueError(
            f"boxes must hold one (x1, y1, x2, y2) box per patch query ({len(firsts)}: one "
            f"per shot group present), got shape {tuple(boxes.shape)}"
        )
    feats = box_features(maps[firsts], boxes.to(device, maps.dtype), size, aligned)
    box_sims, box_idx = nearest_neighbours(feats.cpu(), train_feats, min(3, len(train_feats)))
    retrieved, overlays = [], []
    for feat, row in zip(feats, box_idx.tolist()):
        found = torch.stack([train_set[j][0] for j in row]).to(device)
        overlays.append(response_maps(feat, feature_maps(found), size).cpu())
        retrieved.append([display(x) for x in found.cpu()])
    paths["patch_retrieval"] = plot_patch_retrieval(
        [display(images[r].cpu()) for r in firsts], boxes.cpu(), [labels[r] for r in firsts],
        retrieved, train_labels[box_idx].tolist(), overlays, box_sims,
        out / "patch_retrieval.png",
    )
    return paths


def _undo_imagenet_normalisation(image: Tensor) -> Tensor:
    from lightly.transforms.utils import IMAGENET_NORMALIZE

    mean = torch.tensor(IMAGENET_NORMALIZE["mean"])[:, None, None]
    std = torch.tensor(IMAGENET_NORMALIZE["std"])[:, None, None]
    return (image * std + mean).clamp(0, 1)


# --- drawing helpers -----------------------------------------------------------------------


def _grid(rows: int, cols: int):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(1.9 * cols, 2.0 * rows + 0.4), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, cols, squeeze=False)
    return fig, axes


def _match(label: int, query_label: int, similarity: Tensor) -> Tuple[str, str]:
    """Title and frame colour of a retrieved image: green if its label is the query's."""
    correct = label == query_label
    text = f"{label} {'✓' if correct else '✗'}  cos {float(similarity):.2f}"
    return text, "green" if correct else "red"


def _show(ax, image: Tensor, title: str, colour: str) -> None:
    ax.imshow(image.permute(1, 2, 0).numpy(), interpolation="nearest")
    ax.set_title(title, fontsize=8, color=colour)
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3 if colour != "black" else 1)


def _save(fig, path: PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def write_retrieval_pictures(config, module: nn.Module, **kwargs) -> Dict[str, Path]:
    """:func:`retrieval_pictures` of a trained method (``config``, the ``module`` returned by
    :func:`dscl_plugin.pipeline.train` or ``load_for_eval``) on its data sets with the
    evaluation transform, into ``config.output_dir``; ``kwargs`` go to
    :func:`retrieval_pictures`."""
    from dscl_plugin.pipeline import _eval_device, build_dataset_split
    from dscl_plugin.transforms import eval_transform

    module = module.eval()
    transform = eval_transform(config.data.input_size)
    train_set, test_set = (build_dataset_split(config, s, transform) for s in ("train", "test"))
    kwargs = {
        "many_threshold": config.eval.many_threshold,
        "few_threshold": config.eval.few_threshold,
        "device": _eval_device(config),
        "batch_size": config.eval.batch_size,
        "seed": config.seed,
        "aligned": config.model.roi_aligned,
        **kwargs,
    }
    return retrieval_pictures(module.backbone, train_set, test_set, config.output_dir, **kwargs)
