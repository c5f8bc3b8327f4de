"""The type of the ``ctx`` a fused :class:`torch.autograd.Function` receives.

PyTorch passes a ``BackwardCFunction`` whose stubs type ``needs_input_grad`` and
``saved_tensors`` as one-element tuples; the kernels index them by input.
"""

from typing import Protocol

from torch import Tensor


class AutogradContext(Protocol):
    """``ctx`` of ``forward`` and ``backward``: which inputs need a gradient, and the
    tensors saved for the backward pass (typed as tensors, as PyTorch's stubs do; a None
    saved comes back as None)."""

    needs_input_grad: tuple[bool, ...]
    saved_tensors: tuple[Tensor, ...]

    def save_for_backward(self, *tensors: Tensor | None) -> None: ...
