"""The run configuration's schema: one dataclass per YAML section, with the defaults.

OmegaConf merges YAML files and ``a.b=value`` overrides onto it and checks the types
(:func:`dscl_plugin.training.config.load_config`); the value rules are in
:mod:`dscl_plugin.training.validation`. The ``model`` section is flat: backbone, heads,
queue, loss and patch keys side by side (``model.beta=4``).
"""

from dataclasses import dataclass, field
from typing import Any

from omegaconf import MISSING

from dscl_plugin.evaluation.probes import ProbeSchedule
from dscl_plugin.transforms.views import COLOUR_AUGMENTATION


@dataclass
class DataConfig:
    """``name``: one of ``dscl_plugin.data.DATASET_NAMES``; ``imbalance_factor`` null = the
    dataset's standard (digits_lt 10, CIFAR-LT 100); ``train_list``/``test_list`` replace the
    standard list files of imagenet_lt / places_lt / inat2018. View augmentation: crop
    ``crop_scale``, flip ``hflip_prob``, colour jitter ``color_jitter`` (brightness, contrast,
    saturation, hue; the key view uses hue 0) with ``jitter_prob``, grayscale and Gaussian
    blur probabilities (digits: no flips, crop scale >= 0.4, no blur); their defaults are
    ``dscl_plugin.transforms.COLOUR_AUGMENTATION``. ``pipeline``: ``loader`` (PIL views in
    DataLoader workers) or ``device`` (Kornia views of a whole batch on the training device;
    in-memory datasets only, ``pip install "dscl-plugin[fast]"``)."""

    name: str = MISSING
    root: str = "data"
    imbalance_factor: float | None = None
    input_size: int = 224
    download: bool = False
    train_list: str | None = None
    test_list: str | None = None
    crop_scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    hflip_prob: float = 0.5
    color_jitter: list[float] = field(default_factory=lambda: list(COLOUR_AUGMENTATION.jitter))
    jitter_prob: float = COLOUR_AUGMENTATION.jitter_prob
    grayscale_prob: float = COLOUR_AUGMENTATION.grayscale_prob
    blur_prob: float = COLOUR_AUGMENTATION.blur_prob
    pipeline: str = "loader"

    def view_augmentation(self) -> dict[str, Any]:
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
    alpha: float | None = None
    beta: float | None = None
    temperature: float = 0.07
    pbsd_weight: float = 1.5
    num_patches: int = 5
    patch_size: int = 64
    patch_scale: list[float] = field(default_factory=lambda: [0.05, 0.6])
    init_from: str | None = None
    shuffle_bn: bool = True
    roi_aligned: bool = False
    vit_pool: str = "mean"
    vit_patch_size: int | None = None
    vit_depth: int | None = None
    vit_width: int | None = None
    vit_heads: int | None = None
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
    shot group and epoch (``grad_ratio/...`` in the CSV logs). ``precision: auto``:
    ``bf16-mixed`` where the CPU/GPU has bf16 hardware, else ``32-true``
    (:mod:`dscl_plugin.training.precision`). ``logger``: ``csv`` (``logs/metrics.csv``) or
    ``tensorboard`` (also Lightning's ``TensorBoardLogger`` in ``logs/tensorboard``;
    ``pip install "dscl-plugin[tensorboard]"``); the CSV log is always written."""

    epochs: int = 200
    batch_size: int = 256
    precision: str = "32-true"
    accelerator: str = "auto"
    devices: int = 1
    strategy: str = "auto"
    num_workers: int = 8
    limit_train_batches: int | None = None
    log_every_n_steps: int = 50
    progress_bar: bool = True
    num_threads: int | None = None
    sync_batchnorm: bool = False
    num_nodes: int = 1
    checkpoint_every_n_steps: int | None = None
    log_grad_ratio: bool = False
    logger: str = "csv"


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
    milestones: list[int] = field(default_factory=lambda: [20, 30])
    class_balanced: bool = True
    weight_decay: float = 0.0
    protocol: str = "features"

    def schedule(self, seed: int) -> ProbeSchedule:
        """The probe's training schedule (all randomness from ``seed``)."""
        return ProbeSchedule(
            self.epochs,
            self.lr,
            list(self.milestones),
            self.batch_size,
            self.class_balanced,
            self.weight_decay,
            seed=seed,
        )


@dataclass
class EvalConfig:
    """Shot groups: many ``n_c > many_threshold``, few ``n_c < few_threshold``. ``knn_k``
    null reports R-precision and MAP@R, an int k precision@1 and MAP@k."""

    many_threshold: int = 100
    few_threshold: int = 20
    knn_k: int | None = None
    batch_size: int = 256


@dataclass
class MonitorConfig:
    """Online kNN accuracy by shot group during stage 1
    (:mod:`dscl_plugin.training.monitor`): every ``every`` epochs (and after the last; 0:
    off) the frozen online backbone (eval mode) embeds ``bank_size`` training images
    drawn at random and up to ``query_size`` test images, the same number from each
    class; each query takes the weighted vote of its ``knn_k`` nearest bank images
    (cosine similarity, weights ``exp(s / knn_t)``, Lightly's ``knn_predict``). Logged as
    ``monitor/knn_{overall,many,medium,few}`` (shot groups of the full training set,
    ``eval`` thresholds) and ``monitor/seconds``."""

    every: int = 0
    bank_size: int = 4096
    query_size: int = 1000
    knn_k: int = 20
    knn_t: float = 0.1


@dataclass
class Config:
    """``method``: a registered method's name; ``method_options``: the options of methods
    by name (``method_options.<name>.<key>``, checked by that method, see docs/methods.md),
    of which ``method``'s are used; DSCL's are in ``model``."""

    method: str = MISSING
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    method_options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    output_dir: str = "outputs/${method}_${data.name}"


PRECISIONS = (
    "auto",
    "32-true",
    "32",
    "64-true",
    "64",
    "bf16-mixed",
    "bf16-true",
    "16-mixed",
    "16-true",
)
ACCELERATORS = ("auto", "cpu", "gpu", "cuda")
STRATEGIES = ("auto", "ddp")
PROBE_PROTOCOLS = ("features", "augmented")
OPTIMIZERS = ("sgd", "adamw")
LOGGERS = ("csv", "tensorboard")
PIPELINES = ("loader", "device")
