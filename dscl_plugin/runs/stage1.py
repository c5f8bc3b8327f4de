"""Stage 1 of a run: contrastive training with a Lightning ``Trainer``.

Writes ``output_dir/checkpoints/last.ckpt`` every epoch (and every
``trainer.checkpoint_every_n_steps`` steps; atomically, keeping the previous one as
``last.prev.ckpt``), one CSV log ``output_dir/logs/metrics.csv`` (continued by a resumed
run; with the online kNN of ``monitor``), ``output_dir/config.yaml`` and finally
``output_dir/curves.png`` and the online backbone to ``output_dir/backbone.pt``.
"""

import signal
from collections.abc import Iterable
from pathlib import Path

import pytorch_lightning as pl
import torch

from dscl_plugin.backbones.weights import export_backbone
from dscl_plugin.errors import ConfigError
from dscl_plugin.runs.datasets import build_dataset_split
from dscl_plugin.runs.folder import (
    Resume,
    backbone_path,
    checkpoint_dir,
    resolve_resume,
)
from dscl_plugin.runs.monitoring import monitor_callbacks, write_curves
from dscl_plugin.training.config import to_yaml
from dscl_plugin.training.device_views import use_device_views
from dscl_plugin.training.lightning_adapters import expected_fit_warnings
from dscl_plugin.training.methods import build_method
from dscl_plugin.training.resume import ResumableDataLoader
from dscl_plugin.training.schema import Config
from dscl_plugin.training.trainer import build_trainer


class TrainingInterrupted(KeyboardInterrupt):
    """Stage 1 stopped by Ctrl-C; ``checkpoint`` is the last complete checkpoint."""

    def __init__(self, checkpoint: Path) -> None:
        super().__init__(str(checkpoint))
        self.checkpoint = checkpoint


def train(
    config: Config, resume: Resume = None, callbacks: Iterable[pl.Callback] = ()
) -> pl.LightningModule | None:
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
        dataset, collate_fn, num_workers = (
            use_device_views(module, dataset, config.seed),
            None,
            0,
        )
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
    callbacks = [*callbacks, *monitor_callbacks(config)]
    trainer = build_trainer(
        config, checkpoint_dir(config), {"train_loader": generator}, callbacks, loader
    )
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
    write_curves(config)
    return module
