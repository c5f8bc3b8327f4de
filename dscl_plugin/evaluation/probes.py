"""Linear probes on frozen features: the fast probe on features extracted once and the
official probe on freshly augmented images, trained by one classifier loop."""

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dscl_plugin.data.samplers import ClassBalancedSampler
from dscl_plugin.evaluation.features import with_progress


@dataclass(frozen=True)
class ProbeSchedule:
    """How a linear probe is trained: ``epochs`` of SGD(``lr``, ``momentum``,
    ``weight_decay``) with lr x 0.1 at each epoch in ``milestones``; mini-batches of
    ``batch_size`` features drawn class-balanced (:class:`ClassBalancedSampler`) or as a
    random permutation; all randomness from ``seed``. ``config.probe.schedule(seed)``
    builds one from a run's config."""

    epochs: int
    lr: float
    milestones: Sequence[int] = ()
    batch_size: int = 2048
    class_balanced: bool = True
    weight_decay: float = 0.0
    momentum: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError(
                f"need epochs >= 1 and batch_size >= 1, got {self.epochs} and {self.batch_size}"
            )


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
    in :func:`train_linear_classifier`. ``progress``: label of a per-epoch progress bar
    (None: silent).

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
    device = train_feats.device
    generator = torch.Generator().manual_seed(schedule.seed)
    n = len(train_feats)
    batch_size = min(schedule.batch_size, n)
    sampler = (
        ClassBalancedSampler(train_labels.tolist(), n, generator)
        if schedule.class_balanced
        else None
    )
    labels = train_labels.to(device)

    def epoch_batches() -> Iterator[tuple[Tensor, Tensor]]:
        if sampler is not None:
            order = torch.tensor(list(sampler))
        else:
            order = torch.randperm(n, generator=generator)
        for step in order.to(device).split(batch_size):
            yield train_feats[step], labels[step]

    classifier = train_linear_classifier(
        epoch_batches,
        train_feats.shape[1],
        num_classes,
        schedule,
        generator,
        device,
        progress,
    )
    with torch.no_grad():
        return classifier(test_feats.to(device)).cpu()


def augmented_linear_probe(
    embed_fn: Callable[[Tensor], Tensor],
    train_loader: Iterable,
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
    :func:`train_linear_classifier`. ``test_feats`` are the centre-crop features of the
    test set; the last epoch's classifier is used.
    """
    if test_feats.ndim != 2:
        raise ValueError(f"test_feats must be (N, D), got {tuple(test_feats.shape)}")

    def epoch_batches() -> Iterator[tuple[Tensor, Tensor]]:
        for batch in train_loader:
            with torch.no_grad():
                feats = embed_fn(batch[0].to(device)).float()
            yield feats, torch.as_tensor(batch[1], dtype=torch.long).to(device)

    generator = torch.Generator().manual_seed(schedule.seed)
    classifier = train_linear_classifier(
        epoch_batches,
        test_feats.shape[1],
        num_classes,
        schedule,
        generator,
        device,
        progress,
    )
    with torch.no_grad():
        return classifier(test_feats.to(device)).cpu()


def train_linear_classifier(
    epoch_batches: Callable[[], Iterable[tuple[Tensor, Tensor]]],
    feature_dim: int,
    num_classes: int,
    schedule: ProbeSchedule,
    generator: torch.Generator,
    device: str | torch.device,
    progress: str | None = None,
) -> nn.Linear:
    """``nn.Linear(feature_dim, num_classes)`` trained with cross-entropy,
    SGD(lr, momentum, weight_decay) and lr x 0.1 at each epoch in ``milestones`` (all from
    ``schedule``), one ``epoch_batches()`` pass of ``(features, labels)`` per epoch.
    Weights ~ N(0, 0.01^2) from ``generator``, bias 0. The classifier after the last epoch
    is returned: no selection on the test set. ``progress``: label of a per-epoch
    progress bar.

    Raises:
        FloatingPointError: the loss becomes NaN or Inf (lr too high).
    """
    s = schedule
    classifier = nn.Linear(feature_dim, num_classes).to(device)
    with torch.no_grad():
        classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=generator) * 0.01)
        classifier.bias.zero_()
    optimizer = torch.optim.SGD(
        classifier.parameters(),
        lr=s.lr,
        momentum=s.momentum,
        weight_decay=s.weight_decay,
    )
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, list(s.milestones), gamma=0.1)
    for epoch in with_progress(range(s.epochs), progress, unit="epoch"):
        for feats, targets in epoch_batches():
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
    return classifier
