"""``data.pipeline: device``: the rule of the config key, and the views of a batch of indices
made on the training device (:class:`~dscl_plugin.transforms.kornia_views.DeviceViews`),
seeded by ``(seed, rank, step)``. :class:`~dscl_plugin.training.data.TrainingData` applies
them."""

import importlib.util

import numpy as np
import torch
from torch import Tensor

from dscl_plugin import checks
from dscl_plugin.transforms.kornia_views import KORNIA_MISSING, DeviceViews

PIPELINES = ("loader", "device")


def check_pipeline(pipeline: str, in_memory: bool) -> None:
    """``pipeline`` is ``loader`` or ``device``; ``device`` needs an in-memory dataset and Kornia.

    Raises:
        InvalidValue: named ``pipeline``, with the fix.
    """
    checks.one_of("pipeline", pipeline, PIPELINES)
    if pipeline != "device":
        return
    checks.require(
        in_memory,
        "pipeline",
        "'device' works only for the in-memory datasets (digits_lt, fashion_mnist_lt, "
        "cifar10_lt, cifar100_lt); use data.pipeline=loader for file datasets",
    )
    installed = importlib.util.find_spec("kornia") is not None
    checks.require(installed, "pipeline", f"'device' {KORNIA_MISSING}")


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
