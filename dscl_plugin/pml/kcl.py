"""``KCLLoss`` and ``TSCLoss`` for pytorch-metric-learning: ``BaseMetricLossFunction`` s over
PML's MoCo-style call, each computing with the Lightly-style loss of the same name."""

import torch
from pytorch_metric_learning.distances import CosineSimilarity
from pytorch_metric_learning.losses import BaseMetricLossFunction
from pytorch_metric_learning.reducers import MeanReducer
from pytorch_metric_learning.utils import common_functions as c_f
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.errors import InvalidValue
from dscl_plugin.losses import kcl, tsc
from dscl_plugin.pml.layouts import IndicesTuple, LossDict, partner_index

MOCO_CALL = (
    "loss(queries, labels, ref_emb=cat([keys, memory]), ref_labels=cat([labels, "
    "memory_labels])), ref_emb[i] the key of queries[i]"
)


class _MoCoCallLoss(BaseMetricLossFunction):
    """A Lightly-style queue loss (``anchor_losses(query, key, labels, queue,
    queue_labels)``) under PML's call: ``embeddings`` the queries, ``ref_emb`` their keys
    then the memory, per-anchor losses for the reducer."""

    def __init__(self, loss: kcl.KCLLoss, **kwargs: object) -> None:
        super().__init__(**kwargs)
        checks.require(
            isinstance(self.distance, CosineSimilarity),
            "distance",
            f"must be CosineSimilarity (the loss compares L2-normalised features), got "
            f"{type(self.distance).__name__}",
        )
        self.loss = loss

    def compute_loss(
        self,
        embeddings: Tensor,
        labels: Tensor | None,
        indices_tuple: IndicesTuple | None,
        ref_emb: Tensor,
        ref_labels: Tensor | None,
    ) -> LossDict:
        name = type(self).__name__
        if ref_emb is embeddings or labels is None or ref_labels is None:
            raise InvalidValue(
                "ref_emb",
                f"and ref_labels must be given with labels: {name} takes the MoCo call "
                f"{MOCO_CALL} (two views without a memory: ref_emb = the other view)",
            )
        checks.require(
            indices_tuple is None,
            "indices_tuple",
            f"must be None: {name} draws its own positives from ref_emb",
        )
        checks.features("embeddings", embeddings, 2)
        checks.labels("labels", labels, embeddings.shape[0])
        checks.features("ref_emb", ref_emb, 2)
        checks.labels("ref_labels", ref_labels, ref_emb.shape[0])
        partner_index(embeddings, labels, ref_emb, ref_labels)  # the keys come first
        n = embeddings.shape[0]
        queue = ref_emb[n:] if ref_emb.shape[0] > n else None
        queue_labels = ref_labels[n:] if queue is not None else None
        anchor_losses = self.loss.anchor_losses(
            embeddings, ref_emb[:n], labels, queue, queue_labels
        )
        return {
            "loss": {
                "losses": anchor_losses,
                "indices": c_f.torch_arange_from_size(embeddings),
                "reduction_type": "element",
            }
        }

    def get_default_reducer(self) -> MeanReducer:
        return MeanReducer()

    def get_default_distance(self) -> CosineSimilarity:
        return CosineSimilarity()


class KCLLoss(_MoCoCallLoss):
    """KCL (:class:`dscl_plugin.losses.KCLLoss`) as a PML loss, in PML's MoCo-style call
    ``loss(queries, labels, ref_emb=cat([keys, memory]), ref_labels=cat([labels,
    memory_labels]))``: ``ref_emb[i]`` is the key (other view) of ``queries[i]``, the rows
    after the first B are the queue. The per-anchor losses go to the reducer (default
    ``MeanReducer``: the value of ``dscl_plugin.losses.KCLLoss``).

    Args:
        num_positives, temperature, generator: as :class:`dscl_plugin.losses.KCLLoss`.
        **kwargs: PML options: ``reducer``, ``embedding_regularizer``,
            ``collect_stats``; ``distance`` must stay ``CosineSimilarity``.

    Raises:
        ValueError: a call without ``ref_emb`` (PML's two-view layout: KCL needs the
            keys apart from the queries), with an ``indices_tuple``, or another distance.
    """

    def __init__(
        self,
        num_positives: int = 6,
        temperature: float = 0.07,
        generator: torch.Generator | None = None,
        **kwargs: object,
    ) -> None:
        super().__init__(kcl.KCLLoss(num_positives, temperature, generator=generator), **kwargs)


class TSCLoss(_MoCoCallLoss):
    """TSC (:class:`dscl_plugin.losses.TSCLoss`) as a PML loss, in the call of
    :class:`KCLLoss`. Its targets and class centroids are buffers of the inner ``loss``
    (in the state dict); the centroids move in training mode when the queries carry
    gradient.

    Args:
        num_classes, dim, num_positives, temperature, target_weight, target_repeat,
            separate_targets, seed, generator: as :class:`dscl_plugin.losses.TSCLoss`.
        **kwargs: PML options, as :class:`KCLLoss`.
    """

    def __init__(
        self,
        num_classes: int,
        dim: int = 128,
        num_positives: int = 6,
        temperature: float = 0.07,
        target_weight: float = 0.2,
        target_repeat: int = 1,
        separate_targets: bool = True,
        seed: int = 0,
        generator: torch.Generator | None = None,
        **kwargs: object,
    ) -> None:
        loss = tsc.TSCLoss(
            num_classes,
            dim,
            num_positives,
            temperature,
            target_weight,
            target_repeat,
            separate_targets,
            seed=seed,
            generator=generator,
        )
        super().__init__(loss, **kwargs)
