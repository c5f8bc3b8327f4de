"""The training data of stage 1 as ``LightningDataModule``s: a shuffled loader that can
resume inside an epoch (:class:`TrainingData`), and for ``data.pipeline: device`` the views
made on the training device once a batch of indices is there (:class:`DeviceTrainingData`)."""

from collections.abc import Callable, Mapping
from typing import Any, cast

import pytorch_lightning as pl
import torch
from torch.utils.data import Dataset

from dscl_plugin.data.base import ArrayImageDataset, ImageDataset
from dscl_plugin.data.indexed import IndexedImages
from dscl_plugin.training.device_views import BatchViews
from dscl_plugin.training.resume import LoaderPosition, ResumableDataLoader
from dscl_plugin.transforms.kornia_views import DeviceViews


class TrainingData(pl.LightningDataModule):
    """Batches of ``batch_size`` items of ``dataset`` per process (``data.pipeline:
    loader``: its transform, e.g. the method's ``train_transform()``, makes the views of
    each image in ``num_workers`` worker processes, ``collate_fn`` batches them),
    reshuffled every epoch by ``generator`` (seeded by ``seed``; it also seeds the
    workers), the last incomplete batch dropped. ``position`` is where the loader stands:
    :class:`~dscl_plugin.training.resume.ExactResume` saves and restores it with the
    generator."""

    def __init__(
        self,
        dataset: Dataset[tuple[Any, int]],
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        collate_fn: Callable[[list[tuple[Any, int]]], object] | None = None,
    ) -> None:
        super().__init__()
        self.dataset, self.batch_size = dataset, batch_size
        self.num_workers, self.collate_fn = num_workers, collate_fn
        self.generator = torch.Generator().manual_seed(seed)
        self.position = LoaderPosition()

    def train_dataloader(self) -> ResumableDataLoader[tuple[Any, int]]:
        return ResumableDataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=True,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn,
            generator=self.generator,
            position=self.position,
            pin_memory=torch.cuda.is_available(),
        )


class DeviceTrainingData(TrainingData):
    """``data.pipeline: device``: the loader of :class:`TrainingData` yields only
    ``(indices, labels)`` of the in-memory ``dataset`` (no workers, no PIL) and
    :meth:`on_after_batch_transfer` makes their views on the training device
    (:class:`~dscl_plugin.training.device_views.BatchViews`, seeded by ``(seed, rank,
    step)``). ``views``: the keyword arguments of
    :class:`~dscl_plugin.transforms.kornia_views.DeviceViews` (those of
    :class:`~dscl_plugin.transforms.views.ViewSettings`, e.g. the method's
    ``view_options()``).

    Raises:
        ValueError: ``dataset`` is not held in memory (an ``ArrayImageDataset``).
        ImportError: Kornia is not installed.
    """

    def __init__(
        self, dataset: ImageDataset, batch_size: int, seed: int, views: Mapping[str, Any]
    ) -> None:
        indexed = IndexedImages(cast(ArrayImageDataset, dataset))  # it checks the type
        super().__init__(indexed, batch_size, seed)
        self.batch_views = BatchViews(indexed.images, DeviceViews(**views), seed)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``(indices, labels)`` on the device become ``(view_q, view_k, patches, boxes,
        labels)``, drawn for the trainer's global step and rank."""
        assert self.trainer is not None  # Lightning calls this hook during a fit
        indices, labels = batch
        trainer = self.trainer
        return self.batch_views(indices, labels, step=trainer.global_step, rank=trainer.global_rank)
