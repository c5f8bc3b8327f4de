"""The training data of stage 1 as a ``LightningDataModule``: a shuffled loader that can
resume inside an epoch, and for ``data.pipeline: device`` the views made on the training
device once a batch of indices is there."""

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
    """Batches of ``batch_size`` images per process, reshuffled every epoch by
    ``generator`` (seeded by ``seed``; it also seeds the workers), the last incomplete
    batch dropped; ``position`` is where the loader stands (:class:`ExactResume` saves
    and restores both).

    Two pipelines:

    - ``device_views=None`` (``data.pipeline: loader``): ``dataset`` makes the views of
      each image (its transform, e.g. the method's ``train_transform()``), in
      ``num_workers`` worker processes, collated by ``collate_fn``;
    - ``device_views``: the keyword arguments of
      :class:`~dscl_plugin.transforms.kornia_views.DeviceViews` (those of
      :class:`~dscl_plugin.transforms.views.ViewSettings`; ``data.pipeline: device``):
      ``dataset`` must be held in memory (an ``ArrayImageDataset``); the loader yields
      ``(indices, labels)`` and :meth:`on_after_batch_transfer` turns them into the views
      on the training device (:class:`BatchViews`, seeded by ``(seed, rank, step)``).

    Raises:
        ValueError: ``device_views`` with a dataset that is not in memory.
        ImportError: ``device_views`` without Kornia.
    """

    def __init__(
        self,
        dataset: ImageDataset,
        batch_size: int,
        seed: int,
        num_workers: int = 0,
        collate_fn: Callable | None = None,
        device_views: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.batch_views: BatchViews | None = None
        self.dataset: Dataset = dataset
        if device_views is not None:  # batches of (indices, labels): no workers, default collate
            indexed = IndexedImages(cast(ArrayImageDataset, dataset))  # it checks the type
            self.batch_views = BatchViews(indexed.images, DeviceViews(**device_views), seed)
            self.dataset, num_workers, collate_fn = indexed, 0, None
        self.batch_size, self.num_workers, self.collate_fn = batch_size, num_workers, collate_fn
        self.generator = torch.Generator().manual_seed(seed)
        self.position = LoaderPosition()

    def train_dataloader(self) -> ResumableDataLoader:
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

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """``data.pipeline: device``: ``(indices, labels)`` on the device become
        ``(view_q, view_k, patches, boxes, labels)``, drawn for the trainer's global step
        and rank. Other batches pass unchanged."""
        if self.batch_views is None:
            return batch
        assert self.trainer is not None  # Lightning calls this hook during a fit
        indices, labels = batch
        trainer = self.trainer
        return self.batch_views(indices, labels, step=trainer.global_step, rank=trainer.global_rank)
