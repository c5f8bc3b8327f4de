"""A FIFO memory bank of features together with their class labels, and the one rule
that decides when a queue is updated."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightly.models import utils
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.utils import dist
from torch import Tensor, nn

from dscl_plugin import checks
from dscl_plugin.errors import InvalidValue


def updates_queue(owner: nn.Module, query: Tensor) -> bool:
    """Whether a call of ``owner`` (a model or a loss that holds a queue) enqueues its keys:
    only in a training step, i.e. ``owner`` in training mode and ``query`` carrying
    gradient (``requires_grad`` and grad mode on). ``owner.eval()`` and ``torch.no_grad``
    passes leave the queue as it is.

    The one update rule of every queue in this package: the bank a loss owns
    (``DSCLLoss(memory_bank_size=...)``, updated like Lightly's ``NTXentLoss`` bank when
    the output requires grad) and :class:`~dscl_plugin.models.DSCLModel`'s bank.
    """
    return owner.training and query.requires_grad and torch.is_grad_enabled()


def owns_queue(module: nn.Module) -> bool:
    """Whether ``module`` or one of its submodules is an enabled Lightly
    ``MemoryBankModule`` (e.g. ``DSCLLoss(memory_bank_size=(K, D))`` with ``K > 0``)."""
    return any(isinstance(m, MemoryBankModule) and m.size[0] > 0 for m in module.modules())


class LabeledMemoryBank(MemoryBankModule):
    """Lightly's ``MemoryBankModule`` that also stores an int64 label per entry.

    ``forward(output, labels=None, update=False) -> (output, bank)`` keeps the parent's
    contract (``bank`` in the ``feature_dim_first=False`` layout); the labels of the rows
    come from :meth:`get`. Differences from the parent class, all needed by supervised
    contrastive losses:

    - only the rows filled so far are returned (never the random initial rows,
      which would act as fake positives with random labels);
    - a batch that runs past the end of the bank wraps around, so every key is kept
      (a batch larger than the bank keeps its newest ``K`` keys);
    - features, labels, the write pointer and the fill count are persistent
      buffers, so ``state_dict`` restores the same queue on resume;
    - with ``gather_distributed=True`` keys and labels are gathered together.

    Attributes:
        size: ``(K, dim)``; ``0`` or ``K = 0`` disables the bank.
        gather_distributed: gather keys and labels from all processes before
            enqueueing them.

    Examples:
        >>> bank = LabeledMemoryBank(size=(4096, 128))
        >>> features, labels = bank.get()          # filled rows only: (n, 128), (n,)
        >>> bank.enqueue(keys, batch_labels)
        >>> keys, features = bank(keys, batch_labels, update=True)  # Lightly's call
    """

    def __init__(self, size: int | Sequence[int], gather_distributed: bool = False) -> None:
        size = checks.bank_size("size", size)
        super().__init__(size=size, gather_distributed=gather_distributed, feature_dim_first=False)
        shape = size if len(size) == 2 else (0, 0)
        self.register_buffer("bank", torch.zeros(shape), persistent=True)
        self.register_buffer("bank_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("labels", torch.zeros(shape[0], dtype=torch.long))
        self.register_buffer("num_filled", torch.zeros(1, dtype=torch.long))

    def forward(
        self, output: Tensor, labels: Tensor | None = None, update: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """Lightly's ``MemoryBankModule.forward``: ``(output, bank)``, ``bank`` the (n, dim)
        rows filled before this call (None for a disabled bank, as Lightly's), then
        ``output`` is enqueued with ``labels`` if ``update``. Their labels are
        :meth:`get`'s; read them before an update, which overwrites them.

        Raises:
            ValueError: ``update=True`` without ``labels``, or the inputs :meth:`enqueue`
                refuses.
        """
        bank = None if self.size[0] == 0 else self.get()[0]
        if update:
            if labels is None:
                raise InvalidValue(
                    "labels",
                    "are needed with update=True (one class id per row of output): call "
                    "bank(output, labels, update=True)",
                )
            if bank is not None:
                bank = bank.clone()  # the enqueue overwrites the view
            self.enqueue(output, labels)
        return output, bank

    @torch.no_grad()
    def get(self) -> tuple[Tensor, Tensor]:
        """The filled rows, ``(n, dim)`` features and ``(n,)`` labels.

        Views of the bank, not copies (no K x D pass per step): the next
        :meth:`enqueue` overwrites them, so clone what must outlive it. The losses of
        this package never keep the queue for their backward pass unless it requires grad.
        """
        n = int(self.num_filled)
        return self.bank[:n], self.labels[:n]

    @torch.no_grad()
    def enqueue(self, features: Tensor, labels: Tensor, normalize: bool = False) -> None:
        """Writes ``features`` (B, dim) and integer ``labels`` (B,) at the pointer,
        wrapping; both are moved to the bank's device. ``normalize``: store
        ``features / ||features||``, computed in the bank's dtype (so fp16/bf16 keys lose
        no precision to the normalisation).

        Raises:
            ValueError: wrong shapes, or labels that are not integers (never truncated).
        """
        capacity, dim = self.bank.shape
        checks.require(
            features.ndim == 2 and (capacity == 0 or features.shape[1] == dim),
            "features",
            f"must have shape (B, {dim}), got {tuple(features.shape)}",
        )
        checks.labels("labels", labels, features.shape[0])
        if self.gather_distributed and dist.world_size() > 1:
            features = utils.concat_all_gather(features.contiguous())
            labels = utils.concat_all_gather(labels.contiguous())
        if capacity == 0:
            return
        features, labels = features[-capacity:], labels[-capacity:]
        num = features.shape[0]
        slots = (int(self.bank_ptr) + torch.arange(num, device=self.bank.device)) % capacity
        features = features.detach().to(self.bank.device, self.bank.dtype)
        self.bank[slots] = F.normalize(features, dim=1) if normalize else features
        self.labels[slots] = labels.to(self.labels.device, torch.long)
        self.bank_ptr[0] = (int(self.bank_ptr) + num) % capacity
        self.num_filled[0] = min(capacity, int(self.num_filled) + num)
