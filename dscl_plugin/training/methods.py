"""Stage-1 LightningModules: the ``dscl`` and ``supcon`` methods of the registry.

Each training step: EMA update ``theta_m <- m theta_m + (1 - m) theta`` (constant ``m`` or
Lightly's ``cosine_schedule`` from ``m`` to 1), forward of the model (loss, then the keys
enter the labelled queue), a finite-loss check, logging. SGD or AdamW (``optim.name``) with
linear warm-up and cosine decay (Lightly's ``CosineWarmupScheduler``) per step or per epoch.
Under DDP the queue gathers keys with their labels from every process.
"""

from collections.abc import Callable, Sequence
from typing import Any, cast

import pytorch_lightning as pl
import torch
from lightly.utils.scheduler import CosineWarmupScheduler, cosine_schedule
from pytorch_lightning.utilities.types import OptimizerLRSchedulerConfig
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR

from dscl_plugin.backbones import build_backbone
from dscl_plugin.backbones.weights import load_backbone_weights
from dscl_plugin.data.shots import shot_groups
from dscl_plugin.models.dscl_model import DSCLModel, SupConModel
from dscl_plugin.training.config import to_dict
from dscl_plugin.training.registry import (
    available_methods,
    get_method,
    load_plugins,
    register_method,
)
from dscl_plugin.training.schema import Config
from dscl_plugin.training.validation import raise_problems
from dscl_plugin.transforms.collate import PatchViewCollate
from dscl_plugin.transforms.views import DSCLTransform


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; training stopped before the update."""


class ContrastiveMethod(pl.LightningModule):
    """Shared harness; subclasses set ``model_class`` and ``model_keys`` (or override
    :meth:`build_model`).

    The model must provide ``forward(view_q, view_k, patches, boxes, labels) ->
    dict(loss, loss_dscl, loss_pbsd)``, ``update_momentum(m)``, ``embed(images)``,
    ``backbone`` and ``memory_bank`` (see :class:`dscl_plugin.models.DSCLModel`); for
    ``trainer.log_grad_ratio`` also ``track_grad_ratio`` and the ``grad_ratio`` outputs.
    Its memory bank gathers keys from every process when the run has several
    (:attr:`gather_distributed`).
    """

    uses_patches = True
    # the name the model's contrastive term (its ``loss_dscl`` output) is logged under
    loss_term = "loss_dscl"
    # the model class and the ``config.model`` keys passed to it as keywords
    model_class: Callable[..., DSCLModel] = DSCLModel
    model_keys: tuple[str, ...] = (
        "proj_dim",
        "queue_size",
        "momentum",
        "temperature",
        "shuffle_bn",
    )

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.save_hyperparameters({"config": to_dict(config)})
        self.model: DSCLModel = self.build_model()

    @classmethod
    def check_config(cls, config: Config) -> list[str]:
        """Method-specific config problems, as ``"key: message"`` strings."""
        return []

    @property
    def gather_distributed(self) -> bool:
        """Whether the run has several processes (``trainer.devices x trainer.num_nodes >
        1``), whose keys the memory bank must gather."""
        t = self.config.trainer
        return t.devices * t.num_nodes > 1

    def build_model(self) -> DSCLModel:
        """``model_class(backbone, feature_dim, gather_distributed=...,
        **{key: config.model.<key>})`` for ``model_keys``; override for other models."""
        backbone, feature_dim = self.build_backbone()
        m = self.config.model
        keys = {key: getattr(m, key) for key in self.model_keys}
        return self.model_class(
            backbone, feature_dim, gather_distributed=self.gather_distributed, **keys
        )

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
        return self.model.backbone

    def embed(self, images: Tensor) -> Tensor:
        """(B, D) pooled online-backbone features for the frozen evaluation."""
        return self.model.embed(images)

    def view_options(self) -> dict[str, Any]:
        """The stage-1 view settings, as keywords of :class:`DSCLTransform` (and of
        ``DeviceViews`` for ``data.pipeline: device``); patches only if the method uses
        them and ``pbsd_weight > 0``."""
        d, m = self.config.data, self.config.model
        use_patches = self.uses_patches and m.pbsd_weight > 0
        return dict(
            patch_size=m.patch_size,
            num_patches=m.num_patches if use_patches else 0,
            patch_scale=tuple(m.patch_scale),
            key_jitter=(*d.color_jitter[:3], 0.0),
            **d.view_augmentation(),
        )

    def train_transform(self) -> Callable:
        """Stage-1 views of one PIL image (``data.pipeline: loader``)."""
        return DSCLTransform(**self.view_options())

    def collate_fn(self) -> Callable:
        return PatchViewCollate()

    def on_train_epoch_start(self) -> None:
        if self.model.track_grad_ratio:  # rows: sum of ratio, sum of aligned value, anchors
            self._ratio_sums = torch.zeros(
                3, len(self._class_counts), dtype=torch.float64, device=self.device
            )

    def _accumulate_grad_ratio(self, out: dict[str, Tensor], labels: Tensor) -> None:
        valid = out["grad_ratio_valid"].to(torch.float64)
        rows = (out["grad_ratio"] * valid, out["grad_ratio_aligned"] * valid, valid)
        for sums, values in zip(self._ratio_sums, rows):
            sums.index_add_(0, labels.long(), values.to(torch.float64))

    def on_train_epoch_end(self) -> None:
        """Logs ``grad_ratio/{overall,many,medium,few,class_<c>}`` (mean over the epoch's
        anchors that have a class positive) and ``grad_ratio_aligned/...``, the value for
        aligned features (``|P_i|`` for SupCon, ``(1 - alpha) / alpha`` for DSCL)."""
        if not self.model.track_grad_ratio:
            return
        sums = self._ratio_sums
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        sums = sums.cpu()
        e = self.config.eval
        groups = shot_groups(self._class_counts, e.many_threshold, e.few_threshold)
        selections = {"overall": list(range(len(self._class_counts))), **groups}
        selections.update({f"class_{c}": [c] for c in range(len(self._class_counts))})
        values = {}
        for name, classes in selections.items():
            ratio, aligned, anchors = sums[:, classes].sum(dim=1).tolist()
            if anchors > 0:
                values[f"grad_ratio/{name}"] = ratio / anchors
                values[f"grad_ratio_aligned/{name}"] = aligned / anchors
        self.log_dict(values, on_step=False, on_epoch=True)

    def ema_momentum(self) -> float:
        m = self.config.model
        if not m.momentum_cosine:
            return m.momentum
        total = self.trainer.estimated_stepping_batches
        return cosine_schedule(self.global_step, total, m.momentum, 1.0)

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> Tensor:
        view_q, view_k, patches, boxes, labels = batch
        self.model.update_momentum(self.ema_momentum())
        out: dict[str, Tensor] = self.model(view_q, view_k, patches, boxes, labels)
        self._check_finite(out["loss"], batch_idx)
        if self.model.track_grad_ratio:
            self._accumulate_grad_ratio(out, labels)
        bank = self.model.memory_bank
        fill = bank.num_filled.float() / max(bank.size[0], 1)
        batch_size = view_q.shape[0]
        self.log(
            "loss",
            out["loss"],
            prog_bar=True,
            on_step=True,
            on_epoch=True,
            batch_size=batch_size,
        )
        self.log_dict(
            {
                self.loss_term: out["loss_dscl"].detach(),
                "loss_pbsd": out["loss_pbsd"].detach(),
                "queue_fill": fill.squeeze(),
                "lr": self.trainer.optimizers[0].param_groups[0]["lr"],
            },
            on_step=True,
            on_epoch=False,
            batch_size=batch_size,
        )
        return out["loss"]

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
            for key in ("max_epochs", "warmup_epochs"):
                state.pop(key, None)

    def on_train_start(self) -> None:
        """Sets the lr of the schedule at the current step (after a resume the optimizer
        holds the lr saved with it, which differs when ``trainer.epochs`` grew). With
        ``trainer.log_grad_ratio``: the model returns the pull-gradient ratio of every
        anchor, summed here per class over each epoch (:meth:`on_train_epoch_end` logs it)."""
        for scheduler_config in self.trainer.lr_scheduler_configs:
            scheduler = scheduler_config.scheduler
            assert isinstance(scheduler, LambdaLR)  # configure_optimizers' CosineWarmupScheduler
            groups = scheduler.optimizer.param_groups
            for group, base_lr, scale in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas):
                group["lr"] = base_lr * scale(scheduler.last_epoch)
        self.model.track_grad_ratio = self.config.trainer.log_grad_ratio
        if not self.model.track_grad_ratio:
            return
        loader = self.trainer.train_dataloader
        class_counts = getattr(getattr(loader, "dataset", None), "class_counts", None)
        if class_counts is None:
            raise ValueError(
                "trainer.log_grad_ratio: the training dataset has no class_counts (needed for "
                "per-class and shot-group ratios); set trainer.log_grad_ratio=false."
            )
        self._class_counts = list(class_counts)

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
        if o.interval == "step":
            total = int(self.trainer.estimated_stepping_batches)
            warmup = round(o.warmup_epochs * total / epochs)
        else:
            total, warmup = epochs, round(o.warmup_epochs)
        scheduler = CosineWarmupScheduler(
            optimizer,
            warmup_epochs=warmup,
            max_epochs=total,
            end_value=0.0 if o.cosine else 1.0,
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": o.interval},
        }


@register_method("dscl")
class DSCLMethod(ContrastiveMethod):
    """DSCL + PBSD: ``L = L_dscl + pbsd_weight * L_pbsd``; ``pbsd_weight: 0`` is DSCL only."""

    model_class = DSCLModel
    model_keys = (
        *ContrastiveMethod.model_keys,
        "alpha",
        "beta",
        "pbsd_weight",
        "roi_aligned",
        "patch_passes",
    )


@register_method("supcon")
class SupConMethod(ContrastiveMethod):
    """SupCon baseline in the same harness (EMA keys, labelled queue, no patches); its
    contrastive term is logged as ``loss_supcon``."""

    uses_patches = False
    loss_term = "loss_supcon"
    model_class = SupConModel

    @classmethod
    def check_config(cls, config: Config) -> list[str]:
        m, problems = config.model, []
        if m.alpha is not None or m.beta is not None:
            problems.append(
                "model.alpha/model.beta: supcon weights its positives equally; set both to null"
            )
        if m.pbsd_weight != 0:
            problems.append(
                f"model.pbsd_weight: supcon has no PBSD term; set 0 (got {m.pbsd_weight})"
            )
        return problems


def check_method(config: Config) -> type[pl.LightningModule]:
    """The class registered as ``config.method`` (after loading the installed method
    plugins), once its ``check_config`` found no problem.

    Raises:
        ConfigError: unknown method, or the method's own problems with the config.
    """
    load_plugins()
    if config.method not in available_methods():
        raise_problems(
            [
                f"method: unknown method {config.method!r}; registered: {available_methods()}"
                " (a method of your own: dscl-train --import MODULE)"
            ]
        )
    cls = get_method(config.method)
    check_config = getattr(cls, "check_config", None)
    raise_problems(check_config(config) if check_config is not None else [])
    return cls


def build_method(config: Config) -> ContrastiveMethod:
    """The run's method module, ``cls(config)`` for the class :func:`check_method` returns:
    a :class:`ContrastiveMethod`, or a ``LightningModule`` with the parts of its interface
    the stages use (:mod:`dscl_plugin.training.registry`)."""
    return cast(ContrastiveMethod, check_method(config)(config))
