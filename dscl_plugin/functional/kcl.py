"""The KCL loss (Kang et al., ICLR 2021): each query against its own key and a labelled
queue, with ``k`` positives per anchor drawn from its class's queue rows.

- [0] Kang et al., Exploring Balanced Feature Spaces for Representation Learning,
  ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from dscl_plugin import checks


def sample_queue_positives(
    same_class: Tensor, num_positive: int, generator: torch.Generator | None = None
) -> Tensor:
    """(B, K) bool: for each anchor (row), ``num_positive`` of its True entries drawn
    uniformly without replacement, or all of them when it has fewer or when
    ``num_positive == 0``.

    Each entry gets a key ``u ~ U(0, 1)`` (from ``generator``, else torch's default
    generator of the mask's device); the ``num_positive`` largest keys among an anchor's
    entries are a uniform subset of them.

    Raises:
        ValueError: ``num_positive < 0`` or ``same_class`` not a 2-D bool tensor.
    """
    checks.integer("num_positive", num_positive, 0)
    checks.require(
        same_class.ndim == 2 and same_class.dtype == torch.bool,
        "same_class",
        f"must be a (B, K) bool tensor, got {same_class.dtype} {tuple(same_class.shape)}",
    )
    if num_positive == 0 or same_class.shape[1] == 0:
        return same_class.clone()
    device = same_class.device if generator is None else generator.device
    keys = torch.rand(same_class.shape, generator=generator, device=device)
    keys = keys.to(same_class.device).masked_fill_(~same_class, -1.0)
    top = keys.topk(min(num_positive, same_class.shape[1]), dim=1)
    chosen = torch.zeros_like(same_class)
    return chosen.scatter_(1, top.indices, top.values >= 0)


def kcl_cross_entropy(
    query: Tensor,
    key: Tensor,
    queue: Tensor,
    queue_positives: Tensor,
    temperature: float,
    queue_normalized: bool = False,
) -> Tensor:
    """Mean over the B anchors of ``-1 / |P_i| sum_{c in P_i} log p_ic`` with

    ``p_i = softmax([q_i . k_i, q_i . M_1, ..., q_i . M_K] / T)``

    over the own key and every queue row (positives in the denominator too), and
    ``P_i`` the own key and the queue rows marked in ``queue_positives`` [0].

    Args:
        query: (B, D) online features (normalised here).
        key: (B, D) keys of the other view (normalised here).
        queue: (K, D) queue rows (K may be 0), normalised here unless
            ``queue_normalized`` (then copied, unless it needs a gradient: the backward
            pass needs them as they are now).
        queue_positives: (B, K) bool, each anchor's class positives in the queue.
        temperature: T > 0.

    - [0] Kang et al., Exploring Balanced Feature Spaces for Representation Learning,
      ICLR 2021, https://openreview.net/forum?id=OqtLIabPTit
    """
    query, key = F.normalize(query, dim=1), F.normalize(key, dim=1)
    if not queue_normalized:
        queue = F.normalize(queue, dim=1)
    elif not queue.requires_grad:  # a memory bank's rows, enqueued before the backward pass
        queue = queue.clone()
    own = (query * key).sum(dim=1, keepdim=True)
    log_prob = (torch.cat([own, query @ queue.T], dim=1) / temperature).log_softmax(dim=1)
    positives = queue_positives.to(log_prob.dtype)
    positive_sum = log_prob[:, 0] + (log_prob[:, 1:] * positives).sum(dim=1)
    return -(positive_sum / (1.0 + positives.sum(dim=1))).mean()
