"""The two stages of a run: contrastive training (Lightning) and frozen evaluation.

Stage 1 writes ``output_dir/checkpoints/last.ckpt`` every epoch (and every
``trainer.checkpoint_every_n_steps`` steps; atomically), CSV logs in ``output_dir/logs`` and
finally the online backbone to ``output_dir/backbone.pt``. Stage 2 writes ``metrics.json``
and ``per_class_accuracy.png`` to ``output_dir``.
"""

import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader

from dscl_plugin.checkpoints import (
    AtomicCheckpointIO,
    CheckpointError,
    MidEpochResumeCallback,
    ResumableDataLoader,
    RNGStateCallback,
    export_backbone,
    load_backbone_weights,
    load_file,
)
from dscl_plugin import methods as _builtin_methods  # noqa: F401  (registers dscl, supcon)
from dscl_plugin.config import Config, ConfigError, raise_problems, to_dict, to_yaml
from dscl_plugin.data import build_dataset
from dscl_plugin.data.samplers import ClassBalancedSampler
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
from dscl_plugin.registry import available_methods, get_method, load_plugins
from dscl_plugin.transforms import eval_transform, probe_transform

Resume = Union[None, bool, str, Path]


def checkpoint_dir(config: Config) -> Path:
    return Path(config.output_dir) / "checkpoints"


def backbone_path(config: Config) -> Path:
    return Path(config.output_dir) / "backbone.pt"


def check_method(config: Config) -> type:
    """The class registered as ``config.method`` (after loading the installed method
    plugins), once its ``check_config`` found no problem.

    Raises:
        ConfigError: unknown method, or the method's own problems with the config.
    """
    load_plugins()
    if config.method not in available_methods():
        raise_problems(
            [f"method: unknown method {config.method!r}; registered: {available_methods()}"
             " (a method of your own: dscl-train --import MODULE)"]
        )
    cls = get_method(config.method)
    check_config = getattr(cls, "check_config", None)
    raise_problems(check_config(config) if check_config is not None else [])
    return cls


def build_method(config: Config) -> pl.LightningModule:
    """The run's method module, ``cls(config)`` for the class :func:`check_method` returns."""
    return check_method(config)(config)


def build_dataset_split(config: Config, split: str, transform) -> torch.utils.data.Dataset:
    d = config.data
    return build_dataset(
        d.name,
        split,
        transform,
        root=d.root,
        imbalance_factor=d.imbalance_factor,
        input_size=d.input_size,
        download=d.download,
        seed=config.seed,
        list_file=d.train_list if split == "train" else d.test_list,
    )


def _resolve_resume(config: Config, resume: Resume) -> Optional[Path]:
    last = checkpoint_dir(config) / "last.ckpt"
    if resume is None or resume is False:
        if last.exists():
            raise CheckpointError(
                f"'{last}' exists: pass --resume to continue that run, or set another "
                f"output_dir (now '{config.output_dir}')."
            )
        return None
    path = last if resume is True or resume == "last" else Path(resume)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint to resume from not found: '{path}'.")
    _check_resume_config(config, path)
    return path


# settings a resumed run must share with its checkpoint (others, e.g. num_workers, may change;
# trainer.epochs may grow, which extends the run)
_RESUME_KEYS = ("method", "data", "model", "optim", "seed", "trainer.batch_size")
_RESUME_FREE = ("data.root", "data.download")


def _check_resume_config(config: Config, path: Path) -> None:
    """Refuse to resume ``path`` with different training settings (reads the file once,
    so a corrupt checkpoint fails here, naming it)."""
    checkpoint = load_file(path)
    saved = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    saved = saved.get("config")
    if saved is None:
        raise CheckpointError(f"'{path}' has no saved config: it was not written by dscl-train.")
    current, changes = to_dict(config), []
    for key in _RESUME_KEYS:
        old, new = _flatten(_lookup(saved, key), key), _flatten(_lookup(current, key), key)
        for k in sorted(old.keys() | new.keys()):
            if old.get(k) != new.get(k) and k not in _RESUME_FREE:
                changes.append(f"{k}: {old.get(k)!r} -> {new.get(k)!r}")
    old_epochs, new_epochs = _lookup(saved, "trainer.epochs"), config.trainer.epochs
    if old_epochs is not None and new_epochs < old_epochs:
        changes.append(
            f"trainer.epochs: {old_epochs!r} -> {new_epochs!r} (may only grow, to extend a run)"
        )
    if changes:
        raise ConfigError(
            f"Cannot resume '{path}' with changed settings:\n  " + "\n  ".join(changes)
            + "\nResume with the checkpoint's settings (its config.yaml) or use a new output_dir."
        )


def _lookup(tree: Dict, key: str):
    for part in key.split("."):
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _flatten(value, prefix: str) -> Dict[str, object]:
    if isinstance(value, dict):
        flat: Dict[str, object] = {}
        for name, sub in value.items():
            flat.update(_flatten(sub, f"{prefix}.{name}"))
        return flat
    return {prefix: value}


def _last_checkpoint(config: Config, **every: int) -> ModelCheckpoint:
    """``ModelCheckpoint`` writing ``checkpoints/last.ckpt`` (``every_n_epochs`` or
    ``every_n_train_steps``)."""
    return ModelCheckpoint(
        dirpath=checkpoint_dir(config),
        filename="last",
        save_top_k=1,
        enable_version_counter=False,
        **every,
    )


def build_trainer(
    config: Config,
    generators: Dict[str, torch.Generator],
    callbacks: Iterable[pl.Callback] = (),
    loader: Optional[ResumableDataLoader] = None,
) -> pl.Trainer:
    """Lightning trainer: atomic ``last.ckpt`` per epoch (and every
    ``trainer.checkpoint_every_n_steps`` steps, resumable inside the epoch when the
    train ``loader`` is given), RNG state, CSV logs."""
    t = config.trainer
    distributed = t.devices > 1 or t.num_nodes > 1
    strategy = "ddp" if t.strategy == "auto" and distributed else t.strategy
    checkpoints = [_last_checkpoint(config, every_n_epochs=1)]
    if t.checkpoint_every_n_steps is not None:
        checkpoints.append(_last_checkpoint(config, every_n_train_steps=t.checkpoint_every_n_steps))
    resume = [MidEpochResumeCallback(loader)] if loader is not None else []
    return pl.Trainer(
        max_epochs=t.epochs,
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        sync_batchnorm=t.sync_batchnorm,
        strategy=strategy,
        precision=t.precision,
        limit_train_batches=t.limit_train_batches,
        log_every_n_steps=t.log_every_n_steps,
        enable_progress_bar=t.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=config.output_dir,
        logger=CSVLogger(config.output_dir, name="logs"),
        callbacks=[RNGStateCallback(generators), *resume, *callbacks, *checkpoints],
        plugins=[AtomicCheckpointIO()],
    )


def train(
    config: Config, resume: Resume = None, callbacks: Iterable[pl.Callback] = ()
) -> Optional[pl.LightningModule]:
    """Stage 1. Returns the trained module on the global-zero process, None on the others.

    ``resume``: None for a fresh run, True/"last" for ``output_dir/checkpoints/last.ckpt``,
    or a checkpoint path.
    """
    ckpt_path = _resolve_resume(config, resume)
    pl.seed_everything(config.seed, workers=True)
    module = build_method(config)
    dataset = build_dataset_split(config, "train", module.train_transform())
    t = config.trainer
    processes = t.devices * t.num_nodes
    per_device = t.batch_size // processes
    if len(dataset) // processes < per_device:
        raise ConfigError(
            f"trainer.batch_size: {t.batch_size} is larger than the training set "
            f"({len(dataset)} images over {processes} process(es)); every epoch would be empty."
        )
    generator = torch.Generator().manual_seed(config.seed)
    loader = ResumableDataLoader(
        dataset,
        batch_size=per_device,
        shuffle=True,
        drop_last=True,
        num_workers=t.num_workers,
        collate_fn=module.collate_fn(),
        generator=generator,
        pin_memory=torch.cuda.is_available(),
    )
    trainer = build_trainer(config, {"train_loader": generator}, callbacks, loader)
    if trainer.is_global_zero:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "config.yaml").write_text(to_yaml(config))
    with warnings.catch_warnings():  # MidEpochResumeCallback resumes the loader itself
        warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before")
        trainer.fit(module, loader, ckpt_path=ckpt_path, weights_only=True)
    if not trainer.is_global_zero:
        return None
    export_backbone(module.backbone, config.model.backbone, backbone_path(config))
    return module


def load_for_eval(config: Config, checkpoint: Union[str, Path]) -> pl.LightningModule:
    """The method module with weights from a training checkpoint (``*.ckpt``) or a
    backbone ``state_dict`` (``backbone.pt``, torchvision ResNet weights)."""
    module = build_method(config)
    state = load_file(checkpoint)
    if isinstance(state, dict) and "state_dict" in state:
        try:
            module.load_state_dict(state["state_dict"])
        except RuntimeError as error:
            raise CheckpointError(
                f"Checkpoint '{checkpoint}' does not fit the config's model: {error}"
            ) from error
    else:
        load_backbone_weights(module.backbone, config.model.backbone, checkpoint)
    return module


def _eval_device(config: Config) -> torch.device:
    use_gpu = config.trainer.accelerator != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if use_gpu else "cpu")


def evaluate(
    config: Config,
    module: Optional[pl.LightningModule] = None,
    checkpoint: Optional[Union[str, Path]] = None,
) -> Dict[str, object]:
    """Stage 2 on the frozen online backbone (BN in eval mode): class-balanced linear probe
    (``probe.protocol``: on centre-crop features, or the official one on freshly augmented
    images every epoch) and kNN retrieval on centre-crop features; writes
    ``metrics.json`` and the per-class plot, prints a table."""
    if module is None:
        module = load_for_eval(config, checkpoint or backbone_path(config))
    device = _eval_device(config)
    module = module.to(device).eval()
    d, e, p, t = config.data, config.eval, config.probe, config.trainer
    transform = eval_transform(d.input_size)
    features = {}
    for split in ("train", "test"):
        dataset = build_dataset_split(config, split, transform)
        loader = DataLoader(
            dataset, batch_size=e.batch_size, shuffle=False, num_workers=t.num_workers
        )
        features[split] = extract_features(module.embed, loader, device)
        if split == "train":
            class_counts, num_classes = dataset.class_counts, dataset.num_classes
    (train_feats, train_labels), (test_feats, test_labels) = features["train"], features["test"]
    if p.protocol == "augmented":
        logits = augmented_linear_probe(
            module.embed,
            _augmented_loader(config),
            test_feats,
            num_classes,
            epochs=p.epochs,
            lr=p.lr,
            milestones=p.milestones,
            weight_decay=p.weight_decay,
            seed=config.seed,
            device=device,
        )
    else:
        logits = linear_probe(
            train_feats.to(device),
            train_labels,
            test_feats,
            num_classes,
            epochs=p.epochs,
            lr=p.lr,
            batch_size=p.batch_size,
            milestones=p.milestones,
            class_balanced=p.class_balanced,
            weight_decay=p.weight_decay,
            seed=config.seed,
        )
    probe = shot_metrics(logits, test_labels, class_counts, e.many_threshold, e.few_threshold)
    knn = knn_metrics(
        train_feats, train_labels, test_feats, test_labels, k=e.knn_k or "max_bin_count"
    )
    metrics: Dict[str, object] = {
        "method": config.method,
        "dataset": d.name,
        "linear_probe": {key: probe[key] for key in ("overall", "many", "medium", "few")},
        "knn": knn,
        "shot_thresholds": {"many": e.many_threshold, "few": e.few_threshold},
        "per_class_accuracy": probe["per_class"],
        "train_class_counts": list(class_counts),
    }
    out = Path(config.output_dir)
    write_metrics(metrics, out / "metrics.json")
    plot = out / "per_class_accuracy.png"
    plot_per_class_accuracy(
        probe["per_class"], class_counts, plot, e.many_threshold, e.few_threshold
    )
    print(format_metrics_table({k: metrics[k] for k in ("linear_probe", "knn")}))
    return metrics


def _augmented_loader(config: Config) -> DataLoader:
    """Training images for ``probe.protocol: augmented``: the q-view augmentation of
    ``data`` (official: RandomResizedCrop, jitter p 0.8, grayscale, blur, flip), drawn
    class-balanced (``probe.class_balanced``), seeded by ``seed``."""
    d, p = config.data, config.probe
    transform = probe_transform(
        d.input_size,
        crop_scale=tuple(d.crop_scale),
        hflip_prob=d.hflip_prob,
        jitter=tuple(d.color_jitter),
        jitter_prob=d.jitter_prob,
        grayscale_prob=d.grayscale_prob,
        blur_prob=d.blur_prob,
    )
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


@contextmanager
def torch_threads(num_threads: Optional[int]) -> Iterator[None]:
    """``torch.set_num_threads(num_threads)`` inside the block (None: unchanged)."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def run(
    config: Config,
    stage: Optional[int] = None,
    resume: Resume = None,
    checkpoint: Optional[str] = None,
) -> Optional[Dict[str, object]]:
    """Stage 1 then stage 2 (or only ``stage``) with ``trainer.num_threads`` CPU threads;
    returns the metrics on the main process."""
    check_method(config)
    with torch_threads(config.trainer.num_threads):
        module = None
        if stage in (None, 1):
            module = train(config, resume)
            if module is None:  # a non-zero DDP rank: rank 0 evaluates
                return None
        if stage in (None, 2):
            return evaluate(config, module, checkpoint)
    return None
