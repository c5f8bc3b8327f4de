"""Logit-adjusted cross-entropy as a ``torch.nn.Module``.

Reference:
- [0] Menon et al., Long-Tail Learning via Logit Adjustment, ICLR 2021,
  https://arxiv.org/abs/2007.07314
"""

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.losses.classes import class_ids, log_prior


class LogitAdjustLoss(nn.Module):
    """Cross-entropy on logits shifted by the log class prior [0], the classifier loss BCL
    trains with (official ``FlamieZhu/Balanced-Contrastive-Learning``,
    ``loss/logitadjust.py`` ``LogitAdjust``):

    ``L = mean_i CE(z_i + tau log pi, y_i)``, ``pi_c = n_c / sum_c' n_c'``

    with ``n_c`` the training images of class ``c``.

    Attributes:
        class_counts: ``n_c`` of every class (C numbers > 0).
        tau: the weight of the log prior, default 1 (official).

    Raises:
        ValueError: missing or zero ``class_counts``, or ``tau < 0``, naming the argument.

    Examples:
        >>> loss_fn = LogitAdjustLoss(class_counts=[500, 200, 50, 5])
        >>> loss = loss_fn(classifier(features), labels)
    """

    log_prior: Tensor

    def __init__(self, class_counts: Sequence[int] | Tensor, tau: float = 1.0) -> None:
        super().__init__()
        checks.at_least("tau", tau, 0)
        self.tau = tau
        self.register_buffer("log_prior", log_prior(class_counts))  # float64

    def forward(self, logits: Tensor, labels: Tensor) -> Tensor:
        """Mean over the B rows.

        Args:
            logits: (B, C) classifier outputs.
            labels: (B,) class ids in ``[0, C)``.

        Raises:
            ValueError: logits with another number of classes than ``class_counts``, or
                labels of the wrong shape or out of range, naming them.
        """
        num_classes = self.log_prior.shape[0]
        checks.require(
            logits.ndim == 2 and logits.shape[1] == num_classes,
            "logits",
            f"must have shape (B, {num_classes}) (one column per class of class_counts), "
            f"got {tuple(logits.shape)}",
        )
        checks.labels("labels", labels, logits.shape[0])
        class_ids("labels", labels, num_classes)
        adjusted = logits + self.tau * self.log_prior.to(logits)
        return F.cross_entropy(adjusted, labels.long())
