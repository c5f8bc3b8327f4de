"""Run configuration: a dataclass schema merged with YAML and ``a.b=value`` overrides by OmegaConf.

:func:`load_config` returns a validated :class:`Config`. Every problem (unknown key, wrong
type, missing value, out-of-range setting, precision the device cannot run) raises
:class:`ConfigError` naming the key path, before anything is trained.

A YAML file may extend another: ``base: dscl_fashion_mnist_lt.yaml`` (a path relative to
the extending file; chains allowed) plus the keys it changes. Layers merge in the order
schema defaults <- base(s) <- file <- overrides, and a layer that sets ``model.alpha``
clears the ``model.beta`` of the layers below it (and vice versa): the two are one
setting. The schema (:mod:`dscl_plugin.training.schema`) keeps the flat ``model`` section
this round, so that existing user configs and overrides keep working unchanged.
"""

import dataclasses
import difflib
import importlib.util
import types
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Union

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import (
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

from dscl_plugin import checks
from dscl_plugin.backbones import check_backbone_name
from dscl_plugin.checks import PATCH_PASSES, InvalidValue, alpha_from
from dscl_plugin.errors import ConfigError
from dscl_plugin.training.precision import resolve_precision
from dscl_plugin.training.presets import find_config
from dscl_plugin.training.schema import (
    ACCELERATORS,
    LOGGERS,
    OPTIMIZERS,
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
from dscl_plugin.transforms.views import check_jitter, check_patch_size

__all__ = [
    "Config",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ModelConfig",
    "OptimConfig",
    "ProbeConfig",
    "TrainerConfig",
    "load_config",
    "raise_problems",
    "to_dict",
    "to_yaml",
    "validate",
]

BASE_KEY = "base"
# keys that are one setting: a layer that sets one clears the other below it
EXCLUSIVE_KEYS = (("model.alpha", "model.beta"),)


def load_config(path: str | Path | None = None, overrides: Sequence[str] = ()) -> Config:
    """Schema defaults <- YAML file (after its ``base`` chain) <- ``a.b=value`` overrides,
    then :func:`validate`."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"Override {item!r} must have the form key.path=value.")
    layers = [] if path is None else read_layers(path)
    try:
        layers.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(OmegaConf.structured(Config), merge_layers(layers))
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(_describe(error, None if path is None else Path(path))) from error
    validate(config)
    t = config.trainer  # "auto" becomes what runs, so config.yaml and metrics.json say it
    t.precision = resolve_precision(t.precision, _resolved_accelerator(t.accelerator))
    return config


def read_layers(path: str | Path) -> list[DictConfig]:
    """The YAML mappings of ``path`` (a file or a shipped preset's name) and of its ``base``
    chain, the deepest base first (each without its ``base`` key). A ``base`` is a path
    relative to the extending file, or a preset's name.

    Raises:
        ConfigError: a missing or unparsable file, a ``base`` that is not a file name,
            or a cycle of ``base`` files.
    """
    layers: list[DictConfig] = []
    chain: list[Path] = []
    resolved = find_config(path)
    while True:
        if resolved.resolve() in chain:
            cycle = " -> ".join(f"'{p}'" for p in [*chain, resolved.resolve()])
            raise ConfigError(f"Config files extend each other in a cycle: {cycle}.")
        chain.append(resolved.resolve())
        layer = _read_yaml(resolved)
        base = layer.pop(BASE_KEY, None)
        layers.insert(0, layer)
        if base is None:
            return layers
        if not isinstance(base, str) or not base:
            raise ConfigError(f"'{resolved}': {BASE_KEY} must be a YAML file name, got {base!r}.")
        try:
            resolved = find_config(base, folder=resolved.parent)
        except ConfigError as error:
            raise ConfigError(f"{BASE_KEY} of '{resolved}': {error}") from None


def _read_yaml(path: Path) -> DictConfig:
    try:
        layer = OmegaConf.load(path)
    except Exception as error:  # YAML syntax errors come from several libraries
        raise ConfigError(f"Cannot parse config file '{path}': {error}") from error
    if not OmegaConf.is_dict(layer):
        raise ConfigError(f"Config file '{path}' must hold a mapping of sections.")
    return layer


def merge_layers(layers: Sequence[DictConfig]) -> DictConfig:
    """``layers`` merged in order; a layer that sets one of :data:`EXCLUSIVE_KEYS` (not
    null) without the other clears the other in the layers below (both set in one
    layer stays an error for :func:`validate`)."""
    merged = OmegaConf.create()
    for layer in layers:
        for pair in EXCLUSIVE_KEYS:
            for key, other in (pair, pair[::-1]):
                sets_key = OmegaConf.select(layer, key, default=None) is not None
                if sets_key and not _has_key(layer, other) and _has_key(merged, other):
                    OmegaConf.update(merged, other, None)
        merged = OmegaConf.merge(merged, layer)
    return merged


def _has_key(tree: DictConfig, key: str) -> bool:
    parent, _, leaf = key.rpartition(".")
    node = OmegaConf.select(tree, parent, default=None) if parent else tree
    return OmegaConf.is_dict(node) and leaf in node


def to_dict(config: Config) -> dict[str, Any]:
    """The config as plain nested dicts and lists (for checkpoints and logs)."""
    return dataclasses.asdict(config)


def to_yaml(config: Config) -> str:
    """The config as YAML (every key, ``base`` chains merged): ``dscl-train --print-config``."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def _describe(error: OmegaConfBaseException, path: Path | None) -> str:
    key = getattr(error, "full_key", None) or ""
    message = str(getattr(error, "msg", error)).split("\n")[0].rstrip(".")
    where = f" (in '{path}' or the overrides)" if path is not None else ""
    if isinstance(error, MissingMandatoryValue):
        return f"Missing value for config key '{key}'{where}: set it in the file or as {key}=..."
    if isinstance(error, ValidationError) and key:
        return (
            f"Wrong type for config key '{key}'{where}: expected {_expected_type(key)}; {message}."
        )
    section, allowed = _section_keys(key)
    if not key:
        return f"Invalid config{where}: {message}."
    name = key.split(".")[len(section.split(".")) if section else 0]
    close = difflib.get_close_matches(name, allowed, n=1)
    hint = f" Did you mean '{'.'.join(filter(None, (section, close[0])))}'?" if close else ""
    return (
        f"Unknown config key '{key}'{where}.{hint} "
        f"Allowed keys in '{section or '<root>'}': {', '.join(allowed)}."
    )


def _expected_type(key: str) -> str:
    """The schema type of ``key`` in words: ``int``, ``float or null``, ``list of float``."""
    schema, hint = Config, None
    for part in key.split("."):
        hints = typing.get_type_hints(schema) if dataclasses.is_dataclass(schema) else {}
        if part not in hints:
            return "the schema's type"
        hint = schema = hints[part]
    return _type_name(hint)


def _type_name(hint: Any) -> str:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (Union, types.UnionType):
        return f"{_type_name(args[0])} or null"
    if typing.get_origin(hint) in (list, list):
        return f"a list of {_type_name(args[0])}"
    if hint is bool:
        return "true or false"
    return getattr(hint, "__name__", str(hint))


def _section_keys(key: str) -> "tuple[str, list[str]]":
    """The deepest schema section on ``key``'s path and its field names."""
    schema, parts = Config, []
    for part in key.split(".")[:-1] if key else []:
        hints = typing.get_type_hints(schema)
        if part not in hints or not dataclasses.is_dataclass(hints[part]):
            break
        schema = hints[part]
        parts.append(part)
    return ".".join(parts), [f.name for f in dataclasses.fields(schema)]


def _resolved_accelerator(accelerator: str) -> str:
    if accelerator == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    return "gpu" if accelerator == "cuda" else accelerator


class _Problems(list):
    """Collects ``"key: message"`` lines; the range rules are :mod:`dscl_plugin.checks`."""

    def check(self, ok: bool, key: str, message: str) -> None:
        if not ok:
            self.append(f"{key}: {message}")

    def rule(
        self,
        section: str,
        check: Callable[..., Any],
        *args: Any,
        fixes: dict[str, str] | None = None,
    ) -> None:
        """Runs a shared check (the one the constructors run); an :class:`InvalidValue`
        for argument ``name`` is reported as ``"<section>.<name>: <rule>"``, followed by
        ``fixes[name]`` (how to fix it with config keys) if given."""
        try:
            check(*args)
        except InvalidValue as error:
            fix = (fixes or {}).get(error.name)
            line = f"{'.'.join(filter(None, (section, error.name)))}: {error.rule}"
            self.append(f"{line}; {fix}" if fix else line)

    def at_least(self, key: str, value: float | None, low: float, allow_none: bool = False) -> None:
        self.rule("", checks.at_least, key, value, low, allow_none)

    def within(self, key: str, value: float, low: float, high: float) -> None:
        self.rule("", checks.within, key, value, low, high)

    def scale_range(self, key: str, value: Sequence[float]) -> None:
        self.rule("", checks.scale_range, key, value)

    def one_of(self, key: str, value: str, allowed: Sequence[str]) -> None:
        self.rule("", checks.one_of, key, value, allowed)

    def file(self, key: str, value: str | None) -> None:
        self.check(value is None or Path(value).is_file(), key, f"file not found: '{value}'")


def validate(config: Config) -> None:
    """Schema-level checks; raises one :class:`ConfigError` listing every problem.

    Whether ``method`` names a registered method, and that method's own rules, are
    checked where the run is composed (:func:`dscl_plugin.training.check_method`).
    """
    problems = _Problems()
    problems.check(bool(config.method), "method", "must not be empty")
    _check_data(problems, config.data)
    _check_model(problems, config.model, config.data.input_size)
    _check_optim(problems, config.optim, config.trainer.epochs)
    _check_trainer(problems, config.trainer)
    _check_stage2(problems, config.probe, config.eval)
    _check_monitor(problems, config.monitor)
    problems.at_least("seed", config.seed, 0)
    problems.check(bool(config.output_dir), "output_dir", "must not be empty")
    raise_problems(problems)


def raise_problems(problems: Sequence[str]) -> None:
    """Raises one :class:`ConfigError` listing ``problems`` (``"key: message"``), if any
    (on one line for one problem)."""
    if len(problems) == 1:
        raise ConfigError(f"Invalid config: {problems[0]}")
    if problems:
        raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))


def _check_data(problems: _Problems, d: DataConfig) -> None:
    from dscl_plugin.data import DATASET_NAMES, IN_MEMORY_DATASETS
    from dscl_plugin.training.device_views import check_pipeline

    problems.check(
        d.name in DATASET_NAMES,
        "data.name",
        f"unknown dataset {d.name!r}; expected one of {list(DATASET_NAMES)}",
    )
    problems.at_least("data.input_size", d.input_size, 8)
    problems.at_least("data.imbalance_factor", d.imbalance_factor, 1, allow_none=True)
    problems.scale_range("data.crop_scale", d.crop_scale)
    for key in ("hflip_prob", "jitter_prob", "grayscale_prob", "blur_prob"):
        problems.within(f"data.{key}", getattr(d, key), 0, 1)
    problems.rule("data", check_jitter, "color_jitter", d.color_jitter)
    problems.rule("data", check_pipeline, d.pipeline, d.name in IN_MEMORY_DATASETS)
    problems.file("data.train_list", d.train_list)
    problems.file("data.test_list", d.test_list)


def _check_model(problems: _Problems, m: ModelConfig, input_size: int) -> None:
    from dscl_plugin.backbones.vit import VIT_POOLS, is_vit

    keep_one = (
        f"keep one: add model.beta=null to use alpha={m.alpha}, "
        f"or model.alpha=null to use beta={m.beta}"
    )
    problems.rule("model", alpha_from, m.alpha, m.beta, fixes={"alpha/beta": keep_one})
    problems.rule("model", checks.positive, "temperature", m.temperature)
    problems.at_least("model.proj_dim", m.proj_dim, 1)
    problems.at_least("model.queue_size", m.queue_size, 0)
    problems.rule("model", checks.within, "momentum", m.momentum, 0.0, 1.0)
    problems.rule("model", checks.at_least, "pbsd_weight", m.pbsd_weight, 0)
    problems.rule("model", checks.at_least, "num_patches", m.num_patches, 0)
    problems.check(
        m.pbsd_weight == 0 or m.num_patches >= 1,
        "model.num_patches",
        "PBSD (pbsd_weight > 0) needs num_patches >= 1",
    )
    problems.rule("model", check_patch_size, m.patch_size, input_size)
    problems.rule("model", checks.scale_range, "patch_scale", m.patch_scale)
    problems.rule("model", checks.one_of, "patch_passes", m.patch_passes, PATCH_PASSES)
    problems.file("model.init_from", m.init_from)
    problems.rule("model", check_backbone_name, "backbone", m.backbone)
    problems.one_of("model.vit_pool", m.vit_pool, VIT_POOLS)
    if is_vit(m.backbone):
        _check_vit(problems, m, input_size)


def _check_vit(problems: _Problems, m: ModelConfig, input_size: int) -> None:
    """ViT sizes, and views (and PBSD patches) that are multiples of its patch size."""
    from dscl_plugin.backbones.vit import token_grid, vit_spec

    try:
        spec = vit_spec(m.backbone, m.vit_patch_size, m.vit_depth, m.vit_width, m.vit_heads)
    except ValueError as error:
        problems.append(f"model.vit_*: {error}")
        return
    sizes = {"data.input_size": input_size}
    if m.pbsd_weight > 0:
        sizes["model.patch_size"] = m.patch_size
    native = input_size // spec.patch_size
    for key, size in sizes.items():
        try:
            token_grid(size, spec.patch_size, native)
        except ValueError as error:
            problems.append(f"{key}: {error}")


def _check_optim(problems: _Problems, o: OptimConfig, epochs: int) -> None:
    problems.one_of("optim.name", o.name, OPTIMIZERS)
    problems.check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    problems.check(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    problems.at_least("optim.weight_decay", o.weight_decay, 0)
    problems.at_least("optim.warmup_epochs", o.warmup_epochs, 0)
    problems.check(
        o.warmup_epochs <= epochs,
        "optim.warmup_epochs",
        f"the warm-up must not exceed trainer.epochs ({epochs}), got {o.warmup_epochs}: "
        f"set optim.warmup_epochs={epochs} or less (e.g. optim.warmup_epochs=0), "
        f"or trainer.epochs={o.warmup_epochs:g} or more",
    )
    problems.one_of("optim.interval", o.interval, ("step", "epoch"))


def _check_trainer(problems: _Problems, t: TrainerConfig) -> None:
    problems.at_least("trainer.epochs", t.epochs, 1)
    problems.at_least("trainer.devices", t.devices, 1)
    problems.at_least("trainer.num_nodes", t.num_nodes, 1)
    processes = max(t.devices, 1) * max(t.num_nodes, 1)
    problems.check(
        t.batch_size >= 1 and t.batch_size % processes == 0,
        "trainer.batch_size",
        f"must be a positive multiple of trainer.devices x trainer.num_nodes = {processes} "
        f"(it is the global batch), got {t.batch_size}",
    )
    problems.at_least(
        "trainer.checkpoint_every_n_steps",
        t.checkpoint_every_n_steps,
        1,
        allow_none=True,
    )
    problems.at_least("trainer.num_workers", t.num_workers, 0)
    problems.at_least("trainer.limit_train_batches", t.limit_train_batches, 1, allow_none=True)
    problems.at_least("trainer.log_every_n_steps", t.log_every_n_steps, 1)
    problems.at_least("trainer.num_threads", t.num_threads, 1, allow_none=True)
    problems.one_of("trainer.strategy", t.strategy, STRATEGIES)
    problems.one_of("trainer.precision", t.precision, PRECISIONS)
    problems.one_of("trainer.accelerator", t.accelerator, ACCELERATORS)
    problems.one_of("trainer.logger", t.logger, LOGGERS)
    problems.check(
        t.logger != "tensorboard"
        or any(importlib.util.find_spec(name) for name in ("tensorboard", "tensorboardX")),
        "trainer.logger",
        "'tensorboard' needs the tensorboard package: pip install \"dscl-plugin[tensorboard]\"",
    )
    if t.accelerator not in ACCELERATORS:
        return
    gpus = torch.cuda.device_count()
    if _resolved_accelerator(t.accelerator) == "cpu":
        problems.check(
            t.precision not in ("16-mixed", "16-true"),
            "trainer.precision",
            f"{t.precision!r} needs a CUDA GPU (on CPU Lightning would silently use bf16); "
            "use '32-true' or 'bf16-mixed' on CPU",
        )
        problems.check(
            not t.sync_batchnorm,
            "trainer.sync_batchnorm",
            "needs CUDA GPUs (torch's SyncBatchNorm does not run on CPU); "
            "use model.shuffle_bn on CPU",
        )
    elif gpus == 0:
        problems.append(
            f"trainer.accelerator: {t.accelerator!r} needs a CUDA GPU, none is available"
        )
    else:
        problems.check(
            t.devices <= gpus,
            "trainer.devices",
            f"{t.devices} GPUs requested, {gpus} available",
        )


def _check_stage2(problems: _Problems, p: ProbeConfig, e: EvalConfig) -> None:
    problems.at_least("probe.epochs", p.epochs, 1)
    problems.check(p.lr > 0, "probe.lr", f"must be > 0, got {p.lr}")
    problems.at_least("probe.batch_size", p.batch_size, 1)
    problems.at_least("probe.weight_decay", p.weight_decay, 0)
    problems.one_of("probe.protocol", p.protocol, PROBE_PROTOCOLS)
    milestones = list(p.milestones)
    problems.check(
        milestones == sorted(set(milestones)) and all(0 < x < p.epochs for x in milestones),
        "probe.milestones",
        f"must be increasing epochs in (0, probe.epochs={p.epochs}), got {milestones}",
    )
    problems.within("eval.few_threshold", e.few_threshold, 0, e.many_threshold)
    problems.at_least("eval.knn_k", e.knn_k, 1, allow_none=True)
    problems.at_least("eval.batch_size", e.batch_size, 1)


def _check_monitor(problems: _Problems, m: MonitorConfig) -> None:
    problems.at_least("monitor.every", m.every, 0)
    for key in ("bank_size", "query_size", "knn_k"):
        problems.at_least(f"monitor.{key}", getattr(m, key), 1)
    problems.check(m.knn_t > 0, "monitor.knn_t", f"must be > 0, got {m.knn_t}")
