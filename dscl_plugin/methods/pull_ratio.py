"""The harness of the methods on :class:`~dscl_plugin.models.DSCLModel` (DSCL and
SupCon): the model's forward on a batch of query and key views, and with
``trainer.log_grad_ratio`` the pull-gradient ratio (paper Fig. 2) of every anchor,
summed per class over an epoch and logged per class and shot group."""

import torch
from torch import Tensor

from dscl_plugin.data.shots import shot_groups
from dscl_plugin.methods.momentum import MomentumMethod
from dscl_plugin.methods.views import Batch
from dscl_plugin.models.dscl_model import DSCLModel


class PullRatioMethod(MomentumMethod):
    """A :class:`~dscl_plugin.methods.MomentumMethod` whose model is a
    :class:`~dscl_plugin.models.DSCLModel` (its ``forward(view_q, view_k, patches, boxes,
    labels)``, ``track_grad_ratio`` and ``grad_ratio`` outputs)."""

    reports_grad_ratio = True
    model: DSCLModel

    def forward_model(self, batch: Batch) -> dict[str, Tensor]:
        """The model's outputs for the batch's query and key views (and patches); with
        ``trainer.log_grad_ratio`` the anchors' ratios are added to the epoch's sums."""
        view_q, view_k = batch.views
        out: dict[str, Tensor] = self.model(
            view_q, view_k, batch.patches, batch.boxes, batch.labels
        )
        if self.model.track_grad_ratio:
            valid = out["grad_ratio_valid"].to(torch.float64)
            rows = (out["grad_ratio"] * valid, out["grad_ratio_aligned"] * valid, valid)
            for sums, values in zip(self._ratio_sums, rows):
                sums.index_add_(0, batch.labels.long(), values.to(torch.float64))
        return out

    def on_train_start(self) -> None:
        """With ``trainer.log_grad_ratio``: the model returns the pull-gradient ratio of
        every anchor, summed here per class over each epoch (:meth:`on_train_epoch_end`
        logs it).

        Raises:
            ValueError: ``trainer.log_grad_ratio`` without the training class counts.
        """
        super().on_train_start()
        self.model.track_grad_ratio = self.config.trainer.log_grad_ratio
        if self.model.track_grad_ratio and self.class_counts is None:
            raise ValueError(
                "trainer.log_grad_ratio: the method was built without class_counts (needed "
                "for per-class and shot-group ratios); set trainer.log_grad_ratio=false."
            )

    def on_train_epoch_start(self) -> None:
        if self.model.track_grad_ratio:  # rows: sum of ratio, sum of aligned value, anchors
            assert self.class_counts is not None  # checked at the start
            self._ratio_sums = torch.zeros(
                3, len(self.class_counts), dtype=torch.float64, device=self.device
            )

    def on_train_epoch_end(self) -> None:
        """Logs ``grad_ratio/{overall,many,medium,few,class_<c>}`` (mean over the epoch's
        anchors that have a class positive) and ``grad_ratio_aligned/...``, the value for
        aligned features (``|P_i|`` for SupCon, ``(1 - alpha) / alpha`` for DSCL)."""
        if not self.model.track_grad_ratio:
            return
        assert self.class_counts is not None  # checked at the start
        sums = self._ratio_sums
        if self.trainer.world_size > 1:
            sums = self.trainer.strategy.reduce(sums, reduce_op="sum")
        sums = sums.cpu()
        e, counts = self.config.eval, list(self.class_counts)
        groups = shot_groups(counts, e.many_threshold, e.few_threshold)
        selections = {"overall": list(range(len(counts))), **groups}
        selections.update({f"class_{c}": [c] for c in range(len(counts))})
        values = {}
        for name, classes in selections.items():
            ratio, aligned, anchors = sums[:, classes].sum(dim=1).tolist()
            if anchors > 0:
                values[f"grad_ratio/{name}"] = ratio / anchors
                values[f"grad_ratio_aligned/{name}"] = aligned / anchors
        self.log_dict(values, on_step=False, on_epoch=True)
