"""Linear probes on frozen features: the fast probe on features extracted once and the
official probe on freshly augmented images, trained by one classifier loop."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.data.samplers import ClassBalancedSampler
from dscl_plugin.evaluation.features import Batches, with_progress

# one epoch of (features, labels) batches, drawn with the generator given
EpochBatches = Callable[[torch.Generator], Iterable[tuple[Tensor, Tensor]]]


@dataclass(frozen=True)
class ProbeSchedule:
    """How a linear probe is trained: ``epochs`` of SGD(``lr``, ``momentum``,
    ``weight_decay``) with lr x 0.1 at each epoch in ``milestones``; mini-batches of
    ``batch_size`` features drawn class-balanced (:class:`ClassBalancedSampler`) or as a
    random permutation; all randomness from ``seed``. ``config.probe.schedule(seed)``
    builds one from a run's config.

    Raises:
        InvalidValue: a setting outside its range (the message names it).
    """

    epochs: int
    lr: float
    milestones: Sequence[int] = ()
    batch_size: int = 2048
    class_balanced: bool = True
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        checks.at_least("epochs", self.epochs, 1)
        checks.positive("lr", self.lr)
        milestones = list(self.milestones)
        checks.require(
            milestones == sorted(set(milestones)) and all(0 < m < self.epochs for m in milestones),
            "milestones",
            f"must be increasing epochs in (0, epochs={self.epochs}), got {milestones}",
        )
        checks.at_least("batch_size", self.batch_size, 1)
        checks.at_least("weight_decay", self.weight_decay, 0)
        checks.half_open("momentum", self.momentum, 0, 1)


def linear_probe(
    train_feats: Tensor,
    train_labels: Tensor,
    test_feats: Tensor,
    num_classes: int,
    schedule: ProbeSchedule,
    progress: str | None = None,
) -> Tensor:
    """Train ``nn.Linear(D, num_classes)`` on frozen features, return test logits (N_test, C).

    The fast stage 2 (``probe.protocol: features``): features extracted once. An epoch is
    ``ceil(N / b)`` steps of ``b = min(schedule.batch_size, N)`` samples, drawn
    class-balanced or as a random permutation (``schedule.class_balanced``); training as
    in :func:`probe_logits`. ``progress``: label of a per-epoch progress bar (None: silent).

    Raises:
        ValueError: features or labels of the wrong shape, or no training sample.
    """
    if train_feats.ndim != 2 or test_feats.ndim != 2 or test_feats.shape[1] != train_feats.shape[1]:
        raise ValueError(
            "train_feats and test_feats must be (N, D) with the same D, got "
            f"{tuple(train_feats.shape)} and {tuple(test_feats.shape)}"
        )
    if train_labels.shape != (len(train_feats),):
        raise ValueError(
            f"train_labels must be ({len(train_feats)},), got {tuple(train_labels.shape)}"
        )
    if len(train_feats) == 0:
        raise ValueError("linear_probe needs training samples, got none")
    n, device = len(train_feats), train_feats.device
    batch_size = min(schedule.batch_size, n)
    labels = train_labels.to(device)

    def epoch_batches(generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        if schedule.class_balanced:
            order = torch.tensor(list(ClassBalancedSampler(train_labels.tolist(), n, generator)))
        else:
            order = torch.randperm(n, generator=generator)
        for step in order.to(device).split(batch_size):
            yield train_feats[step], labels[step]

    return probe_logits(epoch_batches, test_feats, num_classes, schedule, device, progress)


def augmented_linear_probe(
    embed_fn: Callable[[Tensor], Tensor],
    train_loader: Batches,
    test_feats: Tensor,
    num_classes: int,
    schedule: ProbeSchedule,
    device: str | torch.device = "cpu",
    progress: str | None = None,
) -> Tensor:
    """The official stage 2 (``probe.protocol: augmented``); returns test logits (N_test, C).

    Every epoch is one pass over ``train_loader``, whose images are augmented afresh on
    each pass (e.g. :func:`dscl_plugin.transforms.probe_transform`) and drawn by its
    sampler (class-balanced for the official recipe; the loader, not ``schedule``, sets
    batch size and sampling); ``embed_fn`` (the frozen backbone, in eval mode: the
    caller's job) embeds them without gradients and the classifier is trained as in
    :func:`probe_logits`. ``test_feats`` are the centre-crop features of the test set;
    the last epoch's classifier is used.

    Raises:
        ValueError: ``test_feats`` is not (N, D).
    """
    if test_feats.ndim != 2:
        raise ValueError(f"test_feats must be (N, D), got {tuple(test_feats.shape)}")

    def epoch_batches(generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in train_loader:  # the loader draws the images and their augmentations
            with torch.no_grad():
                feats = embed_fn(batch[0].to(device)).float()
            yield feats, torch.as_tensor(batch[1], dtype=torch.long).to(device)

    return probe_logits(epoch_batches, test_feats, num_classes, schedule, device, progress)


def probe_logits(
    epoch_batches: EpochBatches,
    test_feats: Tensor,
    num_classes: int,
    schedule: ProbeSchedule,
    device: str | torch.device,
    progress: str | None = None,
) -> Tensor:
    """Test logits (N_test, C) of ``nn.Linear(D, num_classes)`` trained with cross-entropy,
    SGD(lr, momentum, weight_decay) and lr x 0.1 at each epoch in ``milestones`` (all from
    ``schedule``), one ``epoch_batches(generator)`` pass of ``(features, labels)`` per
    epoch. A generator seeded with ``schedule.seed`` draws the weights ~ N(0, 0.01^2)
    (bias 0), then the batches. The classifier after the last epoch scores
    ``test_feats``: no selection on the test set. ``progress``: label of a per-epoch
    progress bar.

    Raises:
        FloatingPointError: the loss becomes NaN or Inf (lr too high).
    """
    s = schedule
    generator = torch.Generator().manual_seed(s.seed)
    classifier = nn.Linear(test_feats.shape[1], num_classes).to(device)
    with torch.no_grad():
        classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=generator) * 0.01)
        classifier.bias.zero_()
    optimizer = torch.optim.SGD(
        classifier.parameters(), lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(s.milestones), gamma=0.1)
    for epoch in with_progress(range(s.epochs), progress, unit="epoch"):
        for feats, targets in epoch_batches(generator):
            loss = F.cross_entropy(classifier(feats), targets)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"linear probe loss is {loss.item()} in epoch {epoch}: "
                    f"lower probe.lr (now {s.lr})"
                )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        scheduler.step()
    with torch.no_grad():
        logits: Tensor = classifier(test_feats.to(device))
    return logits.cpu()
