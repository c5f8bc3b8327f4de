"""PaCo (Cui et al., ICCV 2021): MoCo with a labelled queue whose class centres are a
linear classifier on the query's backbone feature (:class:`~dscl_plugin.losses.PaCoLoss`);
the term ``loss_paco``, and the classifier is the method's own (scored by stage 2).

- [0] Cui et al., Parametric Contrastive Learning, ICCV 2021,
  https://arxiv.org/abs/2107.12028
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from lightly.models.modules.heads import ProjectionHead
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.losses.paco import PaCoLoss
from dscl_plugin.memory import updates_queue
from dscl_plugin.methods.momentum import MomentumMethod
from dscl_plugin.methods.views import Batch, Views
from dscl_plugin.models.dscl_model import MomentumQueueModel
from dscl_plugin.models.feature_maps import map_and_pooled
from dscl_plugin.training.registry import register_method


@dataclass(frozen=True)
class PaCoOptions:
    """``method_options.paco``, the official ``--alpha``, ``--beta``, ``--gamma`` and
    ``supt``: ``alpha`` the weight of each same-class contrastive positive (official
    ImageNet-LT and iNaturalist runs 0.05, CIFAR-100-LT runs 0.01), ``beta`` the weight
    of the own class centre, ``gamma`` the denominator weight of the contrastive entries,
    ``supervised_temperature`` the temperature of the class logits (``supt``, 1)."""

    official_names: ClassVar[dict[str, str]] = {"supt": "supervised_temperature"}
    alpha: float = 0.05
    beta: float = 1.0
    gamma: float = 1.0
    supervised_temperature: float = 1.0

    def __post_init__(self) -> None:
        checks.at_least("alpha", self.alpha, 0)
        checks.positive("beta", self.beta)
        checks.at_least("gamma", self.gamma, 0)
        checks.positive("supervised_temperature", self.supervised_temperature)


def paco_projection_head(feature_dim: int, proj_dim: int) -> ProjectionHead:
    """The official MLP head (``mlp=True`` in ``PaCo/LT/moco/builder.py``):
    ``Linear(D, D) -> BatchNorm1d -> ReLU -> Linear(D, proj_dim)``, both with bias."""
    return ProjectionHead(
        [
            (feature_dim, feature_dim, nn.BatchNorm1d(feature_dim), nn.ReLU(), True),
            (feature_dim, proj_dim, None, None, True),
        ]
    )


class PaCoModel(MomentumQueueModel):
    """PaCo [0]'s training model: ``loss = PaCoLoss(q, k, y, z, M)``.

    - online: pooled backbone feature ``h = f(view_q)``, the query ``q = g(h)`` (the MLP
      head :func:`paco_projection_head`) and the class logits ``z = W h + b`` of the
      linear ``classifier`` (PaCo's learnable class centres; ``h`` not normalised, the
      official ``--normalize False``); the gradient of ``z`` reaches the backbone;
    - EMA copy of backbone and head (``theta_m <- m theta_m + (1 - m) theta``): the key
      ``k = g_m(f_m(view_k))``, without gradient, with shuffle-BN when ``shuffle_bn``;
    - the loss sees the queue as it was before the step; the L2-normalised keys enter it
      with their labels after the loss (training steps only,
      :func:`~dscl_plugin.memory.updates_queue`).

    At test time the classifier's logits ``z`` (without the log prior) are the
    prediction, as the official ``MoCo._inference``.

    Args:
        backbone: images (B, 3, H, W) -> feature map (B, D, h, w).
        feature_dim: D.
        class_counts: training images of each class (the log prior of the loss; C).
        proj_dim, queue_size, momentum: head output size, queue length K, EMA ``m``.
        temperature, alpha, beta, gamma, supervised_temperature: of :class:`PaCoLoss`.
        gather_distributed: the queue gathers keys and labels from every process.
        shuffle_bn: MoCo's shuffle-BN for the key forward.

    Raises:
        ValueError: ``momentum`` outside [0, 1], or what :class:`PaCoLoss` refuses.

    - [0] Cui et al., Parametric Contrastive Learning, ICCV 2021,
      https://arxiv.org/abs/2107.12028

    Examples:
        >>> model = PaCoModel(backbone, 512, class_counts=[500, 120, 30, 5])
        >>> model.update_momentum()
        >>> model(view_q, view_k, labels)["loss"].backward()
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_dim: int,
        class_counts: Sequence[int],
        proj_dim: int = 128,
        queue_size: int = 8192,
        momentum: float = 0.999,
        temperature: float = 0.2,
        alpha: float = 0.05,
        beta: float = 1.0,
        gamma: float = 1.0,
        supervised_temperature: float = 1.0,
        gather_distributed: bool = False,
        shuffle_bn: bool = True,
    ) -> None:
        super().__init__()
        checks.within("momentum", momentum, 0.0, 1.0)
        self.backbone = backbone
        self.projection_head = paco_projection_head(feature_dim, proj_dim)
        self.classifier = nn.Linear(feature_dim, len(class_counts))
        self.add_key_encoder(proj_dim, queue_size, momentum, gather_distributed, shuffle_bn)
        self.criterion = PaCoLoss(
            class_counts,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
            temperature=temperature,
            supervised_temperature=supervised_temperature,
        )

    def forward(self, view_q: Tensor, view_k: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """Args:
            view_q: (B, 3, H, W) query views.
            view_k: (B, 3, H, W) key views of the same images.
            labels: (B,) class ids in ``[0, C)``.

        Returns:
            ``dict(loss=..., class_logits=...)``: the PaCo loss and the (B, C) logits of
            the classifier on the queries.
        """
        pooled = map_and_pooled(self.backbone, view_q)[1]
        query = self.projection_head(pooled)
        class_logits = self.classifier(pooled)
        key = self._key(view_k)
        queue, queue_labels = self.memory_bank.get()
        loss = self.criterion(
            query, key, labels, class_logits, queue, queue_labels, queue_normalized=True
        )
        if updates_queue(self, query):
            self.memory_bank.enqueue(key, labels, normalize=True)
        return dict(loss=loss, class_logits=class_logits)


@register_method("paco")
class PaCoMethod(MomentumMethod):
    """PaCo [0] on :class:`PaCoModel`: two views of the query augmentation (the nearest
    kind to the official views, docs/methods.md), the PaCo loss of the query against its
    key, the labelled queue and the class centres; the classifier is its own.

    - [0] Cui et al., Parametric Contrastive Learning, ICCV 2021,
      https://arxiv.org/abs/2107.12028
    """

    Options = PaCoOptions
    label = "PaCo"
    needs_class_counts = True
    options: PaCoOptions
    model: PaCoModel

    def views(self) -> Views:
        return Views(("query", "query"))

    def build_model(self, backbone: nn.Module, feature_dim: int) -> PaCoModel:
        m, o = self.config.model, self.options
        assert self.class_counts is not None  # needs_class_counts
        return PaCoModel(
            backbone,
            feature_dim,
            self.class_counts,
            temperature=m.temperature,
            alpha=o.alpha,
            beta=o.beta,
            gamma=o.gamma,
            supervised_temperature=o.supervised_temperature,
            **self.queue_model_args(),
        )

    def step(self, batch: Batch) -> dict[str, Tensor]:
        view_q, view_k = batch.views
        loss = self.model(view_q, view_k, batch.labels)["loss"]
        return {"loss": loss, "loss_paco": loss}

    @property
    def own_classifier(self) -> nn.Module:
        """The linear classifier on the pooled backbone features; its logits without the
        log prior are the official test-time prediction."""
        return self.model.classifier
