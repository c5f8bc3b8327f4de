"""Frozen features of a dataset, with an optional progress bar."""

import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import torch
from torch import Tensor

T = TypeVar("T")
# a loader of ``(images, labels, ...)`` batches
Batches = Iterable[Sequence[Tensor]]


def with_progress(iterable: Iterable[T], description: str | None, **kwargs: object) -> Iterable[T]:
    """``iterable`` wrapped in a tqdm bar on stderr labelled ``description`` (None: no bar);
    when stderr is not a terminal (a redirected log), one line ``description`` instead."""
    if description is None:
        return iterable
    if not sys.stderr.isatty():
        print(description, file=sys.stderr)
        return iterable
    from tqdm.auto import tqdm

    bar: Iterable[T] = tqdm(iterable, desc=description, leave=False, dynamic_ncols=True, **kwargs)
    return bar


@torch.no_grad()
def extract_features(
    embed_fn: Callable[[Tensor], Tensor],
    loader: Batches,
    device: str | torch.device,
    progress: str | None = None,
) -> tuple[Tensor, Tensor]:
    """``(features (N, D), labels (N,))`` on the CPU for every batch ``(images, labels, ...)``.

    Runs ``embed_fn(images.to(device))`` without gradients, with a progress bar labelled
    ``progress`` if given. Putting the model in eval mode (BatchNorm running statistics,
    no dropout) is the caller's job.
    """
    feats, labels = [], []
    for batch in with_progress(loader, progress, unit="batch"):
        images, targets = batch[0], batch[1]
        feats.append(embed_fn(images.to(device)).float().cpu())
        labels.append(torch.as_tensor(targets, dtype=torch.long).cpu())
    if not feats:
        raise ValueError("extract_features got an empty loader")
    return torch.cat(feats), torch.cat(labels)
