"""DSCL and SupCon training models built from Lightly parts.

Online net ``f`` (backbone + ``MoCoProjectionHead``), EMA net ``f_m`` (a deep copy,
``theta_m <- m theta_m + (1 - m) theta``, run with shuffle-BN), and a
``LabeledMemoryBank`` of past L2-normalised keys (:class:`MomentumQueueModel`, which
PaCo's model shares). One model class, :class:`DSCLModel`;
SupCon is the same model with ``SupConLoss`` and no PBSD (:class:`SupConModel`).
Backbones come from :mod:`dscl_plugin.backbones`.

- [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
  AAAI 2024, https://arxiv.org/abs/2403.06151
"""

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import (
    batch_shuffle,
    batch_unshuffle,
    deactivate_requires_grad,
    update_momentum,
)
from lightly.utils import dist
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.errors import InvalidValue
from dscl_plugin.losses.contrastive import DSCLLoss, SupConLoss
from dscl_plugin.losses.pbsd import PBSDLoss
from dscl_plugin.memory import LabeledMemoryBank, owns_queue, updates_queue
from dscl_plugin.models.feature_maps import map_and_pooled, pool_regions

# how the PBSD student embeds the patches: "batched" (one pass of all B * L patches, BN
# running statistics untouched) or "separate" (the official L train-mode passes of B patches)
PATCH_PASSES = ("batched", "separate")


def _check_inputs(view_q: Tensor, view_k: Tensor, labels: Tensor) -> None:
    checks.require(
        view_q.ndim == 4, "view_q", f"must be (B, 3, H, W), got shape {tuple(view_q.shape)}"
    )
    checks.require(
        view_k.ndim == 4 and view_k.shape[:2] == view_q.shape[:2],
        "view_k",
        f"must be (B, 3, H, W) with the batch size and channels of view_q "
        f"{tuple(view_q.shape)}, got {tuple(view_k.shape)}",
    )
    checks.labels("labels", labels, view_q.shape[0])


def _checked_patches(
    view_q: Tensor, patches: Tensor | None, boxes: Tensor | None
) -> tuple[Tensor, Tensor]:
    """``(patches, boxes)``, checked against the q views."""
    if patches is None or boxes is None:
        raise InvalidValue(
            "pbsd_weight",
            "> 0 needs patches (B, L, 3, s, s) and boxes (B, L, 4), got "
            f"patches={None if patches is None else tuple(patches.shape)}, "
            f"boxes={None if boxes is None else tuple(boxes.shape)}; "
            "use pbsd_weight=0 to train without patches",
        )
    b, c, height, width = view_q.shape
    shape_ok = patches.ndim == 5 and patches.shape[0] == b and patches.shape[2] == c
    checks.require(
        shape_ok and patches.shape[1] >= 1,
        "patches",
        f"must be (B, L, {c}, s, s) with B = {b} and L >= 1, got {tuple(patches.shape)}",
    )
    checks.require(
        boxes.shape == (b, patches.shape[1], 4),
        "boxes",
        f"must be (B, L, 4) = {(b, patches.shape[1], 4)} to match patches "
        f"{tuple(patches.shape)}, got {tuple(boxes.shape)}",
    )
    checks.require(
        patches.shape[-2] <= height and patches.shape[-1] <= width,
        "patches",
        f"must fit in view_q: view_q ({height}x{width}) is smaller than a patch "
        f"({patches.shape[-2]}x{patches.shape[-1]})",
    )
    return patches, boxes


def shuffle_bn_forward(forward: Callable[[Tensor], Tensor], images: Tensor) -> Tensor:
    """``forward(images)`` with MoCo's shuffle-BN: the batch is shuffled before the
    forward and unshuffled after (Lightly's ``batch_shuffle``), across all processes when
    ``torch.distributed`` runs several, so the BN statistics of the EMA keys come from
    other images than the queries' (every process must call it). In eval mode (running
    statistics) the output is the same either way."""
    distributed = dist.world_size() > 1
    shuffled, shuffle = batch_shuffle(images, distributed=distributed)
    unshuffled: Tensor = batch_unshuffle(forward(shuffled), shuffle, distributed=distributed)
    return unshuffled


class MomentumQueueModel(nn.Module):
    """The MoCo part of a training model: the online ``backbone`` and ``projection_head``
    a subclass sets, their EMA copies (the key encoder ``f_m``, no gradient) and a
    ``LabeledMemoryBank`` of past keys, built by :meth:`add_key_encoder`."""

    backbone: nn.Module
    projection_head: nn.Module

    def add_key_encoder(
        self,
        proj_dim: int,
        queue_size: int,
        momentum: float,
        gather_distributed: bool,
        shuffle_bn: bool,
    ) -> None:
        """The EMA copies of ``backbone`` and ``projection_head``, the (K = ``queue_size``,
        ``proj_dim``) queue (gathering across processes with ``gather_distributed``), the
        EMA ``momentum`` and whether the key forward uses ``shuffle_bn``."""
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        self.memory_bank = LabeledMemoryBank(
            size=(queue_size, proj_dim), gather_distributed=gather_distributed
        )
        self.momentum = momentum
        self.shuffle_bn = shuffle_bn

    def update_momentum(self, m: float | None = None) -> None:
        """EMA step ``theta_m <- m theta_m + (1 - m) theta`` (``m = self.momentum`` if None).

        Call once per training step, before ``forward``; ``m`` may come from
        ``lightly.utils.scheduler.cosine_schedule``.
        """
        m = self.momentum if m is None else m
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)

    @torch.no_grad()
    def _key(self, view_k: Tensor) -> Tensor:
        """``k = f_m(view_k)``, with :func:`shuffle_bn_forward` when ``shuffle_bn``."""
        if not self.shuffle_bn:
            return self._key_forward(view_k)
        return shuffle_bn_forward(self._key_forward, view_k)

    def _key_forward(self, view_k: Tensor) -> Tensor:
        key: Tensor = self.projection_head_momentum(
            map_and_pooled(self.backbone_momentum, view_k)[1]
        )
        return key


class DSCLModel(MomentumQueueModel):
    """DSCL + PBSD [0]: ``loss = L_dscl + pbsd_weight * L_pbsd``.

    - ``q = f(view_q)``, ``k = f_m(view_k)`` (no grad), ``L_dscl = criterion(q, k, y, M)``
      (``DSCLLoss(alpha, beta, temperature)`` unless a ``criterion`` is injected);
    - teacher ``t_l``: ``roi_align`` (2x2, mean) of box ``l`` on the q-view feature
      map (``roi_aligned=False``: the official pooling), through the online head;
      student ``s_l = f(patch_l)``, all ``B * L`` patches in one forward that leaves
      BN running statistics unchanged; ``L_pbsd = PBSDLoss(s, t, k, M)``;
    - ``shuffle_bn``: the key batch is shuffled (across processes under DDP) for the
      EMA forward, as the official code does;
    - keys are L2-normalised and enqueued with their labels after the loss, in training
      steps only (:func:`~dscl_plugin.memory.updates_queue`); the losses use the queue as
      it is (no copy). The model holds the one queue: a ``criterion`` with a memory bank
      of its own is refused.

    With ``pbsd_weight=0`` patches and boxes may be None and no patch work is done.

    Args:
        backbone: images (B, 3, H, W) -> feature map (B, C, h, w), e.g. from
            :func:`~dscl_plugin.backbones.build_backbone`.
        feature_dim: C.
        proj_dim, queue_size, momentum: head output size, queue length K, EMA ``m``.
        alpha, beta, temperature: of the default ``DSCLLoss`` (give alpha or beta, not
            both); ``temperature`` is also the PBSD temperature.
        pbsd_weight: ``lambda`` of the PBSD term (0: DSCL only).
        gather_distributed: the queue gathers keys and labels from every process.
        shuffle_bn, roi_aligned, patch_passes: see above and :data:`PATCH_PASSES`.
        criterion: the contrastive loss, called as ``criterion(q, k, y, queue,
            queue_labels, queue_normalized=True)`` (with ``pull_gradient_ratio`` of the
            same arguments for ``track_grad_ratio``), e.g. ``SupConLoss()``; None builds
            ``DSCLLoss(alpha, beta, temperature)``. It must not own a memory bank.

    Raises:
        ValueError: ``momentum`` outside [0, 1], ``pbsd_weight < 0``, an unknown
            ``patch_passes``, ``alpha``/``beta`` given with a ``criterion``, or a
            ``criterion`` that owns a memory bank.

    - [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
      AAAI 2024, https://arxiv.org/abs/2403.06151

    Examples:
        >>> backbone, dim = build_backbone("resnet18", cifar_stem=True)
        >>> model = DSCLModel(backbone, dim, queue_size=4096)
        >>> model.update_momentum()
        >>> out = model(view_q, view_k, patches, boxes, labels)
        >>> out["loss"].backward()
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        proj_dim: int = 128,
        queue_size: int = 65536,
        momentum: float = 0.999,
        alpha: float | None = None,
        beta: float | None = None,
        temperature: float = 0.07,
        pbsd_weight: float = 1.5,
        gather_distributed: bool = False,
        shuffle_bn: bool = True,
        roi_aligned: bool = False,
        patch_passes: str = "batched",
        criterion: nn.Module | None = None,
    ) -> None:
        super().__init__()
        checks.within("momentum", momentum, 0.0, 1.0)
        checks.at_least("pbsd_weight", pbsd_weight, 0)
        checks.one_of("patch_passes", patch_passes, PATCH_PASSES)
        checks.require(
            criterion is None or (alpha is None and beta is None),
            "alpha/beta",
            "configure the default DSCLLoss: with a criterion leave them None "
            f"(got alpha={alpha}, beta={beta})",
        )
        checks.require(
            criterion is None or not owns_queue(criterion),
            "criterion",
            "must not own a memory bank: the model keeps the one queue (queue_size); build "
            "the loss with memory_bank_size=0",
        )
        self.backbone = backbone
        self.projection_head = MoCoProjectionHead(feature_dim, feature_dim, proj_dim)
        self.add_key_encoder(proj_dim, queue_size, momentum, gather_distributed, shuffle_bn)
        self.track_grad_ratio = False
        if criterion is None:
            criterion = DSCLLoss(alpha=alpha, beta=beta, temperature=temperature)
        self.criterion = criterion
        self.pbsd_criterion = PBSDLoss(temperature=temperature)
        self.pbsd_weight = pbsd_weight
        self.roi_aligned = roi_aligned
        self.patch_passes = patch_passes

    def embed(self, images: Tensor) -> Tensor:
        """(B, feature_dim) pooled features of the online backbone.

        For evaluation: call in eval mode (in train mode BatchNorm updates its
        running statistics and normalises with batch statistics).
        """
        return map_and_pooled(self.backbone, images)[1]

    def forward(
        self,
        view_q: Tensor,
        view_k: Tensor,
        patches: Tensor | None,
        boxes: Tensor | None,
        labels: Tensor,
    ) -> dict[str, Tensor]:
        """Args:
            view_q: (B, 3, H, W) query views.
            view_k: (B, 3, H, W) key views.
            patches: (B, L, 3, s, s) patches of the q views, or None if pbsd_weight == 0.
            boxes: (B, L, 4) their ``(x1, y1, x2, y2)`` boxes in q-view pixels, or None.
            labels: (B,) integer class ids.

        Returns:
            ``dict(loss=..., loss_dscl=..., loss_pbsd=...)`` (``loss_dscl`` is the
            ``criterion`` term, ``loss_pbsd`` 0 when ``pbsd_weight == 0``), plus the
            per-anchor ``grad_ratio``, ``grad_ratio_aligned`` and ``grad_ratio_valid`` (B,)
            when ``track_grad_ratio`` is set (``criterion.pull_gradient_ratio``, no gradient).
        """
        _check_inputs(view_q, view_k, labels)
        pbsd_inputs = _checked_patches(view_q, patches, boxes) if self.pbsd_weight > 0 else None
        feature_map, pooled = map_and_pooled(self.backbone, view_q)
        query = self.projection_head(pooled)
        key = self._key(view_k)
        queue, queue_labels = self.memory_bank.get()
        loss_dscl = self.criterion(query, key, labels, queue, queue_labels, queue_normalized=True)
        if pbsd_inputs is not None:
            loss_pbsd = self._pbsd(feature_map, view_q.shape[-2:], *pbsd_inputs, key, queue)
            loss = loss_dscl + self.pbsd_weight * loss_pbsd
        else:
            loss_pbsd = loss_dscl.new_zeros(())
            loss = loss_dscl
        diagnostics: dict[str, Tensor] = {}
        if self.track_grad_ratio:  # no gradient
            pull_ratio = getattr(self.criterion, "pull_gradient_ratio", None)
            if pull_ratio is None:
                raise InvalidValue(
                    "track_grad_ratio",
                    "needs a criterion with pull_gradient_ratio, got "
                    f"{type(self.criterion).__name__}",
                )
            ratio = pull_ratio(query.detach(), key, labels, queue, queue_labels)
            diagnostics = dict(
                grad_ratio=ratio.ratio,
                grad_ratio_aligned=ratio.aligned,
                grad_ratio_valid=ratio.valid,
            )
        if updates_queue(self, query):
            self.memory_bank.enqueue(key, labels, normalize=True)
        return dict(loss=loss, loss_dscl=loss_dscl, loss_pbsd=loss_pbsd, **diagnostics)

    def _pbsd(
        self,
        feature_map: Tensor,
        view_size: Sequence[int],
        patches: Tensor,
        boxes: Tensor,
        key: Tensor,
        queue: Tensor,
    ) -> Tensor:
        b, num_patches = patches.shape[:2]
        with torch.no_grad():  # the teacher distribution carries no gradient
            regions = pool_regions(feature_map.detach(), boxes, view_size, self.roi_aligned)
            teacher = self.projection_head(regions)
        if self.patch_passes == "separate":  # official: L passes of B patches, BN updates
            pooled = torch.stack(
                [map_and_pooled(self.backbone, patches[:, i])[1] for i in range(num_patches)],
                dim=1,
            ).flatten(0, 1)
        else:  # one pass of all B * L patches that leaves BN running statistics unchanged
            _, pooled = map_and_pooled(self.backbone, patches.flatten(0, 1), keep_buffers=True)
        student = self.projection_head(pooled).reshape(b, num_patches, -1)
        loss: Tensor = self.pbsd_criterion(student, teacher, key, queue, queue_normalized=True)
        return loss


class SupConModel(DSCLModel):
    """SupCon baseline (Khosla et al., 2020) with the DSCL harness (EMA keys, labelled
    queue): a :class:`DSCLModel` with ``criterion=SupConLoss(temperature)`` and
    ``pbsd_weight=0``.

    ``options`` are :class:`DSCLModel`'s keywords (``proj_dim``, ``queue_size``,
    ``momentum``, ``gather_distributed``, ``shuffle_bn``, ...) but the ones this class
    sets: ``criterion`` and ``pbsd_weight`` (``alpha``/``beta`` do not apply).
    ``forward`` has the ``DSCLModel`` signature; ``patches`` and ``boxes`` are ignored.
    Returns ``dict(loss, loss_dscl=loss, loss_pbsd=0)`` (and the ``grad_ratio`` entries
    when ``track_grad_ratio`` is set).

    Examples:
        >>> model = SupConModel(backbone, dim, temperature=0.1, queue_size=4096)
    """

    def __init__(
        self, backbone: nn.Module, feature_dim: int, temperature: float = 0.07, **options: Any
    ) -> None:
        super().__init__(
            backbone,
            feature_dim,
            temperature=temperature,
            pbsd_weight=0.0,
            criterion=SupConLoss(temperature=temperature),
            **options,
        )
