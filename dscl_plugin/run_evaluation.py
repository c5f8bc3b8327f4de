"""Stage 2 of a run: the frozen online backbone (BN in eval mode) scored by a
class-balanced linear probe and kNN retrieval: extract features -> score -> report.

Writes ``metrics.json`` and ``per_class_accuracy.png`` (and, on request, the retrieval
pictures) to :func:`results_dir`: ``output_dir`` when it scores the run's own
``backbone.pt``, else a folder next to the checkpoint it scores, so evaluation never
overwrites a run's results.
"""

import subprocess
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import pytorch_lightning as pl
import torch
import yaml
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dscl_plugin._version import __version__
from dscl_plugin.checkpoints import load_backbone_weights, load_file
from dscl_plugin.config import Config, to_dict
from dscl_plugin.data.samplers import ClassBalancedSampler
from dscl_plugin.devices import eval_device
from dscl_plugin.errors import CheckpointError, ConfigError
from dscl_plugin.evaluation import (
    augmented_linear_probe,
    extract_features,
    format_metrics_table,
    knn_metrics,
    linear_probe,
    plot_per_class_accuracy,
    shot_metrics,
    write_metrics,
)
from dscl_plugin.retrieval import RetrievalSettings, retrieval_pictures
from dscl_plugin.training import backbone_path, build_dataset_split, build_method, changed_settings
from dscl_plugin.transforms import eval_transform, probe_transform

PathLike = Union[str, Path]
# what to do with a file stage 2 cannot read
EVAL_HINT = (
    "dscl-eval scores a backbone.pt or checkpoints/last.ckpt written by dscl-train, or a "
    "torchvision state_dict of the config's model.backbone."
)
# settings that make a training checkpoint the model it is (model.init_from only started it)
MODEL_KEYS = ("method", "model")


def method_title(config: Config) -> str:
    """The method's name in titles: ``DSCL+PBSD``, ``DSCL`` (``model.pbsd_weight: 0``),
    ``SupCon``, or the registered name of another method."""
    if config.method == "dscl":
        return "DSCL+PBSD" if config.model.pbsd_weight > 0 else "DSCL"
    return {"supcon": "SupCon"}.get(config.method, config.method)


def check_checkpoint_config(
    config: Config, checkpoint: PathLike, saved: Dict, own: Optional[Path] = None
) -> None:
    """Refuse to score a checkpoint as another method or model than it was trained as
    (``saved``: its config; ``own``: that run's ``config.yaml``, named in the fix), on one
    line naming each difference and the fix.

    Raises:
        ConfigError: ``method`` or a ``model.*`` setting differs from the checkpoint's.
    """
    changes = changed_settings(saved, config, MODEL_KEYS, free=("model.init_from",))
    if not changes:
        return
    shown = [f"{k} is {old!r} there, the config asks for {new!r}" for k, old, new in changes[:3]]
    more = f" (+{len(changes) - 3} more)" if len(changes) > 3 else ""
    known = own is not None and own.is_file()
    fix = f"--config {own}" if known else "the config it was trained with"
    raise ConfigError(
        f"checkpoint '{checkpoint}' was trained with other settings: {'; '.join(shown)}{more}; "
        f"evaluate it with {fix}."
    )


def load_for_eval(config: Config, checkpoint: PathLike) -> pl.LightningModule:
    """The method module with weights from a training checkpoint (``*.ckpt``, whose saved
    config must match ``config``'s method and model) or a backbone ``state_dict``
    (``backbone.pt``, torchvision weights; beside a run's ``config.yaml``, that config
    must match too).

    Raises:
        ConfigError: the training checkpoint is another method or model.
        CheckpointError: the file is unreadable or its weights do not fit.
    """
    state = load_file(checkpoint, EVAL_HINT)
    if isinstance(state, dict) and "state_dict" in state:
        saved = state.get("hyper_parameters", {}).get("config")
        if saved is not None:
            own = Path(checkpoint).resolve().parent.parent / "config.yaml"
            check_checkpoint_config(config, checkpoint, saved, own)
        module = build_method(config)
        try:
            module.load_state_dict(state["state_dict"])
        except RuntimeError as error:
            raise CheckpointError(
                f"Checkpoint '{checkpoint}' does not fit the config's model: "
                f"{str(error).splitlines()[0]}"
            ) from None
        return module
    beside = Path(checkpoint).resolve().parent / "config.yaml"  # a dscl-train run's backbone.pt
    if beside.is_file():
        check_checkpoint_config(config, checkpoint, yaml.safe_load(beside.read_text()), beside)
    module = build_method(config)
    load_backbone_weights(module.backbone, config.model.backbone, checkpoint)
    return module


def results_dir(config: Config, checkpoint: PathLike) -> Path:
    """Where stage 2 writes: ``output_dir`` for the run's own ``backbone.pt``, else
    ``<checkpoint stem>_eval/`` next to the scored file, so scoring another checkpoint
    never overwrites a run's results."""
    checkpoint = Path(checkpoint).resolve()
    if checkpoint == backbone_path(config).resolve():
        return Path(config.output_dir)
    return checkpoint.with_name(f"{checkpoint.stem}_eval")


def extract_split_features(
    config: Config, module: pl.LightningModule, datasets: Dict[str, Dataset], device: torch.device
) -> Dict[str, Tuple[Tensor, Tensor]]:
    """``{"train": (features, labels), "test": ...}`` of ``datasets`` (centre crops),
    embedded by the frozen module (in eval mode: the caller's job)."""
    features = {}
    for split, dataset in datasets.items():
        loader = DataLoader(dataset, batch_size=config.eval.batch_size, shuffle=False,
                            num_workers=config.trainer.num_workers)
        progress = f"stage 2: {split} features" if config.trainer.progress_bar else None
        features[split] = extract_features(module.embed, loader, device, progress)
    return features


def score(
    config: Config,
    module: pl.LightningModule,
    features: Dict[str, Tuple[Tensor, Tensor]],
    class_counts: Sequence[int],
    device: torch.device,
) -> Dict[str, object]:
    """The linear probe (``probe.protocol``) and kNN metrics of the extracted ``features``:
    ``{"linear_probe": {overall, many, medium, few}, "knn": ..., "per_class_accuracy": ...}``."""
    (train_feats, train_labels), (test_feats, test_labels) = features["train"], features["test"]
    p, e = config.probe, config.eval
    progress = "stage 2: linear probe" if config.trainer.progress_bar else None
    schedule = p.schedule(config.seed)
    num_classes = len(class_counts)
    if p.protocol == "augmented":
        logits = augmented_linear_probe(module.embed, augmented_loader(config), test_feats,
                                        num_classes, schedule, device, progress)
    else:
        logits = linear_probe(train_feats.to(device), train_labels, test_feats, num_classes,
                              schedule, progress)
    probe = shot_metrics(logits, test_labels, class_counts, e.many_threshold, e.few_threshold)
    if progress:
        print(f"stage 2: kNN retrieval ({len(test_labels)} queries, {len(train_labels)} "
              "references)", file=sys.stderr)
    knn = knn_metrics(train_feats, train_labels, test_feats, test_labels,
                      k=e.knn_k or "max_bin_count")
    return {
        "linear_probe": {key: probe[key] for key in ("overall", "many", "medium", "few")},
        "knn": knn,
        "per_class_accuracy": probe["per_class"],
    }


def report(
    config: Config,
    scores: Dict[str, object],
    class_counts: Sequence[int],
    class_names: Optional[Sequence[str]],
    scored: Path,
) -> Dict[str, object]:
    """Writes ``metrics.json`` (scores, class counts, the checkpoint, the config and the
    package version) and ``per_class_accuracy.png`` to :func:`results_dir`, prints a
    table; returns the metrics."""
    e = config.eval
    metrics: Dict[str, object] = {
        "method": config.method,
        "dataset": config.data.name,
        "linear_probe": scores["linear_probe"],
        "knn": scores["knn"],
        "shot_thresholds": {"many": e.many_threshold, "few": e.few_threshold},
        "per_class_accuracy": scores["per_class_accuracy"],
        "train_class_counts": list(class_counts),
        "checkpoint": str(scored.resolve()),
        "config": to_dict(config),
        "package": package_stamp(),
    }
    out = results_dir(config, scored)
    write_metrics(metrics, out / "metrics.json")
    overall = scores["linear_probe"]["overall"]
    plot_per_class_accuracy(
        scores["per_class_accuracy"], class_counts, out / "per_class_accuracy.png",
        e.many_threshold, e.few_threshold,
        title=f"{method_title(config)} on {config.data.name}: linear probe top-1 {overall:.1%}",
        class_names=class_names,
    )
    print(format_metrics_table({k: metrics[k] for k in ("linear_probe", "knn")}))
    print(f"results: {out / 'metrics.json'}, {out / 'per_class_accuracy.png'}")
    return metrics


def evaluate(
    config: Config,
    module: Optional[pl.LightningModule] = None,
    checkpoint: Optional[PathLike] = None,
    retrieval: bool = False,
) -> Dict[str, object]:
    """Stage 2 on the frozen online backbone: :func:`extract_split_features`,
    :func:`score`, :func:`report` (and :func:`write_retrieval_pictures` beside the metrics
    when ``retrieval``). ``module``: the trained module of this run (then ``checkpoint``
    only names its weights; default ``output_dir/backbone.pt``)."""
    scored = Path(checkpoint) if checkpoint is not None else backbone_path(config)
    if module is None:
        module = load_for_eval(config, scored)
    device = eval_device(config.trainer.accelerator)
    module = module.to(device).eval()
    transform = eval_transform(config.data.input_size)
    datasets = {s: build_dataset_split(config, s, transform) for s in ("train", "test")}
    class_counts = datasets["train"].class_counts
    class_names = getattr(datasets["train"], "class_names", None)
    features = extract_split_features(config, module, datasets, device)
    metrics = report(config, score(config, module, features, class_counts, device),
                     class_counts, class_names, scored)
    if retrieval:
        paths = write_retrieval_pictures(config, module, datasets, results_dir(config, scored))
        print("wrote " + ", ".join(str(p) for p in paths.values()))
    return metrics


def write_retrieval_pictures(
    config: Config, module: pl.LightningModule, datasets: Dict[str, Dataset], out_dir: PathLike
) -> Dict[str, Path]:
    """The retrieval pictures (:mod:`dscl_plugin.retrieval`) of a trained method's
    backbone on its ``datasets`` (train and test, evaluation transform), into ``out_dir``."""
    settings = RetrievalSettings(
        many_threshold=config.eval.many_threshold,
        few_threshold=config.eval.few_threshold,
        batch_size=config.eval.batch_size,
        seed=config.seed,
        aligned=config.model.roi_aligned,
    )
    train_set = datasets["train"]
    return retrieval_pictures(module.eval().backbone, train_set, datasets["test"], out_dir,
                              settings, device=eval_device(config.trainer.accelerator),
                              class_names=getattr(train_set, "class_names", None))


def augmented_loader(config: Config) -> DataLoader:
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


def package_stamp() -> Dict[str, Optional[str]]:
    """``dscl_plugin.__version__`` and, for a git checkout, the commit of its sources."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
        git_commit = commit.stdout.strip() if commit.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        git_commit = None
    return {"version": __version__, "git_commit": git_commit}
