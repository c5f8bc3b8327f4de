"""Exact resume: RNG state in every checkpoint, and a data loader that continues inside
an epoch."""

import random
from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader


def _capture_rng(generators: Mapping[str, torch.Generator]) -> dict[str, Any]:
    version, mt_state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(mt_state), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "generators": {name: g.get_state() for name, g in generators.items()},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], generators: Mapping[str, torch.Generator]) -> None:
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    for name, generator in generators.items():
        generator.set_state(state["generators"][name])


class RNGStateCallback(pl.Callback):
    """Saves the Python, NumPy, torch (and CUDA) RNG states and the named generators
    (e.g. the train loader's shuffling generator) in every checkpoint and restores them
    on resume, before Lightning creates the first data iterator, so a resumed run draws
    the same batches and augmentations as an uninterrupted one."""

    def __init__(self, generators: Mapping[str, torch.Generator] | None = None) -> None:
        self.generators = dict(generators or {})

    def on_save_checkpoint(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        checkpoint: dict[str, Any],
    ) -> None:
        checkpoint["rng_states"] = _capture_rng(self.generators)

    def on_load_checkpoint(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        checkpoint: dict[str, Any],
    ) -> None:
        if "rng_states" in checkpoint:
            _restore_rng(checkpoint["rng_states"], self.generators)


class _SkipFirst:
    """``sampler`` without its first ``skip`` items (same length, so Lightning's counts
    of the epoch stay those of the full epoch)."""

    def __init__(self, sampler: Iterable, skip: int) -> None:
        self.sampler, self.skip = sampler, skip

    def __iter__(self) -> Iterator:
        return islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return len(self.sampler)


class LoaderPosition:
    """Where a :class:`ResumableDataLoader` stands: the generator state its current epoch
    started from and the batches the next ``iter()`` skips. Shared with the copies
    Lightning makes of the loader (e.g. to add a ``DistributedSampler``)."""

    def __init__(self) -> None:
        self.epoch_start_state: torch.Tensor | None = None
        self.skip_batches = 0


class ResumableDataLoader(DataLoader):
    """A ``DataLoader`` (with a ``generator``) that can resume inside an epoch.

    Each ``iter()`` records in ``position`` the generator state it starts from (which
    fixes the epoch's shuffling and worker seeds); :meth:`resume_at` restores such a
    state and makes the next ``iter()`` skip the batches already trained on, at the
    sampler level (skipped images are never loaded). Used through
    :class:`MidEpochResumeCallback`.
    """

    def __init__(self, *args: Any, position: LoaderPosition | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.generator is None:
            raise ValueError("ResumableDataLoader needs generator=torch.Generator().")
        self.position = LoaderPosition() if position is None else position
        self._skipping = 0

    def resume_at(self, epoch_start_state: torch.Tensor, batches_done: int) -> None:
        """Start the next epoch from ``epoch_start_state`` without its first batches."""
        self.generator.set_state(epoch_start_state)
        self.position.skip_batches = batches_done

    def __iter__(self) -> Iterator:
        self.position.epoch_start_state = self.generator.get_state()
        self._skipping, self.position.skip_batches = self.position.skip_batches, 0
        try:
            return super().__iter__()
        finally:
            self._skipping = 0

    @property
    def _index_sampler(self) -> Iterable:
        sampler = super()._index_sampler
        if self._skipping and self._auto_collation:
            return _SkipFirst(sampler, self._skipping)
        return sampler


class MidEpochResumeCallback(pl.Callback):
    """Saves, in a checkpoint written inside an epoch, the loader's epoch-start generator
    state and the number of batches done; on resume the loader replays that epoch's order
    without those batches, so training continues at the right step with the images an
    uninterrupted run would see next (their augmentations are drawn from the restored RNG
    state, so they are not bit-identical). Put it after :class:`RNGStateCallback`."""

    def __init__(self, loader: ResumableDataLoader) -> None:
        self.loader = loader

    def on_save_checkpoint(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        checkpoint: dict[str, Any],
    ) -> None:
        done = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        if 0 < done < trainer.num_training_batches:
            checkpoint["loader_position"] = {
                "epoch_start_state": self.loader.position.epoch_start_state,
                "batches_done": done,
            }

    def on_load_checkpoint(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        checkpoint: dict[str, Any],
    ) -> None:
        position = checkpoint.get("loader_position")
        if position is not None:
            self.loader.resume_at(position["epoch_start_state"], int(position["batches_done"]))
