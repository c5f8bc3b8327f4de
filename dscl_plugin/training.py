"""Stage 1 of a run: contrastive training with a Lightning ``Trainer``.

Writes ``output_dir/checkpoints/last.ckpt`` every epoch (and every
``trainer.checkpoint_every_n_steps`` steps; atomically, keeping the previous one as
``last.prev.ckpt``), one CSV log ``output_dir/logs/metrics.csv`` (continued by a resumed
run), ``output_dir/config.yaml`` and finally the online backbone to
``output_dir/backbone.pt``.
"""

import signal
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from dscl_plugin.checkpoints import (
    AtomicCheckpointIO,
    MidEpochResumeCallback,
    ResumableDataLoader,
    RNGStateCallback,
    export_backbone,
    load_file,
)
from dscl_plugin.config import Config, raise_problems, to_dict, to_yaml
from dscl_plugin.data import build_dataset
from dscl_plugin.device_views import use_device_views
from dscl_plugin.errors import CheckpointError, ConfigError
import dscl_plugin.methods  # noqa: F401  (registers dscl, supcon)
from dscl_plugin.lightning_adapters import (
    ContinuedCSVLogger,
    expected_fit_warnings,
    progress_callbacks,
    silence_lightning_tips,
)
from dscl_plugin.registry import available_methods, get_method, load_plugins

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
    """The ``split`` of ``config.data``'s dataset with ``transform``.

    Raises:
        ConfigError: the data are not where ``data.root`` (or a list file) points, on one
            line naming the key and the fix.
    """
    d = config.data
    try:
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
    except FileNotFoundError as error:
        message = " ".join(str(error).split())  # one line
        raise ConfigError(f"data.root ({d.root!r}) for data.name={d.name}: {message}") from None


def resolve_resume(config: Config, resume: Resume) -> Optional[Path]:
    """The checkpoint ``resume`` names (None for a fresh run), once its settings match.

    Raises:
        CheckpointError: a fresh run would overwrite ``last.ckpt``, or the checkpoint is
            missing or unreadable.
        ConfigError: the checkpoint was trained with other settings.
    """
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
    check_resume_config(config, path)
    return path


# settings a resumed run must share with its checkpoint (others, e.g. num_workers, may change;
# trainer.epochs may grow, which extends the run)
RESUME_KEYS = ("method", "data", "model", "optim", "seed", "trainer.batch_size")
RESUME_FREE = ("data.root", "data.download")


def saved_config(path: Union[str, Path]) -> Dict:
    """The config (a dict) saved in the training checkpoint ``path`` by ``dscl-train``.

    Raises:
        CheckpointError: unreadable, or no saved config.
    """
    checkpoint = load_file(path)
    saved = checkpoint.get("hyper_parameters", {}) if isinstance(checkpoint, dict) else {}
    saved = saved.get("config")
    if saved is None:
        raise CheckpointError(f"'{path}' has no saved config: it was not written by dscl-train.")
    return saved


def changed_settings(
    saved: Dict, config: Config, keys: Iterable[str], free: Iterable[str] = RESUME_FREE
) -> List[Tuple[str, object, object]]:
    """``(key, saved value, config value)`` for every leaf under ``keys`` where ``config``
    differs from the ``saved`` config (a dict), except the keys in ``free``."""
    current, changes = to_dict(config), []
    for key in keys:
        old, new = _flatten(_lookup(saved, key), key), _flatten(_lookup(current, key), key)
        for k in sorted(old.keys() | new.keys()):
            if old.get(k) != new.get(k) and k not in free:
                changes.append((k, old.get(k), new.get(k)))
    return changes


def check_resume_config(config: Config, path: Path) -> None:
    """Refuse to resume ``path`` with different training settings (reads the file once,
    so a corrupt checkpoint fails here, naming it)."""
    saved = saved_config(path)
    changes = [
        f"{k}: {old!r} -> {new!r}" for k, old, new in changed_settings(saved, config, RESUME_KEYS)
    ]
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
    train ``loader`` is given), RNG state, CSV logs, progress bar on a terminal (one line
    per epoch when stdout is redirected)."""
    silence_lightning_tips()
    t = config.trainer
    distributed = t.devices > 1 or t.num_nodes > 1
    strategy = "ddp" if t.strategy == "auto" and distributed else t.strategy
    checkpoints = [_last_checkpoint(config, every_n_epochs=1)]
    if t.checkpoint_every_n_steps is not None:
        checkpoints.append(_last_checkpoint(config, every_n_train_steps=t.checkpoint_every_n_steps))
    resume = [MidEpochResumeCallback(loader)] if loader is not None else []
    progress_bar, progress = progress_callbacks(t.progress_bar)
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
        enable_progress_bar=progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=config.output_dir,
        logger=ContinuedCSVLogger(config.output_dir, name="", version="logs"),
        callbacks=[RNGStateCallback(generators), *resume, *progress, *callbacks, *checkpoints],
        plugins=[AtomicCheckpointIO(keep_previous=True)],
    )


class TrainingInterrupted(KeyboardInterrupt):
    """Stage 1 stopped by Ctrl-C; ``checkpoint`` is the last complete checkpoint."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(str(checkpoint))
        self.checkpoint = checkpoint


def train(
    config: Config, resume: Resume = None, callbacks: Iterable[pl.Callback] = ()
) -> Optional[pl.LightningModule]:
    """Stage 1. Returns the trained module on the global-zero process, None on the others.

    ``resume``: None for a fresh run, True/"last" for ``output_dir/checkpoints/last.ckpt``,
    or a checkpoint path.

    Raises:
        ConfigError: bad settings, or data not found (before anything is trained).
        CheckpointError: see :func:`resolve_resume`.
        TrainingInterrupted: Ctrl-C, after Lightning's clean shutdown.
    """
    ckpt_path = resolve_resume(config, resume)
    pl.seed_everything(config.seed, workers=True)
    module = build_method(config)
    on_device = config.data.pipeline == "device"  # views made on the training device
    transform = None if on_device else module.train_transform()
    dataset = build_dataset_split(config, "train", transform)
    t = config.trainer
    processes = t.devices * t.num_nodes
    per_device = t.batch_size // processes
    if len(dataset) // processes < per_device:
        raise ConfigError(
            f"trainer.batch_size: {t.batch_size} is larger than the training set "
            f"({len(dataset)} images over {processes} process(es)); every epoch would be empty."
        )
    if on_device:  # batches of (indices, labels): no workers, the default collate
        dataset, collate_fn, num_workers = use_device_views(module, dataset, config.seed), None, 0
    else:
        collate_fn, num_workers = module.collate_fn(), t.num_workers
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
        with expected_fit_warnings(resuming=ckpt_path is not None):
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


def training_finished(config: Config) -> bool:
    """Whether ``output_dir`` holds a finished stage 1: ``backbone.pt`` written after the
    last checkpoint."""
    last, backbone = checkpoint_dir(config) / "last.ckpt", backbone_path(config)
    return (
        last.is_file() and backbone.is_file() and backbone.stat().st_mtime >= last.stat().st_mtime
    )


def resumes_finished(config: Config, resume: Resume) -> bool:
    """``resume`` names this run's last checkpoint and that run has finished stage 1
    (its settings are then checked as for any resume; an unfinished run's checkpoint is
    left to :func:`train`, which checks it once)."""
    if not training_finished(config):
        return False
    return resolve_resume(config, resume) == checkpoint_dir(config) / "last.ckpt"
