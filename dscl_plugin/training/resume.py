"""Exact resume: the RNG states and the train loader's position in every checkpoint, and a
data loader that continues inside an epoch."""

import random
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any, Protocol, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader
from torch.utils.data.dataloader import _BaseDataLoaderIter

LOADER_GENERATOR = "train_loader"  # the name of the loader's generator in ``rng_states``
T = TypeVar("T")  # a loader's dataset item


def capture_rng(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    """The Python, NumPy, torch (and CUDA, once initialised) RNG states and the states of
    the named ``generators``, as tensors and plain containers (``weights_only`` loads)."""
    numpy_state = np.random.get_state(legacy=True)
    assert isinstance(numpy_state, tuple)  # legacy=True: the MT19937 tuple
    _, keys, pos, has_gauss, cached = numpy_state
    version, mt_state, gauss = random.getstate()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    """Sets the RNG states :func:`capture_rng` returned."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


class LoaderPosition:
    """Where a :class:`ResumableDataLoader` stands: the generator state its current epoch
    started from and the batches the next ``iter()`` skips. Shared with the copies
    Lightning makes of the loader (e.g. to add a ``DistributedSampler``)."""

    def __init__(self) -> None:
        self.epoch_start_state: torch.Tensor | None = None
        self.skip_batches = 0


class SizedIterable(Protocol):
    def __iter__(self) -> Iterator[Any]: ...
    def __len__(self) -> int: ...


class _SkipFirst:
    """``sampler`` without its first ``skip`` items (same length, so Lightning's counts
    of the epoch stay those of the full epoch)."""

    def __init__(self, sampler: SizedIterable, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator[Any]:
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler)


class ResumableDataLoader(DataLoader[T]):
    """A ``DataLoader`` (with a ``generator``) that can resume inside an epoch.

    Each ``iter()`` records in ``position`` the generator state it starts from (which
    fixes the epoch's shuffling and worker seeds) and skips the first
    ``position.skip_batches`` batches at the sampler level (skipped images are never
    loaded). :class:`ExactResume` sets both from a checkpoint.
    """

    def __init__(self, *args: Any, position: LoaderPosition | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.generator is None:
            raise ValueError("ResumableDataLoader needs generator=torch.Generator().")
        self.position = LoaderPosition() if position is None else position
        self._skipping = 0

    def __iter__(self) -> _BaseDataLoaderIter:
        assert self.generator is not None
        self.position.epoch_start_state = self.generator.get_state()
        self._skipping, self.position.skip_batches = self.position.skip_batches, 0
        try:
            return super().__iter__()
        finally:
            self._skipping = 0

    @property
    def _index_sampler(self) -> Any:
        sampler = super()._index_sampler
        if self._skipping and self._auto_collation:
            return _SkipFirst(sampler, self._skipping)
        return sampler


class ExactResume(pl.Callback):
    """Makes a resumed run continue as an uninterrupted one.

    Every checkpoint gets ``rng_states`` (:func:`capture_rng` with the train loader's
    ``generator``); a checkpoint written inside an epoch also gets ``loader_position``:
    the generator state that epoch started from and the batches done. On resume, before
    Lightning creates the first data iterator, the RNG states come back and the loader
    (whose ``position`` is given) replays that epoch's order without the batches done,
    so training continues at the right step with the images an uninterrupted run would
    see next. Views seeded by the step (``data.pipeline: device``) are then bit-identical;
    views drawn from the global RNG (DataLoader workers) are drawn from the restored
    state, not the very same ones.
    """

    def __init__(self, generator: torch.Generator, position: LoaderPosition) -> None:
        self.generator, self.position = generator, position

    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint["rng_states"] = capture_rng({LOADER_GENERATOR: self.generator})
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        done = progress.processed  # type: ignore[attr-defined]  # a _ProcessedTracker, typed as its base
        if 0 < done < trainer.num_training_batches:
            checkpoint["loader_position"] = {
                "epoch_start_state": self.position.epoch_start_state,
                "batches_done": done,
            }

    def on_load_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        if "rng_states" in checkpoint:
            restore_rng(checkpoint["rng_states"], {LOADER_GENERATOR: self.generator})
        position = checkpoint.get("loader_position")
        if position is not None:
            self.generator.set_state(position["epoch_start_state"])
            self.position.skip_batches = int(position["batches_done"])
