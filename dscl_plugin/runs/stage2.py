"""Stage 2 of a run: the frozen online backbone (BN in eval mode) scored by a
class-balanced linear probe and kNN retrieval: extract features -> score -> report. A
method that trains a classifier of its own also has that classifier scored on the same
features (``own_classifier`` in ``metrics.json``).

Writes ``metrics.json`` and ``per_class_accuracy.png`` (and, on request, the retrieval
figures) to :meth:`~dscl_plugin.runs.folder.RunFolder.results_dir`: ``output_dir`` when it
scores the run's own ``backbone.pt``, else a folder next to the checkpoint it scores, so
evaluation never overwrites a run's results.
"""

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn
from torch.utils.data import DataLoader

from dscl_plugin.backbones.weights import load_backbone_weights
from dscl_plugin.data.base import ImageDataset
from dscl_plugin.data.samplers import ClassBalancedSampler
from dscl_plugin.data.shots import ACCURACY_GROUPS, SHOT_GROUPS, empty_groups
from dscl_plugin.errors import CheckpointError
from dscl_plugin.evaluation.features import extract_features
from dscl_plugin.evaluation.figures import plot_per_class_accuracy
from dscl_plugin.evaluation.metrics import knn_metrics, shot_metrics
from dscl_plugin.evaluation.probes import augmented_linear_probe, linear_probe
from dscl_plugin.evaluation.reports import format_metrics_table, write_metrics
from dscl_plugin.evaluation.retrieval import RetrievalSettings, compute_retrieval
from dscl_plugin.evaluation.retrieval_figures import write_retrieval_figures
from dscl_plugin.methods import Method, build_method
from dscl_plugin.runs.compute import eval_device
from dscl_plugin.runs.datasets import build_dataset_split
from dscl_plugin.runs.folder import LAYOUT, RunFolder, check_checkpoint_config
from dscl_plugin.runs.provenance import package_stamp
from dscl_plugin.runs.variants import method_title
from dscl_plugin.safe_io import PathLike, load_file
from dscl_plugin.training.config import to_dict
from dscl_plugin.training.data_fit import shot_group_note, tell
from dscl_plugin.training.schema import Config
from dscl_plugin.transforms.views import eval_transform, probe_transform

Features = dict[str, tuple[Tensor, Tensor]]  # split -> (features (N, D), labels (N,))
# what to do with a file stage 2 cannot read
EVAL_HINT = (
    "dscl-eval scores a backbone.pt or checkpoints/last.ckpt written by dscl-train, or a "
    "torchvision state_dict of the config's model.backbone."
)


def load_for_eval(
    config: Config, checkpoint: PathLike, class_counts: Sequence[int] | None = None
) -> Method:
    """The method module (built with the training ``class_counts``; None: counted from
    ``config.data``) with weights from a training checkpoint (``*.ckpt``, whose saved
    config must match ``config``'s method and model) or a backbone ``state_dict``
    (``backbone.pt``, torchvision weights; beside a run's ``config.yaml``, that config
    must match too; a ``classifier.pt`` beside it is the method's own classifier).

    Raises:
        ConfigError: the training checkpoint is another method or model.
        CheckpointError: the file is unreadable or its weights do not fit.
    """
    return load_weights(config, checkpoint, class_counts)[0]


def load_weights(
    config: Config, checkpoint: PathLike, class_counts: Sequence[int] | None = None
) -> tuple[Method, bool]:
    """:func:`load_for_eval` and whether the method's own classifier got its trained
    weights (from the checkpoint or ``classifier.pt``)."""
    if class_counts is None:
        class_counts = build_dataset_split(config, "train", None).class_counts
    state = load_file(checkpoint, EVAL_HINT)
    if isinstance(state, dict) and "state_dict" in state:
        saved = state.get("hyper_parameters", {}).get("config")
        if saved is not None:
            own = Path(checkpoint).resolve().parent.parent / "config.yaml"
            check_checkpoint_config(config, checkpoint, saved, own)
        module = build_method(config, class_counts)
        _load_state(module, state["state_dict"], checkpoint)
        return module, True
    beside = Path(checkpoint).resolve().parent / "config.yaml"  # a dscl-train run's backbone.pt
    if beside.is_file():
        check_checkpoint_config(config, checkpoint, yaml.safe_load(beside.read_text()), beside)
    module = build_method(config, class_counts)
    load_backbone_weights(module.backbone, config.model.backbone, checkpoint)
    classifier = Path(checkpoint).resolve().parent / LAYOUT["classifier"]
    if module.own_classifier is None or not classifier.is_file():
        return module, False
    _load_state(module.own_classifier, load_file(classifier, EVAL_HINT), classifier)
    return module, True


def _load_state(module: nn.Module, state: dict[str, Tensor], path: PathLike) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise CheckpointError(
            f"Checkpoint '{path}' does not fit the config's model: {str(error).splitlines()[0]}"
        ) from None


def extract_split_features(
    config: Config,
    module: Method,
    datasets: dict[str, ImageDataset],
    device: torch.device,
) -> Features:
    """``{"train": (features, labels), "test": ...}`` of ``datasets`` (centre crops),
    embedded by the frozen module (in eval mode: the caller's job)."""
    features = {}
    for split, dataset in datasets.items():
        loader = DataLoader(
            dataset,
            batch_size=config.eval.batch_size,
            shuffle=False,
            num_workers=config.trainer.num_workers,
        )
        progress = f"stage 2: {split} features" if config.trainer.progress_bar else None
        features[split] = extract_features(module.embed, loader, device, progress)
    return features


def score(
    config: Config,
    module: Method,
    features: Features,
    class_counts: Sequence[int],
    device: torch.device,
    own_classifier: nn.Module | None = None,
) -> dict[str, Any]:
    """The linear probe (``probe.protocol``) and kNN metrics of the extracted ``features``:
    ``{"linear_probe": {overall, many, medium, few}, "knn": ..., "per_class_accuracy": ...}``,
    and ``"own_classifier": {overall, many, medium, few}`` of the method's trained
    ``own_classifier`` on the test features."""
    (train_feats, train_labels), (test_feats, test_labels) = (
        features["train"],
        features["test"],
    )
    p, e = config.probe, config.eval
    progress = "stage 2: linear probe" if config.trainer.progress_bar else None
    schedule = p.schedule(config.seed)
    num_classes = len(class_counts)
    if p.protocol == "augmented":
        logits = augmented_linear_probe(
            module.embed,
            augmented_loader(config),
            test_feats,
            num_classes,
            schedule,
            device,
            progress,
        )
    else:
        logits = linear_probe(
            train_feats.to(device),
            train_labels,
            test_feats,
            num_classes,
            schedule,
            progress,
        )
    probe = shot_metrics(logits, test_labels, class_counts, e.many_threshold, e.few_threshold)
    if progress:
        print(
            f"stage 2: kNN retrieval ({len(test_labels)} queries, {len(train_labels)} references)",
            file=sys.stderr,
        )
    knn = knn_metrics(
        train_feats, train_labels, test_feats, test_labels, k=e.knn_k or "max_bin_count"
    )
    scores = {
        "linear_probe": {key: probe[key] for key in ACCURACY_GROUPS},
        "knn": knn,
        "per_class_accuracy": probe["per_class"],
    }
    if own_classifier is not None:
        with torch.no_grad():
            own_logits = own_classifier(test_feats.to(device)).float().cpu()
        own = shot_metrics(own_logits, test_labels, class_counts, e.many_threshold, e.few_threshold)
        scores["own_classifier"] = {key: own[key] for key in ACCURACY_GROUPS}
    return scores


def report(
    config: Config,
    scores: dict[str, Any],
    class_counts: Sequence[int],
    class_names: Sequence[str] | None,
    scored: Path,
) -> dict[str, Any]:
    """Writes ``metrics.json`` (scores, class counts and names, the checkpoint, the config,
    the package version and ``empty_groups``: each shot group without an accuracy and why)
    and ``per_class_accuracy.png`` to the results folder of the ``scored`` weights, prints
    a table and the files (with the run's ``curves.png`` when these are the run's own
    results); returns the metrics. The method's own classifier, if scored, is
    ``own_classifier`` with its ``label``."""
    e = config.eval
    empty = empty_groups(class_counts, e.many_threshold, e.few_threshold)
    for group in SHOT_GROUPS:  # classes there, but none in the test set
        if scores["linear_probe"][group] is None and group not in empty:
            empty[group] = "no test image of its classes"
    own = scores.get("own_classifier")
    label = f"{method_title(config)}'s own classifier"
    labelled = {} if own is None else {"own_classifier": {"label": label, **own}}
    metrics: dict[str, Any] = {
        "method": config.method,
        "dataset": config.data.name,
        "linear_probe": scores["linear_probe"],
        "knn": scores["knn"],
        **labelled,
        "shot_thresholds": {"many": e.many_threshold, "few": e.few_threshold},
        "empty_groups": empty,
        "per_class_accuracy": scores["per_class_accuracy"],
        "train_class_counts": list(class_counts),
        "class_names": None if class_names is None else list(class_names),
        "checkpoint": str(scored.resolve()),
        "config": to_dict(config),
        "package": package_stamp(),
    }
    out = RunFolder.of(config).results_dir(scored)
    write_metrics(metrics, out / "metrics.json")
    overall = scores["linear_probe"]["overall"]
    plot_per_class_accuracy(
        scores["per_class_accuracy"],
        class_counts,
        out / "per_class_accuracy.png",
        e.many_threshold,
        e.few_threshold,
        title=f"{method_title(config)} on {config.data.name}: linear probe top-1 {overall:.1%}",
        class_names=class_names,
    )
    shown = ("linear_probe", "knn", "own_classifier")
    print(format_metrics_table({k: metrics[k] for k in shown if k in metrics}, empty))
    curves = RunFolder.of(config).curves
    files = [out / "metrics.json", out / "per_class_accuracy.png"]
    files += [curves] if curves.parent == out and curves.is_file() else []
    print(f"results: {', '.join(map(str, files))}")
    return metrics


def evaluate(
    config: Config,
    module: Method | None = None,
    checkpoint: PathLike | None = None,
    retrieval: bool = False,
) -> dict[str, Any]:
    """Stage 2 on the frozen online backbone: :func:`extract_split_features`,
    :func:`score`, :func:`report` (and, when ``retrieval``, the retrieval figures beside
    the metrics). ``module``: the trained module of this run (then ``checkpoint`` only
    names its weights; default ``output_dir/backbone.pt``). The method's own classifier
    is scored when its trained weights are there (:func:`load_weights`)."""
    folder = RunFolder.of(config)
    scored = Path(checkpoint) if checkpoint is not None else folder.backbone
    transform = eval_transform(config.data.input_size)
    datasets = {s: build_dataset_split(config, s, transform) for s in ("train", "test")}
    class_counts = datasets["train"].class_counts
    class_names = datasets["train"].class_names
    tell([shot_group_note(config, class_counts)])
    trained = module is not None
    if module is None:
        module, trained = load_weights(config, scored, class_counts)
    device = eval_device(config.trainer.accelerator)
    module = module.to(device).eval()
    own_classifier = module.own_classifier if trained else None
    if module.own_classifier is not None and own_classifier is None:
        print(
            f"stage 2: {scored} comes without {config.method}'s own classifier "
            f"({LAYOUT['classifier']} beside it, or a training checkpoint): not scored",
            file=sys.stderr,
        )
    features = extract_split_features(config, module, datasets, device)
    scores = score(config, module, features, class_counts, device, own_classifier)
    metrics = report(config, scores, class_counts, class_names, scored)
    if retrieval:
        found = compute_retrieval(
            module.backbone,
            datasets["train"],
            datasets["test"],
            retrieval_settings(config),
            device=device,
        )
        out = folder.results_dir(scored)
        paths = write_retrieval_figures(
            found, datasets["train"], datasets["test"], out, class_names=class_names
        )
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return metrics


def retrieval_settings(config: Config) -> RetrievalSettings:
    """The retrieval figures' settings from ``config``: the shot groups of ``eval``, its
    feature batch size, the run's seed and the PBSD pooling (``model.roi_aligned``)."""
    return RetrievalSettings(
        many_threshold=config.eval.many_threshold,
        few_threshold=config.eval.few_threshold,
        batch_size=config.eval.batch_size,
        seed=config.seed,
        aligned=config.model.roi_aligned,
    )


def augmented_loader(config: Config) -> DataLoader[tuple[Any, int]]:
    """Training images for ``probe.protocol: augmented``: the q-view augmentation of
    ``data`` (official: RandomResizedCrop, jitter p 0.8, grayscale, blur, flip), drawn
    class-balanced (``probe.class_balanced``), seeded by ``seed``."""
    p = config.probe
    transform = probe_transform(**config.data.view_augmentation())
    dataset = build_dataset_split(config, "train", transform)
    generator = torch.Generator().manual_seed(config.seed)
    sampler = None
    if p.class_balanced:
        sampler = ClassBalancedSampler(dataset.targets, len(dataset), generator)
    return DataLoader(
        dataset,
        batch_size=min(p.batch_size, len(dataset)),
        sampler=sampler,
        shuffle=sampler is None,
        num_workers=config.trainer.num_workers,
        generator=generator,
    )
