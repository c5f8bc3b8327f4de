"""Class-balanced sampling for the linear probe."""

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


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
        targets = torch.as_tensor(targets, dtype=torch.long)
        if targets.ndim != 1 or targets.numel() == 0:
            raise ValueError(
                f"targets must be a non-empty 1-D sequence, got shape {tuple(targets.shape)}"
            )
        num_samples = len(targets) if num_samples is None else num_samples
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
        self.order = torch.argsort(targets, stable=True)  # sample indices grouped by class
        _, counts = torch.unique_consecutive(targets[self.order], return_counts=True)
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
