"""The two stages of a run: contrastive training (Lightning) and frozen evaluation.

Stage 1 writes ``output_dir/checkpoints/last.ckpt`` every epoch (and every
``trainer.checkpoint_every_n_steps`` steps; atomically, keeping the previous one as
``last.prev.ckpt``), one CSV log ``output_dir/logs/metrics.csv`` (continued by a resumed
run) and finally the online backbone to ``output_dir/backbone.pt``. Stage 2 writes
``metrics.json`` and ``per_class_accuracy.png`` to ``output_dir`` when it scores the run's
own ``backbone.pt``, else next to the checkpoint it scores (:func:`results_dir`).
"""

import logging
import signal
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, Iterable, Iterator, Optional, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger
from pytorch_lightning.loggers.csv_logs import ExperimentWriter
from pytorch_lightning.loggers.logger import rank_zero_experiment
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
from dscl_plugin.device_views import use_device_views
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
    _silence_lightning_tips()
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
        logger=_ContinuedCSVLogger(config.output_dir, name="", version="logs"),
        callbacks=[RNGStateCallback(generators), *resume, *callbacks, *checkpoints],
        plugins=[AtomicCheckpointIO(keep_previous=True)],
    )


class _ContinuedExperimentWriter(ExperimentWriter):
    """Lightning's CSV writer, but an existing ``metrics.csv`` is continued (its columns
    kept), not deleted: a resumed run keeps one log."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = file.readline().strip()
            self.metrics_keys = sorted(filter(None, header.split(",")))


class _ContinuedCSVLogger(CSVLogger):
    """``CSVLogger`` writing ``save_dir/version/metrics.csv`` with
    :class:`_ContinuedExperimentWriter` (no ``version_N`` per resume)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _ContinuedExperimentWriter(log_dir=self.log_dir)
        return self._experiment


class _NoTips(logging.Filter):
    """Drops Lightning's advertising tips (``💡 Tip: ... litlogger / litmodels``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "💡 Tip" not in record.getMessage()


def _silence_lightning_tips() -> None:
    for name in ("pytorch_lightning.utilities.rank_zero", "lightning.pytorch.utilities.rank_zero"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoTips) for f in logger.filters):
            logger.addFilter(_NoTips())


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
    collate_fn, num_workers = module.collate_fn(), t.num_workers
    if config.data.pipeline == "device":  # batches of (indices, labels); views made on the device
        dataset, collate_fn, num_workers = use_device_views(module, dataset, config.seed), None, 0
    generator = torch.Generator().manual_seed(config.seed)
    loader = ResumableDataLoader(
        dataset,
        batch_size=per_device,
        shuffle=True,
        drop_last=True,
        num_workers=num_workers,
        collate_fn=collate_fn,
        generator=generator,
        pin_memory=torch.cuda.is_available(),
    )
    trainer = build_trainer(config, {"train_loader": generator}, callbacks, loader)
    if trainer.is_global_zero:
        Path(config.output_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.output_dir) / "config.yaml").write_text(to_yaml(config))
    sigint_handler = signal.getsignal(signal.SIGINT)
    try:
        with warnings.catch_warnings():  # MidEpochResumeCallback resumes the loader itself
            warnings.filterwarnings("ignore", "You're resuming from a checkpoint that ended before")
            trainer.fit(module, loader, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after a clean shutdown
        if trainer.interrupted:
            signal.signal(signal.SIGINT, sigint_handler)  # Lightning ignores further Ctrl-C
            raise TrainingInterrupted(checkpoint_dir(config) / "last.ckpt") from None
        raise
    if not trainer.is_global_zero:
        return None
    export_backbone(module.backbone, config.model.backbone, backbone_path(config))
    return module


class TrainingInterrupted(KeyboardInterrupt):
    """Stage 1 stopped by Ctrl-C; ``checkpoint`` is the last complete checkpoint."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(str(checkpoint))
        self.checkpoint = checkpoint


def training_finished(config: Config) -> bool:
    """Whether ``output_dir`` holds a finished stage 1: ``backbone.pt`` written after the
    last checkpoint."""
    last, backbone = checkpoint_dir(config) / "last.ckpt", backbone_path(config)
    return (
        last.is_file() and backbone.is_file() and backbone.stat().st_mtime >= last.stat().st_mtime
    )


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
    images every epoch) and kNN retrieval on centre-crop features; writes ``metrics.json``
    (with the checkpoint, the config and the package version) and the per-class plot to
    :func:`results_dir`, prints a table.

    ``module``: the trained module of this run (then ``checkpoint`` only names its weights).
    """
    scored = Path(checkpoint) if checkpoint is not None else backbone_path(config)
    if module is None:
        module = load_for_eval(config, scored)
    progress = config.trainer.progress_bar
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
        features[split] = extract_features(
            module.embed, loader, device, progress=f"stage 2: {split} features" if progress else None
        )
        if split == "train":
            class_counts, num_classes = dataset.class_counts, dataset.num_classes
    (train_feats, train_labels), (test_feats, test_labels) = features["train"], features["test"]
    schedule = dict(
        epochs=p.epochs,
        lr=p.lr,
        milestones=p.milestones,
        weight_decay=p.weight_decay,
        seed=config.seed,
        progress="stage 2: linear probe" if progress else None,
    )
    if p.protocol == "augmented":
        logits = augmented_linear_probe(
            module.embed, _augmented_loader(config), test_feats, num_classes, device=device, **schedule
        )
    else:
        logits = linear_probe(
            train_feats.to(device),
            train_labels,
            test_feats,
            num_classes,
            batch_size=p.batch_size,
            class_balanced=p.class_balanced,
            **schedule,
        )
    probe = shot_metrics(logits, test_labels, class_counts, e.many_threshold, e.few_threshold)
    if progress:
        print(f"stage 2: kNN retrieval ({len(test_labels)} queries, {len(train_labels)} references)",
              file=sys.stderr)
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
        "checkpoint": str(scored.resolve()),
        "config": to_dict(config),
        "package": _package_version(),
    }
    out = results_dir(config, scored)
    write_metrics(metrics, out / "metrics.json")
    plot_per_class_accuracy(
        probe["per_class"],
        class_counts,
        out / "per_class_accuracy.png",
        e.many_threshold,
        e.few_threshold,
        title=f"{config.method} on {d.name}: linear probe top-1 {probe['overall']:.1%}",
    )
    print(format_metrics_table({k: metrics[k] for k in ("linear_probe", "knn")}))
    print(f"results: {out / 'metrics.json'}, {out / 'per_class_accuracy.png'}")
    return metrics


def _augmented_loader(config: Config) -> DataLoader:
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


def results_dir(config: Config, checkpoint: Union[str, Path]) -> Path:
    """Where stage 2 writes: ``output_dir`` for the run's own ``backbone.pt``, else
    ``<checkpoint stem>_eval/`` next to the scored file, so scoring another checkpoint
    never overwrites a run's results."""
    checkpoint = Path(checkpoint).resolve()
    if checkpoint == backbone_path(config).resolve():
        return Path(config.output_dir)
    return checkpoint.with_name(f"{checkpoint.stem}_eval")


def _package_version() -> Dict[str, Optional[str]]:
    """``dscl_plugin.__version__`` and, for a git checkout, the commit of its sources."""
    from dscl_plugin import __version__

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


def _resumes_finished(config: Config, resume: Resume) -> bool:
    """``resume`` names this run's last checkpoint and that run has finished stage 1
    (its settings are checked as for any resume)."""
    path = _resolve_resume(config, resume)
    return path == checkpoint_dir(config) / "last.ckpt" and training_finished(config)


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
        if stage in (None, 1) and resume not in (None, False) and _resumes_finished(config, resume):
            print(f"{config.output_dir}: training finished; re-evaluating", file=sys.stderr)
        elif stage in (None, 1):
            module = train(config, resume)
            if module is None:  # a non-zero DDP rank: rank 0 evaluates
                return None
        if stage in (None, 2):
            return evaluate(config, module, checkpoint)
    return None
