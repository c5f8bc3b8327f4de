"""Run configuration: a dataclass schema merged with YAML and ``a.b=value`` overrides by OmegaConf.

:func:`load_config` returns a validated :class:`Config`. Every problem (unknown key, wrong
type, missing value, out-of-range setting, precision the device cannot run) raises
:class:`ConfigError` naming the key path, before anything is trained.
"""

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """An invalid configuration; the message names the key path(s)."""


@dataclass
class DataConfig:
    """``name``: one of ``dscl_plugin.data.DATASET_NAMES``; ``imbalance_factor`` null = the
    dataset's standard (digits_lt 10, CIFAR-LT 100); ``train_list``/``test_list`` replace the
    standard list files of imagenet_lt / places_lt / inat2018. View augmentation: crop
    ``crop_scale``, flip ``hflip_prob``, colour jitter ``color_jitter`` (brightness, contrast,
    saturation, hue; the key view uses hue 0) with ``jitter_prob``, grayscale and Gaussian
    blur probabilities (digits: no flips, crop scale >= 0.4, no blur)."""

    name: str = MISSING
    root: str = "data"
    imbalance_factor: Optional[float] = None
    input_size: int = 224
    download: bool = False
    train_list: Optional[str] = None
    test_list: Optional[str] = None
    crop_scale: List[float] = field(default_factory=lambda: [0.08, 1.0])
    hflip_prob: float = 0.5
    color_jitter: List[float] = field(default_factory=lambda: [0.4, 0.4, 0.4, 0.1])
    jitter_prob: float = 0.8
    grayscale_prob: float = 0.2
    blur_prob: float = 0.5


@dataclass
class ModelConfig:
    """Backbone, heads, queue and loss. Give ``alpha`` or ``beta`` (``alpha = 1 / (1 + beta)``),
    not both; both null means beta 8. ``pbsd_weight: 0`` is DSCL only. ``momentum_cosine``
    ramps the EMA momentum from ``momentum`` to 1 (Lightly ``cosine_schedule``).
    ``init_from``: a local ``state_dict`` file (torchvision ResNet keys) for the backbone."""

    backbone: str = "resnet50"
    cifar_stem: bool = False
    zero_init_residual: bool = True
    proj_dim: int = 128
    queue_size: int = 65536
    momentum: float = 0.999
    momentum_cosine: bool = False
    alpha: Optional[float] = None
    beta: Optional[float] = None
    temperature: float = 0.07
    pbsd_weight: float = 1.5
    num_patches: int = 5
    patch_size: int = 64
    patch_scale: List[float] = field(default_factory=lambda: [0.05, 0.6])
    init_from: Optional[str] = None


@dataclass
class OptimConfig:
    """SGD; ``lr`` is absolute (not scaled by batch size); linear warm-up, then cosine
    (``cosine: false`` keeps ``lr``); the schedule steps per ``interval`` (step or epoch)."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 10.0
    cosine: bool = True
    interval: str = "step"


@dataclass
class TrainerConfig:
    """Lightning trainer. ``batch_size`` is global (split evenly across ``devices``);
    ``limit_train_batches`` (batches per epoch) is for smoke tests."""

    epochs: int = 200
    batch_size: int = 256
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    num_workers: int = 8
    limit_train_batches: Optional[int] = None
    log_every_n_steps: int = 50
    progress_bar: bool = True


@dataclass
class ProbeConfig:
    """Stage 2 linear probe: lr x 0.1 at each milestone epoch."""

    epochs: int = 40
    lr: float = 10.0
    batch_size: int = 2048
    milestones: List[int] = field(default_factory=lambda: [20, 30])
    class_balanced: bool = True
    weight_decay: float = 0.0


@dataclass
class EvalConfig:
    """Shot groups: many ``n_c > many_threshold``, few ``n_c < few_threshold``. ``knn_k``
    null reports R-precision and MAP@R, an int k precision@1 and MAP@k."""

    many_threshold: int = 100
    few_threshold: int = 20
    knn_k: Optional[int] = None
    batch_size: int = 256


@dataclass
class Config:
    method: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    seed: int = 0
    output_dir: str = "outputs/${method}_${data.name}"


PRECISIONS = ("32-true", "32", "64-true", "64", "bf16-mixed", "bf16-true", "16-mixed", "16-true")
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
STRATEGIES = ("auto", "ddp")


def load_config(
    path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = ()
) -> Config:
    """Schema defaults <- YAML file <- ``a.b=value`` overrides, then :func:`validate`."""
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"Override {item!r} must have the form key.path=value.")
    sources = []
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"Config file not found: '{path}'.")
        try:
            sources.append(OmegaConf.load(path))
        except Exception as error:  # YAML syntax errors come from several libraries
            raise ConfigError(f"Cannot parse config file '{path}': {error}") from error
        if not OmegaConf.is_dict(sources[0]):
            raise ConfigError(f"Config file '{path}' must hold a mapping of sections.")
    try:
        sources.append(OmegaConf.from_dotlist(list(overrides)))
        merged = OmegaConf.merge(OmegaConf.structured(Config), *sources)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(_describe(error, path)) from error
    validate(config)
    return config


def to_dict(config: Config) -> Dict[str, Any]:
    """The config as plain nested dicts and lists (for checkpoints and logs)."""
    return dataclasses.asdict(config)


def to_yaml(config: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def _describe(error: OmegaConfBaseException, path: Optional[Path]) -> str:
    key = getattr(error, "full_key", None) or ""
    message = str(getattr(error, "msg", error)).split("\n")[0]
    where = f" (in '{path}' or the overrides)" if path is not None else ""
    section, allowed = _section_keys(key)
    return (
        f"Invalid config key '{key or '<root>'}'{where}: {message}. "
        f"Allowed keys in '{section or '<root>'}': {', '.join(allowed)}."
    )


def _section_keys(key: str) -> "tuple[str, List[str]]":
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


def validate(config: Config) -> None:
    """Semantic checks; raises one :class:`ConfigError` listing every problem."""
    from dscl_plugin.data import DATASET_NAMES
    from dscl_plugin.registry import available_methods, get_method

    problems: List[str] = []

    def check(ok: bool, key: str, message: str) -> None:
        if not ok:
            problems.append(f"{key}: {message}")

    methods = available_methods()
    check(config.method in methods, "method", f"unknown method {config.method!r}; registered: {methods}")
    d, m, o, t, p, e = config.data, config.model, config.optim, config.trainer, config.probe, config.eval
    check(d.name in DATASET_NAMES, "data.name", f"unknown dataset {d.name!r}; expected one of {list(DATASET_NAMES)}")
    check(d.input_size >= 8, "data.input_size", f"must be >= 8, got {d.input_size}")
    check(d.imbalance_factor is None or d.imbalance_factor >= 1, "data.imbalance_factor", f"must be >= 1 or null, got {d.imbalance_factor}")
    _check_range(check, "data.crop_scale", d.crop_scale)
    for key in ("hflip_prob", "jitter_prob", "grayscale_prob", "blur_prob"):
        value = getattr(d, key)
        check(0 <= value <= 1, f"data.{key}", f"must be in [0, 1], got {value}")
    jitter = d.color_jitter
    check(len(jitter) == 4 and min(jitter) >= 0 and jitter[3] <= 0.5, "data.color_jitter", f"must be [brightness, contrast, saturation, hue] >= 0 with hue <= 0.5, got {list(jitter)}")
    for key in ("train_list", "test_list"):
        value = getattr(d, key)
        check(value is None or Path(value).is_file(), f"data.{key}", f"file not found: '{value}'")

    check(m.alpha is None or m.beta is None, "model.alpha/model.beta", f"give alpha or beta, not both (got {m.alpha}, {m.beta})")
    check(m.alpha is None or 0 <= m.alpha <= 1, "model.alpha", f"must be in [0, 1], got {m.alpha}")
    check(m.beta is None or m.beta >= 0, "model.beta", f"must be >= 0, got {m.beta}")
    check(m.temperature > 0, "model.temperature", f"must be > 0, got {m.temperature}")
    check(m.proj_dim >= 1, "model.proj_dim", f"must be >= 1, got {m.proj_dim}")
    check(m.queue_size >= 0, "model.queue_size", f"must be >= 0, got {m.queue_size}")
    check(0 <= m.momentum <= 1, "model.momentum", f"must be in [0, 1], got {m.momentum}")
    check(m.pbsd_weight >= 0, "model.pbsd_weight", f"must be >= 0, got {m.pbsd_weight}")
    check(m.num_patches >= 0, "model.num_patches", f"must be >= 0, got {m.num_patches}")
    check(m.pbsd_weight == 0 or m.num_patches >= 1, "model.num_patches", "PBSD (pbsd_weight > 0) needs num_patches >= 1")
    check(0 < m.patch_size <= d.input_size, "model.patch_size", f"must be in (0, data.input_size={d.input_size}], got {m.patch_size}")
    _check_range(check, "model.patch_scale", m.patch_scale)
    check(m.init_from is None or Path(m.init_from).is_file(), "model.init_from", f"file not found: '{m.init_from}'")
    check(m.backbone == "small_cnn" or _is_torchvision_resnet(m.backbone), "model.backbone", f"unknown backbone {m.backbone!r}: use 'small_cnn' or a torchvision ResNet such as 'resnet18' or 'resnet50'")

    check(o.lr > 0, "optim.lr", f"must be > 0, got {o.lr}")
    check(0 <= o.momentum < 1, "optim.momentum", f"must be in [0, 1), got {o.momentum}")
    check(o.weight_decay >= 0, "optim.weight_decay", f"must be >= 0, got {o.weight_decay}")
    check(0 <= o.warmup_epochs <= t.epochs, "optim.warmup_epochs", f"must be in [0, trainer.epochs={t.epochs}], got {o.warmup_epochs}")
    check(o.interval in ("step", "epoch"), "optim.interval", f"must be 'step' or 'epoch', got {o.interval!r}")

    check(t.epochs >= 1, "trainer.epochs", f"must be >= 1, got {t.epochs}")
    check(t.devices >= 1, "trainer.devices", f"must be >= 1, got {t.devices}")
    check(t.batch_size >= 1 and t.batch_size % max(t.devices, 1) == 0, "trainer.batch_size", f"must be a positive multiple of trainer.devices={t.devices} (it is the global batch), got {t.batch_size}")
    check(t.num_workers >= 0, "trainer.num_workers", f"must be >= 0, got {t.num_workers}")
    check(t.limit_train_batches is None or t.limit_train_batches >= 1, "trainer.limit_train_batches", f"must be >= 1 or null, got {t.limit_train_batches}")
    check(t.log_every_n_steps >= 1, "trainer.log_every_n_steps", f"must be >= 1, got {t.log_every_n_steps}")
    check(t.strategy in STRATEGIES, "trainer.strategy", f"must be one of {list(STRATEGIES)}, got {t.strategy!r}")
    check(t.precision in PRECISIONS, "trainer.precision", f"must be one of {list(PRECISIONS)}, got {t.precision!r}")
    check(t.accelerator in ACCELERATORS, "trainer.accelerator", f"must be one of {list(ACCELERATORS)}, got {t.accelerator!r}")
    if t.accelerator in ACCELERATORS:
        device = _resolved_accelerator(t.accelerator)
        gpus = torch.cuda.device_count()
        if device == "cpu":
            check(t.precision not in ("16-mixed", "16-true"), "trainer.precision", f"{t.precision!r} needs a CUDA GPU (on CPU Lightning would silently use bf16); use '32-true' or 'bf16-mixed' on CPU")
        else:
            check(gpus >= 1, "trainer.accelerator", f"{t.accelerator!r} needs a CUDA GPU, none is available; use 'cpu'")
            check(gpus == 0 or t.devices <= gpus, "trainer.devices", f"{t.devices} GPUs requested, {gpus} available")

    check(p.epochs >= 1, "probe.epochs", f"must be >= 1, got {p.epochs}")
    check(p.lr > 0, "probe.lr", f"must be > 0, got {p.lr}")
    check(p.batch_size >= 1, "probe.batch_size", f"must be >= 1, got {p.batch_size}")
    check(p.weight_decay >= 0, "probe.weight_decay", f"must be >= 0, got {p.weight_decay}")
    check(list(p.milestones) == sorted(set(p.milestones)) and all(0 < x < p.epochs for x in p.milestones), "probe.milestones", f"must be increasing epochs in (0, probe.epochs={p.epochs}), got {p.milestones}")

    check(0 <= e.few_threshold <= e.many_threshold, "eval.few_threshold", f"must be in [0, eval.many_threshold={e.many_threshold}], got {e.few_threshold}")
    check(e.knn_k is None or e.knn_k >= 1, "eval.knn_k", f"must be >= 1 or null, got {e.knn_k}")
    check(e.batch_size >= 1, "eval.batch_size", f"must be >= 1, got {e.batch_size}")
    check(config.seed >= 0, "seed", f"must be >= 0, got {config.seed}")
    check(bool(config.output_dir), "output_dir", "must not be empty")

    if config.method in methods:
        check_method = getattr(get_method(config.method), "check_config", None)
        problems += check_method(config) if check_method is not None else []
    if problems:
        raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))


def _check_range(check, key: str, value: Sequence[float]) -> None:
    check(len(value) == 2 and 0 < value[0] <= value[1] <= 1, key, f"must be [min, max] with 0 < min <= max <= 1, got {list(value)}")


def _is_torchvision_resnet(name: str) -> bool:
    import torchvision

    return name.startswith(("resnet", "resnext", "wide_resnet")) and name in torchvision.models.list_models(module=torchvision.models)
