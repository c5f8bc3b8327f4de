"""The type of the ``ctx`` a fused :class:`torch.autograd.Function` receives.

PyTorch passes a ``BackwardCFunction`` whose stubs type ``needs_input_grad`` and
``saved_tensors`` as one-element tuples; the kernels index them by input.
"""

from typing import Protocol

from torch import Tensor


class AutogradContext(Protocol):
    """``ctx`` of ``forward`` and ``backward``: which inputs need a gradient, the tensors
    saved for the backward pass (typed as tensors, as PyTorch's stubs do; a None saved
    comes back as None) and the outputs without a gradient."""

    needs_input_grad: tuple[bool, ...]
    saved_tensors: tuple[Tensor, ...]

    def save_for_backward(self, *tensors: Tensor | None) -> None: ...

    def mark_non_differentiable(self, *tensors: Tensor) -> None: ...
