"""Where a run computes: the evaluation device and the number of CPU threads."""

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def eval_device(accelerator: str) -> torch.device:
    """The device of stage 2 and the diagnostics: CUDA when ``trainer.accelerator`` is not
    ``"cpu"`` and a GPU is available, else the CPU."""
    use_gpu = accelerator != "cpu" and torch.cuda.is_available()
    return torch.device("cuda" if use_gpu else "cpu")


@contextmanager
def torch_threads(num_threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(num_threads)`` inside the block (None: unchanged)."""
    previous = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
