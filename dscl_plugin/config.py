"""Run configuration: a dataclass schema merged with YAML and ``a.b=value`` overrides by OmegaConf.

:func:`load_config` returns a validated :class:`Config`. Every problem (unknown key, wrong
type, missing value, out-of-range setting, precision the device cannot run) raises
:class:`ConfigError` naming the key path, before anything is trained.
"""

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch
from omegaconf import MISSING, OmegaConf
from omegaconf.errors import MissingMandatoryValue, OmegaConfBaseException, ValidationError

from dscl_plugin import checks
from dscl_plugin.checks import InvalidValue, alpha_from
from dscl_plugin.models import PATCH_PASSES, check_backbone_name
from dscl_plugin.transforms import check_jitter, check_patch_size


class ConfigError(ValueError):
    """An invalid configuration; the message names the key path(s)."""


@dataclass
class DataConfig:
    """``name``: one of ``dscl_plugin.data.DATASET_NAMES``; ``imbalance_factor`` null = the
    dataset's standard (digits_lt 10, CIFAR-LT 100); ``train_list``/``test_list`` replace the
    standard list files of imagenet_lt / places_lt / inat2018. View augmentation: crop
    ``crop_scale``, flip ``hflip_prob``, colour jitter ``color_jitter`` (brightness, contrast,
    saturation, hue; the key view uses hue 0) with ``jitter_prob``, grayscale and Gaussian
    blur probabilities (digits: no flips, crop scale >= 0.4, no blur). ``pipeline``: ``loader``
    (PIL views in DataLoader workers) or ``device`` (Kornia views of a whole batch on the
    training device; in-memory datasets only, ``pip install "dscl-plugin[fast]"``)."""

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
    pipeline: str = "loader"

    def view_augmentation(self) -> Dict[str, Any]:
        """The q-view augmentation keywords shared by ``DSCLTransform`` (stage 1) and
        ``probe_transform`` (the augmented stage 2)."""
        return dict(
            input_size=self.input_size,
            crop_scale=tuple(self.crop_scale),
            hflip_prob=self.hflip_prob,
            jitter=tuple(self.color_jitter),
            jitter_prob=self.jitter_prob,
            grayscale_prob=self.grayscale_prob,
            blur_prob=self.blur_prob,
        )


@dataclass
class ModelConfig:
    """Backbone, heads, queue and loss. Give ``alpha`` or ``beta`` (``alpha = 1 / (1 + beta)``),
    not both; both null means beta 8. ``pbsd_weight: 0`` is DSCL only. ``momentum_cosine``
    ramps the EMA momentum from ``momentum`` to 1 (Lightly ``cosine_schedule``).
    ``init_from``: a local ``state_dict`` file (torchvision ResNet or ViT keys) for the backbone.
    ``shuffle_bn``: shuffle the key batch (across processes under DDP) for the EMA forward,
    as the official code. ``patch_passes``: ``batched`` (one pass of all patches that leaves
    BN running statistics unchanged) or ``separate`` (official: L train-mode passes of B
    patches). ``roi_aligned``: ``roi_align(aligned=...)`` of the PBSD teacher
    (official: false).
    ViT backbones (``vit_tiny``, ``vit_small``, ``vit_b_16``, ...; ``cifar_stem`` and
    ``zero_init_residual`` are ResNet-only): ``vit_pool`` ``mean`` (of the patch tokens) or
    ``cls``; ``vit_patch_size``/``vit_depth``/``vit_width``/``vit_heads`` replace the preset's
    sizes (null keeps them; other backbones ignore them). ``data.input_size`` and, with PBSD,
    ``patch_size`` must be multiples of the ViT patch size."""

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
    shuffle_bn: bool = True
    roi_aligned: bool = False
    vit_pool: str = "mean"
    vit_patch_size: Optional[int] = None
    vit_depth: Optional[int] = None
    vit_width: Optional[int] = None
    vit_heads: Optional[int] = None
    patch_passes: str = "batched"


@dataclass
class OptimConfig:
    """``name``: ``sgd`` (with ``momentum``) or ``adamw`` (decoupled ``weight_decay``, default
    betas; for ViTs); ``lr`` is absolute (not scaled by batch size); linear warm-up, then
    cosine (``cosine: false`` keeps ``lr``); the schedule steps per ``interval`` (step or
    epoch)."""

    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    warmup_epochs: float = 10.0
    cosine: bool = True
    interval: str = "step"
    name: str = "sgd"


@dataclass
class TrainerConfig:
    """Lightning trainer. ``batch_size`` is global (split evenly across the
    ``devices x num_nodes`` processes; several nodes start through Lightning's launchers,
    e.g. torchrun or SLURM); ``limit_train_batches`` (batches per epoch) is for smoke
    tests; ``num_threads`` sets ``torch.set_num_threads`` during a run (null keeps torch's
    default; tiny models on few CPU cores run several times faster with 1).
    ``sync_batchnorm``: Lightning's synchronised BN (an alternative to
    ``model.shuffle_bn``). ``checkpoint_every_n_steps``: also write ``last.ckpt`` every n
    optimizer steps (null: at epoch ends only); a run resumed from it continues inside
    the epoch. ``log_grad_ratio`` logs the pull-gradient ratio (paper Fig. 2) per class,
    shot group and epoch (``grad_ratio/...`` in the CSV logs)."""

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
    num_threads: Optional[int] = None
    sync_batchnorm: bool = False
    num_nodes: int = 1
    checkpoint_every_n_steps: Optional[int] = None
    log_grad_ratio: bool = False


@dataclass
class ProbeConfig:
    """Stage 2 linear probe on the frozen backbone (BN in eval mode): lr x 0.1 at each
    milestone epoch, the last epoch's classifier is evaluated. ``protocol``: ``features``
    (fast: features of the centre crops extracted once) or ``augmented`` (official: the
    backbone embeds freshly augmented images, the q-view augmentation of ``data``, every
    epoch)."""

    epochs: int = 40
    lr: float = 10.0
    batch_size: int = 2048
    milestones: List[int] = field(default_factory=lambda: [20, 30])
    class_balanced: bool = True
    weight_decay: float = 0.0
    protocol: str = "features"


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
PROBE_PROTOCOLS = ("features", "augmented")
OPTIMIZERS = ("sgd", "adamw")


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
    message = str(getattr(error, "msg", error)).split("\n")[0].rstrip(".")
    where = f" (in '{path}' or the overrides)" if path is not None else ""
    if isinstance(error, MissingMandatoryValue):
        return f"Missing value for config key '{key}'{where}: set it in the file or as {key}=..."
    if isinstance(error, ValidationError) and key:
        return f"Wrong type for config key '{key}'{where}: expected {_expected_type(key)}; {message}."
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
    if typing.get_origin(hint) is Union:
        return f"{_type_name(args[0])} or null"
    if typing.get_origin(hint) in (list, List):
        return f"a list of {_type_name(args[0])}"
    if hint is bool:
        return "true or false"
    return getattr(hint, "__name__", str(hint))


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


class _Problems(list):
    """Collects ``"key: message"`` lines; the range rules are :mod:`dscl_plugin.checks`."""

    def check(self, ok: bool, key: str, message: str) -> None:
        if not ok:
            self.append(f"{key}: {message}")

    def rule(self, section: str, check: Callable[..., Any], *args: Any) -> None:
        """Runs a shared check (the one the constructors run); an :class:`InvalidValue`
        for argument ``name`` is reported as ``"<section>.<name>: <rule>"``."""
        try:
            check(*args)
        except InvalidValue as error:
            self.append(f"{'.'.join(filter(None, (section, error.name)))}: {error.rule}")

    def at_least(
        self, key: str, value: Optional[float], low: float, allow_none: bool = False
    ) -> None:
        self.rule("", checks.at_least, key, value, low, allow_none)

    def within(self, key: str, value: float, low: float, high: float) -> None:
        self.rule("", checks.within, key, value, low, high)

    def scale_range(self, key: str, value: Sequence[float]) -> None:
        self.rule("", checks.scale_range, key, value)

    def one_of(self, key: str, value: str, allowed: Sequence[str]) -> None:
        self.rule("", checks.one_of, key, value, allowed)

    def file(self, key: str, value: Optional[str]) -> None:
        self.check(value is None or Path(value).is_file(), key, f"file not found: '{value}'")


def validate(config: Config) -> None:
    """Schema-level checks; raises one :class:`ConfigError` listing every problem.

    Whether ``method`` names a registered method, and that method's own rules, are
    checked where the run is composed (:func:`dscl_plugin.pipeline.build_module`).
    """
    problems = _Problems()
    problems.check(bool(config.method), "method", "must not be empty")
    _check_data(problems, config.data)
    _check_model(problems, config.model, config.data.input_size)
    _check_optim(problems, config.optim, config.trainer.epochs)
    _check_trainer(problems, config.trainer)
    _check_stage2(problems, config.probe, config.eval)
    problems.at_least("seed", config.seed, 0)
    problems.check(bool(config.output_dir), "output_dir", "must not be empty")
    raise_problems(problems)


def raise_problems(problems: Sequence[str]) -> None:
    """Raises one :class:`ConfigError` listing ``problems`` (``"key: message"``), if any."""
    if problems:
        raise ConfigError("Invalid config:\n  " + "\n  ".join(problems))


def _check_data(problems: _Problems, d: DataConfig) -> None:
    from dscl_plugin.data import DATASET_NAMES, IN_MEMORY_DATASETS
    from dscl_plugin.device_views import check_pipeline

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
    from dscl_plugin.vit import VIT_POOLS, is_vit

    problems.rule("model", alpha_from, m.alpha, m.beta)
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
    from dscl_plugin.vit import token_grid, vit_spec

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
    problems.within("optim.warmup_epochs", o.warmup_epochs, 0, epochs)
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
        "trainer.checkpoint_every_n_steps", t.checkpoint_every_n_steps, 1, allow_none=True
    )
    problems.at_least("trainer.num_workers", t.num_workers, 0)
    problems.at_least("trainer.limit_train_batches", t.limit_train_batches, 1, allow_none=True)
    problems.at_least("trainer.log_every_n_steps", t.log_every_n_steps, 1)
    problems.at_least("trainer.num_threads", t.num_threads, 1, allow_none=True)
    problems.one_of("trainer.strategy", t.strategy, STRATEGIES)
    problems.one_of("trainer.precision", t.precision, PRECISIONS)
    problems.one_of("trainer.accelerator", t.accelerator, ACCELERATORS)
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
            t.devices <= gpus, "trainer.devices", f"{t.devices} GPUs requested, {gpus} available"
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
