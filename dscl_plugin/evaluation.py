"""Stage 2: frozen features, linear probe, shot-group accuracy, kNN retrieval, reports."""

import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import (
    Callable,
    Dict,
    Iterable,
    Iterator,
    List,
    Optional,
    Sequence,
    Tuple,
    Union,
)

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscl_plugin.data.samplers import ClassBalancedSampler
from dscl_plugin.data.shots import shot_groups
from dscl_plugin.figures import agg_figure, save_png

GROUPS = ("many", "medium", "few")


@dataclass(frozen=True)
class ProbeSchedule:
    """How a linear probe is trained: ``epochs`` of SGD(``lr``, ``momentum``,
    ``weight_decay``) with lr x 0.1 at each epoch in ``milestones``; mini-batches of
    ``batch_size`` features drawn class-balanced (:class:`ClassBalancedSampler`) or as a
    random permutation; all randomness from ``seed``. ``config.probe.schedule(seed)``
    builds one from a run's config."""

    epochs: int
    lr: float
    milestones: Sequence[int] = ()
    batch_size: int = 2048
    class_balanced: bool = True
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"need epochs >= 1 and batch_size >= 1, got {self.epochs} and {self.batch_size}"
            )


def _progress(iterable, description: Optional[str], **kwargs):
    """``iterable`` wrapped in a tqdm bar on stderr labelled ``description`` (None: no bar);
    when stderr is not a terminal (a redirected log), one line ``description`` instead."""
    if description is None:
        return iterable
    if not sys.stderr.isatty():
        print(description, file=sys.stderr)
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=description, leave=False, dynamic_ncols=True, **kwargs)


@torch.no_grad()
def extract_features(
    embed_fn: Callable[[Tensor], Tensor],
    loader,
    device: Union[str, torch.device],
    progress: Optional[str] = None,
) -> Tuple[Tensor, Tensor]:
    """``(features (N, D), labels (N,))`` on the CPU for every batch ``(images, labels, ...)``.

    Runs ``embed_fn(images.to(device))`` without gradients, with a progress bar labelled
    ``progress`` if given. Putting the model in eval mode (BatchNorm running statistics,
    no dropout) is the caller's job.
    """
    feats, labels = [], []
    for batch in _progress(loader, progress, unit="batch"):
        images, targets = batch[0], batch[1]
        feats.append(embed_fn(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(targets, dtype=torch.long).cpu())
    if not feats:
        raise ValueError("extract_features got an empty loader")
    return torch.cat(feats), torch.cat(labels)


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    num_classes: int,
    schedule: ProbeSchedule,
    progress: Optional[str] = None,
) -> Tensor:
    """Train ``nn.Linear(D, num_classes)`` on frozen features, return test logits (N_test, C).

    The fast stage 2 (``probe.protocol: features``): features extracted once. An epoch is
    ``ceil(N / b)`` steps of ``b = min(schedule.batch_size, N)`` samples, drawn
    class-balanced or as a random permutation (``schedule.class_balanced``); training as
    in :func:`train_linear_classifier`. ``progress``: label of a per-epoch progress bar
    (None: silent).

    Raises:
        ValueError: features or labels of the wrong shape, or no training sample.
    """
    if train_feats.ndim != 2 or test_feats.ndim != 2 or test_feats.shape[1] != train_feats.shape[1]:
        raise ValueError(
            "train_feats and test_feats must be (N, D) with the same D, got "
            f"{tuple(train_feats.shape)} and {tuple(test_feats.shape)}"
        )
    if train_labels.shape != (len(train_feats),):
        raise ValueError(
            f"train_labels must be ({len(train_feats)},), got {tuple(train_labels.shape)}"
        )
    if len(train_feats) == 0:
        raise ValueError("linear_probe needs training samples, got none")
    device = train_feats.device
    generator = torch.Generator().manual_seed(schedule.seed)
    n = len(train_feats)
    batch_size = min(schedule.batch_size, n)
    sampler = (
        ClassBalancedSampler(train_labels.tolist(), n, generator)
        if schedule.class_balanced else None
    )
    labels = train_labels.to(device)

    def epoch_batches() -> Iterator[Tuple[Tensor, Tensor]]:
        if sampler is not None:
            order = torch.tensor(list(sampler))
        else:
            order = torch.randperm(n, generator=generator)
        for step in order.to(device).split(batch_size):
            yield train_feats[step], labels[step]

    classifier = train_linear_classifier(
        epoch_batches, train_feats.shape[1], num_classes, schedule, generator, device, progress
    )
    with torch.no_grad():
        return classifier(test_feats.to(device)).cpu()


def augmented_linear_probe(
    embed_fn: Callable[[Tensor], Tensor],
    train_loader: Iterable,
    test_feats: Tensor,
    num_classes: int,
    schedule: ProbeSchedule,
    device: Union[str, torch.device] = "cpu",
    progress: Optional[str] = None,
) -> Tensor:
    """The official stage 2 (``probe.protocol: augmented``); returns test logits (N_test, C).

    Every epoch is one pass over ``train_loader``, whose images are augmented afresh on
    each pass (e.g. :func:`dscl_plugin.transforms.probe_transform`) and drawn by its
    sampler (class-balanced for the official recipe; the loader, not ``schedule``, sets
    batch size and sampling); ``embed_fn`` (the frozen backbone, in eval mode: the
    caller's job) embeds them without gradients and the classifier is trained as in
    :func:`train_linear_classifier`. ``test_feats`` are the centre-crop features of the
    test set; the last epoch's classifier is used.
    """
    if test_feats.ndim != 2:
        raise ValueError(f"test_feats must be (N, D), got {tuple(test_feats.shape)}")

    def epoch_batches() -> Iterator[Tuple[Tensor, Tensor]]:
        for batch in train_loader:
            with torch.no_grad():
                feats = embed_fn(batch[0].to(device)).float()
            yield feats, torch.as_tensor(batch[1], dtype=torch.long).to(device)

    generator = torch.Generator().manual_seed(schedule.seed)
    classifier = train_linear_classifier(
        epoch_batches, test_feats.shape[1], num_classes, schedule, generator, device, progress
    )
    with torch.no_grad():
        return classifier(test_feats.to(device)).cpu()


def train_linear_classifier(
    epoch_batches: Callable[[], Iterable[Tuple[Tensor, Tensor]]],
    feature_dim: int,
    num_classes: int,
    schedule: ProbeSchedule,
    generator: torch.Generator,
    device: Union[str, torch.device],
    progress: Optional[str] = None,
) -> nn.Linear:
    """``nn.Linear(feature_dim, num_classes)`` trained with cross-entropy,
    SGD(lr, momentum, weight_decay) and lr x 0.1 at each epoch in ``milestones`` (all from
    ``schedule``), one ``epoch_batches()`` pass of ``(features, labels)`` per epoch.
    Weights ~ N(0, 0.01^2) from ``generator``, bias 0. The classifier after the last epoch
    is returned: no selection on the test set. ``progress``: label of a per-epoch
    progress bar.

    Raises:
        FloatingPointError: the loss becomes NaN or Inf (lr too high).
    """
    s = schedule
    classifier = nn.Linear(feature_dim, num_classes).to(device)
    with torch.no_grad():
        classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=generator) * 0.01)
        classifier.bias.zero_()
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(s.milestones), gamma=0.1)
    for epoch in _progress(range(s.epochs), progress, unit="epoch"):
        for feats, targets in epoch_batches():
            loss = F.cross_entropy(classifier(feats), targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"linear probe loss is {loss.item()} in epoch {epoch}: "
                    f"lower probe.lr (now {s.lr})"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    return classifier


def shot_metrics(
    preds: Tensor,
    targets: Tensor,
    class_counts: Sequence[int],
    many_threshold: int = 100,
    few_threshold: int = 20,
) -> Dict[str, object]:
    """Top-1 accuracy overall, per class and per shot group (see :func:`shot_groups`).

    ``preds`` are class indices (N,) or logits (N, C). ``overall`` is the fraction of
    correct test samples; ``per_class[c]`` the accuracy on class c (None if c is not in
    the test set); a group's accuracy is the mean of its classes' accuracies (None if no
    class of the group is in the test set).
    """
    preds = torch.as_tensor(preds)
    targets = torch.as_tensor(targets).long().cpu()
    if preds.ndim == 2:
        preds = preds.argmax(dim=1)
    preds = preds.long().cpu()
    if preds.shape != targets.shape or targets.ndim != 1 or len(targets) == 0:
        raise ValueError(
            "preds (N,) or (N, C) and targets (N,) must match, got "
            f"{tuple(preds.shape)} and {tuple(targets.shape)}"
        )
    num_classes = len(class_counts)
    if int(targets.max()) >= num_classes:
        raise ValueError(
            f"target {int(targets.max())} has no entry in class_counts (length {num_classes})"
        )
    correct = (preds == targets).double()
    hits = torch.bincount(targets, weights=correct, minlength=num_classes)
    totals = torch.bincount(targets, minlength=num_classes)
    per_class: List[Optional[float]] = [
        (h / t) if t > 0 else None for h, t in zip(hits.tolist(), totals.tolist())
    ]
    metrics: Dict[str, object] = {"overall": correct.mean().item()}
    for group, classes in shot_groups(class_counts, many_threshold, few_threshold).items():
        accs = [per_class[c] for c in classes if per_class[c] is not None]
        metrics[group] = float(np.mean(accs)) if accs else None
    metrics["per_class"] = per_class
    return metrics


def knn_metrics(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    test_labels: Tensor,
    k: Union[int, str] = "max_bin_count",
    distance=None,
    batch_size: Optional[int] = 4096,
) -> Dict[str, float]:
    """Retrieval metrics of test queries against the train set, via PML's ``AccuracyCalculator``.

    Neighbours come from ``CustomKNN(distance)`` (default ``CosineSimilarity``), computed in
    torch in query batches of ``batch_size``. With ``k="max_bin_count"`` (default) returns
    ``precision_at_1``, ``r_precision`` and ``mean_average_precision_at_r``; with an int k,
    ``precision_at_1`` and ``mean_average_precision`` (MAP@k).
    """
    from pytorch_metric_learning.distances import CosineSimilarity
    from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
    from pytorch_metric_learning.utils.inference import CustomKNN

    if k == "max_bin_count":
        include = ("precision_at_1", "r_precision", "mean_average_precision_at_r")
    else:
        include = ("precision_at_1", "mean_average_precision")
    calculator = AccuracyCalculator(
        include=include,
        k=k,
        device=train_feats.device,
        knn_func=CustomKNN(distance or CosineSimilarity(), batch_size=batch_size),
    )
    results = calculator.get_accuracy(
        test_feats, test_labels, train_feats, train_labels, ref_includes_query=False
    )
    return {name: float(value) for name, value in results.items()}


def plot_per_class_accuracy(
    per_class: Sequence[Optional[float]],
    class_counts: Sequence[int],
    path: Union[str, Path],
    many_threshold: Optional[float] = None,
    few_threshold: Optional[float] = None,
    title: Optional[str] = None,
    class_names: Optional[Sequence[str]] = None,
) -> Path:
    """Write a PNG scatter of per-class accuracy (%) against training class size (log x).

    Each point is labelled with its class name (``class_names``; default: its id; up to
    40 classes); x ticks sit at the real class sizes (at most 12 of them); the shot
    thresholds, when given, are dashed lines named in the legend. Classes without test samples (None) or without training
    samples are left out.
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
        (n, 100 * a, c) for c, (a, n) in enumerate(zip(per_class, class_counts))
        if a is not None and n > 0
    ]
    fig = agg_figure((7, 4.5))
    ax = fig.add_subplot()
    if points:
        xs, ys, _ = zip(*points)
        labelled = len(points) <= 40
        ax.scatter(xs, ys, s=18, alpha=0.8, zorder=3,
                   label="a class (its name beside it)" if labelled else "a class")
        if labelled:
            for x, y, c in points:
                ax.annotate(names[c], (x, y), xytext=(3, 3), textcoords="offset points", fontsize=8)
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
            ax.axvline(threshold, color=colour, linestyle="--", linewidth=1,
                       label=label.format(threshold))
    ax.set_xlabel("training images of the class (log scale)")
    ax.set_ylabel("test top-1 accuracy (%)")
    ax.set_ylim(-2, 105)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return save_png(fig, path)


def _to_json(value):
    """Python scalars/lists/dicts; tensors and numpy values unwrapped, NaN/inf -> None."""
    if isinstance(value, dict):
        return {str(k): _to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_json(v) for v in value]
    if isinstance(value, (torch.Tensor, np.ndarray, np.generic)):
        return _to_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_metrics(metrics: Dict[str, object], path: Union[str, Path]) -> Path:
    """Write ``metrics`` as indented JSON (None, NaN and inf become null)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_to_json(metrics), indent=2, allow_nan=False) + "\n")
    return path


def format_metrics_table(metrics: Dict[str, object]) -> str:
    """Two-column text table of the scalar metrics (nested dicts as ``outer/inner``).

    Values in [0, 1] are shown as percentages; None and NaN as "-"; lists are skipped.
    """
    rows: List[Tuple[str, str]] = []

    def add(prefix: str, items: Dict[str, object]) -> None:
        for key, value in items.items():
            name = f"{prefix}{key}"
            if isinstance(value, dict):
                add(f"{name}/", value)
            elif value is None:
                rows.append((name, "-"))
            elif isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            elif isinstance(value, float) and 0.0 <= value <= 1.0:
                rows.append((name, f"{100 * value:.2f}%"))
            else:
                rows.append((name, f"{value:g}"))

    add("", _to_json(metrics))
    width = max([len("metric")] + [len(name) for name, _ in rows])
    lines = [f"{'metric':<{width}}  value", f"{'-' * width}  -------"]
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    return "\n".join(lines)
