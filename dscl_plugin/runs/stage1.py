"""Stage 1 of a run: contrastive training with a Lightning ``Trainer``.

Writes ``output_dir/checkpoints/last.ckpt`` every epoch (and every
``trainer.checkpoint_every_n_steps`` steps; atomically, keeping the previous one as
``last.prev.ckpt``), one CSV log ``output_dir/logs/metrics.csv`` (continued by a resumed
run; with the online kNN of ``monitor``), ``output_dir/config.yaml`` and finally the
online backbone to ``output_dir/backbone.pt`` (a method's own classifier to
``output_dir/classifier.pt``) and ``output_dir/curves.png``
(:class:`~dscl_plugin.runs.folder.RunFolder`).
"""

import signal
from collections.abc import Iterable

import pytorch_lightning as pl
from pytorch_lightning.loggers import Logger

from dscl_plugin.backbones.weights import export_backbone
from dscl_plugin.data.base import ImageDataset
from dscl_plugin.errors import ConfigError, TrainingInterrupted
from dscl_plugin.methods import Method, MomentumMethod, build_method
from dscl_plugin.runs.datasets import build_dataset_split
from dscl_plugin.runs.folder import Resume, RunFolder, resolve_resume
from dscl_plugin.runs.monitoring import monitor_callbacks, write_curves
from dscl_plugin.safe_io import atomic_save, writing
from dscl_plugin.training.config import to_yaml
from dscl_plugin.training.data import DeviceTrainingData, TrainingData
from dscl_plugin.training.data_fit import shot_group_note, tell, training_notes
from dscl_plugin.training.lightning_adapters import expected_fit_warnings
from dscl_plugin.training.schema import Config
from dscl_plugin.training.trainer import build_trainer


def training_data(config: Config, method: Method, dataset: ImageDataset) -> TrainingData:
    """The training set ``dataset`` (of ``config.data``, no transform) as ``method``'s
    views, in batches of ``trainer.batch_size / (devices x num_nodes)`` per process: made
    by the loader (``data.pipeline: loader``, the method's ``train_transform()`` and
    ``collate_fn()``) or on the training device from the method's ``view_options()``
    (``device``).

    Warns :class:`~dscl_plugin.errors.ConfigNote` where the config does not fit the
    training set (:mod:`dscl_plugin.training.data_fit`).

    Raises:
        ConfigError: the batch is larger than the training set.
    """
    t = config.trainer
    on_device = config.data.pipeline == "device"
    if not on_device:
        dataset.transform = method.train_transform()
    counts = dataset.class_counts
    has_queue = isinstance(method, MomentumMethod)
    tell([*training_notes(config, counts, has_queue), shot_group_note(config, counts)])
    processes = t.devices * t.num_nodes
    per_process = t.batch_size // processes
    if len(dataset) // processes < per_process:
        raise ConfigError(
            f"trainer.batch_size: {t.batch_size} is larger than the training set "
            f"({len(dataset)} images over {processes} process(es)); every epoch would be empty."
        )
    if on_device:
        return DeviceTrainingData(dataset, per_process, config.seed, method.view_options())
    return TrainingData(dataset, per_process, config.seed, t.num_workers, method.collate_fn())


def train(
    config: Config,
    resume: Resume = None,
    callbacks: Iterable[pl.Callback] = (),
    loggers: Iterable[Logger] = (),
) -> Method | None:
    """Stage 1. Returns the trained module on the global-zero process, None on the others.

    ``resume``: None for a fresh run, True/"last" for ``output_dir/checkpoints/last.ckpt``,
    or a checkpoint path. ``callbacks`` and ``loggers`` join the trainer's own.

    Raises:
        ConfigError: bad settings, or data not found (before anything is trained).
        CheckpointError: see :func:`~dscl_plugin.runs.folder.resolve_resume`.
        TrainingInterrupted: Ctrl-C, after Lightning's clean shutdown.
    """
    folder = RunFolder.of(config)
    ckpt_path = resolve_resume(config, resume)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    dataset = build_dataset_split(config, "train", None)
    module = build_method(config, dataset.class_counts)
    data = training_data(config, module, dataset)
    callbacks = [*callbacks, *monitor_callbacks(config)]
    trainer = build_trainer(config, folder.checkpoints, folder.logs, data, callbacks, loggers)
    if trainer.is_global_zero:
        with writing(folder.config_file):
            folder.root.mkdir(parents=True, exist_ok=True)
            folder.config_file.write_text(to_yaml(config))
    sigint_handler = signal.getsignal(signal.SIGINT)
    try:
        with expected_fit_warnings(resuming=ckpt_path is not None):
            trainer.fit(module, datamodule=data, ckpt_path=ckpt_path, weights_only=True)
    except SystemExit:  # Lightning turns Ctrl-C into sys.exit(1) after a clean shutdown
        if trainer.interrupted:
            signal.signal(signal.SIGINT, sigint_handler)  # Lightning ignores further Ctrl-C
            raise TrainingInterrupted(folder.last_checkpoint) from None
        raise
    if not trainer.is_global_zero:
        return None
    export_backbone(module.backbone, config.model.backbone, folder.backbone)
    if module.own_classifier is not None:
        atomic_save(module.own_classifier.state_dict(), folder.classifier)
    write_curves(config)
    return module
