"""A FIFO memory bank of features together with their class labels."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from lightly.models import utils
from lightly.models.modules.memory_bank import MemoryBankModule
from lightly.utils import dist
from torch import Tensor


class LabeledMemoryBank(MemoryBankModule):
    """Lightly's ``MemoryBankModule`` that also stores an int64 label per entry.

    Differences from the parent class, all needed by supervised contrastive losses:

    - only the rows filled so far are returned (never the random initial rows,
      which would act as fake positives with random labels), as views (no copy);
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
    """

    def __init__(self, size: int | Sequence[int], gather_distributed: bool = False) -> None:
        size = (size,) if isinstance(size, int) else tuple(size)
        if size != (0,) and (len(size) != 2 or min(size) < 0):
            raise ValueError(
                f"LabeledMemoryBank size must be (num_entries, dim) with entries >= 0, or 0 "
                f"to disable the bank (as Lightly's MemoryBankModule), got {size}."
            )
        super().__init__(size=size, gather_distributed=gather_distributed, feature_dim_first=False)
        shape = size if len(size) == 2 else (0, 0)
        self.register_buffer("bank", torch.zeros(shape), persistent=True)
        self.register_buffer("bank_ptr", torch.zeros(1, dtype=torch.long))
        self.register_buffer("labels", torch.zeros(shape[0], dtype=torch.long))
        self.register_buffer("num_filled", torch.zeros(1, dtype=torch.long))

    def forward(
        self, output: Tensor, labels: Tensor, update: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Returns ``(output, features, labels)`` of the filled rows as they were
        before this call, then enqueues ``output`` with ``labels`` if ``update``."""
        features, bank_labels = self.get()
        if update:  # copies: the enqueue would overwrite the views
            features, bank_labels = features.clone(), bank_labels.clone()
            self.enqueue(output, labels)
        return output, features, bank_labels

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
        if features.ndim != 2 or (capacity > 0 and features.shape[1] != dim):
            raise ValueError(
                f"enqueue expects features of shape (B, {dim}), got {tuple(features.shape)}."
            )
        if labels.shape != features.shape[:1]:
            raise ValueError(
                f"enqueue expects one label per feature row: features "
                f"{tuple(features.shape)}, labels {tuple(labels.shape)}."
            )
        if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(
                f"enqueue expects integer class labels, got dtype {labels.dtype}; convert "
                "them with labels.long() only if they hold whole numbers."
            )
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
