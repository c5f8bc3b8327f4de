"""The value rules of the run config: :func:`validate` runs them all and raises one
:class:`ConfigError` listing every problem, each as ``"<key>: <rule>"``.

Every rule is a check of :mod:`dscl_plugin.checks` or the very check run by the
constructor that the key feeds (``DSCLTransform``, ``build_backbone``, ``ProbeSchedule``,
...), so a config key and its argument cannot disagree. Whether ``method`` names a
registered method, and that method's own rules, are checked where the run is composed
(:func:`dscl_plugin.methods.check_method`).
"""

import importlib.util
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch

from dscl_plugin import checks
from dscl_plugin.backbones import check_backbone_name
from dscl_plugin.errors import ConfigError, InvalidValue
from dscl_plugin.losses.contrastive import alpha_from
from dscl_plugin.models.dscl_model import PATCH_PASSES
from dscl_plugin.training.precision import resolve_accelerator
from dscl_plugin.training.schema import (
    ACCELERATORS,
    LOGGERS,
    OPTIMIZERS,
    PIPELINES,
    PRECISIONS,
    PROBE_PROTOCOLS,
    STRATEGIES,
    Config,
    DataConfig,
    EvalConfig,
    ModelConfig,
    MonitorConfig,
    OptimConfig,
    ProbeConfig,
    TrainerConfig,
)

Run = Callable[..., None]


class Problems:
    """The ``"key: rule"`` lines of the checks that failed."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def run(
        self,
        section: str,
        check: Callable[..., Any],
        *args: Any,
        fixes: dict[str, str] | None = None,
    ) -> None:
        """``check(*args)``; an :class:`InvalidValue` for argument ``name`` is recorded as
        ``"<section>.<name>: <rule>"``, followed by ``fixes[name]`` (how to fix it with
        config keys) if given."""
        try:
            check(*args)
        except InvalidValue as error:
            line = f"{'.'.join(filter(None, (section, error.name)))}: {error.rule}"
            fix = (fixes or {}).get(error.name)
            self.lines.append(f"{line}; {fix}" if fix else line)

    def run_for(self, key: str, check: Callable[..., Any], *args: Any) -> None:
        """``check(*args)``; a ``ValueError`` is recorded as ``"<key>: <message>"``."""
        try:
            check(*args)
        except ValueError as error:
            self.lines.append(f"{key}: {error}")


def validate(config: Config) -> None:
    """Checks every value of ``config``.

    Raises:
        ConfigError: listing every problem, one ``"key: rule"`` line each.
    """
    problems = Problems()
    root = partial(problems.run, "")
    root(checks.require, bool(config.method), "method", "must not be empty")
    _check_data(partial(problems.run, "data"), config.data)
    _check_model(problems, config.model, config.data.input_size)
    _check_optim(partial(problems.run, "optim"), config.optim, config.trainer.epochs)
    _check_trainer(partial(problems.run, "trainer"), config.trainer)
    _check_stage2(problems, config.probe, config.eval, config.seed)
    _check_monitor(partial(problems.run, "monitor"), config.monitor)
    root(checks.at_least, "seed", config.seed, 0)
    root(checks.require, bool(config.output_dir), "output_dir", "must not be empty")
    raise_problems(problems.lines)


def raise_problems(problems: Sequence[str]) -> None:
    """Raises one :class:`ConfigError` listing ``problems`` (``"key: message"``), if any
    (on one line for one problem)."""
    if len(problems) == 1:
        raise ConfigError(f"Invalid config: {problems[0]}")
    if problems:
        raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))


def check_file(name: str, path: str | None) -> None:
    """``path`` is None or an existing file."""
    checks.require(path is None or Path(path).is_file(), name, f"file not found: '{path}'")


def check_pipeline(pipeline: str, dataset: str) -> None:
    """``pipeline`` is ``loader`` or ``device``; ``device`` needs an in-memory ``dataset``
    and Kornia.

    Raises:
        InvalidValue: named ``pipeline``, with the fix.
    """
    from dscl_plugin.data import IN_MEMORY_DATASETS
    from dscl_plugin.transforms.kornia_views import KORNIA_MISSING

    checks.one_of("pipeline", pipeline, PIPELINES)
    if pipeline != "device":
        return
    checks.require(
        dataset in IN_MEMORY_DATASETS,
        "pipeline",
        f"'device' works only for the in-memory datasets ({', '.join(IN_MEMORY_DATASETS)}); "
        "use data.pipeline=loader for file datasets",
    )
    installed = importlib.util.find_spec("kornia") is not None
    checks.require(installed, "pipeline", f"'device' {KORNIA_MISSING}")


def _check_data(data: Run, d: DataConfig) -> None:
    from dscl_plugin.data import DATASET_NAMES

    unknown = f"unknown dataset {d.name!r}; expected one of {list(DATASET_NAMES)}"
    data(checks.require, d.name in DATASET_NAMES, "name", unknown)
    data(checks.at_least, "input_size", d.input_size, 8)
    data(checks.at_least, "imbalance_factor", d.imbalance_factor, 1, True)
    data(checks.scale_range, "crop_scale", d.crop_scale)
    for key in ("hflip_prob", "jitter_prob", "grayscale_prob", "blur_prob"):
        data(checks.within, key, getattr(d, key), 0, 1)
    data(checks.jitter, "color_jitter", d.color_jitter)
    data(check_pipeline, d.pipeline, d.name)
    data(check_file, "train_list", d.train_list)
    data(check_file, "test_list", d.test_list)


def _check_model(problems: Problems, m: ModelConfig, input_size: int) -> None:
    from dscl_plugin.backbones.vit import VIT_POOLS, is_vit

    model = partial(problems.run, "model")
    keep_one = (
        f"keep one: add model.beta=null to use alpha={m.alpha}, "
        f"or model.alpha=null to use beta={m.beta}"
    )
    model(alpha_from, m.alpha, m.beta, fixes={"alpha/beta": keep_one})
    model(checks.positive, "temperature", m.temperature)
    model(checks.at_least, "proj_dim", m.proj_dim, 1)
    model(checks.at_least, "queue_size", m.queue_size, 0)
    model(checks.within, "momentum", m.momentum, 0.0, 1.0)
    model(checks.at_least, "pbsd_weight", m.pbsd_weight, 0)
    model(checks.at_least, "num_patches", m.num_patches, 0)
    needs_patches = "PBSD (pbsd_weight > 0) needs num_patches >= 1"
    model(checks.require, m.pbsd_weight == 0 or m.num_patches >= 1, "num_patches", needs_patches)
    model(checks.patch_size, m.patch_size, input_size)
    model(checks.scale_range, "patch_scale", m.patch_scale)
    model(checks.one_of, "patch_passes", m.patch_passes, PATCH_PASSES)
    model(check_file, "init_from", m.init_from)
    model(check_backbone_name, "backbone", m.backbone)
    model(checks.one_of, "vit_pool", m.vit_pool, VIT_POOLS)
    if is_vit(m.backbone):
        _check_vit(problems, m, input_size)


def _check_vit(problems: Problems, m: ModelConfig, input_size: int) -> None:
    """ViT sizes, and views (and PBSD patches) that are multiples of its patch size."""
    from dscl_plugin.backbones.vit import token_grid, vit_spec

    sizes = (m.backbone, m.vit_patch_size, m.vit_depth, m.vit_width, m.vit_heads)
    try:
        patch_size = vit_spec(*sizes).patch_size
    except ValueError:
        problems.run_for("model.vit_*", vit_spec, *sizes)
        return
    images = {"data.input_size": input_size}
    if m.pbsd_weight > 0:
        images["model.patch_size"] = m.patch_size
    for key, size in images.items():
        problems.run_for(key, token_grid, size, patch_size, input_size // patch_size)


def _check_optim(optim: Run, o: OptimConfig, epochs: int) -> None:
    optim(checks.one_of, "name", o.name, OPTIMIZERS)
    optim(checks.positive, "lr", o.lr)
    optim(checks.half_open, "momentum", o.momentum, 0, 1)
    optim(checks.at_least, "weight_decay", o.weight_decay, 0)
    optim(checks.at_least, "warmup_epochs", o.warmup_epochs, 0)
    too_long = (
        f"the warm-up must not exceed trainer.epochs ({epochs}), got {o.warmup_epochs}: "
        f"set optim.warmup_epochs={epochs} or less (e.g. optim.warmup_epochs=0), "
        f"or trainer.epochs={o.warmup_epochs:g} or more"
    )
    optim(checks.require, o.warmup_epochs <= epochs, "warmup_epochs", too_long)
    optim(checks.one_of, "interval", o.interval, ("step", "epoch"))


def _check_trainer(trainer: Run, t: TrainerConfig) -> None:
    trainer(checks.at_least, "epochs", t.epochs, 1)
    trainer(checks.at_least, "devices", t.devices, 1)
    trainer(checks.at_least, "num_nodes", t.num_nodes, 1)
    processes = max(t.devices, 1) * max(t.num_nodes, 1)
    global_batch = (
        f"must be a positive multiple of trainer.devices x trainer.num_nodes = {processes} "
        f"(it is the global batch), got {t.batch_size}"
    )
    divisible = t.batch_size >= 1 and t.batch_size % processes == 0
    trainer(checks.require, divisible, "batch_size", global_batch)
    trainer(checks.at_least, "checkpoint_every_n_steps", t.checkpoint_every_n_steps, 1, True)
    trainer(checks.at_least, "num_workers", t.num_workers, 0)
    trainer(checks.at_least, "limit_train_batches", t.limit_train_batches, 1, True)
    trainer(checks.at_least, "log_every_n_steps", t.log_every_n_steps, 1)
    trainer(checks.at_least, "num_threads", t.num_threads, 1, True)
    trainer(checks.one_of, "strategy", t.strategy, STRATEGIES)
    trainer(checks.one_of, "precision", t.precision, PRECISIONS)
    trainer(checks.one_of, "accelerator", t.accelerator, ACCELERATORS)
    trainer(checks.one_of, "logger", t.logger, LOGGERS)
    installed = any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX"))
    no_tensorboard = (
        "'tensorboard' needs the tensorboard package: pip install \"dscl-plugin[tensorboard]\""
    )
    trainer(checks.require, t.logger != "tensorboard" or installed, "logger", no_tensorboard)
    if t.accelerator not in ACCELERATORS:
        return
    if resolve_accelerator(t.accelerator) == "cpu":
        half = (
            f"{t.precision!r} needs a CUDA GPU (on CPU Lightning would silently use bf16); "
            "use '32-true' or 'bf16-mixed' on CPU"
        )
        trainer(checks.require, t.precision not in ("16-mixed", "16-true"), "precision", half)
        sync = (
            "needs CUDA GPUs (torch's SyncBatchNorm does not run on CPU); "
            "use model.shuffle_bn on CPU"
        )
        trainer(checks.require, not t.sync_batchnorm, "sync_batchnorm", sync)
        return
    gpus = torch.cuda.device_count()
    none = f"{t.accelerator!r} needs a CUDA GPU, none is available"
    trainer(checks.require, gpus > 0, "accelerator", none)
    too_many = f"{t.devices} GPUs requested, {gpus} available"
    trainer(checks.require, gpus == 0 or t.devices <= gpus, "devices", too_many)


def _check_stage2(problems: Problems, p: ProbeConfig, e: EvalConfig, seed: int) -> None:
    probe, evaluation = partial(problems.run, "probe"), partial(problems.run, "eval")
    probe(p.schedule, seed)  # the rules of ProbeSchedule
    probe(checks.one_of, "protocol", p.protocol, PROBE_PROTOCOLS)
    evaluation(checks.within, "few_threshold", e.few_threshold, 0, e.many_threshold)
    evaluation(checks.at_least, "knn_k", e.knn_k, 1, True)
    evaluation(checks.at_least, "batch_size", e.batch_size, 1)


def _check_monitor(monitor: Run, m: MonitorConfig) -> None:
    monitor(checks.at_least, "every", m.every, 0)
    for key in ("bank_size", "query_size", "knn_k"):
        monitor(checks.at_least, key, getattr(m, key), 1)
    monitor(checks.positive, "knn_t", m.knn_t)
