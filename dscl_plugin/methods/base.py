"""The method harness: what every stage-1 method shares, written once.

A method (a subclass of :class:`Method`, registered by name) declares its options, its
views, its model, its loss terms, whether it needs the training class counts and
whether it trains a classifier of its own; the harness builds the backbone of the
config, reads and checks the options, makes the views, runs the step, checks the loss
is finite, logs every ``loss_*`` term, and owns the optimiser, the learning-rate
schedule (also across a resume) and the frozen features of stage 2. SGD or AdamW
(``optim.name``) with linear warm-up and cosine decay (Lightly's
``CosineWarmupScheduler``) per step or per epoch, started again with a cleared optimiser
state at the epochs a method's :meth:`Method.schedule_restarts` names.
"""

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from dscl_plugin import checks
from dscl_plugin.backbones import build_backbone
from dscl_plugin.backbones.weights import load_backbone_weights
from dscl_plugin.errors import NonFiniteLossError
from dscl_plugin.methods.options import NoOptions, option_problems, read_options
from dscl_plugin.methods.schedule import RestartingCosineWarmupScheduler
from dscl_plugin.methods.views import Batch, Views
from dscl_plugin.models.feature_maps import map_and_pooled
from dscl_plugin.training.config import to_dict
from dscl_plugin.training.schema import Config
from dscl_plugin.transforms.collate import PatchViewCollate
from dscl_plugin.transforms.views import DSCLTransform

# names Lightning gives the logged total ("loss") per step and per epoch
RESERVED_TERMS = ("loss_step", "loss_epoch")


def checked_class_counts(counts: Sequence[int] | None, needed: bool) -> tuple[int, ...] | None:
    """``counts`` as a tuple: one count ``>= 0`` per class (``>= 1`` when ``needed``).

    Raises:
        ValueError: named ``class_counts``: missing when ``needed``, empty, or a bad count.
    """
    if counts is None:
        checks.require(
            not needed,
            "class_counts",
            "is needed by this method (the number of training images of each class): "
            "build it with the training set's class_counts",
        )
        return None
    counts = tuple(counts)
    low = 1 if needed else 0
    checks.require(
        len(counts) > 0 and all(isinstance(c, int) and c >= low for c in counts),
        "class_counts",
        f"must be one int >= {low} per class (every class needs training images), got "
        f"{list(counts)[:10]}",
    )
    return counts


class Method(pl.LightningModule):
    """A stage-1 method: ``cls(config, class_counts)``.

    What a method declares:

    - ``Options``: a dataclass of its own keys, read from the config section
      ``method_options.<name>`` (:meth:`read_options`) into :attr:`options`;
    - ``needs_class_counts``: whether it needs the training class counts (priors,
      class prototypes), then :attr:`class_counts`;
    - :meth:`views`: its views (:class:`~dscl_plugin.methods.views.Views`);
    - :meth:`build_model`: its model, which holds the given backbone as ``.backbone``;
    - :meth:`step`: ``{"loss": total, "loss_<term>": value, ...}`` of a
      :class:`~dscl_plugin.methods.views.Batch`; every ``loss_*`` entry is logged
      (``logs/metrics.csv``, ``curves.png``), whatever its name;
    - optionally :attr:`own_classifier` (a head on the pooled backbone features that
      stage 2 scores beside the linear probe), :meth:`check_config` and ``label``, its
      name in reports and titles (default: the registered name).

    Raises:
        ValueError: bad ``class_counts``, or a model that does not hold the backbone.
        ConfigError: bad options.
    """

    Options: ClassVar[type[Any]] = NoOptions
    label: ClassVar[str | None] = None
    needs_class_counts: ClassVar[bool] = False
    reports_grad_ratio: ClassVar[bool] = False  # trainer.log_grad_ratio
    options: object

    def __init__(self, config: Config, class_counts: Sequence[int] | None = None) -> None:
        super().__init__()
        self.config = config
        self.class_counts = checked_class_counts(class_counts, self.needs_class_counts)
        self.options = self.read_options(config, config.method)
        self.save_hyperparameters({"config": to_dict(config)})
        backbone, feature_dim = self.build_backbone()
        self.model = self.build_model(backbone, feature_dim)
        checks.require(
            getattr(self.model, "backbone", None) is backbone,
            "build_model",
            f"must return a model that holds the backbone it is given as .backbone "
            f"({type(self).__name__}.build_model returned {type(self.model).__name__})",
        )

    # what a method declares
    @classmethod
    def options_key(cls, name: str) -> str:
        """The config section of the options of this method run as ``name``."""
        return f"method_options.{name}"

    @classmethod
    def option_problems(
        cls, config: Config, name: str, elsewhere: dict[str, str] | None = None
    ) -> list[str]:
        """The problems of the section :meth:`options_key` as ``Options`` (``elsewhere``:
        where keys of other methods are set, for the hint)."""
        values = config.method_options.get(name, {})
        return option_problems(cls.Options, values, cls.options_key(name), elsewhere)

    @classmethod
    def read_options(cls, config: Config, name: str) -> object:
        """``Options`` from the section :meth:`options_key` (the defaults where unset).

        Raises:
            ConfigError: every problem of :meth:`option_problems`.
        """
        values = config.method_options.get(name)
        return read_options(cls.Options, values, cls.options_key(name))

    @classmethod
    def check_config(cls, config: Config) -> list[str]:
        """Other problems of ``config`` for this method, as ``"key: message"`` strings."""
        return []

    def views(self) -> Views:
        """The views of each training image (default: a query and a key view)."""
        return Views()

    def build_model(self, backbone: nn.Module, feature_dim: int) -> nn.Module:
        """The model around ``backbone`` (pooled features of size ``feature_dim``); it
        must hold ``backbone`` as its ``backbone`` attribute."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_model")

    def step(self, batch: Batch) -> dict[str, Tensor]:
        """``{"loss": total, "loss_<term>": ...}`` of one training batch."""
        raise NotImplementedError(f"{type(self).__name__} must implement step")

    @property
    def own_classifier(self) -> nn.Module | None:
        """The classifier the method trains, mapping pooled backbone features ``(B, D)``
        to logits ``(B, C)``, or None (the default)."""
        return None

    def schedule_restarts(self) -> tuple[int, ...]:
        """The epochs (in ``(0, trainer.epochs)``) at which the learning-rate schedule
        starts again, its warm-up and cosine over the epochs up to the next restart, with
        the optimiser's state (momentum, Adam's moments) cleared, as a new optimiser;
        default none."""
        return ()

    # what the harness owns
    def before_step(self) -> None:
        """Called before :meth:`step` in every training step (e.g. the EMA update)."""

    def step_metrics(self) -> dict[str, Tensor | float]:
        """Values logged with the loss terms every step (the learning rate)."""
        return {"lr": self.trainer.optimizers[0].param_groups[0]["lr"]}

    def build_backbone(self) -> tuple[nn.Module, int]:
        """``build_backbone`` from ``config.model``, loading ``model.init_from`` if set."""
        m = self.config.model
        backbone, feature_dim = build_backbone(
            m.backbone,
            m.cifar_stem,
            m.zero_init_residual,
            image_size=self.config.data.input_size,
            vit_pool=m.vit_pool,
            vit_patch_size=m.vit_patch_size,
            vit_depth=m.vit_depth,
            vit_width=m.vit_width,
            vit_heads=m.vit_heads,
        )
        if m.init_from:
            load_backbone_weights(backbone, m.backbone, m.init_from)
        return backbone, feature_dim

    @property
    def backbone(self) -> nn.Module:
        backbone = self.model.backbone
        assert isinstance(backbone, nn.Module)  # checked when built
        return backbone

    def embed(self, images: Tensor) -> Tensor:
        """(B, D) pooled features of the online backbone (stage 2 and the monitor call it
        in eval mode on the frozen backbone)."""
        return map_and_pooled(self.backbone, images)[1]

    def view_options(self) -> dict[str, Any]:
        """The stage-1 views, as keywords of :class:`DSCLTransform` (and of
        ``DeviceViews`` for ``data.pipeline: device``): :meth:`views` drawn with the
        augmentation of ``config.data``."""
        d, views = self.config.data, self.views()
        options: dict[str, Any] = dict(
            view_kinds=views.kinds, key_jitter=(*d.color_jitter[:3], 0.0), **d.view_augmentation()
        )
        patches = views.patches
        if patches is None:  # a patch size the views accept; no patch is cut
            options.update(num_patches=0, patch_size=d.input_size)
        else:
            options.update(
                num_patches=patches.number, patch_size=patches.size, patch_scale=patches.scale
            )
        return options

    def train_transform(self) -> Callable[..., list[Tensor]]:
        """Stage-1 views of one PIL image (``data.pipeline: loader``)."""
        return DSCLTransform(**self.view_options())

    def collate_fn(self) -> PatchViewCollate:
        return PatchViewCollate(num_views=len(self.views().kinds))

    def training_step(self, batch: Sequence[Tensor | None], batch_idx: int) -> Tensor:
        self.before_step()
        received = Batch.of(batch, len(self.views().kinds))
        terms = self.step(received)
        reserved = sorted(set(RESERVED_TERMS) & set(terms))
        checks.require(
            "loss" in terms and not reserved,
            "step",
            f"must return 'loss' and no term named {list(RESERVED_TERMS)}, got {sorted(terms)}",
        )
        loss = terms["loss"]
        self._check_finite(loss, batch_idx)
        batch_size = len(received.labels)
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size)
        logged: dict[str, Tensor | float] = {
            name: value.detach() for name, value in terms.items() if name.startswith("loss_")
        }
        self.log_dict(
            {**logged, **self.step_metrics()}, on_step=True, on_epoch=False, batch_size=batch_size
        )
        return loss

    def _check_finite(self, loss: Tensor, batch_idx: int) -> None:
        finite = torch.isfinite(loss.detach()).float()
        if self.trainer.world_size > 1:  # every rank must stop together
            finite = self.trainer.strategy.reduce(finite, reduce_op="min")
        if not bool(finite):
            raise NonFiniteLossError(
                f"Non-finite training loss ({loss.item()}) at global step {self.global_step} "
                f"(epoch {self.current_epoch}, batch {batch_idx}); training stopped and the "
                "last good checkpoint is kept. Lower optim.lr or use trainer.precision=32-true."
            )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """A resumed run keeps the lr schedule built from the current config, so a larger
        ``trainer.epochs`` stretches the warm-up + cosine over the new length (the step
        count continues; the lr jumps to the longer schedule's value at that step)."""
        for state in checkpoint.get("lr_schedulers", []):
            for key in ("max_epochs", "warmup_epochs", "restarts"):
                state.pop(key, None)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        """Clears the optimiser's state before the first batch of a restart epoch
        (:meth:`schedule_restarts`); a run resumed inside that epoch keeps the saved one."""
        if batch_idx == 0 and self.current_epoch in self.schedule_restarts():
            for optimizer in self.trainer.optimizers:
                optimizer.state.clear()

    def on_train_start(self) -> None:
        """Sets the lr of the schedule at the current step (after a resume the optimizer
        holds the lr saved with it, which differs when ``trainer.epochs`` grew)."""
        for scheduler_config in self.trainer.lr_scheduler_configs:
            scheduler = scheduler_config.scheduler
            assert isinstance(scheduler, LambdaLR)  # configure_optimizers' CosineWarmupScheduler
            groups = scheduler.optimizer.param_groups
            for group, base_lr, scale in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base_lr * scale(scheduler.last_epoch)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        o, epochs = self.config.optim, self.config.trainer.epochs
        params = [p for p in self.model.parameters() if p.requires_grad]
        optimizer: torch.optim.Optimizer
        if o.name == "adamw":
            optimizer = torch.optim.AdamW(params, lr=o.lr, weight_decay=o.weight_decay)
        else:
            optimizer = torch.optim.SGD(
                params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay
            )
        restarts = self.schedule_restarts()
        if o.interval == "step":
            total = int(self.trainer.estimated_stepping_batches)
            warmup = round(o.warmup_epochs * total / epochs)
            restarts = tuple(round(epoch * total / epochs) for epoch in restarts)
        else:
            total, warmup = epochs, round(o.warmup_epochs)
        scheduler = RestartingCosineWarmupScheduler(
            optimizer,
            warmup_epochs=warmup,
            max_epochs=total,
            restarts=restarts,
            end_value=0.0 if o.cosine else 1.0,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": o.interval},
        }
