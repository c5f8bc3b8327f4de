"""Retrieval of a frozen backbone, computed: nearest training images of test queries
per shot group (the paper's Fig. 1) and patch retrieval with response maps (Fig. 4).
Drawn by :func:`dscl_plugin.evaluation.retrieval_figures.write_retrieval_figures`.

Patch features are taken in the backbone space, not through the projection head: the
box is pooled from the backbone feature map exactly as the PBSD teacher pools it
(:func:`dscl_plugin.models.feature_maps.pool_regions`), but stops before the head,
because the frozen evaluation retrieves with backbone features and the response map
compares the box with the cells of a backbone feature map (the head only ever sees
pooled vectors).
"""

from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from dscl_plugin.data.shots import shot_groups
from dscl_plugin.evaluation.features import extract_features
from dscl_plugin.models.feature_maps import backbone_feature_map, global_pool, pool_regions


def nearest_neighbours(queries: Tensor, references: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Top-``k`` references by cosine similarity: ``(similarities, indices)``, both (Q, k).

    Raises:
        ValueError: ``k`` is not in ``[1, len(references)]``.
    """
    if not 1 <= k <= len(references):
        raise ValueError(f"k must be in [1, {len(references)}] (the references), got {k}")
    similarity = F.normalize(queries.float(), dim=1) @ F.normalize(references.float(), dim=1).T
    return similarity.topk(k, dim=1)


def pick_queries(
    test_labels: Sequence[int] | Tensor,
    class_counts: Sequence[int],
    per_group: int = 2,
    many_threshold: int = 100,
    few_threshold: int = 20,
    seed: int = 0,
) -> list[tuple[str, int]]:
    """``(group, test index)`` for up to ``per_group`` classes of each shot group (spread
    over the group from its largest to its smallest class), one seeded test image each."""
    labels = torch.as_tensor(test_labels)
    generator = torch.Generator().manual_seed(seed)
    picks = []
    for group, classes in shot_groups(class_counts, many_threshold, few_threshold).items():
        classes = [
            c for c in sorted(classes, key=lambda c: -class_counts[c]) if bool((labels == c).any())
        ]
        if not classes:
            continue
        n = min(per_group, len(classes))
        spread = [classes[round(i * (len(classes) - 1) / max(n - 1, 1))] for i in range(n)]
        for c in spread:
            candidates = torch.nonzero(labels == c).flatten()
            pick = candidates[torch.randint(len(candidates), (1,), generator=generator)]
            picks.append((group, int(pick)))
    return picks


def box_features(
    feature_maps: Tensor, boxes: Tensor, image_size: Sequence[int], aligned: bool = True
) -> Tensor:
    """(N, C) pooled features of one box per image:
    :func:`~dscl_plugin.models.feature_maps.pool_regions` (the PBSD teacher pooling;
    ``aligned`` as ``model.roi_aligned``: True pools exactly the cells a box covers) of
    (N, C, h, w) maps at (N, 4) ``(x1, y1, x2, y2)`` pixel boxes."""
    return pool_regions(feature_maps, boxes[:, None], image_size, aligned)[:, 0]


def response_maps(
    box_feature: Tensor, feature_maps: Tensor, size: Sequence[int] | None = None
) -> Tensor:
    """Cosine similarity of a (C,) box feature to every cell of (N, C, h, w) feature maps:
    (N, h, w), or bilinearly upsampled to ``size = (H, W)``: (N, H, W)."""
    cells = F.normalize(feature_maps.float(), dim=1)
    maps = torch.einsum("nchw,c->nhw", cells, F.normalize(box_feature.float(), dim=0))
    if size is None:
        return maps
    return F.interpolate(maps[:, None], size=tuple(size), mode="bilinear")[:, 0]


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

    queries: list[tuple[str, int]]
    query_labels: list[int]
    class_counts: list[int]
    neighbours: Tensor
    neighbour_labels: Tensor
    patch_rows: list[int]
    boxes: Tensor
    patch_neighbours: Tensor
    patch_labels: Tensor
    maps: Tensor


@torch.no_grad()
def compute_retrieval(
    backbone: nn.Module,
    train_set: Dataset[tuple[Tensor, int]],
    test_set: Dataset[tuple[Tensor, int]],
    settings: RetrievalSettings = RetrievalSettings(),
    boxes: Tensor | None = None,
    device: str | torch.device = "cpu",
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
    s = settings
    feature_maps = partial(backbone_feature_map, backbone.to(device))
    loaders = [DataLoader(d, batch_size=s.batch_size, shuffle=False) for d in (train_set, test_set)]
    (train_feats, train_labels), (_, test_labels) = [
        extract_features(lambda x: global_pool(feature_maps(x)), loader, device)
        for loader in loaders
    ]
    num_classes = int(max(train_labels.max(), test_labels.max())) + 1
    class_counts = torch.bincount(train_labels, minlength=num_classes).tolist()
    queries = pick_queries(
        test_labels,
        class_counts,
        s.per_group,
        s.many_threshold,
        s.few_threshold,
        s.seed,
    )
    if not queries:
        raise ValueError("the test set has no image of a class to query")
    images = torch.stack([test_set[i][0] for _, i in queries]).to(device)
    maps = feature_maps(images)
    _, neighbours = nearest_neighbours(global_pool(maps).cpu(), train_feats, s.k)
    first_of_group: dict[str, int] = {}
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
        response_maps(
            feat,
            feature_maps(torch.stack([train_set[j][0] for j in row]).to(device)),
            size,
        ).cpu()
        for feat, row in zip(feats, patch_neighbours.tolist())
    ]
    return Retrieval(
        queries,
        [int(test_labels[i]) for _, i in queries],
        class_counts,
        neighbours,
        train_labels[neighbours],
        patch_rows,
        boxes.cpu(),
        patch_neighbours,
        train_labels[patch_neighbours],
        torch.stack(overlays),
    )
