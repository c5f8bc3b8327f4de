"""Online monitoring of stage 1: the kNN top-1 accuracy of the current frozen features,
overall and by shot group (:func:`dscl_plugin.evaluation.metrics.knn_shot_accuracy`),
every few epochs (``monitor`` in the config), on a small split of the data."""

import time
from collections.abc import Iterator, Sequence

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from dscl_plugin.evaluation.metrics import knn_shot_accuracy

# images held in memory between monitored epochs when they fit (else read each time)
CACHE_BYTES = 512 * 2**20


def monitor_indices(
    train_targets: Sequence[int],
    test_targets: Sequence[int],
    bank_size: int,
    query_size: int,
    seed: int,
) -> tuple[list[int], list[int]]:
    """The monitor split: ``bank_size`` training indices drawn at random (all if fewer),
    and up to ``query_size`` test indices, the same number ``query_size // C`` (at least
    1) drawn from each class (all of a smaller class). Seeded by ``seed`` alone."""
    generator = torch.Generator().manual_seed(seed)
    bank = torch.randperm(len(train_targets), generator=generator)[:bank_size]
    targets = torch.as_tensor(list(test_targets))
    classes = torch.unique(targets)
    per_class = max(query_size // max(len(classes), 1), 1)
    queries = []
    for c in classes:
        members = (targets == c).nonzero().flatten()
        chosen = torch.randperm(len(members), generator=generator)[:per_class]
        queries += members[chosen].tolist()
    return sorted(bank.tolist()), sorted(queries)


class MonitorImages:
    """Images and labels of a (small) dataset, fed in batches: held as tensors after the
    first pass when they fit in ``CACHE_BYTES``, else read again through a loader with its
    own random generator (the training RNG is never drawn from)."""

    def __init__(
        self, dataset: Dataset[tuple[Tensor, int]], batch_size: int, num_workers: int = 0
    ) -> None:
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.cached: tuple[Tensor, Tensor] | None = None

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def batches(self) -> Iterator[tuple[Tensor, Tensor]]:
        if self.cached is not None:
            images, labels = self.cached
            yield from zip(images.split(self.batch_size), labels.split(self.batch_size))
            return
        loader = DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            generator=torch.Generator(),
        )
        kept: list[tuple[Tensor, Tensor]] = []
        for images, labels in loader:
            labels = torch.as_tensor(labels)
            kept.append((images, labels))
            yield images, labels
        if kept and kept[0][0].element_size() * kept[0][0][0].numel() * len(self) <= CACHE_BYTES:
            self.cached = torch.cat([i for i, _ in kept]), torch.cat([y for _, y in kept])


class ShotGroupKNNMonitor(pl.Callback):
    """Logs ``monitor/knn_{overall,many,medium,few}`` (fractions) and ``monitor/seconds``
    at the end of every ``every``-th training epoch and of the last: kNN top-1 of the
    ``queries`` against the ``bank``, both embedded by the online backbone in eval mode
    (BatchNorm running statistics, no update; each module's mode is restored after) at
    the training precision. The global-zero process computes and logs; under DDP the
    others go on to the epoch-end checkpoint and wait there.

    Args:
        bank, queries: datasets of ``(image, label)`` with the evaluation transform.
        class_counts: images per class of the full training set (the shot groups).
    """

    def __init__(
        self,
        bank: Dataset[tuple[Tensor, int]],
        queries: Dataset[tuple[Tensor, int]],
        class_counts: Sequence[int],
        every: int,
        knn_k: int = 20,
        knn_t: float = 0.1,
        many_threshold: int = 100,
        few_threshold: int = 20,
        batch_size: int = 256,
        num_workers: int = 0,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1 epoch, got {every}")
        self.bank = MonitorImages(bank, batch_size, num_workers)
        self.queries = MonitorImages(queries, batch_size, num_workers)
        self.class_counts = list(class_counts)
        self.every, self.knn_k, self.knn_t = every, knn_k, knn_t
        self.thresholds = many_threshold, few_threshold

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if (epoch % self.every and epoch != trainer.max_epochs) or not trainer.is_global_zero:
            return
        start = time.perf_counter()
        accuracy = self.evaluate(trainer, pl_module)
        values = {f"monitor/knn_{g}": v for g, v in accuracy.items() if v is not None}
        values["monitor/seconds"] = time.perf_counter() - start
        pl_module.log_dict(values, on_step=False, on_epoch=True, rank_zero_only=True)

    @torch.no_grad()
    def evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule
    ) -> dict[str, float | None]:
        """:func:`knn_shot_accuracy` of the module's current features."""
        modes = {module: module.training for module in pl_module.modules()}
        pl_module.eval()
        try:
            with trainer.precision_plugin.forward_context():
                bank, bank_labels = self._embed(pl_module, self.bank)
                queries, query_labels = self._embed(pl_module, self.queries)
        finally:
            for module, training in modes.items():
                module.train(training)
        return knn_shot_accuracy(
            bank,
            bank_labels,
            queries,
            query_labels,
            self.class_counts,
            self.knn_k,
            self.knn_t,
            *self.thresholds,
        )

    @staticmethod
    def _embed(pl_module: pl.LightningModule, images: MonitorImages) -> tuple[Tensor, Tensor]:
        features, labels = [], []
        for batch, targets in images.batches():
            features.append(pl_module.embed(batch.to(pl_module.device)).float())  # type: ignore[operator]
            labels.append(targets)
        return torch.cat(features), torch.cat(labels)
