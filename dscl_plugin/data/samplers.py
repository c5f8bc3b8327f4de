"""Class-balanced sampling for the linear probe."""

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler

from dscl_plugin import checks


class ClassBalancedSampler(Sampler[int]):
    """Draw a class uniformly among the classes present, then one of its samples uniformly.

    Every index has probability ``1 / (K * n_{y_i})`` per draw (K = classes present), so
    each class is drawn ``num_samples / K`` times in expectation. Sampling is with
    replacement; a new set of ``num_samples`` indices is drawn at every iteration.

    Args:
        targets: the label of every sample.
        num_samples: indices per iteration (default ``len(targets)``).
        generator: torch generator (default: one seeded from the global torch RNG).
    """

    def __init__(
        self,
        targets: Sequence[int],
        num_samples: int | None = None,
        generator: torch.Generator | None = None,
    ) -> None:
        labels = torch.as_tensor(targets, dtype=torch.long)
        checks.require(
            labels.ndim == 1 and labels.numel() > 0,
            "targets",
            f"must be a non-empty 1-D sequence, got shape {tuple(labels.shape)}",
        )
        num_samples = len(labels) if num_samples is None else num_samples
        checks.integer("num_samples", num_samples, 1)
        self.order = torch.argsort(labels, stable=True)  # sample indices grouped by class
        _, counts = torch.unique_consecutive(labels[self.order], return_counts=True)
        self.counts = counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.num_samples = num_samples
        self.generator = generator

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        generator = self.generator
        if generator is None:
            seed = int(torch.empty((), dtype=torch.int64).random_())
            generator = torch.Generator().manual_seed(seed)
        cls = torch.randint(len(self.counts), (self.num_samples,), generator=generator)
        u = torch.rand(self.num_samples, generator=generator, dtype=torch.float64)
        offset = torch.minimum((u * self.counts[cls]).long(), self.counts[cls] - 1)
        yield from self.order[self.starts[cls] + offset].tolist()
