"""``data.pipeline: device``: the views of a batch of indices made on the training device
(:class:`~dscl_plugin.transforms.kornia_views.DeviceViews`), seeded by ``(seed, rank,
step)``. :class:`~dscl_plugin.training.data.DeviceTrainingData` applies them; the rule of
the config key is :func:`dscl_plugin.training.validation.check_pipeline`."""

import numpy as np
import torch
from torch import Tensor

from dscl_plugin.transforms.kornia_views import DeviceViews


def step_seed(seed: int, rank: int, step: int) -> int:
    """A 63-bit seed for the views of optimizer step ``step`` on process ``rank``
    (NumPy ``SeedSequence``: distinct, well-mixed streams for every triple)."""
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(2, np.uint64)[0] >> 1)


class BatchViews:
    """Views of a batch given as ``(indices, labels)``: gathers its uint8 images from
    ``images`` (moved once to the batch's device) and makes :class:`DeviceViews` views
    seeded by :func:`step_seed` ``(seed, rank, step)``, so the views of a step depend only
    on that triple (resumed runs redraw them exactly; torch's global RNG is left as it was).

    Returns what :class:`~dscl_plugin.transforms.PatchViewCollate` returns:
    ``(view_q, view_k, patches, boxes, labels)``.
    """

    def __init__(self, images: Tensor, views: DeviceViews, seed: int) -> None:
        self.images, self.views, self.seed = images, views, seed

    def __call__(
        self, indices: Tensor, labels: Tensor, step: int, rank: int = 0
    ) -> tuple[Tensor | None, ...]:
        if self.images.device != indices.device:
            self.images = self.images.to(indices.device)
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(step_seed(self.seed, rank, step))
            views = self.views(self.images[indices])
        return (*views, labels.long())
