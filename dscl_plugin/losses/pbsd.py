"""The patch-based self-distillation loss (PBSD) as a Lightly-style ``torch.nn.Module``.

Reference:
- [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
  AAAI 2024, https://arxiv.org/abs/2403.06151
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.functional.contrastive import compute_dtype
from dscl_plugin.functional.distillation import patch_distillation


class PBSDLoss(nn.Module):
    """Patch-based self-distillation loss (PBSD) [0].

    Each patch ``l`` of image ``i`` has a student feature ``s_il`` (the patch
    embedded as an image) and a teacher feature ``t_il`` (the same region pooled from
    the global view's feature map). Over the candidates ``[k_i, M]``:

    ``L = -1/(B L) sum_{i,l} sum_c softmax_c(t_il . c / T) log_softmax_c(s_il . c / T)``

    The teacher distribution is detached. With an empty queue the single candidate
    ``k_i`` makes the loss 0.

    - [0] Xuan & Zhang, Decoupled Contrastive Learning for Long-Tailed Recognition,
      AAAI 2024, https://arxiv.org/abs/2403.06151

    Examples:
        >>> loss = PBSDLoss()(patch_features, region_features, key, queue)
    """

    def __init__(self, temperature: float = 0.07, check_finite: bool = False) -> None:
        super().__init__()
        checks.temperature(temperature)
        self.temperature = temperature
        self.check_finite = check_finite

    def forward(
        self,
        patch_features: Tensor,
        region_features: Tensor,
        key: Tensor,
        queue: Tensor | None = None,
        queue_normalized: bool = False,
    ) -> Tensor:
        """Args:
        patch_features: (B, L, D) student features of the patches.
        region_features: (B, L, D) teacher features of the same regions.
        key: (B, D) each image's own key.
        queue: optional (K, D) memory entries.
        queue_normalized: the queue rows have unit norm already (used as they are).
        """
        self._check_inputs(patch_features, region_features, key, queue)
        dtype = compute_dtype(patch_features)
        with torch.autocast(device_type=patch_features.device.type, enabled=False):
            k = F.normalize(key.to(dtype), dim=-1)
            m = None
            if queue is not None and queue.shape[0] > 0:
                m = queue.to(device=k.device, dtype=dtype)
                m = m if queue_normalized else F.normalize(m, dim=-1)
            student = F.normalize(patch_features.to(dtype), dim=-1) / self.temperature
            teacher = F.normalize(region_features.detach().to(dtype), dim=-1) / self.temperature
            loss = patch_distillation(student, teacher, k, m)
        return loss.mean()

    def _check_inputs(
        self,
        patch_features: Tensor,
        region_features: Tensor,
        key: Tensor,
        queue: Tensor | None,
    ) -> None:
        checks.features("patch_features", patch_features, 3)
        checks.features("region_features", region_features, 3)
        checks.features("key", key, 2)
        checks.require(
            region_features.shape == patch_features.shape,
            "region_features",
            "must have the shape of patch_features (B, L, D), got patch_features "
            f"{tuple(patch_features.shape)} and region_features {tuple(region_features.shape)}",
        )
        b, num_patches, d = patch_features.shape
        checks.require(
            b > 0 and num_patches > 0,
            "patch_features",
            f"must hold B >= 1 images with L >= 1 patches each, got shape "
            f"{tuple(patch_features.shape)} (B, L, D); without patches skip PBSD "
            "(pbsd_weight=0)",
        )
        checks.require(
            key.shape == (b, d),
            "key",
            f"must have shape (B, D) = {(b, d)} to match patch_features "
            f"{tuple(patch_features.shape)}, got {tuple(key.shape)}",
        )
        if queue is not None:
            checks.queue(queue, d)
        if self.check_finite:
            checks.finite(
                patch_features=patch_features,
                region_features=region_features,
                key=key,
                queue=queue,
            )
